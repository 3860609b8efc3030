#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "hashmap.h"

typedef struct Slot {
    char *key; /* NULL = empty */
    void *value;
    uint64_t hash;
} Slot;

struct Hashmap {
    Slot *slots;
    size_t cap; /* power of two */
    size_t n;
};

/* FNV-1a, 64 bit: keys are short ids, not attacker-chosen at a scale where flooding matters; the
 * number of keys is bounded by the number of running instances. */
uint64_t hashmap_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

Hashmap *hashmap_new(void)
{
    Hashmap *m = xcalloc(1, sizeof *m);
    m->cap = 16;
    m->slots = xcalloc(m->cap, sizeof *m->slots);
    return m;
}

Hashmap *hashmap_free(Hashmap *m)
{
    if (!m)
        return NULL;
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    free(m);
    return NULL;
}

static size_t find(const Hashmap *m, const char *key, uint64_t h)
{
    size_t i = h & (m->cap - 1);
    while (m->slots[i].key && (m->slots[i].hash != h || strcmp(m->slots[i].key, key) != 0))
        i = (i + 1) & (m->cap - 1);
    return i;
}

static void grow(Hashmap *m)
{
    Slot *old = m->slots;
    size_t oldcap = m->cap;
    m->cap *= 2;
    m->slots = xcalloc(m->cap, sizeof *m->slots);
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].key)
            m->slots[find(m, old[i].key, old[i].hash)] = old[i];
    free(old);
}

void *hashmap_put(Hashmap *m, const char *key, void *value)
{
    if ((m->n + 1) * 4 > m->cap * 3)
        grow(m);
    uint64_t h = hashmap_hash(key);
    Slot *s = &m->slots[find(m, key, h)];
    if (s->key) {
        void *prev = s->value;
        s->value = value;
        return prev;
    }
    *s = (Slot){.key = xstrdup(key), .value = value, .hash = h};
    m->n++;
    return NULL;
}

void *hashmap_get(const Hashmap *m, const char *key)
{
    const Slot *s = &m->slots[find(m, key, hashmap_hash(key))];
    return s->key ? s->value : NULL;
}

void *hashmap_remove(Hashmap *m, const char *key)
{
    size_t i = find(m, key, hashmap_hash(key));
    if (!m->slots[i].key)
        return NULL;
    void *value = m->slots[i].value;
    free(m->slots[i].key);
    m->slots[i].key = NULL;
    m->n--;
    /* backward-shift the cluster that follows so lookups need no tombstones */
    for (size_t j = (i + 1) & (m->cap - 1); m->slots[j].key; j = (j + 1) & (m->cap - 1)) {
        size_t home = m->slots[j].hash & (m->cap - 1);
        bool movable = i <= j ? (home <= i || home > j) : (home <= i && home > j);
        if (movable) {
            m->slots[i] = m->slots[j];
            m->slots[j].key = NULL;
            i = j;
        }
    }
    return value;
}

size_t hashmap_size(const Hashmap *m)
{
    return m->n;
}

bool hashmap_next(const Hashmap *m, size_t *i, const char **ret_key, void **ret_value)
{
    for (; *i < m->cap; (*i)++)
        if (m->slots[*i].key) {
            if (ret_key)
                *ret_key = m->slots[*i].key;
            if (ret_value)
                *ret_value = m->slots[*i].value;
            (*i)++;
            return true;
        }
    return false;
}
