/* Group commit (store-batch.h). */
#include "store-batch.h"

#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "../base/macro.h"

static void op_forget(WriteOp *op)
{
    if (op->discard)
        op->discard(op);
    error_done(&op->error);
    op->result = 0;
}

/* Whether a batch has an op with a visible hook. */
static bool batch_has_visible(const WriteOp *batch)
{
    for (const WriteOp *op = batch; op; op = op->next)
        if (op->visible)
            return true;
    return false;
}

/* COMMIT the transaction holding the ops from first up to end (exclusive). Then, if it held,
 * the visible hooks of the ops that succeeded, and for an early batch the sync that makes it
 * durable, before any op's caller learns its result. */
static int commit_ops(StoreBatcher *b, WriteOp *first, WriteOp *end, bool early, Error *e)
{
    int r = b->tx->commit(b->conn, e);
    if (r < 0)
        return r;
    for (WriteOp *op = first; op != end; op = op->next)
        if (op->visible && op->result >= 0)
            op->visible(op);
    if (early)
        b->tx->early_sync(b->conn);
    return 0;
}

/* One op in a transaction of its own: the fallback when a batch's transaction is lost. */
static void op_run_alone(StoreBatcher *b, WriteOp *op, bool early)
{
    op->result = b->tx->begin(b->conn, &op->error);
    if (op->result < 0)
        return;
    op->result = op->run(b->conn, op, &op->error);
    if (op->result < 0) {
        b->tx->rollback(b->conn);
        return;
    }
    Error e = ERROR_INIT;
    int r = commit_ops(b, op, op->next, early, &e);
    if (r < 0) {
        b->tx->rollback(b->conn);
        op_forget(op);
        op->result = r;
        op->error = e;
    }
}

/* Run a batch of ops (a list linked by next) in one transaction. An op that fails is rolled
 * back to its savepoint and leaves the others alone. If the transaction itself is lost (an
 * I/O error, a full disk, a failed COMMIT: the backend may roll back everything), every op runs
 * again alone, so each still gets the result of its own write. */
static void batch_run_in(StoreBatcher *b, WriteOp *batch, bool early)
{
    const StoreTxOps *tx = b->tx;
    if (!batch->next) {
        op_run_alone(b, batch, early);
        return;
    }
    Error e = ERROR_INIT;
    int r = tx->run_batch ? tx->run_batch(b->conn, batch) : 1;
    if (r <= 0)
        goto ran;
    r = tx->begin(b->conn, &e);
    if (r < 0) {
        /* the database is locked or failing: each op would fail alike, after as long a wait */
        for (WriteOp *op = batch; op; op = op->next)
            op->result = error_set(&op->error, r, "%s", error_message(&e));
        error_done(&e);
        return;
    }
    for (WriteOp *op = batch; r >= 0 && op; op = op->next) {
        r = tx->savepoint(b->conn, &e);
        if (r < 0)
            break;
        op->result = op->run(b->conn, op, &op->error);
        if (tx->lost && tx->lost(b->conn)) {
            r = -EIO; /* the transaction was rolled back under us */
            break;
        }
        if (op->result < 0)
            r = tx->rollback_to_savepoint(b->conn, &e);
        if (r >= 0)
            r = tx->release_savepoint(b->conn, &e);
    }
ran:
    if (r >= 0 && b->fault_lose_every && ++b->fault_batches % b->fault_lose_every == 0)
        r = -EIO; /* fault injection: as if COMMIT had failed */
    if (r >= 0)
        r = commit_ops(b, batch, NULL, early, &e);
    error_done(&e);
    if (r >= 0)
        return;

    tx->rollback(b->conn);
    for (WriteOp *op = batch; op; op = op->next)
        op_forget(op);
    for (WriteOp *op = batch; op; op = op->next)
        op_run_alone(b, op, early);
}

static void batch_run(StoreBatcher *b, WriteOp *batch)
{
    bool early = b->tx->early_begin && batch_has_visible(batch) && b->tx->early_begin(b->conn);
    batch_run_in(b, batch, early);
    if (early)
        b->tx->early_end(b->conn);
}

/* Lead one batch: called with queue_lock held, no batch running and something queued; returns
 * with queue_lock held. self is the caller's own synchronous op (NULL for an asynchronous
 * submitter or the batcher's thread). Afterwards the leadership passes on, unless the caller
 * will lead again itself (the thread, or a caller whose own op is still queued): to the oldest
 * queued op's thread, or to the batcher's thread if that op is asynchronous. */
static void lead_batch(StoreBatcher *b, WriteOp *self, bool thread)
{
    b->writing = true;
    WriteOp *batch = b->queue, **cut = &b->queue;
    for (unsigned n = 0; *cut && n < STORE_BATCH_MAX; n++)
        cut = &(*cut)->next;
    b->queue = *cut;
    if (!b->queue)
        b->queue_tail = &b->queue;
    *cut = NULL;
    pthread_mutex_unlock(&b->queue_lock);

    pthread_mutex_lock(b->conn_lock);
    batch_run(b, batch);
    pthread_mutex_unlock(b->conn_lock);

    WriteOp *async = NULL, **async_tail = &async;
    unsigned n_async = 0;
    pthread_mutex_lock(&b->queue_lock);
    for (WriteOp *o = batch, *next; o; o = next) {
        next = o->next;
        if (o->complete) {
            o->next = NULL;
            *async_tail = o;
            async_tail = &o->next;
            n_async++;
            continue;
        }
        o->done = true;
        if (o != self)
            pthread_cond_signal(&o->wake);
    }
    b->writing = false;
    if (b->queue && !thread && (!self || self->done)) {
        if (b->queue->complete)
            pthread_cond_signal(&b->thread_wake);
        else
            pthread_cond_signal(&b->queue->wake);
    }
    if (!async)
        return;
    /* Completions run without the lock, so the next batch can begin meanwhile; each may free
     * its op, so the next one is read first. */
    pthread_mutex_unlock(&b->queue_lock);
    for (WriteOp *o = async, *next; o; o = next) {
        next = o->next;
        o->complete(o);
    }
    pthread_mutex_lock(&b->queue_lock);
    b->async_pending -= n_async;
    if (b->async_pending == 0)
        pthread_cond_broadcast(&b->idle);
}

int store_batch_submit(StoreBatcher *b, WriteOp *op, Error *e)
{
    op->next = NULL;
    op->done = false;
    op->complete = NULL;
    pthread_cond_init(&op->wake, NULL);

    pthread_mutex_lock(&b->queue_lock);
    *b->queue_tail = op;
    b->queue_tail = &op->next;
    while (!op->done) {
        if (b->writing)
            pthread_cond_wait(&op->wake, &b->queue_lock);
        else
            lead_batch(b, op, false);
    }
    pthread_mutex_unlock(&b->queue_lock);
    pthread_cond_destroy(&op->wake);

    if (op->result < 0 && e) {
        error_done(e);
        *e = op->error;
    } else
        error_done(&op->error);
    return op->result;
}

int store_batch_submit_async(StoreBatcher *b, WriteOp *op)
{
    assert(op->complete);
    op->next = NULL;
    op->done = false;
    pthread_mutex_lock(&b->queue_lock);
    if (b->async_closed) {
        pthread_mutex_unlock(&b->queue_lock);
        return -ESHUTDOWN;
    }
    b->async_pending++;
    *b->queue_tail = op;
    b->queue_tail = &op->next;
    if (!b->writing)
        lead_batch(b, NULL, false);
    pthread_mutex_unlock(&b->queue_lock);
    return 0;
}

/* The batcher's thread: leads whenever it finds something queued and no batch running; it is
 * woken when a batch ends with an asynchronous op first in line, and at close. */
static void *thread_main(void *arg)
{
    StoreBatcher *b = arg;
    pthread_mutex_lock(&b->queue_lock);
    for (;;) {
        if (b->queue && !b->writing)
            lead_batch(b, NULL, true);
        else if (b->thread_stop && !b->queue)
            break;
        else
            pthread_cond_wait(&b->thread_wake, &b->queue_lock);
    }
    pthread_mutex_unlock(&b->queue_lock);
    return NULL;
}

int store_batch_init(StoreBatcher *b, const StoreTxOps *tx, void *conn, pthread_mutex_t *conn_lock,
                     Error *e)
{
    unsigned lose = b->fault_lose_every; /* set by the backend before, if at all */
    *b = (StoreBatcher){.tx = tx, .conn = conn, .conn_lock = conn_lock, .fault_lose_every = lose};
    b->queue_tail = &b->queue;
    pthread_mutex_init(&b->queue_lock, NULL);
    pthread_cond_init(&b->thread_wake, NULL);
    pthread_cond_init(&b->idle, NULL);
    int r = -pthread_create(&b->thread, NULL, thread_main, b);
    if (r < 0)
        return error_set(e, r, "could not start the store's writer thread: %s", strerror(-r));
    (void)pthread_setname_np(b->thread, "store-writer");
    b->thread_started = true;
    return 0;
}

void store_batch_quiesce(StoreBatcher *b)
{
    pthread_mutex_lock(&b->queue_lock);
    b->async_closed = true;
    while (b->async_pending > 0)
        pthread_cond_wait(&b->idle, &b->queue_lock);
    pthread_mutex_unlock(&b->queue_lock);
}

void store_batch_done(StoreBatcher *b)
{
    if (!b->tx)
        return; /* never set up */
    if (b->thread_started) {
        /* no asynchronous op may outlive the store; the thread leaves with none queued */
        store_batch_quiesce(b);
        pthread_mutex_lock(&b->queue_lock);
        b->thread_stop = true;
        pthread_cond_signal(&b->thread_wake);
        pthread_mutex_unlock(&b->queue_lock);
        pthread_join(b->thread, NULL);
        ASSERT_SE(!b->queue && !b->writing);
    }
    pthread_mutex_destroy(&b->queue_lock);
    pthread_cond_destroy(&b->thread_wake);
    pthread_cond_destroy(&b->idle);
    b->tx = NULL;
}
