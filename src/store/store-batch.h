/* Group commit, for every backend: the writes of concurrent threads share one transaction and one
 * COMMIT (the design is in README.md, "Group commit").
 *
 * Every write is a WriteOp queued on the batcher. The first thread to find no batch running
 * becomes the leader: it takes what is queued (its own op among it), runs the ops on the writer
 * connection in one transaction, each inside its own savepoint, commits once and wakes each
 * waiter with its own result; then the next queued thread, if any, leads the next batch. A lone
 * write runs at once: nothing waits for company. Each caller returns only after the COMMIT that
 * holds its write, and the backend's COMMIT is durable when it returns.
 *
 * An asynchronous op (store_batch_submit_async) has no waiting thread: the leader of its batch
 * calls its completion after the COMMIT. Its submitter leads at once if no batch is running (a
 * lone save costs no thread hand-off), and otherwise returns at once. When a batch ends and the
 * oldest op still queued is asynchronous, the batcher's thread leads the next batch, and it keeps
 * leading while anything is queued; a caller thread never leads for writes that are not its own
 * beyond its one batch (it would hold an HTTP thread and the connections on it).
 *
 * What a backend gives: its writer connection (an opaque pointer handed to each op's run), the
 * mutex that guards it, and the transaction statements (StoreTxOps). */
#pragma once

#include <pthread.h>
#include <stdbool.h>

#include "../base/error.h"

/* The most ops one transaction takes; the rest lead the next batch. */
#define STORE_BATCH_MAX 256

typedef struct WriteOp WriteOp;
struct WriteOp {
    /* Perform the write on the writer connection (conn: the backend's), inside a transaction
     * (and savepoint) the batch owns, never beginning or ending one itself. Returns the call's
     * result (negative: the op's changes are rolled back); outputs go into the op. */
    int (*run)(void *conn, WriteOp *op, Error *e);
    /* Free the outputs of a run whose transaction was lost, before the op runs again; or NULL. */
    void (*discard)(WriteOp *op);
    /* Asynchronous ops: called by the batch's leader after the COMMIT (or the lost batch's
     * re-run), without the batcher's locks; it owns the op from then on (result and error in
     * it). NULL for a synchronous op, whose thread waits on wake. */
    void (*complete)(WriteOp *op);
    /* Called by the batch's leader once the op's write is visible to readers, in the order of
     * StoreTxOps.early_sync; only when the op succeeded. For work that needs the write and ends
     * with the machine anyway; it must not write to the store (the writer is held), reads see
     * the write. NULL for most ops. */
    void (*visible)(WriteOp *op);
    int result;
    Error error;
    bool done;
    pthread_cond_t wake;
    WriteOp *next;
};

/* The transaction statements of a backend, on its writer connection; each returns 0 or -errno
 * with a message in e (e may be NULL). */
typedef struct StoreTxOps {
    int (*begin)(void *conn, Error *e);
    int (*savepoint)(void *conn, Error *e);
    int (*rollback_to_savepoint)(void *conn, Error *e);
    int (*release_savepoint)(void *conn, Error *e);
    int (*commit)(void *conn, Error *e);
    void (*rollback)(void *conn);
    /* Whether the open transaction was rolled back under the ops (NULL: never). */
    bool (*lost)(void *conn);
    /* Optional, for a backend that can make a commit visible before it is durable (SQLite's
     * synchronous=NORMAL): early_begin(conn) before the transaction of a batch with a visible
     * hook returns whether it switched; then the hooks run after COMMIT, early_sync() makes the
     * commit durable before any caller learns its result (it must not fail: abort instead), and
     * early_end() switches back after the batch. NULL: the visible hooks run after a durable
     * COMMIT. */
    bool (*early_begin)(void *conn);
    void (*early_sync)(void *conn);
    void (*early_end)(void *conn);
    /* Optional, for a backend that can send a batch's writes without waiting for each
     * (PostgreSQL's pipeline): begin the transaction and run every op of batch its own way,
     * each op's result and error in it. 0: done, the transaction holds them all (the batcher
     * commits); > 0: not for this batch (nothing was sent; the batcher runs it the usual way);
     * < 0: something failed that only running each op alone can sort out (the batcher rolls
     * back and does). NULL: always the usual way. */
    int (*run_batch)(void *conn, WriteOp *batch);
} StoreTxOps;

typedef struct StoreBatcher {
    const StoreTxOps *tx;
    void *conn;                 /* the writer connection, for the leader of a batch */
    pthread_mutex_t *conn_lock; /* held by the leader while it runs a batch */
    pthread_mutex_t queue_lock; /* guards everything down to thread_stop */
    WriteOp *queue;             /* writes waiting for the next batch, oldest first */
    WriteOp **queue_tail;
    bool writing;     /* a leader is running a batch */
    pthread_t thread; /* leads batches that begin with an asynchronous op */
    bool thread_started;
    pthread_cond_t thread_wake; /* the thread waits here for work */
    pthread_cond_t idle;        /* quiesce waits here for async_pending to reach 0 */
    unsigned async_pending;     /* asynchronous ops accepted, completion not returned */
    bool async_closed;          /* quiesce ran: asynchronous submissions are refused */
    bool thread_stop;           /* closing: the thread exits once nothing is queued */
    unsigned fault_lose_every;  /* fault injection: lose every Nth batch (0: never) */
    unsigned fault_batches;
} StoreBatcher;

/** Set up b for the writer connection conn (guarded by conn_lock) and start its thread. */
int store_batch_init(StoreBatcher *b, const StoreTxOps *tx, void *conn, pthread_mutex_t *conn_lock,
                     Error *e);
/** Refuse asynchronous submissions from now on and wait for the completions of those accepted. */
void store_batch_quiesce(StoreBatcher *b);
/** Quiesce, stop the thread and free what b holds (not the connection). Safe on a zeroed b. */
void store_batch_done(StoreBatcher *b);

/** Queue op, lead or wait until it is durable, and return its result (its error into e). */
int store_batch_submit(StoreBatcher *b, WriteOp *op, Error *e);
/** Queue op with its completion (op->complete, set by the caller) and return 0; the completion
 *  runs once, after the COMMIT holding the op, possibly before this returns (then on this
 *  thread). -ESHUTDOWN once quiesced: then the completion is never called. */
int store_batch_submit_async(StoreBatcher *b, WriteOp *op);
