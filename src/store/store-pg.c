/* The PostgreSQL backend (libpq). One writer connection, on which concurrent writes are grouped
 * into one transaction and one COMMIT by the batcher of store-batch.h (each op in its own
 * savepoint, as on SQLite), and a small pool of read connections. Statements are sent with
 * their parameters apart (PQsendQueryParams: values are never formatted into SQL); times cross as
 * epoch microseconds and are converted in SQL (TS(), US()), exactly; checkpoint bytes travel
 * as binary. A connection found broken is reset before its next use.
 *
 * Migrations are migrations/postgres/NNN_name.sql, embedded at build time, applied in order,
 * each in its own transaction, and recorded in schema_migrations; several daemons starting at
 * once take turns on a session advisory lock, so each migration runs once. */
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "../base/alloc.h"
#include "../base/fileio.h"
#include "../base/log.h"
#include "../base/strbuf.h"
#include "store-batch.h"
#include "store-ops.h"
#include "store-internal.h"

/* Read connections in the pool, as SQLite's (store-sqlite.c). */
#define PG_READERS 4

/* An epoch-microsecond parameter as timestamptz, and a timestamptz column as one. */
#define TS(param) "(timestamptz 'epoch' + (" param ")::bigint * interval '1 microsecond')"
#define US(col) "(extract(epoch from " col ") * 1000000)::bigint"

/* The advisory lock key of schema migrations: "runtara" in ASCII. */
#define PG_MIGRATION_LOCK "31084215016812897"
/* The transaction advisory lock of takeovers (store_instance_adopt()): daemons take turns, so an
 * instance goes to one ("runtara!" in ASCII). */
#define PG_ADOPT_LOCK "8248819136549626401"

static void clearp(PGresult **r)
{
    PQclear(*r);
}
#define _cleanup_result_ _cleanup_(clearp)

/* The server's or libpq's message, first line, for e. */
static const char *pg_message(PGconn *c, const PGresult *res)
{
    const char *m = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    return m ? m : PQerrorMessage(c);
}

static int pg_fail(PGconn *c, const PGresult *res, Error *e, const char *what)
{
    const char *m = pg_message(c, res);
    return error_set(e, -EIO, "could not %s: %.*s", what, (int)strcspn(m, "\n"), m);
}

/* Run sql (no parameters, any number of statements); 0 or -EIO with the server's message. */
static int pg_exec(PGconn *c, const char *sql, Error *e, const char *what)
{
    _cleanup_result_ PGresult *res = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        return pg_fail(c, res, e, what);
    return 0;
}

static int pg_query_int(PGconn *c, const char *sql, int *ret, Error *e, const char *what)
{
    _cleanup_result_ PGresult *res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        return pg_fail(c, res, e, what);
    *ret = atoi(PQgetvalue(res, 0, 0));
    return 0;
}

static int pg_record(PGconn *c, const StoreMigration *m, Error *e)
{
    char version[16];
    snprintf(version, sizeof version, "%d", m->version);
    const char *params[] = {version, m->name};
    _cleanup_result_ PGresult *res =
        PQexecParams(c, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2, NULL,
                     params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        return pg_fail(c, res, e, "record a migration");
    return 0;
}

/* Apply what is missing, under the migration lock; returns the schema version. */
static int pg_migrate_locked(PGconn *c, Error *e)
{
    int r = pg_exec(c,
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())",
                    e, "create the migration table");
    int current = 0;
    if (r >= 0)
        r = pg_query_int(c, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &current, e,
                         "read the schema version");
    if (r < 0)
        return r;
    int latest = (int)store__pg_migrations_n;
    if (current > latest)
        return error_set(e, -EPROTO,
                         "database schema version %d is newer than this binary supports (%d); "
                         "upgrade runtara-environment or use another database",
                         current, latest);
    for (size_t i = (size_t)current; i < store__pg_migrations_n; i++) {
        const StoreMigration *m = &store__pg_migrations[i];
        r = pg_exec(c, "BEGIN", e, "begin a migration");
        if (r >= 0)
            r = pg_exec(c, m->sql, e, "apply a migration");
        if (r >= 0)
            r = pg_record(c, m, e);
        if (r >= 0)
            r = pg_exec(c, "COMMIT", e, "commit a migration");
        if (r < 0) {
            PQclear(PQexec(c, "ROLLBACK"));
            return error_prefix(e, "migration %03d_%s", m->version, m->name);
        }
    }
    return latest;
}

int store__pg_connect(const char *conninfo, PGconn **ret, Error *e)
{
    /* Defaults before the user's string (expand_dbname: its settings come later and win): a
     * bounded connect, so an unreachable server is an error in seconds, not a hang; over TCP, a
     * server that vanished (its machine died, the network dropped it) found out in about 15 s
     * by keepalives and the kernel's own timeout, where a statement waiting on it would wait
     * for the kernel's retransmissions (about 15 minutes); quiet notices and UTC for the
     * session, kept across PQreset(). */
    static const char *const keys[] = {
        "connect_timeout",  "keepalives_idle",  "keepalives_interval",
        "keepalives_count", "tcp_user_timeout", "application_name",
        "options",          "dbname",           NULL};
    const char *const values[] = {"10",
                                  "5",
                                  "2",
                                  "3",
                                  "15000",
                                  "runtara-environment",
                                  "-c client_min_messages=warning -c timezone=UTC "
                                  "-c plan_cache_mode=force_custom_plan",
                                  conninfo,
                                  NULL};
    PGconn *c = PQconnectdbParams(keys, values, 1);
    if (!c)
        return error_set(e, -ENOMEM, "could not connect to PostgreSQL: out of memory");
    if (PQstatus(c) != CONNECTION_OK) {
        const char *m = PQerrorMessage(c);
        /* libpq's message names the server and why, never the password */
        int r = error_set(e, -ECONNREFUSED,
                          "could not connect to PostgreSQL: %.*s; hint: check "
                          "RUNTARA_DATABASE_URL and that the server accepts connections",
                          (int)strcspn(m, "\n"), m);
        PQfinish(c);
        return r;
    }
    *ret = c;
    return 0;
}

int store__pg_migrate(const char *conninfo, StoreInfo *ret, Error *e)
{
    PGconn *c = NULL;
    int r = store__pg_connect(conninfo, &c, e);
    if (r < 0)
        return r;
    /* serializes the daemons that start at once: the first migrates, the others find it done */
    r = pg_exec(c,
                "SET client_min_messages = warning; SELECT pg_advisory_lock(" PG_MIGRATION_LOCK ")",
                e, "take the migration lock");
    if (r >= 0) {
        r = pg_migrate_locked(c, e);
        (void)pg_exec(c, "SELECT pg_advisory_unlock(" PG_MIGRATION_LOCK ")", NULL, "unlock");
    }
    PQfinish(c);
    if (r < 0)
        return r;
    *ret = (StoreInfo){
        .backend = "postgres", .schema_version = r, .schema_latest = (int)store__pg_migrations_n};
    return 0;
}

/* ---- Connections ---- */

/* Prepared statements kept per connection: more than the SQL texts of this file. */
#define PG_STMT_CACHE 96

/* Whether the server answers, shared by the store's connections (pg_watch_run()). */
typedef struct PgWatch {
    /* a round trip outlived the deadline: the server is taken for hung, and every call fails at
     * once, without a round trip or a connect, until a probe gets an answer again */
    atomic_bool hung;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* hung was set, or stopping */
    bool stopping;
    bool started;
    pthread_t thread;
    struct PgConn *probe; /* the prober's own connection */
} PgWatch;

typedef struct PgConn {
    pthread_mutex_t lock;
    PGconn *pg;
    /* the statements prepared on this connection (named "s<index>"), keyed by the address of
     * their SQL text, a string literal; forgotten when the connection is reset */
    size_t n_prepared;
    const char *prepared[PG_STMT_CACHE];
    const char *conninfo; /* the store's */
    /* the batch's savepoint statements, deferred to go in one pipeline with the op's first
     * statement (pipelined()) */
    bool pending_savepoint, pending_release;
    _Atomic(usec_t) retry_at; /* reconnecting (conn_ensure); read unlocked by reader_get() */
    usec_t backoff;
    /* given up on: a round trip outlived the deadline (conn_await()). Its query may still be
     * running, so nothing more is sent on it before it is reset. */
    bool hung;
    const usec_t *timeout; /* the store's deadline of one round trip (store_set_timeout()) */
    usec_t session_for;    /* the deadline its session's time limits are for (conn_session()) */
    PgWatch *watch;
} PgConn;

typedef struct PgStore {
    Store base;
    char *conninfo;
    PgConn writer; /* used by the leader of the running batch only */
    PgConn readers[PG_READERS];
    PgConn probe; /* PgWatch's */
    PgWatch watch;
    atomic_uint next_reader;
    StoreBatcher batch;
    int schema_version;
} PgStore;

#define PG(st) ((PgStore *)(st))

static void conn_unlockp(PgConn **c)
{
    if (*c)
        pthread_mutex_unlock(&(*c)->lock);
}

/* Whether c waits out its reconnect backoff: a statement on it would fail at once. Read without
 * c's lock, as a hint. */
static bool conn_backing_off(const PgConn *c)
{
    usec_t at = c->retry_at;
    return at && now_usec(CLOCK_MONOTONIC) < at;
}

/* A free read connection, one not backing off first: once the server is back, a read goes to a
 * connection that has reconnected rather than failing on one that waits to. */
static PgConn *reader_get(PgStore *s)
{
    unsigned start = atomic_fetch_add_explicit(&s->next_reader, 1, memory_order_relaxed);
    for (int pass = 0; pass < 2; pass++)
        for (unsigned i = 0; i < PG_READERS; i++) {
            PgConn *c = &s->readers[(start + i) % PG_READERS];
            if ((pass == 1 || !conn_backing_off(c)) && pthread_mutex_trylock(&c->lock) == 0)
                return c;
        }
    PgConn *c = &s->readers[start % PG_READERS];
    pthread_mutex_lock(&c->lock);
    return c;
}

#define READER(s, c) _cleanup_(conn_unlockp) PgConn *c = reader_get(s)

/* The errno of a failed statement, from its SQLSTATE: a missing parent row -ENOENT, a unique
 * violation -EEXIST, a value the schema refuses (check, not null, bad JSON or enum text)
 * -EINVAL, a full disk -ENOSPC, a value too large -EFBIG, a lost connection -ECONNRESET. */
static int pg_code(PGconn *pg, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!state || PQstatus(pg) == CONNECTION_BAD || strncmp(state, "08", 2) == 0 ||
        strncmp(state, "57P", 3) == 0)
        return -ECONNRESET;
    if (strcmp(state, "55P03") == 0 || strcmp(state, "25P03") == 0)
        return -ETIMEDOUT; /* lock_timeout, idle_in_transaction_session_timeout: conn_session() */
    if (strcmp(state, "23503") == 0)
        return -ENOENT;
    if (strcmp(state, "23505") == 0)
        return -EEXIST;
    if (strncmp(state, "23", 2) == 0 || strncmp(state, "22", 2) == 0)
        return -EINVAL;
    if (strcmp(state, "53100") == 0)
        return -ENOSPC;
    if (strncmp(state, "54", 2) == 0)
        return -EFBIG;
    return -EIO;
}

static bool server_hung(const PgConn *c)
{
    return c->watch && atomic_load_explicit(&c->watch->hung, memory_order_relaxed);
}

static int pg_error(PgConn *c, const PGresult *res, Error *e, const char *what)
{
    if (c->hung || server_hung(c))
        return error_set(e, -ETIMEDOUT,
                         "could not %s: PostgreSQL did not answer within %llu ms, and calls fail "
                         "at once until it answers again; hint: check the server's load and the "
                         "network to it (RUNTARA_DATABASE_TIMEOUT_SECS sets the deadline)",
                         what, (unsigned long long)(*c->timeout / USEC_PER_MSEC));
    const char *m = pg_message(c->pg, res);
    int r = pg_code(c->pg, res);
    if (r == -ETIMEDOUT)
        return error_set(e, r,
                         "could not %s: %.*s; hint: another session held what it needed and did "
                         "not go on (a daemon stopped in the middle of a transaction); the server "
                         "ends such a session after RUNTARA_DATABASE_TIMEOUT_SECS, so retry",
                         what, (int)strcspn(m, "\n"), m);
    return error_set(e, r, "could not %s: %.*s", what, (int)strcspn(m, "\n"), m);
}

/* ---- Round trips with a deadline ----
 *
 * libpq's blocking calls wait as long as the server takes, and a server that hangs (its process
 * stopped, its machine frozen, a unix socket whose peer stopped reading) would hang the thread
 * that called, the daemon's event loop included: keepalives and tcp_user_timeout find out only
 * about a peer that is gone, never one that is alive and silent. So every round trip here is
 * sent in non-blocking mode and waited for with poll(), for at most the store's deadline
 * (store_set_timeout(), RUNTARA_DATABASE_TIMEOUT_SECS). Past it the connection is given up
 * (hung): the statement fails as unavailable (-ETIMEDOUT, answered 503), and so does every
 * statement on it until it is reset after the backoff below. A COMMIT given up on is not
 * acknowledged: whether it applied or not, the caller retries, as after a broken connection. */

/* How often a round trip in flight looks whether another connection found the server hung. */
#define PG_HUNG_CHECK_MS 100

/* Wait until c's socket is ready for events, at most until (CLOCK_MONOTONIC); false if the time
 * ran out first, or if another connection of the store found the server hung meanwhile: a round
 * trip in flight then gives up too, instead of holding its connection (and whoever waits for
 * it) for the rest of its own deadline. */
static bool conn_poll(PgConn *c, short events, usec_t until)
{
    for (;;) {
        usec_t now = now_usec(CLOCK_MONOTONIC);
        if (now >= until)
            return false;
        struct pollfd p = {.fd = PQsocket(c->pg), .events = events};
        if (p.fd < 0)
            return true; /* no socket: libpq says why at its next call */
        int ms = (int)((until - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC);
        int k = poll(&p, 1, c->watch ? MIN(ms, PG_HUNG_CHECK_MS) : ms);
        if (k > 0 || (k < 0 && errno != EINTR))
            return true;
        if (k == 0 && server_hung(c))
            return false;
    }
}

static usec_t conn_deadline(const PgConn *c)
{
    return now_usec(CLOCK_MONOTONIC) + *c->timeout;
}

/* The first wait before reconnecting a broken connection, and the longest. */
#define PG_RECONNECT_FIRST (100 * USEC_PER_MSEC)
#define PG_RECONNECT_MAX (5 * USEC_PER_SEC)

/* Wait before the next try to reconnect c: 100 ms, doubling to 5 s. Returns whether this is the
 * first failure since c last worked. */
static bool conn_back_off(PgConn *c)
{
    c->backoff = c->backoff ? c->backoff * 2 : PG_RECONNECT_FIRST;
    if (c->backoff > PG_RECONNECT_MAX)
        c->backoff = PG_RECONNECT_MAX;
    c->retry_at = now_usec(CLOCK_MONOTONIC) + c->backoff;
    return c->backoff == PG_RECONNECT_FIRST;
}

static void watch_hung(PgWatch *w);

static bool conn_give_up(PgConn *c)
{
    c->hung = true;
    (void)conn_back_off(c);
    if (c->watch)
        watch_hung(c->watch);
    return false;
}

/* Send what libpq holds for c, then wait until a whole result is in: true when PQgetResult()
 * will not block, false if until passed first (c is given up). A broken connection returns true:
 * PQgetResult() says so. */
static bool conn_await(PgConn *c, usec_t until)
{
    if (c->hung)
        return false;
    int f;
    while ((f = PQflush(c->pg)) == 1) {
        if (!conn_poll(c, POLLIN | POLLOUT, until))
            return conn_give_up(c);
        if (!PQconsumeInput(c->pg))
            return true;
    }
    if (f < 0)
        return true;
    while (PQisBusy(c->pg)) {
        if (!conn_poll(c, POLLIN, until))
            return conn_give_up(c);
        if (!PQconsumeInput(c->pg))
            return true;
    }
    return true;
}

/* The next result on c: NULL at the end of a query's results, on a broken connection, or on a
 * hung one (then c->hung). */
static PGresult *conn_result(PgConn *c, usec_t until)
{
    return conn_await(c, until) ? PQgetResult(c->pg) : NULL;
}

/* What PQexec() and its kin return, for a query just sent (sent: whether it could be): its last
 * result; NULL if the connection broke or hung. */
static PGresult *conn_last_result(PgConn *c, bool sent)
{
    if (!sent)
        return NULL;
    usec_t until = conn_deadline(c);
    PGresult *last = NULL;
    for (PGresult *res; (res = conn_result(c, until));) {
        PQclear(last);
        last = res;
    }
    if (c->hung) {
        PQclear(last);
        return NULL;
    }
    return last;
}

static PGresult *conn_exec(PgConn *c, const char *sql)
{
    return conn_last_result(c, PQsendQuery(c->pg, sql));
}

/* Reset c within the deadline (PQresetStart() and PQresetPoll(): libpq applies no
 * connect_timeout to a connection polled this way). */
static bool conn_reset(PgConn *c)
{
    usec_t until = conn_deadline(c);
    if (!PQresetStart(c->pg))
        return false;
    for (PostgresPollingStatusType st = PGRES_POLLING_WRITING;;) {
        if (st == PGRES_POLLING_OK)
            return PQsetnonblocking(c->pg, 1) == 0;
        if (st == PGRES_POLLING_FAILED ||
            !conn_poll(c, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, until))
            return false;
        st = PQresetPoll(c->pg);
    }
}

/* Reset c if it was found broken or given up on, at
 * most once per backoff (100 ms doubling to 5 s), so that a server that is down costs a request
 * one failed connect at most, and then nothing until the next attempt is due: meanwhile
 * statements fail at once, answered 503 (pg_code(): -ECONNRESET, or -ETIMEDOUT when hung). */
static void conn_reconnect(PgConn *c)
{
    if (!c->pg || (PQstatus(c->pg) != CONNECTION_BAD && !c->hung) || server_hung(c))
        return;
    if (now_usec(CLOCK_MONOTONIC) < c->retry_at)
        return;
    if (!conn_reset(c)) {
        /* a reset that ran out of time midway is started over next time, as a hung one */
        c->hung = PQstatus(c->pg) != CONNECTION_BAD;
        if (conn_back_off(c)) {
            const char *m = c->hung ? "" : PQerrorMessage(c->pg);
            log_warning("lost the connection to PostgreSQL (%.*s); reconnecting",
                        (int)strcspn(m, "\n"), *m ? m : "no answer within the deadline");
        }
        return;
    }
    c->hung = false;
    c->backoff = 0;
    c->retry_at = 0;
    c->n_prepared = 0; /* a new session: nothing is prepared in it */
    c->session_for = 0;
    log_notice("reconnected to PostgreSQL");
}

/* Time limits the server applies to c's session, below the store's deadline, for what a client
 * deadline cannot tell apart from a hung server: another session that holds a lock and does not
 * go on (a daemon stopped in the middle of a transaction, SIGSTOP or a frozen machine).
 * - lock_timeout, half the deadline: a statement that waits for such a lock fails on its own
 *   (-ETIMEDOUT, answered 503), instead of outliving the deadline and getting the whole server
 *   taken for hung (watch_hung()), every other call failing with it;
 * - idle_in_transaction_session_timeout, the deadline: the server ends a session that holds a
 *   transaction open that long without a statement, and with it its locks. None of this store's
 *   transactions waits between statements; one stopped in the middle is rolled back, its COMMIT
 *   never acknowledged, and its connection found broken and reset when the daemon goes on.
 * Sent once per session (a reset starts a new one) and again if the deadline changes. */
static void conn_session(PgConn *c)
{
    usec_t t = *c->timeout;
    if (c->session_for == t || PQstatus(c->pg) != CONNECTION_OK ||
        PQtransactionStatus(c->pg) != PQTRANS_IDLE)
        return;
    char sql[160];
    snprintf(sql, sizeof sql,
             "SET lock_timeout = %llu; SET idle_in_transaction_session_timeout = %llu",
             (unsigned long long)MAX(t / 2 / USEC_PER_MSEC, 1),
             (unsigned long long)MAX(t / USEC_PER_MSEC, 1));
    PGresult *res = conn_exec(c, sql);
    if (PQresultStatus(res) == PGRES_COMMAND_OK)
        c->session_for = t;
    PQclear(res);
}

/* c, ready for the next statement: reconnected if it must be (conn_reconnect()), with its
 * session's time limits set (conn_session()). */
static void conn_ensure(PgConn *c)
{
    conn_reconnect(c);
    if (c->pg && !c->hung && !server_hung(c))
        conn_session(c);
}

/* ---- A server that stopped answering ----
 *
 * The first round trip past the deadline marks the server hung (conn_give_up()). From then on no
 * call waits on it: each fails at once, so a thread that makes many calls (the supervisor's event
 * loop) loses one deadline to an outage, not one per call or per reconnect. This thread probes
 * the server with a connection of its own, after the reconnect backoff (100 ms doubling to 5 s),
 * each probe a reset and a SELECT 1 within the deadline, and clears hung at the first answer; a
 * connection given up on is then reset by its next caller, at once since the server answers. */

static void watch_hung(PgWatch *w)
{
    if (atomic_exchange(&w->hung, true))
        return;
    log_warning("PostgreSQL did not answer within %llu ms; calls to it fail at once until it "
                "answers again. hint: check the server's load and the network to it "
                "(RUNTARA_DATABASE_TIMEOUT_SECS sets the deadline)",
                (unsigned long long)(*w->probe->timeout / USEC_PER_MSEC));
    pthread_mutex_lock(&w->lock);
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static bool watch_probe(PgConn *p)
{
    if (!conn_reset(p))
        return false;
    p->hung = false;
    PGresult *res = conn_exec(p, "SELECT 1");
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    PQclear(res);
    return ok;
}

static void *watch_run(void *userdata)
{
    PgWatch *w = userdata;
    pthread_mutex_lock(&w->lock);
    while (!w->stopping) {
        if (!atomic_load(&w->hung)) {
            pthread_cond_wait(&w->cond, &w->lock);
            continue;
        }
        for (usec_t backoff = PG_RECONNECT_FIRST; atomic_load(&w->hung) && !w->stopping;
             backoff = MIN(backoff * 2, PG_RECONNECT_MAX)) {
            usec_t until = now_usec(CLOCK_MONOTONIC) + backoff;
            struct timespec ts = {.tv_sec = (time_t)(until / USEC_PER_SEC),
                                  .tv_nsec = (long)(until % USEC_PER_SEC) * 1000};
            while (!w->stopping && now_usec(CLOCK_MONOTONIC) < until)
                (void)pthread_cond_timedwait(&w->cond, &w->lock, &ts);
            if (w->stopping)
                break;
            pthread_mutex_unlock(&w->lock);
            bool ok = watch_probe(w->probe);
            pthread_mutex_lock(&w->lock);
            if (ok) {
                atomic_store(&w->hung, false);
                log_notice("PostgreSQL answers again");
            }
        }
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static int watch_start(PgWatch *w, PgConn *probe, Error *e)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &a);
    pthread_condattr_destroy(&a);
    pthread_mutex_init(&w->lock, NULL);
    w->probe = probe;
    int r = -pthread_create(&w->thread, NULL, watch_run, w);
    if (r < 0)
        return error_set(e, r, "could not start the thread that watches PostgreSQL: %s",
                         strerror(-r));
    w->started = true;
    (void)pthread_setname_np(w->thread, "pg-watch");
    return 0;
}

static void watch_stop(PgWatch *w)
{
    if (!w->started)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
}

/* Parameters of one statement, as text (binary for bytes). */
#define PG_PARAMS_MAX 24
typedef struct Params {
    int n;
    const char *v[PG_PARAMS_MAX];
    int len[PG_PARAMS_MAX], fmt[PG_PARAMS_MAX];
    char buf[PG_PARAMS_MAX][24];
} Params;

static void p_text(Params *p, const char *v)
{
    ASSERT_SE(p->n < PG_PARAMS_MAX);
    p->v[p->n] = v;
    p->len[p->n] = 0;
    p->fmt[p->n++] = 0;
}

static void p_int(Params *p, int64_t v)
{
    ASSERT_SE(p->n < PG_PARAMS_MAX);
    snprintf(p->buf[p->n], sizeof p->buf[p->n], "%lld", (long long)v);
    p_text(p, p->buf[p->n]);
}

/* A time: NULL for 0 (unset). */
static void p_usec(Params *p, usec_t v)
{
    if (v)
        p_int(p, (int64_t)v);
    else
        p_text(p, NULL);
}

static void p_bool(Params *p, bool v)
{
    p_text(p, v ? "t" : "f");
}

static void p_bytes(Params *p, const void *data, size_t n)
{
    ASSERT_SE(p->n < PG_PARAMS_MAX);
    p->v[p->n] = data ? data : "";
    p->len[p->n] = (int)n;
    p->fmt[p->n++] = 1;
}

static void p_status(Params *p, InstanceStatus s)
{
    p_text(p, instance_status_to_string(s));
}

static void p_signal(Params *p, SignalKind k)
{
    p_text(p, signal_kind_to_string(k));
}

/* The name of sql prepared on c, preparing it first; NULL if it cannot be (then the statement
 * is sent unprepared and says why). A statement prepared once is parsed and planned once per
 * connection instead of at every call. */
static const char *prepared(PgConn *c, const char *sql, const Params *p, char name[static 8])
{
    for (size_t i = 0; i < c->n_prepared; i++)
        if (c->prepared[i] == sql) {
            snprintf(name, 8, "s%u", (unsigned)(i % PG_STMT_CACHE));
            return name;
        }
    /* a fixed set of literals: running out of slots is a programming error */
    ASSERT_SE(c->n_prepared < PG_STMT_CACHE);
    snprintf(name, 8, "s%u", (unsigned)(c->n_prepared % PG_STMT_CACHE));
    PGresult *res = conn_last_result(c, PQsendPrepare(c->pg, name, sql, p->n, NULL));
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    if (!ok)
        return NULL;
    c->prepared[c->n_prepared++] = sql;
    return name;
}

/* Run sql with p on c; the result (the caller clears it), whatever its status. binary: results
 * in binary format (for bytes). sql is a string literal (prepared once per connection) unless
 * dynamic. */
/* The statement (prepared as name, or sql) with what the batch deferred before it, the previous
 * op's RELEASE and this op's SAVEPOINT, in one pipeline: one round trip where there were three
 * (docs/benchmarks.md). Returns the first failure among them, or the statement's result; NULL if
 * the connection broke. */
static PGresult *pipelined(PgConn *c, const char *name, const char *sql, const Params *p,
                           bool binary)
{
    PGconn *pg = c->pg;
    usec_t until = conn_deadline(c);
    const char *pre[2];
    size_t n_pre = 0;
    if (c->pending_release)
        pre[n_pre++] = "RELEASE SAVEPOINT op";
    if (c->pending_savepoint)
        pre[n_pre++] = "SAVEPOINT op";
    c->pending_release = c->pending_savepoint = false;
    if (!PQenterPipelineMode(pg))
        return NULL;
    bool sent = true;
    for (size_t i = 0; i < n_pre; i++)
        sent = sent && PQsendQueryParams(pg, pre[i], 0, NULL, NULL, NULL, NULL, 0);
    sent = sent && (name ? PQsendQueryPrepared(pg, name, p->n, p->v, p->len, p->fmt, binary)
                         : PQsendQueryParams(pg, sql, p->n, NULL, p->v, p->len, p->fmt, binary));
    sent = sent && PQpipelineSync(pg);
    PGresult *out = NULL;
    /* each query's results end with NULL; a query after a failed one is PIPELINE_ABORTED */
    for (size_t q = 0; sent && q <= n_pre; q++)
        for (PGresult *res; (res = conn_result(c, until));) {
            bool failed_pre = q < n_pre && PQresultStatus(res) != PGRES_COMMAND_OK;
            if (!out && (failed_pre || q == n_pre))
                out = res;
            else
                PQclear(res);
        }
    PGresult *sync = sent ? conn_result(c, until) : NULL;
    bool synced = PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
    PQclear(sync);
    if (!synced || !PQexitPipelineMode(pg)) {
        PQclear(out);
        return NULL; /* broken: conn_ensure() starts over */
    }
    return out;
}

static PGresult *pg_run_sql(PgConn *c, const char *sql, const Params *p, bool binary, bool dynamic)
{
    for (int tries = 0;; tries++) {
        conn_ensure(c);
        if (c->hung || server_hung(c))
            return NULL; /* waiting out the backoff, or for the server to answer */
        bool idle = PQtransactionStatus(c->pg) == PQTRANS_IDLE;
        char buf[8];
        const char *name = p && !dynamic && PQtransactionStatus(c->pg) != PQTRANS_INERROR
                               ? prepared(c, sql, p, buf)
                               : NULL;
        PGresult *res;
        if (p && (c->pending_savepoint || c->pending_release))
            res = pipelined(c, name, sql, p, binary);
        else if (!p && !binary) /* (PQsendQuery: sql may hold several statements) */
            res = conn_exec(c, sql);
        else if (name)
            res = conn_last_result(
                c, PQsendQueryPrepared(c->pg, name, p->n, p->v, p->len, p->fmt, binary ? 1 : 0));
        else
            res = conn_last_result(c, PQsendQueryParams(c->pg, sql, p ? p->n : 0, NULL,
                                                        p ? p->v : NULL, p ? p->len : NULL,
                                                        p ? p->fmt : NULL, binary ? 1 : 0));
        /* A connection the server closed (it restarted) is learnt of at its next statement: if
         * that statement began no transaction, nothing is lost by sending it once more on a new
         * connection. Inside a transaction, the batch runs again (store-batch.c). */
        if (tries > 0 || !idle || PQstatus(c->pg) != CONNECTION_BAD)
            return res;
        PQclear(res);
        c->retry_at = 0;
    }
}

static PGresult *pg_run(PgConn *c, const char *sql, const Params *p, bool binary)
{
    return pg_run_sql(c, sql, p, binary, false);
}

/* A statement without rows (or whose rows are not wanted): the number of rows it changed, or
 * -errno with the server's message. */
static int pg_command(PgConn *c, const char *sql, const Params *p, Error *e, const char *what)
{
    _cleanup_result_ PGresult *res = pg_run(c, sql, p, false);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        return pg_error(c, res, e, what);
    const char *n = PQcmdTuples(res);
    return *n ? atoi(n) : 0;
}

/* pg_command for a write into a table that references instances: a foreign key failure means the
 * instance id does not exist, and says so. */
static int pg_command_child(PgConn *c, const char *sql, const Params *p, Error *e, const char *what,
                            const char *id)
{
    int r = pg_command(c, sql, p, e, what);
    return r == -ENOENT ? store__no_instance(e, id) : r;
}

/* A statement with rows: the result, or NULL and -errno in *ret_r with the server's message. */
static PGresult *pg_rows_sql(PgConn *c, const char *sql, const Params *p, bool binary, bool dynamic,
                             int *ret_r, Error *e, const char *what)
{
    PGresult *res = pg_run_sql(c, sql, p, binary, dynamic);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        *ret_r = pg_error(c, res, e, what);
        PQclear(res);
        return NULL;
    }
    *ret_r = 0;
    return res;
}

static PGresult *pg_rows(PgConn *c, const char *sql, const Params *p, bool binary, int *ret_r,
                         Error *e, const char *what)
{
    return pg_rows_sql(c, sql, p, binary, false, ret_r, e, what);
}

static char *col_text(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : xstrdup(PQgetvalue(res, row, col));
}

static int64_t col_int(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* A time column: 0 for NULL (unset). */
static usec_t col_usec(const PGresult *res, int row, int col)
{
    return (usec_t)col_int(res, row, col);
}

/* The status in a column: the one place a status's text is read; text this binary does not
 * know is a corrupt row (-EIO). */
static int col_status(const PGresult *res, int row, int col, const char *instance_key,
                      InstanceStatus *ret, Error *e)
{
    const char *text = PQgetvalue(res, row, col);
    InstanceStatus s = instance_status_from_string(text);
    if (s < 0)
        return error_set(e, -EIO, "corrupt instance row \"%s\": unknown status \"%s\"",
                         instance_key ? instance_key : "", text);
    *ret = s;
    return 0;
}

/* ---- Group commit: PostgreSQL's transaction statements for store-batch.h ---- */

static int tx_exec(void *conn, const char *sql, Error *e, const char *what)
{
    int r = pg_command(conn, sql, NULL, e, what);
    return r < 0 ? r : 0;
}

static int tx_begin(void *conn, Error *e)
{
    return tx_exec(conn, "BEGIN", e, "begin a transaction");
}

/* Savepoints are deferred: SAVEPOINT and the previous op's RELEASE go with the op's first
 * statement (pipelined()); an op that sends none needs neither. */
static int tx_savepoint(void *conn, Error *e)
{
    PgConn *c = conn;
    (void)e;
    c->pending_savepoint = true;
    return 0;
}

static int tx_rollback_to_savepoint(void *conn, Error *e)
{
    PgConn *c = conn;
    if (c->pending_savepoint) { /* the op sent nothing: nothing to undo */
        c->pending_savepoint = false;
        return 0;
    }
    return tx_exec(conn, "ROLLBACK TO SAVEPOINT op", e, "roll back a savepoint");
}

static int tx_release_savepoint(void *conn, Error *e)
{
    PgConn *c = conn;
    (void)e;
    if (c->pending_savepoint) /* the op sent nothing: no savepoint was made */
        c->pending_savepoint = false;
    else
        c->pending_release = true;
    return 0;
}

/* COMMIT releases every savepoint: a deferred RELEASE is dropped. */
static int tx_commit(void *conn, Error *e)
{
    PgConn *c = conn;
    c->pending_savepoint = c->pending_release = false;
    return tx_exec(conn, "COMMIT", e, "commit the transaction");
}

static void tx_rollback(void *conn)
{
    PgConn *c = conn;
    c->pending_savepoint = c->pending_release = false;
    if (PQstatus(c->pg) == CONNECTION_OK && !c->hung)
        PQclear(conn_exec(c, "ROLLBACK"));
}

/* The transaction is gone (the connection broke), or in error outside an op's savepoint. */
static bool tx_lost(void *conn)
{
    PgConn *c = conn;
    PGTransactionStatusType t = PQtransactionStatus(c->pg);
    return c->hung || t == PQTRANS_IDLE || t == PQTRANS_UNKNOWN;
}

/* A COMMIT is durable when it returns (synchronous_commit, the server's default): the visible
 * hooks run after it, with no early phase. */
static int tx_run_batch(void *conn, WriteOp *batch);

static const StoreTxOps pg_tx = {
    .run_batch = tx_run_batch,
    .begin = tx_begin,
    .savepoint = tx_savepoint,
    .rollback_to_savepoint = tx_rollback_to_savepoint,
    .release_savepoint = tx_release_savepoint,
    .commit = tx_commit,
    .rollback = tx_rollback,
    .lost = tx_lost,
};

/* ---- The store ---- */

static void conn_close(PgConn *c)
{
    if (c->pg)
        PQfinish(c->pg);
    c->pg = NULL;
    pthread_mutex_destroy(&c->lock);
}

static void pg_close(Store *store)
{
    PgStore *s = PG(store);
    watch_stop(&s->watch);
    store_batch_done(&s->batch);
    for (size_t i = 0; i < PG_READERS; i++)
        conn_close(&s->readers[i]);
    conn_close(&s->writer);
    conn_close(&s->probe);
    free(s->conninfo);
    free(s);
}

static void pg_info(Store *store, StoreInfo *ret)
{
    *ret = (StoreInfo){.backend = "postgres",
                       .schema_version = PG(store)->schema_version,
                       .schema_latest = (int)store__pg_migrations_n};
}

static int pg_ping(Store *store, Error *e)
{
    READER(PG(store), c);
    int r = pg_command(c, "SELECT 1", NULL, e, "query the store");
    return r < 0 ? r : 0;
}

/* ---- Images ---- */

static int image_insert_run(void *conn, WriteOp *op, Error *e)
{
    PgConn *c = conn;
    ImageInsertOp *o = (ImageInsertOp *)op;
    const ImageRecord *rec = o->rec;
    /* the version: one more than the highest of the tenant and name, in the writer's
     * transaction; the UNIQUE constraint backs it against another daemon's insert */
    Params p = {0};
    p_text(&p, rec->image_id);
    p_text(&p, rec->tenant_id);
    p_text(&p, rec->name);
    p_text(&p, rec->description);
    p_text(&p, rec->runner_type);
    p_text(&p, rec->labels_json ? rec->labels_json : "{}");
    p_text(&p, rec->sha256);
    p_int(&p, (int64_t)rec->size_bytes);
    p_int(&p, (int64_t)rec->created_at);
    int r;
    _cleanup_result_ PGresult *res =
        pg_rows(c,
                "INSERT INTO images (image_id, tenant_id, name, version, description, runner_type, "
                "labels, sha256, size_bytes, created_at) SELECT $1, $2, $3, "
                "COALESCE(MAX(version), 0) + 1, $4, $5::runner_type, $6::json, $7, $8, " TS(
                    "$9") " "
                          "FROM images WHERE tenant_id = $2 AND name = $3 RETURNING version, seq",
                &p, false, &r, e, "insert the image");
    if (!res)
        return r;
    o->version = col_int(res, 0, 0);
    o->seq = col_int(res, 0, 1);
    return 0;
}

#define IMAGE_COLUMNS                                                                              \
    "seq, image_id, tenant_id, name, version, description, runner_type, labels, sha256, "          \
    "size_bytes, " US("created_at")

static void read_image(const PGresult *res, int row, ImageRecord *r)
{
    *r = (ImageRecord){
        .seq = col_int(res, row, 0),
        .image_id = col_text(res, row, 1),
        .tenant_id = col_text(res, row, 2),
        .name = col_text(res, row, 3),
        .version = col_int(res, row, 4),
        .description = col_text(res, row, 5),
        .runner_type = col_text(res, row, 6),
        .labels_json = col_text(res, row, 7),
        .sha256 = col_text(res, row, 8),
        .size_bytes = (uint64_t)col_int(res, row, 9),
        .created_at = col_usec(res, row, 10),
    };
}

static int image_get(Store *store, const char *id, const char *tenant, ImageRecord *ret, Error *e)
{
    READER(PG(store), c);
    Params p = {0};
    p_text(&p, id);
    p_text(&p, tenant);
    int r;
    _cleanup_result_ PGresult *res =
        pg_rows(c,
                "SELECT " IMAGE_COLUMNS " FROM images WHERE image_id = $1 AND "
                "($2::text IS NULL OR tenant_id = $2)",
                &p, false, &r, e, "read the image");
    if (!res)
        return r;
    if (PQntuples(res) == 0)
        return error_set(e, -ENOENT, "image \"%s\" does not exist", id);
    read_image(res, 0, ret);
    return 0;
}

static int image_list(Store *store, const ImageFilter *f, ImageRecord **ret, size_t *ret_n,
                      bool *ret_more, Error *e)
{
    READER(PG(store), c);
    _cleanup_free_ char *like = f->name_prefix ? store__like_prefix(f->name_prefix) : NULL;
    Params p = {0};
    p_text(&p, f->tenant_id);
    p_text(&p, f->name);
    p_text(&p, like);
    p_int(&p, f->before_seq);
    p_int(&p, (int64_t)f->limit + 1);
    int r;
    _cleanup_result_ PGresult *res =
        pg_rows(c,
                "SELECT " IMAGE_COLUMNS " FROM images WHERE "
                "($1::text IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR name = $2) AND "
                "($3::text IS NULL OR name LIKE $3 ESCAPE '\\') AND "
                "($4::bigint = 0 OR seq < $4) ORDER BY seq DESC LIMIT $5",
                &p, false, &r, e, "list images");
    if (!res)
        return r;
    size_t n = (size_t)PQntuples(res);
    ImageRecord *rows = xcalloc(n + 1, sizeof *rows);
    for (size_t i = 0; i < n; i++)
        read_image(res, (int)i, &rows[i]);
    *ret_more = n > f->limit;
    if (*ret_more)
        image_record_done(&rows[--n]);
    *ret = rows;
    *ret_n = n;
    return 0;
}

/* Remove the image bytes no image row has any more (store_image_blob_put()), those kept for an
 * hour at least: an upload keeps its bytes before it inserts its row, and refreshes the time of
 * bytes it finds kept, so that a collection racing it cannot take them. */
static int image_blobs_collect(PgConn *c, Error *e)
{
    int r = pg_command(c,
                       "DELETE FROM image_blobs b WHERE b.created_at < now() - interval '1 hour' "
                       "AND NOT EXISTS (SELECT 1 FROM images i WHERE i.sha256 = b.sha256)",
                       NULL, e, "remove the bytes of deleted images");
    return r < 0 ? r : 0;
}

static int image_delete_run(void *conn, WriteOp *op, Error *e)
{
    PgConn *c = conn;
    ImageDeleteOp *o = (ImageDeleteOp *)op;
    Params p = {0};
    p_text(&p, o->id);
    p_text(&p, o->tenant);
    int r;
    _cleanup_result_ PGresult *res =
        pg_rows(c,
                "SELECT (SELECT COUNT(*) FROM images WHERE image_id = $1 AND "
                "($2::text IS NULL OR tenant_id = $2)), (SELECT COUNT(*) FROM instances WHERE "
                "image_id = $1 AND status IN ('pending', 'running', 'suspended'))",
                &p, false, &r, e, "look up the image");
    if (!res)
        return r;
    if (col_int(res, 0, 0) == 0)
        return error_set(e, -ENOENT, "image \"%s\" does not exist", o->id);
    int64_t users = col_int(res, 0, 1);
    if (users > 0)
        return error_set(e, -EBUSY, "image \"%s\" is used by %lld unfinished instance%s", o->id,
                         (long long)users, users == 1 ? "" : "s");
    Params d = {0};
    p_text(&d, o->id);
    r = pg_command(c, "DELETE FROM images WHERE image_id = $1", &d, e, "delete the image");
    if (r >= 0)
        r = image_blobs_collect(c, e);
    return r < 0 ? r : 0;
}

static int query_int(PgConn *c, const char *sql, const char *arg, int64_t *ret, Error *e)
{
    Params p = {0};
    if (arg)
        p_text(&p, arg);
    int r;
    _cleanup_result_ PGresult *res = pg_rows(c, sql, &p, false, &r, e, "query the store");
    if (!res)
        return r;
    *ret = col_int(res, 0, 0);
    return 0;
}

static int image_exists(Store *store, const char *id, Error *e)
{
    READER(PG(store), c);
    int64_t n = 0;
    int r = query_int(c, "SELECT COUNT(*) FROM images WHERE image_id = $1", id, &n, e);
    return r < 0 ? r : n > 0;
}

static int image_count(Store *store, uint64_t *ret, Error *e)
{
    READER(PG(store), c);
    int64_t n = 0;
    int r = query_int(c, "SELECT COUNT(*) FROM images", NULL, &n, e);
    if (r >= 0)
        *ret = (uint64_t)n;
    return r;
}

/* ---- Instances ---- */

/* The columns read_instance() maps; times as epoch microseconds, as US() reads them. */
#define INSTANCE_COLUMNS                                                                           \
    "seq, instance_id, tenant_id, image_id, status, termination_reason, input, output, error, "    \
    "env, request_hash, token_hash, checkpoint_id, exit_code, timeout_secs, attempt, "             \
    "(extract(epoch from created_at) * 1000000)::bigint, "                                         \
    "(extract(epoch from updated_at) * 1000000)::bigint, "                                         \
    "(extract(epoch from started_at) * 1000000)::bigint, "                                         \
    "(extract(epoch from finished_at) * 1000000)::bigint, "                                        \
    "(extract(epoch from heartbeat_at) * 1000000)::bigint, "                                       \
    "(extract(epoch from sleep_until) * 1000000)::bigint, "                                        \
    "wait_key, auto_restarts, instance_key, runner, memory_peak_bytes, cpu_usec, owner"

/* The row mapper of INSTANCE_COLUMNS: 0 and *r, or -EIO for a corrupt row (*r untouched). */
static int read_instance(const PGresult *res, int row, InstanceRecord *r, Error *e)
{
    InstanceStatus status = _INSTANCE_STATUS_INVALID;
    int k = col_status(res, row, 4, PQgetvalue(res, row, 24), &status, e);
    if (k < 0)
        return k;
    *r = (InstanceRecord){
        .seq = col_int(res, row, 0),
        .instance_id = col_text(res, row, 1),
        .tenant_id = col_text(res, row, 2),
        .image_id = col_text(res, row, 3),
        .status = status,
        .termination_reason = col_text(res, row, 5),
        .input = col_text(res, row, 6),
        .output = col_text(res, row, 7),
        .error = col_text(res, row, 8),
        .env = col_text(res, row, 9),
        .request_hash = col_text(res, row, 10),
        .token_hash = col_text(res, row, 11),
        .checkpoint_id = col_text(res, row, 12),
        .has_exit_code = !PQgetisnull(res, row, 13),
        .exit_code = (int)col_int(res, row, 13),
        .timeout_secs = (uint32_t)col_int(res, row, 14),
        .attempt = (int)col_int(res, row, 15),
        .created_at = col_usec(res, row, 16),
        .updated_at = col_usec(res, row, 17),
        .started_at = col_usec(res, row, 18),
        .finished_at = col_usec(res, row, 19),
        .heartbeat_at = col_usec(res, row, 20),
        .sleep_until = col_usec(res, row, 21),
        .wait_key = col_text(res, row, 22),
        .auto_restarts = (int)col_int(res, row, 23),
        .instance_key = col_text(res, row, 24),
        .runner = col_text(res, row, 25),
        .has_usage = !PQgetisnull(res, row, 26),
        .memory_peak_bytes = (uint64_t)col_int(res, row, 26),
        .cpu_usec = (uint64_t)col_int(res, row, 27),
        .owner = col_text(res, row, 28),
    };
    return 0;
}

static int instance_get_locked(PgConn *c, const char *id, const char *tenant, InstanceRecord *ret,
                               Error *e)
{
    Params p = {0};
    p_text(&p, id);
    p_text(&p, tenant);
    int r;
    _cleanup_result_ PGresult *res =
        pg_rows(c,
                "SELECT " INSTANCE_COLUMNS " FROM instances WHERE instance_key = $1 AND "
                "($2::text IS NULL OR tenant_id = $2)",
                &p, false, &r, e, "read the instance");
    if (!res)
        return r;
    if (PQntuples(res) == 0)
        return store__no_instance(e, id);
    return read_instance(res, 0, ret, e);
}

static int instance_insert_minimal_run(void *conn, WriteOp *op, Error *e)
{
    InsertMinimalOp *o = (InsertMinimalOp *)op;
    Params p = {0};
    p_text(&p, o->id);
    p_text(&p, o->tenant);
    p_text(&p, o->image_id);
    p_status(&p, o->status);
    p_int(&p, (int64_t)now_usec(CLOCK_REALTIME));
    int r = pg_command(conn,
                       "INSERT INTO instances (instance_key, instance_id, tenant_id, image_id, "
                       "status, created_at, updated_at) VALUES ($2 || '/' || $1, $1, $2, $3, "
                       "$4::instance_status, " TS("$5") ", " TS("$5") ")",
                       &p, e, "insert the instance");
    return r < 0 ? r : 0;
}

static int instance_create_run(void *conn, WriteOp *op, Error *e)
{
    PgConn *c = conn;
    InstanceCreateOp *o = (InstanceCreateOp *)op;
    const InstanceRecord *rec = o->rec;
    usec_t created = rec->created_at ? rec->created_at : now_usec(CLOCK_REALTIME);
    Params p = {0};
    p_text(&p, rec->instance_id);
    p_text(&p, rec->tenant_id);
    p_text(&p, rec->image_id);
    p_int(&p, (int64_t)created);
    p_text(&p, rec->input ? rec->input : "{}");
    p_text(&p, rec->env ? rec->env : "{}");
    p_int(&p, rec->timeout_secs ? rec->timeout_secs : 300);
    p_text(&p, rec->request_hash ? rec->request_hash : "");
    p_text(&p, rec->token_hash);
    p_text(&p, rec->runner ? rec->runner : "native");
    p_text(&p, rec->owner);
    int r = pg_command(c,
                       "INSERT INTO instances (instance_key, instance_id, tenant_id, image_id, "
                       "status, created_at, updated_at, input, env, timeout_secs, request_hash, "
                       "token_hash, runner, owner) VALUES ($2 || '/' || $1, $1, $2, $3, 'pending', "
                       "timestamptz 'epoch' + $4::bigint * interval '1 microsecond', "
                       "timestamptz 'epoch' + $4::bigint * interval '1 microsecond', "
                       "$5::json, $6::json, $7, $8, $9, $10::runner_type, $11) "
                       "ON CONFLICT (instance_key) DO NOTHING",
                       &p, e, "insert the instance");
    if (r != 0)
        return r < 0 ? r : 0;

    /* The id exists. Instances are never deleted by the daemon, so the row is there to read. */
    if (o->want_existing) {
        _cleanup_free_ char *key = store_instance_key(rec->tenant_id, rec->instance_id);
        r = instance_get_locked(c, key, NULL, &o->existing, e);
        if (r < 0)
            return r;
        o->have_existing = true;
    }
    return error_set(e, -EEXIST, "instance \"%s\" of tenant \"%s\" already exists",
                     rec->instance_id, rec->tenant_id);
}

static int instance_get(Store *store, const char *id, const char *tenant, InstanceRecord *ret,
                        Error *e)
{
    READER(PG(store), c);
    return instance_get_locked(c, id, tenant, ret, e);
}

/* The one instance row sql (one text parameter) finds for value: 0 and *ret, -ENOENT when there
 * is none, -ENOTUNIQ when there are more (both without a message). */
static int instance_read_one(PgConn *c, const char *sql, const char *value, InstanceRecord *ret,
                             Error *e)
{
    Params p = {0};
    p_text(&p, value);
    int r;
    _cleanup_result_ PGresult *res = pg_rows(c, sql, &p, false, &r, e, "read the instance");
    if (!res)
        return r;
    if (PQntuples(res) == 0)
        return -ENOENT;
    if (PQntuples(res) > 1)
        return -ENOTUNIQ;
    return read_instance(res, 0, ret, e);
}

static int instance_find(Store *store, const char *instance_id, InstanceRecord *ret, Error *e)
{
    READER(PG(store), c);
    return instance_read_one(
        c, "SELECT " INSTANCE_COLUMNS " FROM instances WHERE instance_id = $1 LIMIT 2", instance_id,
        ret, e);
}

static int instance_get_by_token(Store *store, const char *token_hash, InstanceRecord *ret,
                                 Error *e)
{
    READER(PG(store), c);
    /* tokens are random: two rows with one is corruption, and lets neither in */
    int r = instance_read_one(
        c, "SELECT " INSTANCE_COLUMNS " FROM instances WHERE token_hash = $1 LIMIT 2", token_hash,
        ret, e);
    return r == -ENOTUNIQ ? -ENOENT : r;
}

static int instance_exists_locked(PgConn *c, const char *id, Error *e)
{
    int64_t n = 0;
    int r = query_int(c, "SELECT COUNT(*) FROM instances WHERE instance_key = $1", id, &n, e);
    return r < 0 ? r : n > 0;
}

static int transition_locked(void *conn, const char *id, InstanceStatus from_status,
                             const InstanceUpdate *u, Error *e)
{
    PgConn *c = conn;
    Params p = {0};
    p_text(&p, id);                               /* $1 */
    p_status(&p, from_status);                    /* $2 */
    p_status(&p, u->to_status);                   /* $3 */
    p_text(&p, u->reason);                        /* $4 */
    p_bool(&p, u->set_exit_code);                 /* $5 */
    p_int(&p, u->exit_code);                      /* $6 */
    p_bool(&p, u->clear_result);                  /* $7 */
    p_text(&p, u->output);                        /* $8 */
    p_text(&p, u->error);                         /* $9 */
    p_text(&p, u->token_hash);                    /* $10 */
    p_int(&p, u->bump_attempt ? 1 : 0);           /* $11 */
    p_usec(&p, u->started_at);                    /* $12 */
    p_usec(&p, u->finished_at);                   /* $13 */
    p_int(&p, (int64_t)now_usec(CLOCK_REALTIME)); /* $14 */
    p_usec(&p, u->sleep_until);                   /* $15 */
    p_text(&p, u->wait_key);                      /* $16 */
    p_int(&p, u->restarts);                       /* $17 */
    p_usec(&p, u->guard_sleep_until);             /* $18 */
    p_bool(&p, u->keep_wake);                     /* $19 */
    p_text(&p, u->guard_token_hash);              /* $20 */
    p_int(&p, (int64_t)u->memory_peak_bytes);     /* $21 */
    p_int(&p, (int64_t)u->cpu_usec);              /* $22 */
    p_text(&p, u->owner);                         /* $23 */
    /* $7 is clear_result: it resets the result columns unless the update sets them itself */
    int r = pg_command(
        c,
        "UPDATE instances SET status = $3::instance_status, termination_reason = $4::text, "
        "exit_code = CASE WHEN $5::boolean THEN $6::integer WHEN $7::boolean THEN NULL "
        "ELSE exit_code END, "
        "memory_peak_bytes = CASE WHEN $5 THEN $21::bigint WHEN $7 THEN NULL "
        "ELSE memory_peak_bytes END, "
        "cpu_usec = CASE WHEN $5 THEN $22::bigint WHEN $7 THEN NULL ELSE cpu_usec END, "
        "output = CASE WHEN $8::text IS NOT NULL THEN $8::json WHEN $7 THEN NULL ELSE output END, "
        "error = CASE WHEN $9::text IS NOT NULL THEN $9 WHEN $7 THEN NULL ELSE error END, "
        "token_hash = COALESCE($10::text, token_hash), attempt = attempt + $11::integer, "
        "started_at = COALESCE(" TS(
            "$12") ", started_at), "
                   "finished_at = CASE WHEN $13::bigint IS NOT NULL THEN " TS(
                       "$13") " WHEN $7 THEN NULL "
                              "ELSE finished_at END, "
                              "updated_at = " TS(
                                  "$14") ", "
                                         "sleep_until = CASE WHEN $19::boolean THEN sleep_until "
                                         "ELSE " TS(
                                             "$15") " END, "
                                                    "wait_key = CASE WHEN $19 THEN wait_key ELSE "
                                                    "$16::text END, "
                                                    "auto_restarts = CASE $17::integer WHEN 1 THEN "
                                                    "auto_restarts + 1 WHEN -1 THEN 0 "
                                                    "ELSE auto_restarts END, "
                                                    "owner = COALESCE($23::text, owner) "
                                                    "WHERE instance_key = $1 AND status = "
                                                    "$2::instance_status "
                                                    "AND ($18::bigint IS NULL OR sleep_until = " TS(
                                                        "$18") ") "
                                                               "AND ($20::text IS NULL OR "
                                                               "token_hash = $20)",
        &p, e, "update the instance");
    if (r != 0)
        return r < 0 ? r : 1;
    /* Not applied: a lost race (status or wake guard), or no such instance. */
    r = instance_exists_locked(c, id, e);
    if (r < 0)
        return r;
    return r ? 0 : store__no_instance(e, id);
}

static int instance_transition_run(void *conn, WriteOp *op, Error *e)
{
    TransitionOp *o = (TransitionOp *)op;
    return transition_locked(conn, o->id, o->from_status, o->u, e);
}

static int event_insert_locked(void *conn, const char *id, const char *type, const char *subtype,
                               const char *payload, const char *request_key, usec_t now,
                               int64_t *ret_id, Error *e);

static int event_append_locked(PgConn *c, const char *id, const char *type, const char *subtype,
                               const char *payload, usec_t now, int64_t *ret_id, Error *e)
{
    int r = event_insert_locked(c, id, type, subtype, payload, NULL, now, ret_id, e);
    return r < 0 ? r : 0;
}

static int instance_transitions_run(void *conn, WriteOp *op, Error *e)
{
    return store__transitions_run(conn, (TransitionsOp *)op, transition_locked, event_insert_locked,
                                  e);
}

/* The WHERE clause of an instance list and its parameters, built from constant fragments;
 * values are never formatted into SQL. */
static void instance_where(StrBuf *b, Params *p, const InstanceFilter *f, bool with_cursor)
{
    strbuf_puts(b, " WHERE true");
    if (f->tenant_id) {
        p_text(p, f->tenant_id);
        strbuf_printf(b, " AND tenant_id = $%d", p->n);
    }
    if (f->has_status) {
        p_status(p, f->status);
        strbuf_printf(b, " AND status = $%d::instance_status", p->n);
    }
    if (f->image_id) {
        p_text(p, f->image_id);
        strbuf_printf(b, " AND image_id = $%d", p->n);
    }
    const struct {
        usec_t v;
        const char *col, *op;
    } bounds[] = {{f->created_after, "created_at", ">="},
                  {f->created_before, "created_at", "<"},
                  {f->finished_after, "finished_at", ">="},
                  {f->finished_before, "finished_at", "<"}};
    for (size_t i = 0; i < ELEMENTSOF(bounds); i++)
        if (bounds[i].v) {
            p_int(p, (int64_t)bounds[i].v);
            strbuf_printf(b,
                          " AND %s %s (timestamptz 'epoch' + $%d::bigint * interval "
                          "'1 microsecond')",
                          bounds[i].col, bounds[i].op, p->n);
        }
    if (f->exit_unrecorded) /* the partial index instances_exit_unrecorded */
        strbuf_puts(b, " AND exit_code IS NULL AND attempt > 0");
    if (f->owner) {
        p_text(p, f->owner);
        strbuf_printf(b, " AND owner = $%d", p->n);
    }
    if (with_cursor && f->before_seq > 0) {
        p_int(p, f->before_seq);
        strbuf_printf(b, " AND seq < $%d", p->n);
    }
}

static int instance_list_locked(PgConn *c, const InstanceFilter *f, InstanceRecord **ret,
                                size_t *ret_n, bool *ret_more, uint64_t *ret_total, Error *e)
{
    _cleanup_(strbuf_done) StrBuf sql = STRBUF_INIT;
    Params p = {0};
    strbuf_puts(&sql, "SELECT " INSTANCE_COLUMNS " FROM instances");
    instance_where(&sql, &p, f, true);
    p_int(&p, (int64_t)f->limit + 1);
    strbuf_printf(&sql, " ORDER BY seq DESC LIMIT $%d", p.n);
    int r;
    _cleanup_result_ PGresult *res =
        pg_rows_sql(c, sql.buf, &p, false, true, &r, e, "list instances");
    if (!res)
        return r;
    size_t n = (size_t)PQntuples(res);
    InstanceRecord *rows = xcalloc(n + 1, sizeof *rows);
    for (size_t i = 0; i < n; i++) {
        r = read_instance(res, (int)i, &rows[i], e);
        if (r < 0) {
            instance_records_free(rows, i);
            return r;
        }
    }
    if (ret_total) {
        _cleanup_(strbuf_done) StrBuf count = STRBUF_INIT;
        Params q = {0};
        strbuf_puts(&count, "SELECT COUNT(*) FROM instances");
        instance_where(&count, &q, f, false);
        int64_t total = 0;
        _cleanup_result_ PGresult *cres =
            pg_rows_sql(c, count.buf, &q, false, true, &r, e, "count instances");
        if (!cres) {
            instance_records_free(rows, n);
            return r;
        }
        total = col_int(cres, 0, 0);
        *ret_total = (uint64_t)total;
    }
    *ret_more = n > f->limit;
    if (*ret_more)
        instance_record_done(&rows[--n]);
    *ret = rows;
    *ret_n = n;
    return 0;
}

static int instance_list(Store *store, const InstanceFilter *f, InstanceRecord **ret, size_t *ret_n,
                         bool *ret_more, uint64_t *ret_total, int64_t *ret_last_seq, Error *e)
{
    READER(PG(store), c);
    InstanceRecord *rows = NULL;
    size_t n = 0;
    bool more = false;
    uint64_t total = 0;
    /* One snapshot for the page and the total. */
    int r = pg_command(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", NULL, e,
                       "begin a transaction");
    if (r >= 0)
        r = instance_list_locked(c, f, &rows, &n, &more, ret_total ? &total : NULL, e);
    if (r >= 0)
        r = pg_command(c, "COMMIT", NULL, e, "end the transaction");
    if (r < 0) {
        tx_rollback(c);
        instance_records_free(rows, n);
        return r;
    }
    if (ret_more)
        *ret_more = more;
    if (ret_total)
        *ret_total = total;
    if (ret_last_seq)
        *ret_last_seq = n > 0 ? rows[n - 1].seq : 0;
    *ret = rows;
    *ret_n = n;
    return 0;
}

static int launch_live_locked(PgConn *c, const char *id, const char *token_hash, Error *e)
{
    if (!token_hash)
        return 0;
    Params p = {0};
    p_text(&p, id);
    p_text(&p, token_hash);
    int r;
    _cleanup_result_ PGresult *res =
        pg_rows(c,
                "SELECT 1 FROM instances WHERE instance_key = $1 AND token_hash = $2 AND "
                "status IN ('pending', 'running')",
                &p, false, &r, e, "read the instance");
    if (!res)
        return r;
    return PQntuples(res) > 0 ? 0 : store__launch_over(id, token_hash, e);
}

static int instance_heartbeat_run(void *conn, WriteOp *op, Error *e)
{
    HeartbeatOp *o = (HeartbeatOp *)op;
    Params p = {0};
    p_text(&p, o->id);
    p_int(&p, (int64_t)o->now);
    p_text(&p, o->token_hash);
    int r = pg_command(conn,
                       "UPDATE instances SET heartbeat_at = " TS(
                           "$2") " WHERE instance_key = $1 "
                                 "AND ($3::text IS NULL OR (token_hash = $3 AND "
                                 "status IN ('pending', 'running')))",
                       &p, e, "record the heartbeat");
    if (r < 0)
        return r;
    return r > 0 ? 0 : store__launch_over(o->id, o->token_hash, e);
}

static int instance_list_wakes(Store *store, const char *owner, int64_t after_seq, unsigned limit,
                               InstanceWake **ret, size_t *ret_n, bool *ret_more, Error *e)
{
    READER(PG(store), c);
    Params p = {0};
    p_int(&p, after_seq);
    p_int(&p, (int64_t)limit + 1);
    p_text(&p, owner);
    int r;
    _cleanup_result_ PGresult *res =
        pg_rows(c,
                "SELECT seq, instance_key, (extract(epoch from sleep_until) * 1000000)::bigint "
                "FROM instances WHERE sleep_until IS NOT NULL AND status = 'suspended' "
                "AND seq > $1 AND ($3::text IS NULL OR owner = $3) ORDER BY seq LIMIT $2",
                &p, false, &r, e, "list the wake-ups");
    if (!res)
        return r;
    size_t n = (size_t)PQntuples(res);
    InstanceWake *rows = xcalloc(n + 1, sizeof *rows);
    for (size_t i = 0; i < n; i++)
        rows[i] = (InstanceWake){.seq = col_int(res, (int)i, 0),
                                 .instance_key = col_text(res, (int)i, 1),
                                 .sleep_until = col_usec(res, (int)i, 2)};
    bool more = n > limit;
    if (more)
        free(rows[--n].instance_key);
    if (ret_more)
        *ret_more = more;
    *ret = rows;
    *ret_n = n;
    return 0;
}

/* Run a DELETE ... RETURNING id, tenant_id ($1 before, $2 limit) into o->refs. */
static int purge_run(PgConn *c, PurgeOp *o, const char *sql, const char *what, Error *e)
{
    Params p = {0};
    p_usec(&p, o->before);
    p_int(&p, o->limit);
    int r;
    _cleanup_result_ PGresult *res = pg_rows(c, sql, &p, false, &r, e, what);
    if (!res)
        return r;
    size_t n = (size_t)PQntuples(res);
    o->refs = xcalloc(n + 1, sizeof *o->refs);
    for (o->n = 0; o->n < n; o->n++)
        o->refs[o->n] =
            (StoreRef){.id = col_text(res, (int)o->n, 0), .tenant_id = col_text(res, (int)o->n, 1)};
    return 0;
}

static int instance_purge_run(void *conn, WriteOp *op, Error *e)
{
    /* the cascade deletes checkpoints, events and signals with each row */
    return purge_run(conn, (PurgeOp *)op,
                     "DELETE FROM instances WHERE seq IN (SELECT seq FROM instances "
                     "WHERE finished_at IS NOT NULL AND status <> 'suspended' "
                     "AND status IN ('completed', 'failed', 'cancelled') "
                     "AND finished_at < " TS("$1") " ORDER BY finished_at LIMIT $2) "
                                                   "RETURNING instance_id, tenant_id",
                     "delete finished instances", e);
}

static int image_purge_run(void *conn, WriteOp *op, Error *e)
{
    int r = image_blobs_collect(conn, e);
    if (r < 0)
        return r;
    return purge_run(
        conn, (PurgeOp *)op,
        "DELETE FROM images WHERE seq IN (SELECT i.seq FROM images i "
        "WHERE i.created_at < " TS(
            "$1") " "
                  "AND EXISTS (SELECT 1 FROM images n WHERE n.tenant_id = i.tenant_id "
                  "AND n.name = i.name AND n.version > i.version) "
                  "AND NOT EXISTS (SELECT 1 FROM instances u WHERE u.image_id = i.image_id) "
                  "ORDER BY i.seq LIMIT $2) RETURNING image_id, tenant_id",
        "delete unused images", e);
}

static int instance_count_by_status(Store *store, const char *tenant,
                                    uint64_t ret_counts[_INSTANCE_STATUS_MAX], Error *e)
{
    READER(PG(store), c);
    Params p = {0};
    p_text(&p, tenant);
    int r;
    _cleanup_result_ PGresult *res =
        pg_rows(c,
                "SELECT status, COUNT(*) FROM instances WHERE ($1::text IS NULL OR "
                "tenant_id = $1) GROUP BY status",
                &p, false, &r, e, "count instances");
    if (!res)
        return r;
    uint64_t counts[_INSTANCE_STATUS_MAX] = {0};
    for (int i = 0; i < PQntuples(res); i++) {
        InstanceStatus status = _INSTANCE_STATUS_INVALID;
        r = col_status(res, i, 0, NULL, &status, e);
        if (r < 0)
            return r;
        counts[status] = (uint64_t)col_int(res, i, 1);
    }
    memcpy(ret_counts, counts, sizeof counts);
    return 0;
}

/* ---- Events and checkpoints ---- */

/* 1 recorded, 0 when request_key (may be NULL) was recorded before (*ret_id: that event). */
static int event_insert_locked(void *conn, const char *id, const char *type, const char *subtype,
                               const char *payload, const char *request_key, usec_t now,
                               int64_t *ret_id, Error *e)
{
    PgConn *c = conn;
    Params p = {0};
    p_text(&p, id);
    p_text(&p, type);
    p_text(&p, subtype);
    p_text(&p, payload);
    p_int(&p, (int64_t)now);
    p_text(&p, request_key);
    int r;
    _cleanup_result_ PGresult *res = pg_rows(
        c,
        "INSERT INTO events (instance_key, type, subtype, payload, created_at, request_key) "
        "VALUES ($1, $2, $3, $4, " TS("$5") ", $6) ON CONFLICT (instance_key, request_key) "
                                            "WHERE request_key IS NOT NULL DO NOTHING RETURNING id",
        &p, false, &r, e, "append the event");
    if (!res)
        return r == -ENOENT ? store__no_instance(e, id) : r;
    if (PQntuples(res) > 0) {
        if (ret_id)
            *ret_id = col_int(res, 0, 0);
        return 1;
    }
    Params q = {0};
    p_text(&q, id);
    p_text(&q, request_key);
    _cleanup_result_ PGresult *before =
        pg_rows(c, "SELECT id FROM events WHERE instance_key = $1 AND request_key = $2", &q, false,
                &r, e, "read the event recorded before");
    if (!before)
        return r;
    if (PQntuples(before) == 0)
        return error_set(e, -EIO, "the event recorded before for instance \"%s\" vanished", id);
    if (ret_id)
        *ret_id = col_int(before, 0, 0);
    return 0;
}

/* Record a new checkpoint on its instance (checkpoint_id, heartbeat, restart count) and a
 * "checkpoint" event. With token_hash, only while the instance is pending or running that
 * launch: -ESTALE otherwise. */
static int checkpoint_stored_locked(PgConn *c, const char *id, const char *key,
                                    const char *token_hash, usec_t now, Error *e)
{
    Params p = {0};
    p_text(&p, id);
    p_text(&p, key);
    p_int(&p, (int64_t)now);
    p_text(&p, token_hash);
    int r = pg_command(
        c,
        "UPDATE instances SET checkpoint_id = $2, updated_at = " TS(
            "$3") ", "
                  "heartbeat_at = " TS("$3") ", auto_restarts = 0 WHERE instance_key = $1 "
                                             "AND ($4::text IS NULL OR (token_hash = $4 AND "
                                             "status IN ('pending', 'running')))",
        &p, e, "record the checkpoint on the instance");
    if (r < 0)
        return r;
    if (r == 0)
        return error_set(e, -ESTALE,
                         "instance \"%s\" is no longer running the launch that saves checkpoint "
                         "\"%s\"; the process should exit",
                         id, key);
    return event_append_locked(c, id, "checkpoint", key, NULL, now, NULL, e);
}

/* Read a stored checkpoint: 1 and the bytes, 0 if there is none. Binary results: the bytes as
 * they are, the time as a big-endian int8. */
static int checkpoint_read_locked(PgConn *c, const char *id, const char *key, void **ret_data,
                                  size_t *ret_n, usec_t *ret_created, Error *e)
{
    Params p = {0};
    p_text(&p, id);
    p_text(&p, key);
    int r;
    _cleanup_result_ PGresult *res =
        pg_rows(c,
                "SELECT data, " US("created_at") " FROM checkpoints WHERE instance_key = $1 "
                                                 "AND key = $2",
                &p, true, &r, e, "read the checkpoint");
    if (!res)
        return r;
    if (PQntuples(res) == 0)
        return 0;
    size_t n = (size_t)PQgetlength(res, 0, 0);
    if (ret_data) {
        void *data = xmalloc(n ? n : 1);
        if (n)
            memcpy(data, PQgetvalue(res, 0, 0), n);
        *ret_data = data;
    }
    if (ret_n)
        *ret_n = n;
    if (ret_created && PQgetlength(res, 0, 1) == 8) {
        uint64_t be;
        memcpy(&be, PQgetvalue(res, 0, 1), 8);
        *ret_created = (usec_t)be64toh(be);
    }
    return 1;
}

static int signal_get_locked(PgConn *c, const char *id, SignalKind *ret_kind, char **ret_payload,
                             Error *e);

/* Insert a checkpoint unless its key exists: 1 inserted, 0 the key was there. */
static int checkpoint_insert_locked(PgConn *c, const char *id, const char *key, const void *data,
                                    size_t n, usec_t now, Error *e)
{
    Params p = {0};
    p_text(&p, id);
    p_text(&p, key);
    p_bytes(&p, data, n);
    p_int(&p, (int64_t)now);
    int r = pg_command_child(
        c,
        "INSERT INTO checkpoints (instance_key, key, data, created_at) "
        "VALUES ($1, $2, $3::bytea, " TS("$4") ") "
                                               "ON CONFLICT (instance_key, key) DO NOTHING",
        &p, e, "save the checkpoint", id);
    return r < 0 ? r : r > 0;
}

/* A big-endian int4 of a binary result. */
static int32_t col_int4_binary(const PGresult *res, int row, int col)
{
    uint32_t be = 0;
    if (PQgetlength(res, row, col) == 4)
        memcpy(&be, PQgetvalue(res, row, col), 4);
    return (int32_t)be32toh(be);
}

/* One statement for the whole save: the insert (first write wins), and only if it inserted, the
 * instance's checkpoint_id, heartbeat and restart count (bound to the launch when token_hash is
 * given) and the "checkpoint" event; then what the caller needs back: whether it inserted and
 * updated, the bytes stored before (read in the statement's snapshot, which a new row is not in)
 * and the pending control signal. Binary results (the bytes as they are). */
static const char checkpoint_save_sql[] =
    "WITH ins AS (INSERT INTO checkpoints (instance_key, key, data, created_at) "
    "VALUES ($1, $2, $3::bytea, " TS(
        "$4") ") ON CONFLICT (instance_key, key) DO NOTHING "
              "RETURNING seq), "
              "upd AS (UPDATE instances SET checkpoint_id = $2, updated_at = " TS(
                  "$4") ", "
                        "heartbeat_at = " TS(
                            "$4") ", auto_restarts = 0 WHERE instance_key = $1 "
                                  "AND EXISTS (SELECT 1 FROM ins) AND ($5::text IS NULL OR "
                                  "(token_hash = $5 AND "
                                  "status IN ('pending', 'running'))) RETURNING 1), "
                                  "ev AS (INSERT INTO events (instance_key, type, subtype, "
                                  "created_at) "
                                  "SELECT $1, 'checkpoint', $2, " TS(
                                      "$4") " FROM upd) "
                                            "SELECT (SELECT count(*) FROM ins)::integer, (SELECT "
                                            "count(*) FROM upd)::integer, "
                                            "(SELECT data FROM checkpoints WHERE instance_key = $1 "
                                            "AND key = $2), "
                                            "(SELECT type::text FROM signals WHERE instance_key = "
                                            "$1)";

static void checkpoint_save_params(const CheckpointSaveOp *o, usec_t now, Params *p)
{
    *p = (Params){0};
    p_text(p, o->id);
    p_text(p, o->key);
    p_bytes(p, o->data, o->n);
    p_int(p, (int64_t)now);
    p_text(p, o->token_hash);
}

/* The op's outcome from the statement's row: 1 saved, 0 the key was there (its bytes in the
 * op), -ESTALE if the launch is over (the insert must be taken back). */
/* The bytes a save found stored (first write wins), handed back when the caller wants them. */
static void checkpoint_keep_stored(CheckpointSaveOp *o, const void *data, size_t n)
{
    o->stored_n = n;
    if (o->want_stored) {
        o->stored = xmalloc(n ? n : 1);
        memcpy(o->stored, data, n);
    }
}

/* The pending control signal in column col of row (its kind as text, or NULL), when the caller
 * wants it: 0, or -EIO for a kind this binary does not know. */
static int checkpoint_read_signal(CheckpointSaveOp *o, const PGresult *res, int row, int col,
                                  Error *e)
{
    if (!o->want_signal)
        return 0;
    o->signal = _SIGNAL_KIND_INVALID;
    if (PQgetisnull(res, row, col))
        return 0;
    _cleanup_free_ char *kind =
        xstrndup(PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col));
    o->signal = signal_kind_from_string(kind);
    if (o->signal < 0)
        return error_set(e, -EIO, "corrupt signal row of instance \"%s\": unknown kind \"%s\"",
                         o->id, kind);
    return 0;
}

static int checkpoint_save_result(CheckpointSaveOp *o, const PGresult *res, Error *e)
{
    bool inserted = col_int4_binary(res, 0, 0) > 0, updated = col_int4_binary(res, 0, 1) > 0;
    if (inserted && !updated)
        return error_set(e, -ESTALE,
                         "instance \"%s\" is no longer running the launch that saves checkpoint "
                         "\"%s\"; the process should exit",
                         o->id, o->key);
    if (!inserted) {
        /* First write wins: hand back what is stored, change nothing. */
        if (PQgetisnull(res, 0, 2))
            return error_set(e, -EIO, "checkpoint \"%s\" of instance \"%s\" vanished", o->key,
                             o->id);
        checkpoint_keep_stored(o, PQgetvalue(res, 0, 2), (size_t)PQgetlength(res, 0, 2));
    }
    int r = checkpoint_read_signal(o, res, 0, 3, e);
    return r < 0 ? r : inserted ? 1 : 0;
}

static int checkpoint_save_run(void *conn, WriteOp *op, Error *e)
{
    CheckpointSaveOp *o = (CheckpointSaveOp *)op;
    Params p;
    checkpoint_save_params(o, now_usec(CLOCK_REALTIME), &p);
    int r;
    _cleanup_result_ PGresult *res =
        pg_rows(conn, checkpoint_save_sql, &p, true, &r, e, "save the checkpoint");
    if (!res)
        return r == -ENOENT ? store__no_instance(e, o->id) : r;
    return checkpoint_save_result(o, res, e);
}

/* A one-dimensional array parameter in PostgreSQL's binary format (array_recv): the header, then
 * each element as its length (-1: NULL) and bytes. */
typedef struct BinArray {
    StrBuf b;
} BinArray;

static void put_be32(StrBuf *b, uint32_t v)
{
    uint32_t be = htobe32(v);
    strbuf_put(b, &be, 4);
}

static void bin_array_begin(BinArray *a, uint32_t elem_oid, size_t n, bool has_null)
{
    a->b = (StrBuf)STRBUF_INIT;
    put_be32(&a->b, 1); /* dimensions */
    put_be32(&a->b, has_null);
    put_be32(&a->b, elem_oid);
    put_be32(&a->b, (uint32_t)n);
    put_be32(&a->b, 1); /* lower bound */
}

static void bin_array_add(BinArray *a, const void *v, size_t n)
{
    if (!v) {
        put_be32(&a->b, UINT32_MAX); /* -1: NULL */
        return;
    }
    put_be32(&a->b, (uint32_t)n);
    strbuf_put(&a->b, v, n);
}

#define OID_BYTEA 17
#define OID_TEXT 25

/* A batch of saves as one statement over arrays ($1 keys of instances, $2 checkpoint keys, $3
 * bytes, $4 token hashes or NULL, $5 now): each save as checkpoint_save_sql does it, but the
 * server plans and runs one statement for them all (docs/benchmarks.md, checkpoints_pg). A save
 * is made only while its launch is live (live); its instance's update then checks the token
 * again under the row's lock (updated), so a launch that ended between the two is a batch to run
 * again save by save. Within a batch the first save of a key wins (done picks it); a later one
 * finds nothing in the statement's snapshot, and the caller hands it the first one's bytes. One
 * row per save, in order: saved, live, updated, the bytes stored before, the pending signal, and
 * whether the instance exists. */
static const char checkpoint_save_many_sql[] =
    "WITH input AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[]) "
    "WITH ORDINALITY AS t(instance_key, key, data, token_hash, i)), "
    "live AS (SELECT input.i FROM input JOIN instances x USING (instance_key) "
    "WHERE input.token_hash IS NULL OR (x.token_hash = input.token_hash "
    "AND x.status IN ('pending', 'running'))), "
    "ins AS (INSERT INTO checkpoints (instance_key, key, data, created_at) "
    "SELECT instance_key, key, data, timestamptz 'epoch' + $5::bigint * interval '1 microsecond' "
    "FROM input WHERE i IN (SELECT i FROM live) ORDER BY i "
    "ON CONFLICT (instance_key, key) DO NOTHING RETURNING instance_key, key), "
    "done AS (SELECT DISTINCT ON (instance_key, key) input.i, instance_key, key, token_hash "
    "FROM input JOIN ins USING (instance_key, key) ORDER BY instance_key, key, input.i), "
    "upd AS (UPDATE instances x SET checkpoint_id = d.key, "
    "updated_at = timestamptz 'epoch' + $5::bigint * interval '1 microsecond', "
    "heartbeat_at = timestamptz 'epoch' + $5::bigint * interval '1 microsecond', "
    "auto_restarts = 0 "
    "FROM (SELECT DISTINCT ON (instance_key) instance_key, key, token_hash FROM done "
    "ORDER BY instance_key, i DESC) d WHERE x.instance_key = d.instance_key "
    "AND (d.token_hash IS NULL OR (x.token_hash = d.token_hash "
    "AND x.status IN ('pending', 'running'))) RETURNING x.instance_key), "
    "ev AS (INSERT INTO events (instance_key, type, subtype, created_at) "
    "SELECT instance_key, 'checkpoint', key, "
    "timestamptz 'epoch' + $5::bigint * interval '1 microsecond' FROM done ORDER BY i) "
    "SELECT input.i IN (SELECT i FROM done), input.i IN (SELECT i FROM live), "
    "input.instance_key IN (SELECT instance_key FROM upd), "
    "(SELECT c.data FROM checkpoints c WHERE c.instance_key = input.instance_key "
    "AND c.key = input.key), "
    "(SELECT s.type::text FROM signals s WHERE s.instance_key = input.instance_key), "
    "EXISTS (SELECT 1 FROM instances x WHERE x.instance_key = input.instance_key) "
    "FROM input ORDER BY input.i";

static bool col_bool_binary(const PGresult *res, int row, int col)
{
    return PQgetlength(res, row, col) == 1 && PQgetvalue(res, row, col)[0] != 0;
}

/* One save's outcome from its row of checkpoint_save_many_sql; first: the earlier save of the
 * same key in this batch that was made, or NULL. 1 saved, 0 the key was there, -ENOENT, -ESTALE
 * (nothing was saved), or -EIO: the batch must run again save by save. */
static int checkpoint_many_result(CheckpointSaveOp *o, const PGresult *res, int row,
                                  const CheckpointSaveOp *first, Error *e)
{
    bool saved = col_bool_binary(res, row, 0), live = col_bool_binary(res, row, 1),
         updated = col_bool_binary(res, row, 2);
    if (saved && !updated)
        return -EIO; /* the launch ended between the insert and the update */
    if (!saved) {
        const void *data = NULL;
        size_t n = 0;
        if (!PQgetisnull(res, row, 3)) {
            data = PQgetvalue(res, row, 3);
            n = (size_t)PQgetlength(res, row, 3);
        } else if (first) {
            data = first->data;
            n = first->n;
        } else if (!col_bool_binary(res, row, 5))
            return store__no_instance(e, o->id);
        else if (!live)
            return error_set(e, -ESTALE,
                             "instance \"%s\" is no longer running the launch that saves "
                             "checkpoint \"%s\"; the process should exit",
                             o->id, o->key);
        else
            return -EIO;
        checkpoint_keep_stored(o, data, n);
    }
    int r = checkpoint_read_signal(o, res, row, 4, e);
    return r < 0 ? r : saved ? 1 : 0;
}

/* The earlier op of the batch that saved the same key, or NULL. */
static const CheckpointSaveOp *saved_before(WriteOp *batch, const CheckpointSaveOp *o)
{
    for (WriteOp *op = batch; op != &o->op; op = op->next) {
        const CheckpointSaveOp *p = (const CheckpointSaveOp *)op;
        if (p->op.result == 1 && strcmp(p->id, o->id) == 0 && strcmp(p->key, o->key) == 0)
            return p;
    }
    return NULL;
}

/* StoreTxOps.run_batch: a batch of checkpoint saves as BEGIN and one statement
 * (checkpoint_save_many_sql), sent in one pipeline: one round trip and one statement for the
 * batch where there was one per save (docs/benchmarks.md, checkpoints_pg). Any other op in the
 * batch: the usual way (1). A failure, or a save whose launch ended meanwhile, makes the batcher
 * run each save alone (-EIO). */
static int tx_run_batch(void *conn, WriteOp *batch)
{
    PgConn *c = conn;
    size_t n = 0;
    bool has_null = false;
    for (WriteOp *op = batch; op; op = op->next, n++) {
        if (op->run != checkpoint_save_run)
            return 1;
        has_null = has_null || !((CheckpointSaveOp *)op)->token_hash;
    }
    BinArray ids, keys, data, tokens;
    bin_array_begin(&ids, OID_TEXT, n, false);
    bin_array_begin(&keys, OID_TEXT, n, false);
    bin_array_begin(&data, OID_BYTEA, n, false);
    bin_array_begin(&tokens, OID_TEXT, n, has_null);
    for (WriteOp *op = batch; op; op = op->next) {
        CheckpointSaveOp *o = (CheckpointSaveOp *)op;
        bin_array_add(&ids, o->id, strlen(o->id));
        bin_array_add(&keys, o->key, strlen(o->key));
        bin_array_add(&data, o->data ? o->data : "", o->n);
        bin_array_add(&tokens, o->token_hash, o->token_hash ? strlen(o->token_hash) : 0);
    }
    uint64_t now = htobe64((uint64_t)now_usec(CLOCK_REALTIME));
    Params p = {0};
    StrBuf *arrays[] = {&ids.b, &keys.b, &data.b, &tokens.b};
    for (size_t i = 0; i < ELEMENTSOF(arrays); i++)
        p_bytes(&p, arrays[i]->buf, arrays[i]->len);
    p_bytes(&p, &now, sizeof now);

    int r = 1;
    conn_ensure(c);
    char name[8];
    if (!prepared(c, checkpoint_save_many_sql, &p, name) || !PQenterPipelineMode(c->pg))
        goto out;
    /* The statement's generic plan, cached on the connection, where the session plans each
     * statement for its values (plan_cache_mode, store__pg_connect()). EXPLAIN ANALYZE, batch
     * of 8 saves: planned 0.8 ms + run 1.5 ms with a custom plan, 0.04 + 0.7 ms generic; of 64:
     * 0.9 + 8.6 ms against 0.13 + 4.1 ms. */
    static const char *const pre[] = {"BEGIN", "SET LOCAL plan_cache_mode = force_generic_plan"};
    bool sent = true;
    for (size_t i = 0; i < ELEMENTSOF(pre); i++)
        sent = sent && PQsendQueryParams(c->pg, pre[i], 0, NULL, NULL, NULL, NULL, 0);
    sent = sent && PQsendQueryPrepared(c->pg, name, p.n, p.v, p.len, p.fmt, 1) &&
           PQpipelineSync(c->pg);
    bool failed = !sent;
    usec_t until = conn_deadline(c);
    for (size_t q = 0; sent && q <= ELEMENTSOF(pre); q++) {
        PGresult *res = conn_result(c, until);
        ExecStatusType st = PQresultStatus(res);
        if (q < ELEMENTSOF(pre))
            failed = failed || st != PGRES_COMMAND_OK;
        else if (!failed && st == PGRES_TUPLES_OK && (size_t)PQntuples(res) == n) {
            int row = 0;
            for (WriteOp *op = batch; op && !failed; op = op->next, row++) {
                CheckpointSaveOp *o = (CheckpointSaveOp *)op;
                op->result =
                    checkpoint_many_result(o, res, row, saved_before(batch, o), &op->error);
                failed = op->result == -EIO;
            }
        } else
            failed = true;
        PQclear(res);
        while ((res = conn_result(c, until))) /* the NULL that ends each query's results */
            PQclear(res);
    }
    PGresult *sync = sent ? conn_result(c, until) : NULL;
    bool synced = PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
    PQclear(sync);
    if (!synced || !PQexitPipelineMode(c->pg))
        failed = true;
    r = failed ? -EIO : 0;
out:
    for (size_t i = 0; i < ELEMENTSOF(arrays); i++)
        strbuf_done(arrays[i]);
    return r;
}

static int checkpoint_get(Store *store, const char *id, const char *key, void **ret_data,
                          size_t *ret_n, usec_t *ret_created, Error *e)
{
    READER(PG(store), c);
    int r = checkpoint_read_locked(c, id, key, ret_data, ret_n, ret_created, e);
    if (r == 0)
        return error_set(e, -ENOENT, "checkpoint \"%s\" of instance \"%s\" does not exist", key,
                         id);
    return r < 0 ? r : 0;
}

static int checkpoint_list(Store *store, const char *id, int64_t after_seq, unsigned limit,
                           CheckpointInfo **ret, size_t *ret_n, bool *ret_more, Error *e)
{
    READER(PG(store), c);
    Params p = {0};
    p_text(&p, id);
    p_int(&p, after_seq);
    p_int(&p, (int64_t)limit + 1);
    int r;
    _cleanup_result_ PGresult *res =
        pg_rows(c,
                "SELECT key, octet_length(data), " US(
                    "created_at") ", seq FROM checkpoints "
                                  "WHERE instance_key = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &p, false, &r, e, "list checkpoints");
    if (!res)
        return r;
    size_t n = (size_t)PQntuples(res);
    CheckpointInfo *rows = xcalloc(n + 1, sizeof *rows);
    for (size_t i = 0; i < n; i++)
        rows[i] = (CheckpointInfo){.key = col_text(res, (int)i, 0),
                                   .size = (size_t)col_int(res, (int)i, 1),
                                   .created_at = col_usec(res, (int)i, 2),
                                   .seq = col_int(res, (int)i, 3)};
    bool more = n > limit;
    if (more)
        free(rows[--n].key);
    if (ret_more)
        *ret_more = more;
    *ret = rows;
    *ret_n = n;
    return 0;
}

static int event_append_run(void *conn, WriteOp *op, Error *e)
{
    PgConn *c = conn;
    EventAppendOp *o = (EventAppendOp *)op;
    int r = launch_live_locked(c, o->id, o->token_hash, e);
    if (r < 0)
        return r;
    return event_insert_locked(c, o->id, o->type, o->subtype, o->payload, o->request_key,
                               now_usec(CLOCK_REALTIME), &o->event_id, e);
}

static int event_list(Store *store, const EventFilter *f, EventRecord **ret, size_t *ret_n,
                      bool *ret_more, Error *e)
{
    READER(PG(store), c);
    Params p = {0};
    p_text(&p, f->instance_key);
    p_int(&p, f->after_id);
    p_text(&p, f->type);
    p_text(&p, f->subtype);
    p_int(&p, (int64_t)f->after);
    p_int(&p, (int64_t)f->before);
    p_int(&p, (int64_t)f->limit + 1);
    int r;
    _cleanup_result_ PGresult *res = pg_rows(
        c,
        "SELECT id, instance_key, type, subtype, payload, " US(
            "created_at") " FROM events "
                          "WHERE instance_key = $1 AND id > $2 AND ($3::text IS NULL OR type = $3) "
                          "AND "
                          "($4::text IS NULL OR subtype = $4) AND ($5::bigint = 0 OR created_at "
                          ">= " TS("$5") ") "
                                         "AND ($6::bigint = 0 OR created_at < " TS(
                                             "$6") ") ORDER BY id LIMIT $7",
        &p, false, &r, e, "list events");
    if (!res)
        return r;
    size_t n = (size_t)PQntuples(res);
    EventRecord *rows = xcalloc(n + 1, sizeof *rows);
    for (size_t i = 0; i < n; i++)
        rows[i] = (EventRecord){.id = col_int(res, (int)i, 0),
                                .instance_key = col_text(res, (int)i, 1),
                                .type = col_text(res, (int)i, 2),
                                .subtype = col_text(res, (int)i, 3),
                                .payload = col_text(res, (int)i, 4),
                                .created_at = col_usec(res, (int)i, 5)};
    bool more = n > f->limit;
    if (more) {
        EventRecord *last = &rows[--n];
        free(last->instance_key);
        free(last->type);
        free(last->subtype);
        free(last->payload);
    }
    if (ret_more)
        *ret_more = more;
    *ret = rows;
    *ret_n = n;
    return 0;
}

/* ---- Signals ---- */

/* The rank of a control signal type in SQL: cancel outranks pause outranks resume. */
#define SIGNAL_RANK(col) "(CASE " col " WHEN 'cancel' THEN 3 WHEN 'pause' THEN 2 ELSE 1 END)"

static int signal_send_run(void *conn, WriteOp *op, Error *e)
{
    PgConn *c = conn;
    SignalOp *o = (SignalOp *)op;
    Params p = {0};
    p_text(&p, o->id);
    p_signal(&p, o->kind);
    p_text(&p, o->payload);
    p_int(&p, (int64_t)now_usec(CLOCK_REALTIME));
    /* One statement: insert, or replace a pending signal that does not outrank the new one. */
    int r = pg_command_child(
        c,
        "INSERT INTO signals (instance_key, type, payload, created_at) "
        "VALUES ($1, $2::signal_kind, $3, " TS(
            "$4") ") ON CONFLICT (instance_key) DO UPDATE "
                  "SET type = excluded.type, payload = excluded.payload, created_at = "
                  "excluded.created_at "
                  "WHERE " SIGNAL_RANK("signals.type") " <= " SIGNAL_RANK("excluded.type"),
        &p, e, "store the signal", o->id);
    return r < 0 ? r : r > 0;
}

static int signal_get_locked(PgConn *c, const char *id, SignalKind *ret_kind, char **ret_payload,
                             Error *e)
{
    Params p = {0};
    p_text(&p, id);
    int r;
    _cleanup_result_ PGresult *res =
        pg_rows(c, "SELECT type, payload FROM signals WHERE instance_key = $1", &p, false, &r, e,
                "read the signal");
    if (!res)
        return r;
    bool found = PQntuples(res) > 0;
    SignalKind kind = _SIGNAL_KIND_INVALID;
    if (found) {
        kind = signal_kind_from_string(PQgetvalue(res, 0, 0));
        if (kind < 0)
            return error_set(e, -EIO, "corrupt signal row of instance \"%s\": unknown kind \"%s\"",
                             id, PQgetvalue(res, 0, 0));
    }
    *ret_kind = kind;
    if (ret_payload)
        *ret_payload = found ? col_text(res, 0, 1) : NULL;
    return found;
}

static int signal_get(Store *store, const char *id, SignalKind *ret_kind, char **ret_payload,
                      Error *e)
{
    READER(PG(store), c);
    return signal_get_locked(c, id, ret_kind, ret_payload, e);
}

static int signal_ack_run(void *conn, WriteOp *op, Error *e)
{
    SignalOp *o = (SignalOp *)op;
    Params p = {0};
    p_text(&p, o->id);
    p_signal(&p, o->kind);
    int r =
        pg_command(conn, "DELETE FROM signals WHERE instance_key = $1 AND type = $2::signal_kind",
                   &p, e, "acknowledge the signal");
    return r < 0 ? r : r > 0;
}

static int custom_signal_put_run(void *conn, WriteOp *op, Error *e)
{
    PgConn *c = conn;
    SignalOp *o = (SignalOp *)op;
    Params p = {0};
    p_text(&p, o->id);
    p_text(&p, o->wait_key);
    p_text(&p, o->payload);
    p_int(&p, (int64_t)now_usec(CLOCK_REALTIME));
    int r =
        pg_command_child(c,
                         "INSERT INTO custom_signals (instance_key, wait_key, payload, "
                         "created_at) VALUES ($1, $2, $3, " TS(
                             "$4") ") "
                                   "ON CONFLICT (instance_key, wait_key) DO UPDATE SET payload = "
                                   "excluded.payload, created_at = excluded.created_at",
                         &p, e, "store the custom signal", o->id);
    return r < 0 ? r : 0;
}

static int custom_signal_take_run(void *conn, WriteOp *op, Error *e)
{
    SignalOp *o = (SignalOp *)op;
    Params p = {0};
    p_text(&p, o->id);
    p_text(&p, o->wait_key);
    int r;
    _cleanup_result_ PGresult *res = pg_rows(
        conn,
        "DELETE FROM custom_signals WHERE instance_key = $1 AND wait_key = $2 RETURNING payload",
        &p, false, &r, e, "take the custom signal");
    if (!res)
        return r;
    if (PQntuples(res) == 0)
        return 0;
    o->taken = col_text(res, 0, 0);
    return 1;
}

/* Take a custom signal and save its payload as checkpoint o->checkpoint_key, in one
 * transaction. */
static int custom_signal_deliver_run(void *conn, WriteOp *op, Error *e)
{
    PgConn *c = conn;
    SignalOp *o = (SignalOp *)op;
    Params p = {0};
    p_text(&p, o->id);
    p_text(&p, o->checkpoint_key);
    int r;
    _cleanup_result_ PGresult *res =
        pg_rows(c, "SELECT 1 FROM checkpoints WHERE instance_key = $1 AND key = $2", &p, false, &r,
                e, "look up the checkpoint");
    if (!res)
        return r;
    if (PQntuples(res) > 0)
        return error_set(e, -EEXIST,
                         "checkpoint \"%s\" of instance \"%s\" exists already; read it, the "
                         "wait's outcome is there",
                         o->checkpoint_key, o->id);
    r = custom_signal_take_run(c, op, e);
    if (r <= 0)
        return r;
    const char *bytes = o->taken ? o->taken : "null";
    usec_t now = now_usec(CLOCK_REALTIME);
    r = checkpoint_insert_locked(c, o->id, o->checkpoint_key, bytes, strlen(bytes), now, e);
    if (r == 0)
        r = error_set(e, -EIO, "checkpoint \"%s\" of instance \"%s\" appeared", o->checkpoint_key,
                      o->id);
    if (r > 0)
        r = checkpoint_stored_locked(c, o->id, o->checkpoint_key, o->token_hash, now, e);
    return r < 0 ? r : 1;
}

static int tenant_metrics(Store *store, const char *tenant, usec_t start, usec_t end, usec_t unit,
                          MetricsBucket *m, size_t n, Error *e)
{
    READER(PG(store), c);
    Params p = {0};
    p_text(&p, tenant);
    p_int(&p, (int64_t)start);
    p_int(&p, (int64_t)end);
    p_int(&p, (int64_t)unit);
    int r;
    _cleanup_result_ PGresult *res = pg_rows(
        c,
        "SELECT b.fin / $4::bigint * $4::bigint AS bucket, b.status, count(*), "
        "count(b.dur), sum(b.dur)::bigint, min(b.dur), max(b.dur), count(b.mem), "
        "sum(b.mem)::bigint, max(b.mem) FROM (SELECT status, "
        "(extract(epoch from finished_at) * 1000000)::bigint AS fin, "
        "((extract(epoch from finished_at) - extract(epoch from started_at)) * 1000000)::bigint "
        "AS dur, NULLIF(memory_peak_bytes, 0) AS mem FROM instances WHERE tenant_id = $1 AND "
        "finished_at >= (timestamptz 'epoch' + ($2)::bigint * interval '1 microsecond') AND "
        "finished_at < (timestamptz 'epoch' + ($3)::bigint * interval '1 microsecond') AND "
        "status IN ('completed', 'failed', 'cancelled')) b GROUP BY bucket, b.status",
        &p, false, &r, e, "read the tenant's metrics");
    if (!res)
        return r;
    for (int i = 0; i < PQntuples(res); i++) {
        MetricsRow row = {
            .bucket = col_usec(res, i, 0),
            .count = (uint64_t)col_int(res, i, 2),
            .timed = (uint64_t)col_int(res, i, 3),
            .duration_sum = col_usec(res, i, 4),
            .duration_min = col_usec(res, i, 5),
            .duration_max = col_usec(res, i, 6),
            .measured = (uint64_t)col_int(res, i, 7),
            .memory_sum = (uint64_t)col_int(res, i, 8),
            .memory_max = (uint64_t)col_int(res, i, 9),
        };
        r = col_status(res, i, 1, NULL, &row.status, e);
        if (r >= 0)
            r = store__metrics_add(m, n, unit, &row, e);
        if (r < 0)
            return r;
    }
    return 0;
}

static int custom_signal_exists(Store *store, const char *id, const char *wait_key, Error *e)
{
    READER(PG(store), c);
    Params p = {0};
    p_text(&p, id);
    p_text(&p, wait_key);
    int r;
    _cleanup_result_ PGresult *res =
        pg_rows(c, "SELECT 1 FROM custom_signals WHERE instance_key = $1 AND wait_key = $2", &p,
                false, &r, e, "look up the custom signal");
    if (!res)
        return r;
    return PQntuples(res) > 0;
}

/* ---- several daemons: leases, takeovers, image bytes -------------------------------------- */

static int daemon_list(Store *store, DaemonRecord **ret, size_t *ret_n, Error *e)
{
    READER(PG(store), c);
    Params p = {0};
    p_int(&p, STORE_LIST_MAX);
    int r;
    _cleanup_result_ PGresult *res = pg_rows(
        c,
        "SELECT d.id, d.host, d.pid, (extract(epoch from d.started_at) * 1000000)::bigint, "
        "(extract(epoch from d.lease_until) * 1000000)::bigint, "
        "d.lease_until > clock_timestamp(), (SELECT count(*) FROM instances i WHERE i.owner = d.id "
        "AND i.status IN ('pending', 'running', 'suspended')) FROM daemons d ORDER BY d.id "
        "LIMIT $1",
        &p, false, &r, e, "list the daemons");
    if (!res)
        return r;
    size_t n = (size_t)PQntuples(res);
    DaemonRecord *v = xcalloc(n ? n : 1, sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = (DaemonRecord){.id = col_text(res, (int)i, 0),
                              .host = col_text(res, (int)i, 1),
                              .pid = (int)col_int(res, (int)i, 2),
                              .started_at = col_usec(res, (int)i, 3),
                              .lease_until = col_usec(res, (int)i, 4),
                              .live = strcmp(PQgetvalue(res, (int)i, 5), "t") == 0,
                              .instances = (uint64_t)col_int(res, (int)i, 6)};
    *ret = v;
    *ret_n = n;
    return 0;
}

/* Leases end on the server's clock, so that the daemons' clocks need not agree. */
static int daemon_register_run(void *conn, WriteOp *op, Error *e)
{
    PgConn *c = conn;
    DaemonOp *o = (DaemonOp *)op;
    Params p = {0};
    p_text(&p, o->id);
    int r;
    _cleanup_result_ PGresult *res = pg_rows(
        c, "SELECT host, lease_until > clock_timestamp() FROM daemons WHERE id = $1 FOR UPDATE", &p,
        false, &r, e, "read the daemon's registration");
    if (!res)
        return r;
    if (PQntuples(res) > 0 && strcmp(PQgetvalue(res, 0, 1), "t") == 0 &&
        strcmp(PQgetvalue(res, 0, 0), o->host) != 0)
        return error_set(e, -EBUSY,
                         "daemon id \"%s\" is in use by a daemon on host \"%s\" whose lease has "
                         "not ended; hint: each daemon needs its own DATA_DIR (the id is kept in "
                         "DATA_DIR/daemon-id)",
                         o->id, PQgetvalue(res, 0, 0));
    p_text(&p, o->host);
    p_int(&p, o->pid);
    p_int(&p, (int64_t)o->lease);
    r = pg_command(c,
                   "INSERT INTO daemons (id, host, pid, started_at, lease_until) "
                   "VALUES ($1, $2, $3, clock_timestamp(), "
                   "clock_timestamp() + $4::bigint * interval '1 microsecond') "
                   "ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
                   "started_at = excluded.started_at, lease_until = excluded.lease_until",
                   &p, e, "register the daemon");
    return r < 0 ? r : 0;
}

static int daemon_renew_run(void *conn, WriteOp *op, Error *e)
{
    DaemonOp *o = (DaemonOp *)op;
    Params p = {0};
    p_text(&p, o->id);
    p_int(&p, (int64_t)o->lease);
    int r = pg_command(conn,
                       "UPDATE daemons SET lease_until = clock_timestamp() + $2::bigint * interval "
                       "'1 microsecond' WHERE id = $1",
                       &p, e, "renew the daemon's lease");
    if (r < 0)
        return r;
    o->renewed = r > 0;
    return 0;
}

static int daemon_unregister_run(void *conn, WriteOp *op, Error *e)
{
    DaemonOp *o = (DaemonOp *)op;
    Params p = {0};
    p_text(&p, o->id);
    int r = pg_command(conn, "DELETE FROM daemons WHERE id = $1", &p, e, "unregister the daemon");
    return r < 0 ? r : 0;
}

static int instance_adopt_run(void *conn, WriteOp *op, Error *e)
{
    PgConn *c = conn;
    AdoptOp *o = (AdoptOp *)op;
    /* One takeover at a time: each statement below then sees what the one before committed. (A
     * daemon stopped while it holds this lock holds it only until the server ends its session:
     * conn_session().) Rows locked by a transaction in progress are left for the next round. */
    int r = pg_command(c, "SELECT pg_advisory_xact_lock(" PG_ADOPT_LOCK ")", NULL, e,
                       "wait for other takeovers");
    if (r < 0)
        return r;
    Params p = {0};
    p_text(&p, o->owner);
    if (o->expired_too) {
        r = pg_command(c,
                       "DELETE FROM daemons WHERE id IN (SELECT id FROM daemons WHERE id <> $1 "
                       "AND lease_until < clock_timestamp() FOR UPDATE SKIP LOCKED)",
                       &p, e, "remove the daemons whose lease ended");
        if (r < 0)
            return r;
    }
    p_int(&p, o->limit);
    p_int(&p, o->after);
    _cleanup_result_ PGresult *res =
        pg_rows(c,
                "UPDATE instances SET owner = $1 WHERE seq IN (SELECT seq FROM instances i "
                "WHERE seq > $3 AND (status IN ('pending', 'running', 'suspended') "
                "OR (exit_code IS NULL AND attempt > 0)) "
                "AND (owner IS NULL OR NOT EXISTS (SELECT 1 FROM daemons d WHERE d.id = i.owner)) "
                "ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING instance_key, seq",
                &p, false, &r, e, "take over instances");
    if (!res)
        return r;
    o->n = (size_t)PQntuples(res);
    o->keys = xcalloc(o->n + 1, sizeof *o->keys);
    o->last = o->after; /* a run again after a lost batch starts over */
    for (size_t i = 0; i < o->n; i++) {
        o->keys[i] = col_text(res, (int)i, 0);
        o->last = MAX(o->last, col_int(res, (int)i, 1));
    }
    return 0;
}

/* Image bytes go in parts of this size: one part is one value in memory on either side. */
#define BLOB_PART (1024 * 1024)

static int image_blob_put(Store *store, const char *sha256, int fd, uint64_t n, Error *e)
{
    READER(PG(store), c);
    int64_t parts = n == 0 ? 1 : (int64_t)((n + BLOB_PART - 1) / BLOB_PART);
    Params q = {0};
    p_text(&q, sha256);
    int r;
    _cleanup_result_ PGresult *have =
        pg_rows(c, "SELECT count(*) FROM image_blobs WHERE sha256 = $1", &q, false, &r, e,
                "look up the image's bytes");
    if (!have)
        return r;
    if (col_int(have, 0, 0) == parts) {
        /* kept already (the same bytes as another version): kept another hour at least */
        r = pg_command(c, "UPDATE image_blobs SET created_at = now() WHERE sha256 = $1", &q, e,
                       "keep the image's bytes");
        return r < 0 ? r : 0;
    }
    r = pg_command(c, "BEGIN", NULL, e, "begin a transaction");
    if (r < 0)
        return r;
    _cleanup_free_ char *buf = xmalloc(BLOB_PART);
    for (int64_t i = 0; r >= 0 && i < parts; i++) {
        size_t want = (size_t)MIN((uint64_t)BLOB_PART, n - (uint64_t)i * BLOB_PART), got = 0;
        while (got < want) {
            ssize_t k = pread(fd, buf + got, want - got, (off_t)((uint64_t)i * BLOB_PART + got));
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                r = error_set(e, k < 0 ? -errno : -EIO, "could not read the image's bytes: %s",
                              k < 0 ? strerror(errno) : "the file is shorter than its size");
                break;
            }
            got += (size_t)k;
        }
        if (r < 0)
            break;
        Params p = {0};
        p_text(&p, sha256);
        p_int(&p, i);
        p_bytes(&p, buf, want);
        r = pg_command(c,
                       "INSERT INTO image_blobs (sha256, part, data) VALUES ($1, $2, $3) "
                       "ON CONFLICT (sha256, part) DO NOTHING",
                       &p, e, "store the image's bytes");
    }
    if (r >= 0)
        r = pg_command(c, "COMMIT", NULL, e, "commit the image's bytes");
    if (r < 0 && !c->hung)
        PQclear(conn_exec(c, "ROLLBACK"));
    return r < 0 ? r : 0;
}

static int image_blob_get(Store *store, const char *sha256, int fd, Error *e)
{
    READER(PG(store), c);
    for (int64_t i = 0;; i++) {
        Params p = {0};
        p_text(&p, sha256);
        p_int(&p, i);
        int r;
        _cleanup_result_ PGresult *res =
            pg_rows(c, "SELECT data FROM image_blobs WHERE sha256 = $1 AND part = $2", &p, true, &r,
                    e, "read the image's bytes");
        if (!res)
            return r;
        if (PQntuples(res) == 0)
            return i > 0 ? 0
                         : error_set(e, -ENOENT,
                                     "the bytes of image content %s are not in the "
                                     "database",
                                     sha256);
        const char *data = PQgetvalue(res, 0, 0);
        size_t len = (size_t)PQgetlength(res, 0, 0);
        r = fileio_write_all(fd, data, len);
        if (r < 0)
            return error_set(e, r, "could not write the image's bytes: %s", strerror(-r));
    }
}

static const StoreOps pg_ops = {
    .name = "postgres",
    .close = pg_close,
    .info = pg_info,
    .ping = pg_ping,
    .backup = NULL, /* pg_dump: store_backup() says so */
    .image_insert_run = image_insert_run,
    .image_get = image_get,
    .image_list = image_list,
    .image_delete_run = image_delete_run,
    .image_exists = image_exists,
    .image_count = image_count,
    .instance_insert_minimal_run = instance_insert_minimal_run,
    .instance_create_run = instance_create_run,
    .instance_get = instance_get,
    .instance_transition_run = instance_transition_run,
    .instance_transitions_run = instance_transitions_run,
    .instance_list = instance_list,
    .instance_heartbeat_run = instance_heartbeat_run,
    .instance_get_by_token = instance_get_by_token,
    .instance_find = instance_find,
    .instance_list_wakes = instance_list_wakes,
    .instance_purge_run = instance_purge_run,
    .image_purge_run = image_purge_run,
    .instance_count_by_status = instance_count_by_status,
    .checkpoint_save_run = checkpoint_save_run,
    .checkpoint_get = checkpoint_get,
    .checkpoint_list = checkpoint_list,
    .event_append_run = event_append_run,
    .event_list = event_list,
    .signal_send_run = signal_send_run,
    .signal_get = signal_get,
    .signal_ack_run = signal_ack_run,
    .custom_signal_put_run = custom_signal_put_run,
    .custom_signal_take_run = custom_signal_take_run,
    .custom_signal_deliver_run = custom_signal_deliver_run,
    .custom_signal_exists = custom_signal_exists,
    .tenant_metrics = tenant_metrics,
    .daemon_list = daemon_list,
    .daemon_register_run = daemon_register_run,
    .daemon_renew_run = daemon_renew_run,
    .daemon_unregister_run = daemon_unregister_run,
    .instance_adopt_run = instance_adopt_run,
    .image_blob_put = image_blob_put,
    .image_blob_get = image_blob_get,
};

static int conn_open(PgStore *s, PgConn *c, Error *e)
{
    pthread_mutex_init(&c->lock, NULL);
    c->conninfo = s->conninfo;
    c->timeout = &s->base.timeout;
    c->watch = c == &s->probe ? NULL : &s->watch;
    int r = store__pg_connect(s->conninfo, &c->pg, e);
    if (r >= 0 && PQsetnonblocking(c->pg, 1) < 0)
        r = error_set(e, -EIO, "could not put the PostgreSQL connection in non-blocking mode");
    return r;
}

int store__pg_open(const char *conninfo, Store **ret, Error *e)
{
    StoreInfo info;
    int r = store__pg_migrate(conninfo, &info, e);
    if (r < 0)
        return r;
    PgStore *s = xcalloc(1, sizeof *s);
    s->base.ops = &pg_ops;
    s->base.batch = &s->batch;
    s->base.timeout = STORE_TIMEOUT_DEFAULT;
    s->conninfo = xstrdup(conninfo);
    s->schema_version = info.schema_version;
    r = conn_open(s, &s->writer, e);
    for (size_t i = 0; r >= 0 && i < PG_READERS; i++)
        r = conn_open(s, &s->readers[i], e);
    if (r >= 0)
        r = conn_open(s, &s->probe, e);
    if (r >= 0)
        r = watch_start(&s->watch, &s->probe, e);
#ifdef RUNTARA_FAULT_INJECTION
    const char *lose = secure_getenv("RUNTARA_FAULT_STORE_LOSE_BATCH");
    if (lose) /* lose every Nth batch, as if its COMMIT had failed */
        s->batch.fault_lose_every = (unsigned)strtoul(lose, NULL, 10);
#endif
    if (r >= 0)
        r = store_batch_init(&s->batch, &pg_tx, &s->writer, &s->writer.lock, e);
    if (r < 0) {
        pg_close(&s->base);
        return r;
    }
    *ret = &s->base;
    return 0;
}
