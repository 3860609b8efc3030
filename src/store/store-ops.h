/* The write operations both backends run through the batcher (store-batch.h): their arguments and
 * results, and everything about submitting them that is not SQL. A backend gives each op's run
 * function (its statements on its writer connection); the shared code here builds the op, submits
 * it, and hands its results back as store.h promises: stored bytes copied for a new key, the
 * existing row with -EEXIST, completions of asynchronous saves, purge lists. */
#pragma once

#include "store-batch.h"
#include "store.h"

typedef int (*StoreRun)(void *conn, WriteOp *op, Error *e);

typedef struct ImageInsertOp {
    WriteOp op;
    const ImageRecord *rec;
    int64_t version, seq; /* out */
} ImageInsertOp;

typedef struct ImageDeleteOp {
    WriteOp op;
    const char *id, *tenant;
} ImageDeleteOp;

typedef struct InsertMinimalOp {
    WriteOp op;
    const char *id, *tenant, *image_id;
    InstanceStatus status;
} InsertMinimalOp;

typedef struct InstanceCreateOp {
    WriteOp op;
    const InstanceRecord *rec;
    bool want_existing, have_existing;
    InstanceRecord existing; /* out, with -EEXIST when wanted */
    StoreVisible_cb visible;
    void *userdata;
} InstanceCreateOp;

typedef struct TransitionOp {
    WriteOp op;
    const char *id;
    InstanceStatus from_status;
    const InstanceUpdate *u;
} TransitionOp;

typedef struct TransitionsOp {
    WriteOp op;
    InstanceTransition *t;
    size_t n;
} TransitionsOp;

/* A backend's statements on its writer connection conn, for the loops that are the same in both:
 * one transition (1 applied, 0 not in from_status, -ENOENT no such instance), and one event (1
 * recorded, 0 request_key recorded before). */
typedef int (*StoreTransitionRun)(void *conn, const char *id, InstanceStatus from_status,
                                  const InstanceUpdate *u, Error *e);
typedef int (*StoreEventRun)(void *conn, const char *id, const char *type, const char *subtype,
                             const char *payload, const char *request_key, usec_t now,
                             int64_t *ret_id, Error *e);

/** A TransitionsOp's run over a backend's transition and event statements: each item's
 *  transition and, when it applies, its first event, the change's event and its then-event, in
 *  that order. A missing instance is that item's answer (-ENOENT); any other failure fails the
 *  op, and with it the transaction. */
int store__transitions_run(void *conn, TransitionsOp *o, StoreTransitionRun transition,
                           StoreEventRun event, Error *e);

typedef struct HeartbeatOp {
    WriteOp op;
    const char *id, *token_hash;
    usec_t now;
} HeartbeatOp;

typedef struct PurgeOp {
    WriteOp op;
    usec_t before;
    unsigned limit;
    StoreRef *refs; /* out: the rows deleted */
    size_t n;
} PurgeOp;

typedef struct CheckpointSaveOp {
    WriteOp op;
    const char *id, *key, *token_hash;
    const void *data;
    size_t n;
    bool want_stored, want_signal;
    void *stored; /* out: the bytes already stored (result 0), when wanted */
    size_t stored_n;
    SignalKind signal; /* out: the pending control signal, when wanted; _SIGNAL_KIND_INVALID */
} CheckpointSaveOp;

typedef struct EventAppendOp {
    WriteOp op;
    const char *id, *type, *subtype, *payload, *request_key, *token_hash;
    int64_t event_id; /* out */
} EventAppendOp;

typedef struct SignalOp {
    WriteOp op;
    const char *id, *payload;
    SignalKind kind;                         /* control signals' */
    const char *wait_key;                    /* custom signals' */
    const char *checkpoint_key, *token_hash; /* custom_signal_deliver's */
    char *taken;                             /* out: custom_signal_take's payload */
} SignalOp;

typedef struct DaemonOp {
    WriteOp op;
    const char *id, *host;
    int pid;
    usec_t lease;
    bool renewed; /* out: daemon_renew_run found the row */
} DaemonOp;

typedef struct AdoptOp {
    WriteOp op;
    const char *owner;
    bool expired_too;
    unsigned limit;
    int64_t after; /* the seq to start after */
    int64_t last;  /* out: the seq of the last row taken (after, if none); set by each run */
    char **keys;   /* out: the instances taken over */
    size_t n;
} AdoptOp;

/* The messages both backends give. */
int store__no_instance(Error *e, const char *id);
/** -ESTALE for a call of a launch that is over (token_hash given), or -ENOENT (none given). */
int store__launch_over(const char *id, const char *token_hash, Error *e);
/** A LIKE pattern matching names that start with p literally (ESCAPE '\'). */
char *store__like_prefix(const char *p);

/* Submitting, with each backend's run function for the op. */
int store__image_insert(StoreBatcher *b, StoreRun run, ImageRecord *rec, Error *e);
int store__image_delete(StoreBatcher *b, StoreRun run, const char *id, const char *tenant,
                        Error *e);
int store__instance_insert_minimal(StoreBatcher *b, StoreRun run, const char *id,
                                   const char *tenant, const char *image_id, InstanceStatus status,
                                   Error *e);
int store__instance_create(StoreBatcher *b, StoreRun run, const InstanceRecord *rec,
                           InstanceRecord *ret_existing, StoreVisible_cb visible, void *userdata,
                           Error *e);
int store__instance_transition(StoreBatcher *b, StoreRun run, const char *id,
                               InstanceStatus from_status, const InstanceUpdate *u, Error *e);
int store__instance_transitions(StoreBatcher *b, StoreRun run, InstanceTransition *t, size_t n,
                                Error *e);
int store__instance_heartbeat(StoreBatcher *b, StoreRun run, const char *id, const char *token_hash,
                              usec_t now, Error *e);
int store__purge(StoreBatcher *b, StoreRun run, usec_t before, unsigned limit, StoreRef **ret,
                 size_t *ret_n, Error *e);
int store__checkpoint_save(StoreBatcher *b, StoreRun run, const char *id, const char *key,
                           const char *token_hash, const void *data, size_t n, void **ret_data,
                           size_t *ret_n, SignalKind *ret_signal, Error *e);
int store__checkpoint_save_async(StoreBatcher *b, StoreRun run, const char *id, const char *key,
                                 const char *token_hash, const void *data, size_t n,
                                 StoreCheckpointSaved_cb done, void *userdata);
int store__event_append(StoreBatcher *b, StoreRun run, const char *id, const char *type,
                        const char *subtype, const char *payload, const char *request_key,
                        const char *token_hash, int64_t *ret_id, Error *e);
/** A daemon's registration, renewal or removal: the op's result (renewal: whether it was). */
int store__daemon_submit(StoreBatcher *b, DaemonOp *o, Error *e);
int store__instance_adopt(StoreBatcher *b, StoreRun run, const char *owner, bool expired_too,
                          unsigned limit, int64_t *after, char ***ret_keys, size_t *ret_n,
                          Error *e);
/** A control or custom signal write (o->op.run set by the caller): its result. */
int store__signal_submit(StoreBatcher *b, SignalOp *o, Error *e);
/** A custom signal take or delivery (o->op.run set): its result, the payload into *ret_payload. */
int store__custom_signal_take_submit(StoreBatcher *b, SignalOp *o, char **ret_payload, Error *e);
