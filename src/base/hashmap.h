/* A string-keyed hash map with open addressing (linear probing, tombstone-free backward-shift
 * deletion). Keys are copied; values are borrowed pointers. Not thread-safe. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct Hashmap Hashmap;

Hashmap *hashmap_new(void);
/** Free the map and its key copies; values are the caller's. NULL-safe. */
Hashmap *hashmap_free(Hashmap *m);
/** Insert or replace. Returns the previous value or NULL. */
void *hashmap_put(Hashmap *m, const char *key, void *value);
void *hashmap_get(const Hashmap *m, const char *key);
/** Remove; returns the value or NULL. */
void *hashmap_remove(Hashmap *m, const char *key);
size_t hashmap_size(const Hashmap *m);
/** Iterate: start with *i = 0; returns false at the end. Do not modify the map meanwhile. */
bool hashmap_next(const Hashmap *m, size_t *i, const char **ret_key, void **ret_value);
/** The map's hash of a key (FNV-1a, 64 bit), for tables of the caller's that index by string. */
uint64_t hashmap_hash(const char *s);
