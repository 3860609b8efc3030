/* Dispatch from the store interface to the backend named by the URL. Arguments are checked here,
 * once for every backend: NULL where a value is required is a programmer error (assert), a
 * status or signal kind out of range or an out-of-range limit is -EINVAL with a message. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "../base/alloc.h"
#include "../base/macro.h"
#include "../base/parse-util.h"
#include "store-internal.h"

StoreBackend store_url_parse(const char *url, const char **ret_target, Error *e)
{
    const char *target = NULL;
    StoreBackend b = _STORE_BACKEND_INVALID;
    if (strncmp(url, "sqlite://", 9) == 0)
        target = url + 9, b = STORE_SQLITE;
    else if (strncmp(url, "sqlite:", 7) == 0)
        target = url + 7, b = STORE_SQLITE;
    else if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0 ||
             (strchr(url, '=') && !strstr(url, "://")))
        target = url, b = STORE_POSTGRES;
    else
        /* (never the URL itself in a message: it may hold a password) */
        return error_set(e, -EINVAL,
                         "unknown kind of database URL: expected sqlite:PATH, postgres://... "
                         "or a libpq keyword string (host=... dbname=...)");
    if (b == STORE_SQLITE && !*target)
        return error_set(e, -EINVAL, "the URL names no file: expected sqlite:PATH");
    if (b == STORE_POSTGRES) {
        char *why = NULL;
        PQconninfoOption *o = PQconninfoParse(url, &why);
        if (!o) {
            /* libpq's message ends with a newline; it names the bad part, never a password */
            int r = error_set(e, -EINVAL, "invalid PostgreSQL connection string: %.*s",
                              why ? (int)strcspn(why, "\n") : 13, why ? why : "out of memory");
            PQfreemem(why);
            return r;
        }
        PQconninfoFree(o);
    }
    if (ret_target)
        *ret_target = target;
    return b;
}

int store_open(const char *url, Store **ret, Error *reterr)
{
    const char *target = NULL;
    StoreBackend b = store_url_parse(url, &target, reterr);
    if (b == STORE_SQLITE)
        return store__sqlite_open(target, ret, reterr);
    if (b == STORE_POSTGRES)
        return store__pg_open(target, ret, reterr);
    return b;
}

int store_migrate(const char *url, StoreInfo *ret, Error *reterr)
{
    const char *target = NULL;
    StoreBackend b = store_url_parse(url, &target, reterr);
    if (b == STORE_POSTGRES)
        return store__pg_migrate(target, ret, reterr);
    if (b != STORE_SQLITE)
        return b;
    Store *s = NULL;
    int r = store__sqlite_open(target, &s, reterr); /* which migrates */
    if (r < 0)
        return r;
    store_info(s, ret);
    store_close(s);
    return 0;
}

Store *store_close(Store *s)
{
    if (s) {
        free(s->owner);
        s->ops->close(s);
    }
    return NULL;
}

void store_info(Store *s, StoreInfo *ret)
{
    s->ops->info(s, ret);
}

int store_ping(Store *s, Error *reterr)
{
    return s->ops->ping(s, reterr);
}

int store_backup(Store *s, const char *path, StoreBackupFlags flags, Error *reterr)
{
    if (!s->ops->backup)
        return error_set(reterr, -ENOSYS,
                         "the store is a %s database, which the daemon does not copy; hint: back "
                         "it up with the server's own tools (pg_dump)",
                         s->ops->name);
    return s->ops->backup(s, path, flags, reterr);
}

int store_image_insert(Store *s, ImageRecord *rec, Error *reterr)
{
    return store__image_insert(s->batch, s->ops->image_insert_run, rec, reterr);
}

int store_image_get(Store *s, const char *image_id, const char *tenant_id, ImageRecord *ret,
                    Error *reterr)
{
    return s->ops->image_get(s, image_id, tenant_id, ret, reterr);
}

int store_image_list(Store *s, const ImageFilter *f, ImageRecord **ret, size_t *ret_n,
                     bool *ret_more, Error *reterr)
{
    return s->ops->image_list(s, f, ret, ret_n, ret_more, reterr);
}

int store_image_delete(Store *s, const char *image_id, const char *tenant_id, Error *reterr)
{
    return store__image_delete(s->batch, s->ops->image_delete_run, image_id, tenant_id, reterr);
}

int store_image_exists(Store *s, const char *image_id, Error *reterr)
{
    return s->ops->image_exists(s, image_id, reterr);
}

int store_image_count(Store *s, uint64_t *ret, Error *reterr)
{
    return s->ops->image_count(s, ret, reterr);
}

static int check_status(InstanceStatus status, Error *e)
{
    if (!instance_status_to_string(status))
        return error_set(e, -EINVAL, "invalid instance status %d", (int)status);
    return 0;
}

static int check_limit(unsigned limit, Error *e)
{
    if (limit < 1 || limit > STORE_LIST_MAX)
        return error_set(e, -EINVAL, "list limit %u is out of range (1 to %u)", limit,
                         STORE_LIST_MAX);
    return 0;
}

static int check_signal_kind(SignalKind kind, Error *e)
{
    if (!signal_kind_to_string(kind))
        return error_set(e, -EINVAL, "invalid signal kind %d", (int)kind);
    return 0;
}

static int check_nonempty(const char *v, const char *what, Error *e)
{
    if (!v || !*v)
        return error_set(e, -EINVAL, "%s must not be empty", what);
    return 0;
}

char *store_instance_key(const char *tenant_id, const char *instance_id)
{
    return xasprintf("%s/%s", tenant_id, instance_id);
}

int store_instance_insert_minimal(Store *s, const char *instance_id, const char *tenant_id,
                                  const char *image_id, InstanceStatus status, Error *reterr)
{
    assert(instance_id && tenant_id && image_id);
    int r = check_status(status, reterr);
    if (r < 0)
        return r;
    return store__instance_insert_minimal(s->batch, s->ops->instance_insert_minimal_run,
                                          instance_id, tenant_id, image_id, status, reterr);
}

int store_instance_create(Store *s, const InstanceRecord *rec, InstanceRecord *ret_existing,
                          StoreVisible_cb visible, void *userdata, Error *reterr)
{
    assert(rec);
    int r = check_nonempty(rec->instance_id, "instance id", reterr);
    if (r >= 0)
        r = check_nonempty(rec->tenant_id, "tenant id", reterr);
    if (r >= 0)
        r = check_nonempty(rec->image_id, "image id", reterr);
    if (r < 0)
        return r;
    InstanceRecord owned = *rec; /* (shallow: the op borrows it until it returns) */
    if (!owned.owner)
        owned.owner = s->owner;
    return store__instance_create(s->batch, s->ops->instance_create_run, &owned, ret_existing,
                                  visible, userdata, reterr);
}

int store_instance_find(Store *s, const char *instance_id, InstanceRecord *ret, Error *reterr)
{
    assert(instance_id && ret);
    return s->ops->instance_find(s, instance_id, ret, reterr);
}

int store_instance_get_by_token(Store *s, const char *token_hash, InstanceRecord *ret,
                                Error *reterr)
{
    assert(token_hash && ret);
    return s->ops->instance_get_by_token(s, token_hash, ret, reterr);
}

int store_instance_get(Store *s, const char *instance_key, const char *tenant_id,
                       InstanceRecord *ret, Error *reterr)
{
    assert(instance_key && ret);
    return s->ops->instance_get(s, instance_key, tenant_id, ret, reterr);
}

int store_instance_transition(Store *s, const char *instance_key, InstanceStatus from_status,
                              const InstanceUpdate *u, Error *reterr)
{
    assert(instance_key && u);
    int r = check_status(from_status, reterr);
    if (r >= 0)
        r = check_status(u->to_status, reterr);
    if (r < 0)
        return r;
    InstanceUpdate owned = *u;
    if (owned.to_status == INSTANCE_PENDING && !owned.owner)
        owned.owner = s->owner; /* whoever makes it pending launches it */
    return store__instance_transition(s->batch, s->ops->instance_transition_run, instance_key,
                                      from_status, &owned, reterr);
}

int store_instance_transitions(Store *s, InstanceTransition *t, size_t n, Error *reterr)
{
    assert(t || n == 0);
    for (size_t i = 0; i < n; i++) {
        assert(t[i].instance_key && t[i].u);
        int r = check_status(t[i].from_status, reterr);
        if (r >= 0)
            r = check_status(t[i].u->to_status, reterr);
        if (r < 0)
            return r;
    }
    if (n == 0)
        return 0;
    /* each move to pending takes this store's owner (store_instance_transition()) */
    _cleanup_free_ InstanceUpdate *owned = xcalloc(n, sizeof *owned);
    _cleanup_free_ const InstanceUpdate **given = xcalloc(n, sizeof *given);
    for (size_t i = 0; i < n; i++) {
        given[i] = t[i].u;
        owned[i] = *t[i].u;
        if (owned[i].to_status == INSTANCE_PENDING && !owned[i].owner)
            owned[i].owner = s->owner;
        t[i].u = &owned[i];
    }
    int r = store__instance_transitions(s->batch, s->ops->instance_transitions_run, t, n, reterr);
    for (size_t i = 0; i < n; i++)
        t[i].u = given[i];
    return r;
}

int store_instance_list(Store *s, const InstanceFilter *f, InstanceRecord **ret, size_t *ret_n,
                        bool *ret_more, uint64_t *ret_total, int64_t *ret_last_seq, Error *reterr)
{
    assert(f && ret && ret_n);
    int r = check_limit(f->limit, reterr);
    if (r >= 0 && f->has_status)
        r = check_status(f->status, reterr);
    if (r < 0)
        return r;
    return s->ops->instance_list(s, f, ret, ret_n, ret_more, ret_total, ret_last_seq, reterr);
}

int store_instance_heartbeat(Store *s, const char *instance_key, const char *token_hash, usec_t now,
                             Error *reterr)
{
    assert(instance_key);
    return store__instance_heartbeat(s->batch, s->ops->instance_heartbeat_run, instance_key,
                                     token_hash, now, reterr);
}

int store_instance_list_wakes(Store *s, const char *owner, int64_t after_seq, unsigned limit,
                              InstanceWake **ret, size_t *ret_n, bool *ret_more, Error *reterr)
{
    assert(ret && ret_n);
    int r = check_limit(limit, reterr);
    if (r < 0)
        return r;
    return s->ops->instance_list_wakes(s, owner, after_seq, limit, ret, ret_n, ret_more, reterr);
}

int store_daemon_list(Store *s, DaemonRecord **ret, size_t *ret_n, Error *reterr)
{
    assert(ret && ret_n);
    return s->ops->daemon_list(s, ret, ret_n, reterr);
}

void daemon_records_free(DaemonRecord *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++) {
        free(r[i].id);
        free(r[i].host);
    }
    free(r);
}

void store_set_timeout(Store *s, usec_t timeout)
{
    assert(timeout > 0);
    s->timeout = timeout;
}

void store_set_owner(Store *s, const char *daemon_id)
{
    assert(daemon_id && strlen(daemon_id) <= STORE_DAEMON_ID_MAX);
    free(s->owner);
    s->owner = xstrdup(daemon_id);
}

int store_daemon_register(Store *s, const char *host, int pid, usec_t lease_usec, Error *reterr)
{
    assert(s->owner && host);
    DaemonOp o = {.op.run = s->ops->daemon_register_run,
                  .id = s->owner,
                  .host = host,
                  .pid = pid,
                  .lease = lease_usec};
    return store__daemon_submit(s->batch, &o, reterr);
}

int store_daemon_renew(Store *s, usec_t lease_usec, Error *reterr)
{
    assert(s->owner);
    DaemonOp o = {.op.run = s->ops->daemon_renew_run, .id = s->owner, .lease = lease_usec};
    return store__daemon_submit(s->batch, &o, reterr);
}

int store_daemon_unregister(Store *s, Error *reterr)
{
    assert(s->owner);
    DaemonOp o = {.op.run = s->ops->daemon_unregister_run, .id = s->owner};
    return store__daemon_submit(s->batch, &o, reterr);
}

int store_instance_adopt(Store *s, bool expired_too, unsigned limit, int64_t *after,
                         char ***ret_keys, size_t *ret_n, Error *reterr)
{
    assert(s->owner && after && ret_keys && ret_n);
    int r = check_limit(limit, reterr);
    if (r < 0)
        return r;
    return store__instance_adopt(s->batch, s->ops->instance_adopt_run, s->owner, expired_too, limit,
                                 after, ret_keys, ret_n, reterr);
}

void store_keys_free(char **keys, size_t n)
{
    for (size_t i = 0; keys && i < n; i++)
        free(keys[i]);
    free(keys);
}

static int blob_unsupported(Store *s, Error *e)
{
    return error_set(e, -ENOSYS,
                     "a %s store serves one daemon, which keeps image files in its DATA_DIR",
                     s->ops->name);
}

int store_image_blob_put(Store *s, const char *sha256, int fd, uint64_t n, Error *reterr)
{
    assert(sha256 && fd >= 0);
    return s->ops->image_blob_put ? s->ops->image_blob_put(s, sha256, fd, n, reterr)
                                  : blob_unsupported(s, reterr);
}

int store_image_blob_get(Store *s, const char *sha256, int fd, Error *reterr)
{
    assert(sha256 && fd >= 0);
    return s->ops->image_blob_get ? s->ops->image_blob_get(s, sha256, fd, reterr)
                                  : blob_unsupported(s, reterr);
}

void instance_wakes_free(InstanceWake *w, size_t n)
{
    for (size_t i = 0; w && i < n; i++)
        free(w[i].instance_key);
    free(w);
}

void store_refs_free(StoreRef *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++) {
        free(r[i].id);
        free(r[i].tenant_id);
    }
    free(r);
}

int store_instance_purge(Store *s, usec_t finished_before, unsigned limit, StoreRef **ret,
                         size_t *ret_n, Error *reterr)
{
    assert(ret && ret_n);
    int r = check_limit(limit, reterr);
    if (r < 0)
        return r;
    return store__purge(s->batch, s->ops->instance_purge_run, finished_before, limit, ret, ret_n,
                        reterr);
}

int store_image_purge(Store *s, usec_t created_before, unsigned limit, StoreRef **ret,
                      size_t *ret_n, Error *reterr)
{
    assert(ret && ret_n);
    int r = check_limit(limit, reterr);
    if (r < 0)
        return r;
    return store__purge(s->batch, s->ops->image_purge_run, created_before, limit, ret, ret_n,
                        reterr);
}

int store_instance_count_by_status(Store *s, const char *tenant_id,
                                   uint64_t ret_counts[_INSTANCE_STATUS_MAX], Error *reterr)
{
    assert(ret_counts);
    return s->ops->instance_count_by_status(s, tenant_id, ret_counts, reterr);
}

static const char *const granularity_names[_METRICS_GRANULARITY_MAX] = {
    [METRICS_HOUR] = "hour",
    [METRICS_DAY] = "day",
};

const char *metrics_granularity_to_string(MetricsGranularity g)
{
    return g >= 0 && g < _METRICS_GRANULARITY_MAX ? granularity_names[g] : NULL;
}

MetricsGranularity metrics_granularity_from_string(const char *s)
{
    return (MetricsGranularity)parse_name(granularity_names, _METRICS_GRANULARITY_MAX, s);
}

int store__metrics_add(MetricsBucket *m, size_t n, usec_t unit, const MetricsRow *row, Error *e)
{
    if (row->bucket < m[0].start || (row->bucket - m[0].start) % unit != 0 ||
        (row->bucket - m[0].start) / unit >= n)
        return error_set(e, -EIO, "corrupt metrics row: a bucket outside the range asked for");
    MetricsBucket *b = &m[(row->bucket - m[0].start) / unit];
    switch (row->status) {
    case INSTANCE_COMPLETED:
        b->succeeded += row->count;
        break;
    case INSTANCE_FAILED:
        b->failed += row->count;
        break;
    case INSTANCE_CANCELLED:
        b->cancelled += row->count;
        break;
    default:
        return error_set(e, -EIO, "corrupt metrics row: a status that has not ended");
    }
    b->invocations += row->count;
    if (row->timed > 0) {
        if (b->timed == 0 || row->duration_min < b->duration_min)
            b->duration_min = row->duration_min;
        if (row->duration_max > b->duration_max)
            b->duration_max = row->duration_max;
        b->duration_sum += row->duration_sum;
        b->timed += row->timed;
    }
    if (row->measured > 0) {
        b->memory_max = MAX(b->memory_max, row->memory_max);
        b->memory_sum += row->memory_sum;
        b->measured += row->measured;
    }
    return 0;
}

int store_tenant_metrics(Store *s, const char *tenant_id, usec_t start, usec_t end,
                         MetricsGranularity g, MetricsBucket **ret, size_t *ret_n, Error *reterr)
{
    assert(ret && ret_n && g >= 0 && g < _METRICS_GRANULARITY_MAX);
    int r = check_nonempty(tenant_id, "tenant id", reterr);
    if (r < 0)
        return r;
    if (start >= end)
        return error_set(reterr, -EINVAL,
                         "invalid time range: start must come before end; hint: both are RFC "
                         "3339 UTC times, end defaults to now and start to a day before end");
    usec_t unit = (g == METRICS_DAY ? 24 : 1) * 3600 * USEC_PER_SEC;
    usec_t first = start - start % unit, last = end - end % unit;
    size_t n = (size_t)((last - first) / unit) + 1;
    if (n > STORE_METRICS_BUCKETS_MAX)
        return error_set(reterr, -EINVAL,
                         "invalid time range: it spans %zu %ss, more than the %d a request may "
                         "ask for; hint: ask for days, or for a shorter range",
                         n, metrics_granularity_to_string(g), STORE_METRICS_BUCKETS_MAX);
    MetricsBucket *m = xcalloc(n, sizeof *m);
    for (size_t i = 0; i < n; i++)
        m[i].start = first + i * unit;
    r = s->ops->tenant_metrics(s, tenant_id, start, end, unit, m, n, reterr);
    if (r < 0) {
        free(m);
        return r;
    }
    *ret = m;
    *ret_n = n;
    return 0;
}

int store_checkpoint_save(Store *s, const char *instance_key, const char *key,
                          const char *token_hash, const void *data, size_t n, void **ret_data,
                          size_t *ret_n, SignalKind *ret_signal, Error *reterr)
{
    assert(instance_key && (data || n == 0));
    int r = check_nonempty(key, "checkpoint key", reterr);
    if (r < 0)
        return r;
    return store__checkpoint_save(s->batch, s->ops->checkpoint_save_run, instance_key, key,
                                  token_hash, data, n, ret_data, ret_n, ret_signal, reterr);
}

int store_checkpoint_save_async(Store *s, const char *instance_key, const char *key,
                                const char *token_hash, const void *data, size_t n,
                                StoreCheckpointSaved_cb done, void *userdata, Error *reterr)
{
    assert(instance_key && (data || n == 0) && done);
    int r = check_nonempty(key, "checkpoint key", reterr);
    if (r < 0)
        return r;
    r = store__checkpoint_save_async(s->batch, s->ops->checkpoint_save_run, instance_key, key,
                                     token_hash, data, n, done, userdata);
    if (r == -ESHUTDOWN)
        return error_set(reterr, r, "cannot queue the checkpoint: the store is shutting down");
    return r;
}

void store_quiesce(Store *s)
{
    store_batch_quiesce(s->batch);
}

int store_checkpoint_get(Store *s, const char *instance_key, const char *key, void **ret_data,
                         size_t *ret_n, usec_t *ret_created, Error *reterr)
{
    assert(instance_key && key && ret_data && ret_n);
    return s->ops->checkpoint_get(s, instance_key, key, ret_data, ret_n, ret_created, reterr);
}

int store_checkpoint_list(Store *s, const char *instance_key, int64_t after_seq, unsigned limit,
                          CheckpointInfo **ret, size_t *ret_n, bool *ret_more, Error *reterr)
{
    assert(instance_key && ret && ret_n);
    int r = check_limit(limit, reterr);
    if (r < 0)
        return r;
    return s->ops->checkpoint_list(s, instance_key, after_seq, limit, ret, ret_n, ret_more, reterr);
}

int store_event_append(Store *s, const char *instance_key, const char *type, const char *subtype,
                       const char *payload, int64_t *ret_id, Error *reterr)
{
    assert(instance_key);
    int r = check_nonempty(type, "event type", reterr);
    if (r < 0)
        return r;
    r = store__event_append(s->batch, s->ops->event_append_run, instance_key, type, subtype,
                            payload, NULL, NULL, ret_id, reterr);
    return r < 0 ? r : 0;
}

int store_event_append_keyed(Store *s, const char *instance_key, const char *type,
                             const char *subtype, const char *payload, const char *request_key,
                             const char *token_hash, int64_t *ret_id, Error *reterr)
{
    assert(instance_key);
    int r = check_nonempty(type, "event type", reterr);
    if (r < 0)
        return r;
    return store__event_append(s->batch, s->ops->event_append_run, instance_key, type, subtype,
                               payload, request_key, token_hash, ret_id, reterr);
}

int store_event_list(Store *s, const EventFilter *f, EventRecord **ret, size_t *ret_n,
                     bool *ret_more, Error *reterr)
{
    assert(f && ret && ret_n);
    int r = check_nonempty(f->instance_key, "instance id", reterr);
    if (r >= 0)
        r = check_limit(f->limit, reterr);
    if (r < 0)
        return r;
    return s->ops->event_list(s, f, ret, ret_n, ret_more, reterr);
}

int store_signal_send(Store *s, const char *instance_key, SignalKind kind, const char *payload,
                      Error *reterr)
{
    assert(instance_key);
    int r = check_signal_kind(kind, reterr);
    if (r < 0)
        return r;
    SignalOp o = {
        .op.run = s->ops->signal_send_run, .id = instance_key, .kind = kind, .payload = payload};
    return store__signal_submit(s->batch, &o, reterr);
}

int store_signal_get(Store *s, const char *instance_key, SignalKind *ret_kind, char **ret_payload,
                     Error *reterr)
{
    assert(instance_key && ret_kind);
    return s->ops->signal_get(s, instance_key, ret_kind, ret_payload, reterr);
}

int store_signal_ack(Store *s, const char *instance_key, SignalKind kind, Error *reterr)
{
    assert(instance_key);
    int r = check_signal_kind(kind, reterr);
    if (r < 0)
        return r;
    SignalOp o = {.op.run = s->ops->signal_ack_run, .id = instance_key, .kind = kind};
    return store__signal_submit(s->batch, &o, reterr);
}

int store_custom_signal_put(Store *s, const char *instance_key, const char *wait_key,
                            const char *payload, Error *reterr)
{
    assert(instance_key);
    int r = check_nonempty(wait_key, "wait key", reterr);
    if (r < 0)
        return r;
    SignalOp o = {.op.run = s->ops->custom_signal_put_run,
                  .id = instance_key,
                  .wait_key = wait_key,
                  .payload = payload};
    return store__signal_submit(s->batch, &o, reterr);
}

int store_custom_signal_take(Store *s, const char *instance_key, const char *wait_key,
                             char **ret_payload, Error *reterr)
{
    assert(instance_key);
    int r = check_nonempty(wait_key, "wait key", reterr);
    if (r < 0)
        return r;
    SignalOp o = {
        .op.run = s->ops->custom_signal_take_run, .id = instance_key, .wait_key = wait_key};
    return store__custom_signal_take_submit(s->batch, &o, ret_payload, reterr);
}

int store_custom_signal_deliver(Store *s, const char *instance_key, const char *wait_key,
                                const char *checkpoint_key, const char *token_hash,
                                char **ret_payload, Error *reterr)
{
    assert(instance_key);
    int r = check_nonempty(wait_key, "wait key", reterr);
    if (r >= 0)
        r = check_nonempty(checkpoint_key, "checkpoint key", reterr);
    if (r < 0)
        return r;
    SignalOp o = {.op.run = s->ops->custom_signal_deliver_run,
                  .id = instance_key,
                  .wait_key = wait_key,
                  .checkpoint_key = checkpoint_key,
                  .token_hash = token_hash};
    return store__custom_signal_take_submit(s->batch, &o, ret_payload, reterr);
}

int store_custom_signal_exists(Store *s, const char *instance_key, const char *wait_key,
                               Error *reterr)
{
    assert(instance_key);
    int r = check_nonempty(wait_key, "wait key", reterr);
    if (r < 0)
        return r;
    return s->ops->custom_signal_exists(s, instance_key, wait_key, reterr);
}

void image_record_done(ImageRecord *r)
{
    if (!r)
        return;
    free(r->image_id);
    free(r->tenant_id);
    free(r->name);
    free(r->description);
    free(r->runner_type);
    free(r->labels_json);
    free(r->sha256);
    memset(r, 0, sizeof *r);
}

void image_records_free(ImageRecord *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++)
        image_record_done(&r[i]);
    free(r);
}

void instance_record_done(InstanceRecord *r)
{
    if (!r)
        return;
    free(r->instance_key);
    free(r->instance_id);
    free(r->tenant_id);
    free(r->image_id);
    free(r->termination_reason);
    free(r->input);
    free(r->output);
    free(r->error);
    free(r->env);
    free(r->request_hash);
    free(r->token_hash);
    free(r->checkpoint_id);
    free(r->wait_key);
    free(r->runner);
    free(r->owner);
    memset(r, 0, sizeof *r);
}

void instance_records_free(InstanceRecord *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++)
        instance_record_done(&r[i]);
    free(r);
}

void checkpoint_infos_free(CheckpointInfo *c, size_t n)
{
    for (size_t i = 0; c && i < n; i++)
        free(c[i].key);
    free(c);
}

void event_records_free(EventRecord *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++) {
        free(r[i].instance_key);
        free(r[i].type);
        free(r[i].subtype);
        free(r[i].payload);
    }
    free(r);
}
