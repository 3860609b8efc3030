/* The launch tokens seen running (token-memo.h). A hash map from the token's hash to its entry,
 * and a ring of the hashes in the order they came, for dropping the oldest at capacity. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../base/alloc.h"
#include "../base/hashmap.h"
#include "token-memo.h"

typedef struct Entry {
    char *instance_key;
    char *instance_id;
    size_t slot; /* its hash's slot in the ring */
} Entry;

struct TokenMemo {
    pthread_mutex_t lock; /* guards what follows */
    Hashmap *by_hash;     /* token hash -> Entry */
    char **ring; /* capacity slots: the token hashes as they came, oldest at head; NULL once
                  * forgotten (the slot stays counted in used until it is the oldest) */
    size_t capacity, head, used;
};

TokenMemo *token_memo_new(size_t capacity)
{
    TokenMemo *m = xcalloc(1, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
    m->by_hash = hashmap_new();
    m->ring = xcalloc(capacity, sizeof *m->ring);
    m->capacity = capacity;
    return m;
}

static void entry_free(Entry *e)
{
    if (!e)
        return;
    free(e->instance_key);
    free(e->instance_id);
    free(e);
}

TokenMemo *token_memo_free(TokenMemo *m)
{
    if (!m)
        return NULL;
    for (size_t i = 0; i < m->capacity; i++)
        if (m->ring[i]) {
            entry_free(hashmap_remove(m->by_hash, m->ring[i]));
            free(m->ring[i]);
        }
    hashmap_free(m->by_hash);
    free(m->ring);
    pthread_mutex_destroy(&m->lock);
    free(m);
    return NULL;
}

void token_memo_put(TokenMemo *m, const char *token_hash, const char *instance_key,
                    const char *instance_id)
{
    pthread_mutex_lock(&m->lock);
    if (hashmap_get(m->by_hash, token_hash)) {
        pthread_mutex_unlock(&m->lock);
        return;
    }
    if (m->used == m->capacity) { /* drop the oldest (or a forgotten slot) */
        char *old = m->ring[m->head];
        if (old) {
            entry_free(hashmap_remove(m->by_hash, old));
            free(old);
        }
        m->ring[m->head] = NULL;
        m->head = (m->head + 1) % m->capacity;
        m->used--;
    }
    Entry *e = xmalloc(sizeof *e);
    *e = (Entry){.instance_key = xstrdup(instance_key),
                 .instance_id = xstrdup(instance_id),
                 .slot = (m->head + m->used) % m->capacity};
    hashmap_put(m->by_hash, token_hash, e);
    m->ring[e->slot] = xstrdup(token_hash);
    m->used++;
    pthread_mutex_unlock(&m->lock);
}

char *token_memo_get(TokenMemo *m, const char *token_hash, const char *instance_id)
{
    if (!m)
        return NULL;
    char *key = NULL;
    pthread_mutex_lock(&m->lock);
    const Entry *e = hashmap_get(m->by_hash, token_hash);
    if (e && strcmp(e->instance_id, instance_id) == 0)
        key = xstrdup(e->instance_key);
    pthread_mutex_unlock(&m->lock);
    return key;
}

void token_memo_forget(TokenMemo *m, const char *token_hash)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    Entry *e = hashmap_remove(m->by_hash, token_hash);
    if (e) {
        free(m->ring[e->slot]);
        m->ring[e->slot] = NULL;
        entry_free(e);
    }
    pthread_mutex_unlock(&m->lock);
}

size_t token_memo_size(TokenMemo *m)
{
    pthread_mutex_lock(&m->lock);
    size_t n = hashmap_size(m->by_hash);
    pthread_mutex_unlock(&m->lock);
    return n;
}
