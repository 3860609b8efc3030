/* The write operations both backends share (store-ops.h). */
#include "store-ops.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../base/alloc.h"

int store__no_instance(Error *e, const char *id)
{
    return error_set(e, -ENOENT, "instance \"%s\" does not exist", id);
}

int store__launch_over(const char *id, const char *token_hash, Error *e)
{
    if (!token_hash)
        return store__no_instance(e, id);
    return error_set(e, -ESTALE,
                     "instance \"%s\" is no longer running the launch that makes this call; the "
                     "process should exit",
                     id);
}

char *store__like_prefix(const char *p)
{
    size_t n = strlen(p);
    char *out = xmalloc(2 * n + 2), *o = out;
    for (const char *c = p; *c; c++) {
        if (*c == '%' || *c == '_' || *c == '\\')
            *o++ = '\\';
        *o++ = *c;
    }
    *o++ = '%';
    *o = '\0';
    return out;
}

int store__image_insert(StoreBatcher *b, StoreRun run, ImageRecord *rec, Error *e)
{
    ImageInsertOp o = {.op.run = run, .rec = rec};
    int r = store_batch_submit(b, &o.op, e);
    if (r >= 0) {
        rec->version = o.version;
        rec->seq = o.seq;
    }
    return r;
}

int store__image_delete(StoreBatcher *b, StoreRun run, const char *id, const char *tenant, Error *e)
{
    ImageDeleteOp o = {.op.run = run, .id = id, .tenant = tenant};
    return store_batch_submit(b, &o.op, e);
}

int store__instance_insert_minimal(StoreBatcher *b, StoreRun run, const char *id,
                                   const char *tenant, const char *image_id, InstanceStatus status,
                                   Error *e)
{
    InsertMinimalOp o = {
        .op.run = run, .id = id, .tenant = tenant, .image_id = image_id, .status = status};
    return store_batch_submit(b, &o.op, e);
}

static void instance_create_discard(WriteOp *op)
{
    InstanceCreateOp *o = (InstanceCreateOp *)op;
    instance_record_done(&o->existing);
    o->have_existing = false;
}

static void instance_create_visible(WriteOp *op)
{
    InstanceCreateOp *o = (InstanceCreateOp *)op;
    o->visible(o->userdata);
}

int store__instance_create(StoreBatcher *b, StoreRun run, const InstanceRecord *rec,
                           InstanceRecord *ret_existing, StoreVisible_cb visible, void *userdata,
                           Error *e)
{
    InstanceCreateOp o = {.op.run = run,
                          .op.discard = instance_create_discard,
                          .op.visible = visible ? instance_create_visible : NULL,
                          .rec = rec,
                          .want_existing = ret_existing != NULL,
                          .visible = visible,
                          .userdata = userdata};
    int r = store_batch_submit(b, &o.op, e);
    if (o.have_existing) {
        /* -EEXIST comes with the existing row */
        if (r == -EEXIST)
            *ret_existing = o.existing;
        else
            instance_record_done(&o.existing);
    }
    return r;
}

int store__instance_transition(StoreBatcher *b, StoreRun run, const char *id,
                               InstanceStatus from_status, const InstanceUpdate *u, Error *e)
{
    TransitionOp o = {.op.run = run, .id = id, .from_status = from_status, .u = u};
    return store_batch_submit(b, &o.op, e);
}

int store__instance_transitions(StoreBatcher *b, StoreRun run, InstanceTransition *t, size_t n,
                                Error *e)
{
    TransitionsOp o = {.op.run = run, .t = t, .n = n};
    return store_batch_submit(b, &o.op, e);
}

int store__transitions_run(void *conn, TransitionsOp *o, StoreTransitionRun transition,
                           StoreEventRun event, Error *e)
{
    usec_t now = now_usec(CLOCK_REALTIME);
    for (size_t i = 0; i < o->n; i++) {
        InstanceTransition *t = &o->t[i];
        Error one = ERROR_INIT;
        t->result = transition(conn, t->instance_key, t->from_status, t->u, &one);
        /* the event before the change's, the change's, then the one after it (no payload) */
        const char *types[] = {t->first_event, t->event_type, t->then_event},
                   *payloads[] = {t->first_payload, t->event_payload, NULL},
                   *keys[] = {t->first_key, NULL, NULL};
        for (size_t k = 0; k < ELEMENTSOF(types) && t->result == 1; k++)
            if (types[k] && event(conn, t->instance_key, types[k], NULL, payloads[k], keys[k], now,
                                  NULL, &one) < 0)
                t->result = one.code;
        /* a missing instance is that item's answer; anything else loses the transaction */
        if (t->result < 0 && t->result != -ENOENT) {
            int r = error_set(e, t->result, "%s", error_message(&one));
            error_done(&one);
            return r;
        }
        error_done(&one);
    }
    return 0;
}

int store__instance_heartbeat(StoreBatcher *b, StoreRun run, const char *id, const char *token_hash,
                              usec_t now, Error *e)
{
    HeartbeatOp o = {.op.run = run, .id = id, .token_hash = token_hash, .now = now};
    return store_batch_submit(b, &o.op, e);
}

static void purge_discard(WriteOp *op)
{
    PurgeOp *o = (PurgeOp *)op;
    store_refs_free(o->refs, o->n);
    o->refs = NULL;
    o->n = 0;
}

int store__purge(StoreBatcher *b, StoreRun run, usec_t before, unsigned limit, StoreRef **ret,
                 size_t *ret_n, Error *e)
{
    PurgeOp o = {.op.run = run, .op.discard = purge_discard, .before = before, .limit = limit};
    int r = store_batch_submit(b, &o.op, e);
    if (r < 0) {
        purge_discard(&o.op);
        return r;
    }
    *ret = o.refs;
    *ret_n = o.n;
    return 0;
}

static void checkpoint_save_discard(WriteOp *op)
{
    CheckpointSaveOp *o = (CheckpointSaveOp *)op;
    free(o->stored);
    o->stored = NULL;
    o->signal = _SIGNAL_KIND_INVALID;
}

int store__checkpoint_save(StoreBatcher *b, StoreRun run, const char *id, const char *key,
                           const char *token_hash, const void *data, size_t n, void **ret_data,
                           size_t *ret_n, SignalKind *ret_signal, Error *e)
{
    CheckpointSaveOp o = {.op.run = run,
                          .op.discard = checkpoint_save_discard,
                          .id = id,
                          .key = key,
                          .token_hash = token_hash,
                          .data = data,
                          .n = n,
                          .want_stored = ret_data != NULL,
                          .want_signal = ret_signal != NULL,
                          .signal = _SIGNAL_KIND_INVALID};
    int r = store_batch_submit(b, &o.op, e);
    if (r < 0) {
        checkpoint_save_discard(&o.op);
        return r;
    }
    if (r == 1) {
        /* ours is the stored copy */
        if (ret_data) {
            o.stored = xmalloc(n ? n : 1);
            if (n)
                memcpy(o.stored, data, n);
        }
        o.stored_n = n;
    }
    if (ret_data)
        *ret_data = TAKE_PTR(o.stored);
    if (ret_n)
        *ret_n = o.stored_n;
    if (ret_signal)
        *ret_signal = o.signal;
    return r;
}

/* An asynchronous save: the op and the caller's completion, freed after the completion ran. */
typedef struct CheckpointSaveAsync {
    CheckpointSaveOp o;
    StoreCheckpointSaved_cb done;
    void *userdata;
} CheckpointSaveAsync;

static void checkpoint_save_complete(WriteOp *op)
{
    CheckpointSaveAsync *a = (CheckpointSaveAsync *)op;
    CheckpointSaved res = {
        .result = op->result, .signal = _SIGNAL_KIND_INVALID, .error = op->error};
    if (op->result >= 0) {
        res.data = TAKE_PTR(a->o.stored); /* NULL for a new key: the bytes are the caller's */
        res.n = op->result == 1 ? a->o.n : a->o.stored_n;
        res.signal = a->o.signal;
    }
    op->error = (Error)ERROR_INIT;
    a->done(&res, a->userdata);
    free(res.data);
    error_done(&res.error);
    checkpoint_save_discard(op);
    free(a);
}

int store__checkpoint_save_async(StoreBatcher *b, StoreRun run, const char *id, const char *key,
                                 const char *token_hash, const void *data, size_t n,
                                 StoreCheckpointSaved_cb done, void *userdata)
{
    CheckpointSaveAsync *a = xcalloc(1, sizeof *a);
    a->o = (CheckpointSaveOp){.op.run = run,
                              .op.discard = checkpoint_save_discard,
                              .op.complete = checkpoint_save_complete,
                              .id = id,
                              .key = key,
                              .token_hash = token_hash,
                              .data = data,
                              .n = n,
                              .want_stored = true,
                              .want_signal = true,
                              .signal = _SIGNAL_KIND_INVALID};
    a->done = done;
    a->userdata = userdata;
    int r = store_batch_submit_async(b, &a->o.op);
    if (r < 0)
        free(a);
    return r;
}

int store__event_append(StoreBatcher *b, StoreRun run, const char *id, const char *type,
                        const char *subtype, const char *payload, const char *request_key,
                        const char *token_hash, int64_t *ret_id, Error *e)
{
    EventAppendOp o = {.op.run = run,
                       .id = id,
                       .type = type,
                       .subtype = subtype,
                       .payload = payload,
                       .request_key = request_key,
                       .token_hash = token_hash};
    int r = store_batch_submit(b, &o.op, e);
    if (r >= 0 && ret_id)
        *ret_id = o.event_id;
    return r;
}

int store__signal_submit(StoreBatcher *b, SignalOp *o, Error *e)
{
    return store_batch_submit(b, &o->op, e);
}

static void custom_signal_take_discard(WriteOp *op)
{
    SignalOp *o = (SignalOp *)op;
    free(o->taken);
    o->taken = NULL;
}

int store__custom_signal_take_submit(StoreBatcher *b, SignalOp *o, char **ret_payload, Error *e)
{
    o->op.discard = custom_signal_take_discard;
    int r = store_batch_submit(b, &o->op, e);
    if (r > 0 && ret_payload)
        *ret_payload = TAKE_PTR(o->taken);
    free(o->taken);
    return r;
}

int store__daemon_submit(StoreBatcher *b, DaemonOp *o, Error *e)
{
    int r = store_batch_submit(b, &o->op, e);
    return r < 0 ? r : o->renewed;
}

static void adopt_discard(WriteOp *op)
{
    AdoptOp *o = (AdoptOp *)op;
    store_keys_free(o->keys, o->n);
    o->keys = NULL;
    o->n = 0;
}

int store__instance_adopt(StoreBatcher *b, StoreRun run, const char *owner, bool expired_too,
                          unsigned limit, int64_t *after, char ***ret_keys, size_t *ret_n, Error *e)
{
    AdoptOp o = {.op.run = run,
                 .op.discard = adopt_discard,
                 .owner = owner,
                 .expired_too = expired_too,
                 .limit = limit,
                 .after = *after,
                 .last = *after};
    int r = store_batch_submit(b, &o.op, e);
    if (r < 0) {
        adopt_discard(&o.op);
        return r;
    }
    *after = o.last;
    *ret_keys = o.keys;
    *ret_n = o.n;
    return 0;
}
