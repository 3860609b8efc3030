#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../base/alloc.h"
#include "../base/fileio.h"
#include "auth.h"

#define KEYS_FILE_MAX (4 << 20)

struct Auth {
    char *path;
    pthread_rwlock_t lock;
    ApiKey *keys;
    size_t n;
};

static int load(const char *path, ApiKey **ret, size_t *ret_n, Error *e)
{
    _cleanup_free_ char *text = NULL;
    int r = fileio_read_all(path, KEYS_FILE_MAX, &text, NULL);
    if (r < 0)
        return error_set(e, r, "could not read API keys file \"%s\": %s", path, strerror(-r));
    r = apikey_parse(text, ret, ret_n, e);
    if (r < 0)
        return error_prefix(e, "API keys file \"%s\"", path);
    return 0;
}

int auth_new(const char *path, Auth **ret, Error *e)
{
    Auth *a = xcalloc(1, sizeof *a);
    pthread_rwlock_init(&a->lock, NULL);
    if (path) {
        a->path = xstrdup(path);
        int r = load(path, &a->keys, &a->n, e);
        if (r < 0) {
            auth_free(a);
            return r;
        }
    }
    *ret = a;
    return 0;
}

Auth *auth_free(Auth *a)
{
    if (!a)
        return NULL;
    pthread_rwlock_destroy(&a->lock);
    free(a->keys);
    free(a->path);
    free(a);
    return NULL;
}

int auth_reload(Auth *a, Error *e)
{
    ApiKey *keys = NULL;
    size_t n = 0;
    if (!a->path)
        return 0;
    int r = load(a->path, &keys, &n, e);
    if (r < 0)
        return r;
    pthread_rwlock_wrlock(&a->lock);
    free(a->keys);
    a->keys = keys;
    a->n = n;
    pthread_rwlock_unlock(&a->lock);
    return 0;
}

bool auth_is_open(Auth *a)
{
    return !a->path;
}

size_t auth_count(Auth *a)
{
    pthread_rwlock_rdlock(&a->lock);
    size_t n = a->n;
    pthread_rwlock_unlock(&a->lock);
    return n;
}

/* Compare in time independent of where the strings first differ. */
static bool equal_ct(const char *x, const char *y, size_t n)
{
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(x[i] ^ y[i]);
    return d == 0;
}

int auth_check(Auth *a, const char *authorization, Principal *ret, Error *e)
{
    if (!a->path) {
        *ret = (Principal){.admin = true};
        return 0;
    }
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return error_set(e, -EACCES,
                         "missing API key: send \"Authorization: Bearer <key>\" "
                         "(runtara-ctl reads RUNTARA_API_KEY)");
    const char *key = authorization + 7;
    key += strspn(key, " ");
    char hash[65];
    apikey_hash(key, hash);

    int r = error_set(e, -EACCES, "invalid API key");
    pthread_rwlock_rdlock(&a->lock);
    for (size_t i = 0; i < a->n; i++) {
        if (!equal_ct(a->keys[i].hash, hash, 64))
            continue;
        *ret = (Principal){.admin = a->keys[i].admin};
        memcpy(ret->tenant, a->keys[i].tenant, sizeof ret->tenant);
        memcpy(ret->key_name, a->keys[i].name, sizeof ret->key_name);
        error_done(e);
        r = 0;
        break;
    }
    pthread_rwlock_unlock(&a->lock);
    return r;
}
