/* The SQLite backend: WAL, synchronous=FULL (an acknowledged write survives power loss), foreign
 * keys on, and the database held by this process alone (the "unix-excl" VFS, below). Reads go to
 * a small pool of read-only connections, which WAL lets run while the writer commits; writes
 * from concurrent threads share one writer connection and one COMMIT per batch (group commit,
 * below; the design is in README.md). Migrations are applied at open, each in its own
 * transaction, and recorded in schema_migrations. */
#include <assert.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../base/alloc.h"
#include "../base/fileio.h"
#include "../base/log.h"
#include "../base/strbuf.h"
#include "store-batch.h"
#include "store-ops.h"
#include "store-internal.h"

/* Read connections in the pool. Reads are short (one statement, or list + count), so a few
 * serve the HTTP pools; a thread finding all busy waits on one. */
#define SQLITE_READERS 4

/* Prepared statements kept per connection: more than the SQL texts of this file. */
#define SQLITE_STMT_CACHE 64

/* One connection, the mutex that gives one thread at a time the use of it, and its prepared
 * statements, keyed by the address of their SQL text (a string literal). */
typedef struct Conn {
    pthread_mutex_t lock;
    sqlite3 *db;
    size_t n_cached;
    struct {
        const char *sql;
        sqlite3_stmt *st;
    } cached[SQLITE_STMT_CACHE];
} Conn;

typedef struct SqliteStore {
    Store base;
    Conn writer; /* used by the leader of the running batch only (group commit, below) */
    Conn readers[SQLITE_READERS];
    atomic_uint next_reader;
    StoreBatcher batch; /* group commit on the writer */
    int schema_version;
} SqliteStore;

#define SQ(st) ((SqliteStore *)(st))

/* The errno for the connection's last error: a missing parent row is -ENOENT, a CHECK or NOT NULL
 * violation -EINVAL, any other constraint (UNIQUE, PRIMARY KEY) -EEXIST. */
static int sq_code(Conn *c)
{
    int rc = sqlite3_extended_errcode(c->db);
    switch (rc) {
    case SQLITE_CONSTRAINT_FOREIGNKEY:
        return -ENOENT;
    case SQLITE_CONSTRAINT_CHECK:
    case SQLITE_CONSTRAINT_NOTNULL:
        return -EINVAL;
    default:
        break;
    }
    switch (rc & 0xff) {
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_TOOBIG:
        return -EFBIG;
    case SQLITE_CONSTRAINT:
        return -EEXIST;
    default:
        return -EIO;
    }
}

static int sq_error(Conn *c, Error *e, const char *what)
{
    return error_set(e, sq_code(c), "could not %s: %s", what, sqlite3_errmsg(c->db));
}

/* sq_error for a write into a table that references instances: a foreign key failure means the
 * instance does not exist, and says so. */
static int sq_error_child(Conn *c, Error *e, const char *what, const char *id)
{
    if (sqlite3_extended_errcode(c->db) == SQLITE_CONSTRAINT_FOREIGNKEY)
        return store__no_instance(e, id);
    return sq_error(c, e, what);
}

static void finalizep(sqlite3_stmt **st)
{
    if (*st)
        sqlite3_finalize(*st);
}
#define _cleanup_stmt_ _cleanup_(finalizep)

/* For a cached statement (sq_cached): reset it and drop its bindings, which ends the read it
 * may hold open and frees it for the next use. */
static void resetp(sqlite3_stmt **st)
{
    if (*st) {
        (void)sqlite3_reset(*st);
        (void)sqlite3_clear_bindings(*st);
    }
}
#define _cleanup_reset_ _cleanup_(resetp)

static void conn_unlockp(Conn **c)
{
    if (*c)
        pthread_mutex_unlock(&(*c)->lock);
}

/* A free read connection: try each once, starting at a rotating index, then wait on one. */
static Conn *reader_get(SqliteStore *s)
{
    unsigned start = atomic_fetch_add_explicit(&s->next_reader, 1, memory_order_relaxed);
    for (unsigned i = 0; i < SQLITE_READERS; i++) {
        Conn *c = &s->readers[(start + i) % SQLITE_READERS];
        if (pthread_mutex_trylock(&c->lock) == 0)
            return c;
    }
    Conn *c = &s->readers[start % SQLITE_READERS];
    pthread_mutex_lock(&c->lock);
    return c;
}

/* Declare c as a read connection held until the end of the scope. Declare it before any
 * statement, so statements are finalized before the connection is handed back. */
#define READER(s, c) _cleanup_(conn_unlockp) Conn *c = reader_get(s)

static int sq_exec(Conn *c, const char *sql, Error *e, const char *what)
{
    if (sqlite3_exec(c->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return sq_error(c, e, what);
    return 0;
}

static int sq_prepare(Conn *c, const char *sql, sqlite3_stmt **ret, Error *e)
{
    if (sqlite3_prepare_v2(c->db, sql, -1, ret, NULL) != SQLITE_OK)
        return sq_error(c, e, "prepare a statement");
    return 0;
}

/* The connection's prepared statement for sql, which must be a string literal (its address is
 * the cache key; SQL built at run time goes through sq_prepare). Declare the variable
 * _cleanup_reset_, so it is reset before the connection is handed on. */
static int sq_cached(Conn *c, const char *sql, sqlite3_stmt **ret, Error *e)
{
    for (size_t i = 0; i < c->n_cached; i++)
        if (c->cached[i].sql == sql) {
            *ret = c->cached[i].st;
            return 0;
        }
    /* a fixed set of literals: running out of slots is a programming error */
    ASSERT_SE(c->n_cached < SQLITE_STMT_CACHE);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK)
        return sq_error(c, e, "prepare a statement");
    c->cached[c->n_cached].sql = sql;
    c->cached[c->n_cached++].st = st;
    *ret = st;
    return 0;
}

/* sq_exec for a statement without results through the cache (sql is a string literal). */
static int sq_exec_cached(Conn *c, const char *sql, Error *e, const char *what)
{
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c, sql, &st, e);
    if (r < 0)
        return r;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return sq_error(c, e, what);
    return 0;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

static char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? xstrdup((const char *)t) : NULL;
}

/* The status in column i of a row of instance instance_key (for the message; may be NULL): the
 * one place a status's text is read. Text this binary does not know (a corrupt row, or one a newer
 * version wrote) is -EIO, and the row is not read. */
static int col_status(sqlite3_stmt *st, int i, const char *instance_key, InstanceStatus *ret,
                      Error *e)
{
    const char *text = (const char *)sqlite3_column_text(st, i);
    InstanceStatus s = instance_status_from_string(text);
    if (s < 0 && instance_key)
        return error_set(e, -EIO, "corrupt instance row \"%s\": unknown status \"%s\"",
                         instance_key, text ? text : "");
    if (s < 0)
        return error_set(e, -EIO, "corrupt instance row: unknown status \"%s\"", text ? text : "");
    *ret = s;
    return 0;
}

/* A status parameter: the one place a status's text is written (store.c checked the value). */
static void bind_status(sqlite3_stmt *st, int i, InstanceStatus s)
{
    sqlite3_bind_text(st, i, instance_status_to_string(s), -1, SQLITE_STATIC);
}

/* The kind in column i of instance instance_key's signal row: the one place a signal's text is
 * read. Text this binary does not know is a corrupt row: -EIO. */
static int col_signal(sqlite3_stmt *st, int i, const char *instance_key, SignalKind *ret, Error *e)
{
    const char *text = (const char *)sqlite3_column_text(st, i);
    SignalKind k = signal_kind_from_string(text);
    if (k < 0)
        return error_set(e, -EIO, "corrupt signal row of instance \"%s\": unknown kind \"%s\"",
                         instance_key, text ? text : "");
    *ret = k;
    return 0;
}

/* A signal kind parameter: the one place a signal's text is written (store.c checked it). */
static void bind_signal(sqlite3_stmt *st, int i, SignalKind k)
{
    sqlite3_bind_text(st, i, signal_kind_to_string(k), -1, SQLITE_STATIC);
}

/* A time column: 0 for NULL (unset). */
static usec_t col_usec(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? 0 : (usec_t)sqlite3_column_int64(st, i);
}

/* A time parameter: NULL for 0 (unset). */
static void bind_usec(sqlite3_stmt *st, int i, usec_t v)
{
    if (v)
        sqlite3_bind_int64(st, i, (sqlite3_int64)v);
    else
        sqlite3_bind_null(st, i);
}

/* A copy of a blob column; never NULL, even for zero bytes. */
static void *col_blob(sqlite3_stmt *st, int i, size_t *ret_n)
{
    const void *b = sqlite3_column_blob(st, i);
    size_t n = (size_t)sqlite3_column_bytes(st, i);
    void *out = xmalloc(n ? n : 1);
    if (n)
        memcpy(out, b, n);
    *ret_n = n;
    return out;
}

static void sq_rollback(Conn *c)
{
    (void)sq_exec_cached(c, "ROLLBACK", NULL, "roll back the transaction");
}

/* ---- Group commit ----
 *
 * Writes go through the batcher of store-batch.h, on the writer connection, with SQLite's
 * transaction statements. A batch with a visible hook commits with synchronous=NORMAL, runs its
 * hooks, then syncs the WAL itself (wal_sync) before any caller learns its result: the write is
 * visible a sync earlier, and durable before it is acknowledged. */

/* The durability a COMMIT with synchronous=FULL gives, for one made with synchronous=NORMAL:
 * SQLite's own sync call of a FULL commit (SQLITE_SYNC_NORMAL on the WAL file; it also syncs the
 * directory of a new WAL), made after the commit instead of inside it. The commit is visible
 * already, so a failure cannot be reported as the write's failure: like PostgreSQL on a failed
 * WAL flush, the daemon stops, and its restart recovers what is on disk. */
static void wal_sync(Conn *c)
{
    sqlite3_file *f = NULL;
    int rc = sqlite3_file_control(c->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &f);
    if (rc == SQLITE_OK)
        rc = f && f->pMethods ? f->pMethods->xSync(f, SQLITE_SYNC_NORMAL) : SQLITE_MISUSE;
    if (rc != SQLITE_OK) {
        log_full(LOG_CRIT,
                 "could not sync the database's write-ahead log: %s; stopping, since a "
                 "committed write may not be on disk (a restart recovers what is)",
                 sqlite3_errstr(rc));
        abort();
    }
}

static int tx_begin(void *conn, Error *e)
{
    return sq_exec_cached(conn, "BEGIN IMMEDIATE", e, "begin a transaction");
}

static int tx_savepoint(void *conn, Error *e)
{
    return sq_exec_cached(conn, "SAVEPOINT op", e, "begin a savepoint");
}

static int tx_rollback_to_savepoint(void *conn, Error *e)
{
    return sq_exec_cached(conn, "ROLLBACK TO op", e, "roll back a savepoint");
}

static int tx_release_savepoint(void *conn, Error *e)
{
    return sq_exec_cached(conn, "RELEASE op", e, "release a savepoint");
}

static int tx_commit(void *conn, Error *e)
{
    return sq_exec_cached(conn, "COMMIT", e, "commit the transaction");
}

static void tx_rollback(void *conn)
{
    sq_rollback(conn);
}

static bool tx_lost(void *conn)
{
    return sqlite3_get_autocommit(((Conn *)conn)->db);
}

/* The setting cannot change inside a transaction, so it is set around the batch's transactions.
 * Failing to set NORMAL only makes the hooks come after the sync; failing to set FULL back would
 * leave later writes acknowledged before they are durable, so it is fatal as in wal_sync. */
static bool tx_early_begin(void *conn)
{
    return sq_exec(conn, "PRAGMA synchronous = NORMAL", NULL, "configure") >= 0;
}

static void tx_early_sync(void *conn)
{
    wal_sync(conn);
}

static void tx_early_end(void *conn)
{
    Conn *c = conn;
    if (sq_exec(c, "PRAGMA synchronous = FULL", NULL, "configure") < 0) {
        log_full(LOG_CRIT, "could not set the database back to synchronous=FULL: %s; stopping",
                 sqlite3_errmsg(c->db));
        abort();
    }
}

static const StoreTxOps sqlite_tx = {
    .begin = tx_begin,
    .savepoint = tx_savepoint,
    .rollback_to_savepoint = tx_rollback_to_savepoint,
    .release_savepoint = tx_release_savepoint,
    .commit = tx_commit,
    .rollback = tx_rollback,
    .lost = tx_lost,
    .early_begin = tx_early_begin,
    .early_sync = tx_early_sync,
    .early_end = tx_early_end,
};

/* Whether every reference between rows holds (foreign keys are off while migrations run). */
static int check_foreign_keys(Conn *c, Error *e)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(c, "PRAGMA foreign_key_check", &st, e);
    if (r < 0)
        return r;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        return error_set(e, -EPROTO, "a row of table \"%s\" references a missing row of \"%s\"",
                         (const char *)sqlite3_column_text(st, 0),
                         (const char *)sqlite3_column_text(st, 2));
    if (rc != SQLITE_DONE)
        return sq_error(c, e, "check foreign keys");
    return 0;
}

static int run_migrations(Conn *c, Error *e)
{
    int r =
        sq_exec(c,
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
                e, "create the migration table");
    if (r < 0)
        return r;

    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    r = sq_prepare(c, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &st, e);
    if (r < 0)
        return r;
    if (sqlite3_step(st) != SQLITE_ROW)
        return sq_error(c, e, "read the schema version");
    int current = sqlite3_column_int(st, 0);
    (void)sqlite3_reset(st); /* an open read would make DROP in a migration fail ("locked") */
    int latest = (int)store__sqlite_migrations_n;
    if (current > latest)
        return error_set(e, -EPROTO,
                         "database schema version %d is newer than this binary supports (%d); "
                         "upgrade runtara-environment or use another database",
                         current, latest);

    for (size_t i = (size_t)current; i < store__sqlite_migrations_n; i++) {
        const StoreMigration *m = &store__sqlite_migrations[i];
        char record[256];
        snprintf(
            record, sizeof record,
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%d, '%s', %llu)",
            m->version, m->name, (unsigned long long)now_usec(CLOCK_REALTIME));
        r = sq_exec(c, "BEGIN IMMEDIATE", e, "begin a migration");
        if (r >= 0)
            r = sq_exec(c, m->sql, e, "apply a migration");
        if (r >= 0)
            r = check_foreign_keys(c, e);
        if (r >= 0)
            r = sq_exec(c, record, e, "record a migration");
        if (r >= 0)
            r = sq_exec(c, "COMMIT", e, "commit a migration");
        if (r < 0) {
            (void)sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
            return error_prefix(e, "migration %03d_%s", m->version, m->name);
        }
    }
    return latest;
}

static void conn_close(Conn *c)
{
    for (size_t i = 0; i < c->n_cached; i++)
        sqlite3_finalize(c->cached[i].st);
    sqlite3_close(c->db);
    pthread_mutex_destroy(&c->lock);
}

static void sqlite_close(Store *store)
{
    SqliteStore *s = SQ(store);
    store_batch_done(&s->batch); /* no write may outlive the store */
    /* readers first: the last connection to close checkpoints the WAL, and only a writer can */
    for (size_t i = 0; i < SQLITE_READERS; i++)
        conn_close(&s->readers[i]);
    conn_close(&s->writer);
    free(s);
}

static void sqlite_info(Store *store, StoreInfo *ret)
{
    *ret = (StoreInfo){.backend = "sqlite",
                       .schema_version = SQ(store)->schema_version,
                       .schema_latest = (int)store__sqlite_migrations_n};
}

static int sqlite_ping(Store *store, Error *e)
{
    READER(SQ(store), c);
    return sq_exec_cached(c, "SELECT 1", e, "query the store");
}

/* VACUUM INTO on a read connection: one read transaction, so the copy is of one moment and the
 * writer goes on meanwhile; the copy is compact and in rollback-journal mode (the daemon turns
 * it to WAL when it opens it). query_only refuses VACUUM INTO, so it is lifted for the
 * statement: the connection is read-only anyway. The file is created here, empty (which
 * VACUUM INTO accepts), so a failure removes only what this call made. */
static int sqlite_backup(Store *store, const char *path, StoreBackupFlags flags, Error *e)
{
    int r = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
    if (r < 0 && errno == EEXIST)
        return error_set(e, -EEXIST, "could not back up the store to \"%s\": the file exists",
                         path);
    if (r < 0)
        return error_set(e, -errno, "could not create backup \"%s\": %s", path, strerror(errno));
    (void)close(r);
    {
        READER(SQ(store), c);
        r = sq_exec(c, "PRAGMA query_only = OFF", e, "configure the database");
        if (r < 0)
            return r;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        r = sq_prepare(c, "VACUUM INTO ?1", &st, e);
        if (r >= 0) {
            bind_text(st, 1, path);
            if (sqlite3_step(st) != SQLITE_DONE)
                r = sq_error(c, e, "back up the store");
        }
        ASSERT_SE(sq_exec(c, "PRAGMA query_only = ON", NULL, "configure the database") >= 0);
    }
    if (r < 0) {
        (void)unlink(path);
        return error_prefix(e, "backup \"%s\"", path);
    }
    if (!(flags & STORE_BACKUP_DURABLE))
        return 0;
    /* durable before it is reported written: the file, then its name in the directory */
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0)
        return error_set(e, -errno, "could not fsync backup \"%s\": %s", path, strerror(errno));
    _cleanup_free_ char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    _cleanup_close_ int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fileio_fsync_dir(dfd) < 0)
        return error_set(e, -EIO, "could not fsync the directory of backup \"%s\"", path);
    return 0;
}

static int image_insert_run(void *conn, WriteOp *op, Error *e)
{
    Conn *c = conn;
    ImageInsertOp *o = (ImageInsertOp *)op;
    const ImageRecord *rec = o->rec;
    _cleanup_reset_ sqlite3_stmt *q = NULL, *ins = NULL;
    int r = sq_cached(c,
                      "SELECT COALESCE(MAX(version), 0) + 1 FROM images WHERE tenant_id = ? AND "
                      "name = ?",
                      &q, e);
    if (r < 0)
        return r;
    bind_text(q, 1, rec->tenant_id);
    bind_text(q, 2, rec->name);
    if (sqlite3_step(q) != SQLITE_ROW)
        return sq_error(c, e, "read the image version");
    int64_t version = sqlite3_column_int64(q, 0);

    r = sq_cached(c,
                  "INSERT INTO images (image_id, tenant_id, name, version, description, "
                  "runner_type, labels, sha256, size_bytes, created_at) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  &ins, e);
    if (r < 0)
        return r;
    bind_text(ins, 1, rec->image_id);
    bind_text(ins, 2, rec->tenant_id);
    bind_text(ins, 3, rec->name);
    sqlite3_bind_int64(ins, 4, version);
    bind_text(ins, 5, rec->description);
    bind_text(ins, 6, rec->runner_type);
    bind_text(ins, 7, rec->labels_json ? rec->labels_json : "{}");
    bind_text(ins, 8, rec->sha256);
    sqlite3_bind_int64(ins, 9, (sqlite3_int64)rec->size_bytes);
    sqlite3_bind_int64(ins, 10, (sqlite3_int64)rec->created_at);
    if (sqlite3_step(ins) != SQLITE_DONE)
        return sq_error(c, e, "insert the image");
    o->version = version;
    o->seq = sqlite3_last_insert_rowid(c->db);
    return 0;
}

#define IMAGE_COLUMNS                                                                              \
    "seq, image_id, tenant_id, name, version, description, runner_type, labels, sha256, "          \
    "size_bytes, created_at"

static void read_image(sqlite3_stmt *st, ImageRecord *r)
{
    *r = (ImageRecord){
        .seq = sqlite3_column_int64(st, 0),
        .image_id = col_text(st, 1),
        .tenant_id = col_text(st, 2),
        .name = col_text(st, 3),
        .version = sqlite3_column_int64(st, 4),
        .description = col_text(st, 5),
        .runner_type = col_text(st, 6),
        .labels_json = col_text(st, 7),
        .sha256 = col_text(st, 8),
        .size_bytes = (uint64_t)sqlite3_column_int64(st, 9),
        .created_at = (usec_t)sqlite3_column_int64(st, 10),
    };
}

static int image_get(Store *store, const char *id, const char *tenant, ImageRecord *ret, Error *e)
{
    READER(SQ(store), c);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c,
                      "SELECT " IMAGE_COLUMNS " FROM images WHERE image_id = ? AND "
                      "(?2 IS NULL OR tenant_id = ?2)",
                      &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_text(st, 2, tenant);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return error_set(e, -ENOENT, "image \"%s\" does not exist", id);
    if (rc != SQLITE_ROW)
        return sq_error(c, e, "read the image");
    read_image(st, ret);
    return 0;
}

static int image_list(Store *store, const ImageFilter *f, ImageRecord **ret, size_t *ret_n,
                      bool *ret_more, Error *e)
{
    READER(SQ(store), c);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    _cleanup_free_ char *like = f->name_prefix ? store__like_prefix(f->name_prefix) : NULL;
    int r = sq_cached(c,
                      "SELECT " IMAGE_COLUMNS " FROM images WHERE "
                      "(?1 IS NULL OR tenant_id = ?1) AND (?2 IS NULL OR name = ?2) AND "
                      "(?3 IS NULL OR name LIKE ?3 ESCAPE '\\') AND (?4 = 0 OR seq < ?4) "
                      "ORDER BY seq DESC LIMIT ?5",
                      &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, f->tenant_id);
    bind_text(st, 2, f->name);
    bind_text(st, 3, like);
    sqlite3_bind_int64(st, 4, f->before_seq);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)f->limit + 1);

    ImageRecord *rows = xcalloc(f->limit + 1, sizeof *rows);
    size_t n = 0;
    int rc = SQLITE_DONE;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < f->limit + 1)
        read_image(st, &rows[n++]);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        image_records_free(rows, n);
        return sq_error(c, e, "list images");
    }
    *ret_more = n > f->limit;
    if (*ret_more)
        image_record_done(&rows[--n]);
    *ret = rows;
    *ret_n = n;
    return 0;
}

static int image_delete_run(void *conn, WriteOp *op, Error *e)
{
    Conn *c = conn;
    ImageDeleteOp *o = (ImageDeleteOp *)op;
    _cleanup_reset_ sqlite3_stmt *q = NULL, *del = NULL;
    int r = sq_cached(c,
                      "SELECT (SELECT COUNT(*) FROM images WHERE image_id = ?1 AND "
                      "(?2 IS NULL OR tenant_id = ?2)), (SELECT COUNT(*) FROM instances WHERE "
                      "image_id = ?1 AND status IN ('pending', 'running', 'suspended'))",
                      &q, e);
    if (r < 0)
        return r;
    bind_text(q, 1, o->id);
    bind_text(q, 2, o->tenant);
    if (sqlite3_step(q) != SQLITE_ROW)
        return sq_error(c, e, "look up the image");
    if (sqlite3_column_int64(q, 0) == 0)
        return error_set(e, -ENOENT, "image \"%s\" does not exist", o->id);
    sqlite3_int64 users = sqlite3_column_int64(q, 1);
    if (users > 0)
        return error_set(e, -EBUSY, "image \"%s\" is used by %lld unfinished instance%s", o->id,
                         (long long)users, users == 1 ? "" : "s");
    r = sq_cached(c, "DELETE FROM images WHERE image_id = ?", &del, e);
    if (r < 0)
        return r;
    bind_text(del, 1, o->id);
    if (sqlite3_step(del) != SQLITE_DONE)
        return sq_error(c, e, "delete the image");
    return 0;
}

static int query_int(Conn *c, const char *sql, const char *arg, int64_t *ret, Error *e)
{
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c, sql, &st, e);
    if (r < 0)
        return r;
    if (arg)
        bind_text(st, 1, arg);
    if (sqlite3_step(st) != SQLITE_ROW)
        return sq_error(c, e, "query the store");
    *ret = sqlite3_column_int64(st, 0);
    return 0;
}

static int image_exists(Store *store, const char *id, Error *e)
{
    READER(SQ(store), c);
    int64_t n = 0;
    int r = query_int(c, "SELECT COUNT(*) FROM images WHERE image_id = ?", id, &n, e);
    return r < 0 ? r : n > 0;
}

static int image_count(Store *store, uint64_t *ret, Error *e)
{
    READER(SQ(store), c);
    int64_t n = 0;
    int r = query_int(c, "SELECT COUNT(*) FROM images", NULL, &n, e);
    if (r >= 0)
        *ret = (uint64_t)n;
    return r;
}

#define INSTANCE_COLUMNS                                                                           \
    "seq, instance_id, tenant_id, image_id, status, termination_reason, input, output, error, "    \
    "env, request_hash, token_hash, checkpoint_id, exit_code, timeout_secs, attempt, created_at, " \
    "updated_at, started_at, finished_at, heartbeat_at, sleep_until, wait_key, auto_restarts, "    \
    "instance_key, runner, memory_peak_bytes, cpu_usec, owner"

/* The row mapper of INSTANCE_COLUMNS: 0 and *r, or -EIO for a corrupt row (*r untouched). */
static int read_instance(sqlite3_stmt *st, InstanceRecord *r, Error *e)
{
    InstanceStatus status = _INSTANCE_STATUS_INVALID;
    int k = col_status(st, 4, (const char *)sqlite3_column_text(st, 24), &status, e);
    if (k < 0)
        return k;
    *r = (InstanceRecord){
        .seq = sqlite3_column_int64(st, 0),
        .instance_id = col_text(st, 1),
        .tenant_id = col_text(st, 2),
        .image_id = col_text(st, 3),
        .status = status,
        .termination_reason = col_text(st, 5),
        .input = col_text(st, 6),
        .output = col_text(st, 7),
        .error = col_text(st, 8),
        .env = col_text(st, 9),
        .request_hash = col_text(st, 10),
        .token_hash = col_text(st, 11),
        .checkpoint_id = col_text(st, 12),
        .has_exit_code = sqlite3_column_type(st, 13) != SQLITE_NULL,
        .exit_code = sqlite3_column_int(st, 13),
        .timeout_secs = (uint32_t)sqlite3_column_int64(st, 14),
        .attempt = sqlite3_column_int(st, 15),
        .created_at = col_usec(st, 16),
        .updated_at = col_usec(st, 17),
        .started_at = col_usec(st, 18),
        .finished_at = col_usec(st, 19),
        .heartbeat_at = col_usec(st, 20),
        .sleep_until = col_usec(st, 21),
        .wait_key = col_text(st, 22),
        .auto_restarts = sqlite3_column_int(st, 23),
        .instance_key = col_text(st, 24),
        .runner = col_text(st, 25),
        .has_usage = sqlite3_column_type(st, 26) != SQLITE_NULL,
        .memory_peak_bytes = (uint64_t)sqlite3_column_int64(st, 26),
        .cpu_usec = (uint64_t)sqlite3_column_int64(st, 27),
        .owner = col_text(st, 28),
    };
    return 0;
}

/* instance_get with the lock already held. */
static int instance_get_locked(Conn *c, const char *id, const char *tenant, InstanceRecord *ret,
                               Error *e)
{
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c,
                      "SELECT " INSTANCE_COLUMNS " FROM instances WHERE instance_key = ?1 AND "
                      "(?2 IS NULL OR tenant_id = ?2)",
                      &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_text(st, 2, tenant);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return store__no_instance(e, id);
    if (rc != SQLITE_ROW)
        return sq_error(c, e, "read the instance");
    return read_instance(st, ret, e);
}

static int instance_insert_minimal_run(void *conn, WriteOp *op, Error *e)
{
    Conn *c = conn;
    InsertMinimalOp *o = (InsertMinimalOp *)op;
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c,
                      "INSERT INTO instances (instance_key, instance_id, tenant_id, image_id, "
                      "status, created_at, updated_at) VALUES (?2 || '/' || ?1, ?1, ?2, ?3, ?4, "
                      "?5, ?5)",
                      &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, o->id);
    bind_text(st, 2, o->tenant);
    bind_text(st, 3, o->image_id);
    bind_status(st, 4, o->status);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)now_usec(CLOCK_REALTIME));
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error(c, e, "insert the instance");
    return 0;
}

static int instance_create_run(void *conn, WriteOp *op, Error *e)
{
    Conn *c = conn;
    InstanceCreateOp *o = (InstanceCreateOp *)op;
    const InstanceRecord *rec = o->rec;
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c,
                      "INSERT INTO instances (instance_key, instance_id, tenant_id, image_id, "
                      "status, created_at, updated_at, input, env, timeout_secs, request_hash, "
                      "token_hash, runner, owner) "
                      "VALUES (?2 || '/' || ?1, ?1, ?2, ?3, 'pending', ?4, ?4, ?5, ?6, ?7, ?8, "
                      "?9, ?10, ?11) ON CONFLICT (instance_key) DO NOTHING",
                      &st, e);
    if (r < 0)
        return r;
    usec_t created = rec->created_at ? rec->created_at : now_usec(CLOCK_REALTIME);
    bind_text(st, 1, rec->instance_id);
    bind_text(st, 2, rec->tenant_id);
    bind_text(st, 3, rec->image_id);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)created);
    bind_text(st, 5, rec->input ? rec->input : "{}");
    bind_text(st, 6, rec->env ? rec->env : "{}");
    sqlite3_bind_int64(st, 7, rec->timeout_secs ? rec->timeout_secs : 300);
    bind_text(st, 8, rec->request_hash ? rec->request_hash : "");
    bind_text(st, 9, rec->token_hash);
    bind_text(st, 10, rec->runner ? rec->runner : "native");
    bind_text(st, 11, rec->owner);
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error(c, e, "insert the instance");
    if (sqlite3_changes(c->db) > 0)
        return 0;

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
    READER(SQ(store), c);
    return instance_get_locked(c, id, tenant, ret, e);
}

/* The one instance row sql (a cached literal with one text parameter) finds for value: 0 and
 * *ret, -ENOENT when there is none, -ENOTUNIQ when there are more (both without a message). */
static int instance_read_one(Conn *c, const char *sql, const char *value, InstanceRecord *ret,
                             Error *e)
{
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c, sql, &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, value);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return -ENOENT;
    if (rc != SQLITE_ROW)
        return sq_error(c, e, "read the instance");
    r = read_instance(st, ret, e);
    if (r < 0)
        return r;
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return 0;
    instance_record_done(ret);
    if (rc != SQLITE_ROW)
        return sq_error(c, e, "read the instance");
    return -ENOTUNIQ;
}

static int instance_find(Store *store, const char *instance_id, InstanceRecord *ret, Error *e)
{
    READER(SQ(store), c);
    return instance_read_one(
        c, "SELECT " INSTANCE_COLUMNS " FROM instances WHERE instance_id = ?1 LIMIT 2", instance_id,
        ret, e);
}

static int instance_get_by_token(Store *store, const char *token_hash, InstanceRecord *ret,
                                 Error *e)
{
    READER(SQ(store), c);
    /* tokens are random: two rows with one is corruption, and lets neither in */
    int r = instance_read_one(
        c, "SELECT " INSTANCE_COLUMNS " FROM instances WHERE token_hash = ?1 LIMIT 2", token_hash,
        ret, e);
    return r == -ENOTUNIQ ? -ENOENT : r;
}

/* Whether an instance row exists: 1, 0 or a negative errno. */
static int instance_exists_locked(Conn *c, const char *id, Error *e)
{
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c, "SELECT 1 FROM instances WHERE instance_key = ?", &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sq_error(c, e, "look up the instance");
    return rc == SQLITE_ROW;
}

static int transition_locked(void *conn, const char *id, InstanceStatus from_status,
                             const InstanceUpdate *u, Error *e)
{
    Conn *c = conn;
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    /* ?7 is clear_result: it resets the result columns unless the update sets them itself. */
    int r = sq_cached(
        c,
        "UPDATE instances SET status = ?3, termination_reason = ?4, "
        "exit_code = CASE WHEN ?5 THEN ?6 WHEN ?7 THEN NULL ELSE exit_code END, "
        "memory_peak_bytes = CASE WHEN ?5 THEN ?21 WHEN ?7 THEN NULL ELSE memory_peak_bytes END, "
        "cpu_usec = CASE WHEN ?5 THEN ?22 WHEN ?7 THEN NULL ELSE cpu_usec END, "
        "output = CASE WHEN ?8 IS NOT NULL THEN ?8 WHEN ?7 THEN NULL ELSE output END, "
        "error = CASE WHEN ?9 IS NOT NULL THEN ?9 WHEN ?7 THEN NULL ELSE error END, "
        "token_hash = COALESCE(?10, token_hash), attempt = attempt + ?11, "
        "started_at = COALESCE(?12, started_at), "
        "finished_at = CASE WHEN ?13 IS NOT NULL THEN ?13 WHEN ?7 THEN NULL ELSE finished_at END, "
        "updated_at = ?14, sleep_until = CASE WHEN ?19 THEN sleep_until ELSE ?15 END, "
        "wait_key = CASE WHEN ?19 THEN wait_key ELSE ?16 END, "
        "auto_restarts = CASE ?17 WHEN 1 THEN auto_restarts + 1 WHEN -1 THEN 0 "
        "ELSE auto_restarts END, owner = COALESCE(?23, owner) "
        "WHERE instance_key = ?1 AND status = ?2 AND (?18 IS NULL OR sleep_until = ?18) "
        "AND (?20 IS NULL OR token_hash = ?20)",
        &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_status(st, 2, from_status);
    bind_status(st, 3, u->to_status);
    bind_text(st, 4, u->reason);
    sqlite3_bind_int(st, 5, u->set_exit_code);
    sqlite3_bind_int(st, 6, u->exit_code);
    sqlite3_bind_int(st, 7, u->clear_result);
    bind_text(st, 8, u->output);
    bind_text(st, 9, u->error);
    bind_text(st, 10, u->token_hash);
    sqlite3_bind_int(st, 11, u->bump_attempt);
    bind_usec(st, 12, u->started_at);
    bind_usec(st, 13, u->finished_at);
    sqlite3_bind_int64(st, 14, (sqlite3_int64)now_usec(CLOCK_REALTIME));
    bind_usec(st, 15, u->sleep_until);
    bind_text(st, 16, u->wait_key);
    sqlite3_bind_int(st, 17, u->restarts);
    bind_usec(st, 18, u->guard_sleep_until);
    sqlite3_bind_int(st, 19, u->keep_wake);
    bind_text(st, 20, u->guard_token_hash);
    sqlite3_bind_int64(st, 21, (sqlite3_int64)u->memory_peak_bytes);
    sqlite3_bind_int64(st, 22, (sqlite3_int64)u->cpu_usec);
    bind_text(st, 23, u->owner);
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error(c, e, "update the instance");
    if (sqlite3_changes(c->db) > 0)
        return 1;

    /* Not applied: a lost race (status or wake guard), or no such instance. */
    r = instance_exists_locked(c, id, e);
    if (r < 0)
        return r;
    return r ? 0 : store__no_instance(e, id);
}

static int instance_transition_run(void *conn, WriteOp *op, Error *e)
{
    Conn *c = conn;
    TransitionOp *o = (TransitionOp *)op;
    return transition_locked(c, o->id, o->from_status, o->u, e);
}

static int event_insert_locked(void *conn, const char *id, const char *type, const char *subtype,
                               const char *payload, const char *request_key, usec_t now,
                               int64_t *ret_id, Error *e);

static int instance_transitions_run(void *conn, WriteOp *op, Error *e)
{
    return store__transitions_run(conn, (TransitionsOp *)op, transition_locked, event_insert_locked,
                                  e);
}

/* The WHERE clause of an instance list, built only from constant fragments with named
 * parameters (bind_instance_filter binds them); values are never formatted into SQL. */
static void instance_where(StrBuf *b, const InstanceFilter *f, bool with_cursor)
{
    strbuf_puts(b, " WHERE 1");
    if (f->tenant_id)
        strbuf_puts(b, " AND tenant_id = :tenant");
    if (f->has_status)
        strbuf_puts(b, " AND status = :status");
    if (f->image_id)
        strbuf_puts(b, " AND image_id = :image");
    if (f->created_after)
        strbuf_puts(b, " AND created_at >= :created_after");
    if (f->created_before)
        strbuf_puts(b, " AND created_at < :created_before");
    if (f->finished_after)
        strbuf_puts(b, " AND finished_at >= :finished_after");
    if (f->finished_before)
        strbuf_puts(b, " AND finished_at < :finished_before");
    if (f->exit_unrecorded) /* the partial index instances_exit_unrecorded */
        strbuf_puts(b, " AND exit_code IS NULL AND attempt > 0");
    if (f->owner)
        strbuf_puts(b, " AND owner = :owner");
    if (with_cursor && f->before_seq > 0)
        strbuf_puts(b, " AND seq < :before_seq");
}

static void bind_named_text(sqlite3_stmt *st, const char *name, const char *v)
{
    int i = sqlite3_bind_parameter_index(st, name);
    if (i > 0)
        bind_text(st, i, v);
}

static void bind_named_int64(sqlite3_stmt *st, const char *name, int64_t v)
{
    int i = sqlite3_bind_parameter_index(st, name);
    if (i > 0)
        sqlite3_bind_int64(st, i, v);
}

static void bind_instance_filter(sqlite3_stmt *st, const InstanceFilter *f)
{
    bind_named_text(st, ":tenant", f->tenant_id);
    int i = sqlite3_bind_parameter_index(st, ":status");
    if (i > 0)
        bind_status(st, i, f->status);
    bind_named_text(st, ":image", f->image_id);
    bind_named_text(st, ":owner", f->owner);
    bind_named_int64(st, ":created_after", (int64_t)f->created_after);
    bind_named_int64(st, ":created_before", (int64_t)f->created_before);
    bind_named_int64(st, ":finished_after", (int64_t)f->finished_after);
    bind_named_int64(st, ":finished_before", (int64_t)f->finished_before);
    bind_named_int64(st, ":before_seq", f->before_seq);
    bind_named_int64(st, ":limit", (int64_t)f->limit + 1);
}

static int instance_count_locked(Conn *c, const InstanceFilter *f, uint64_t *ret, Error *e)
{
    _cleanup_(strbuf_done) StrBuf sql = STRBUF_INIT;
    strbuf_puts(&sql, "SELECT COUNT(*) FROM instances");
    instance_where(&sql, f, false);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(c, sql.buf, &st, e);
    if (r < 0)
        return r;
    bind_instance_filter(st, f);
    if (sqlite3_step(st) != SQLITE_ROW)
        return sq_error(c, e, "count instances");
    *ret = (uint64_t)sqlite3_column_int64(st, 0);
    return 0;
}

static int instance_page_locked(Conn *c, const InstanceFilter *f, InstanceRecord **ret,
                                size_t *ret_n, bool *ret_more, Error *e)
{
    _cleanup_(strbuf_done) StrBuf sql = STRBUF_INIT;
    strbuf_puts(&sql, "SELECT " INSTANCE_COLUMNS " FROM instances");
    instance_where(&sql, f, true);
    strbuf_puts(&sql, " ORDER BY seq DESC LIMIT :limit");
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(c, sql.buf, &st, e);
    if (r < 0)
        return r;
    bind_instance_filter(st, f);

    InstanceRecord *rows = xcalloc(f->limit + 1, sizeof *rows);
    size_t n = 0;
    int rc = SQLITE_DONE;
    while (n < f->limit + 1 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        r = read_instance(st, &rows[n], e);
        if (r < 0) {
            instance_records_free(rows, n);
            return r;
        }
        n++;
    }
    if (n < f->limit + 1 && rc != SQLITE_DONE) {
        instance_records_free(rows, n);
        return sq_error(c, e, "list instances");
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
    READER(SQ(store), c);
    InstanceRecord *rows = NULL;
    size_t n = 0;
    bool more = false;
    uint64_t total = 0;
    /* One read transaction, so the page and the total see the same snapshot. */
    int r = sq_exec_cached(c, "BEGIN", e, "begin a transaction");
    if (r < 0)
        return r;
    r = instance_page_locked(c, f, &rows, &n, &more, e);
    if (r >= 0 && ret_total)
        r = instance_count_locked(c, f, &total, e);
    if (r >= 0)
        r = sq_exec_cached(c, "COMMIT", e, "end the transaction");
    if (r < 0) {
        sq_rollback(c);
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

/* 0 while instance id is pending or running the launch of token_hash (or token_hash is NULL),
 * else store__launch_over(). */
static int launch_live_locked(Conn *c, const char *id, const char *token_hash, Error *e)
{
    if (!token_hash)
        return 0;
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c,
                      "SELECT 1 FROM instances WHERE instance_key = ?1 AND token_hash = ?2 AND "
                      "status IN ('pending', 'running')",
                      &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_text(st, 2, token_hash);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        return 0;
    if (rc != SQLITE_DONE)
        return sq_error(c, e, "read the instance");
    return store__launch_over(id, token_hash, e);
}

static int instance_heartbeat_run(void *conn, WriteOp *op, Error *e)
{
    Conn *c = conn;
    HeartbeatOp *o = (HeartbeatOp *)op;
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c,
                      "UPDATE instances SET heartbeat_at = ?2 WHERE instance_key = ?1 AND (?3 IS "
                      "NULL OR (token_hash = ?3 AND status IN ('pending', 'running')))",
                      &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, o->id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)o->now);
    bind_text(st, 3, o->token_hash);
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error(c, e, "record the heartbeat");
    return sqlite3_changes(c->db) > 0 ? 0 : store__launch_over(o->id, o->token_hash, e);
}

static int instance_list_wakes(Store *store, const char *owner, int64_t after_seq, unsigned limit,
                               InstanceWake **ret, size_t *ret_n, bool *ret_more, Error *e)
{
    READER(SQ(store), c);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c,
                      "SELECT seq, instance_key, sleep_until FROM instances "
                      "WHERE sleep_until IS NOT NULL AND status = 'suspended' AND seq > ?1 "
                      "AND (?3 IS NULL OR owner = ?3) ORDER BY seq LIMIT ?2",
                      &st, e);
    if (r < 0)
        return r;
    sqlite3_bind_int64(st, 1, after_seq);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)limit + 1);
    bind_text(st, 3, owner);

    InstanceWake *rows = xcalloc(limit + 1, sizeof *rows);
    size_t n = 0;
    int rc = SQLITE_DONE;
    while (n < limit + 1 && (rc = sqlite3_step(st)) == SQLITE_ROW)
        rows[n++] = (InstanceWake){
            .seq = sqlite3_column_int64(st, 0),
            .instance_key = col_text(st, 1),
            .sleep_until = col_usec(st, 2),
        };
    if (n < limit + 1 && rc != SQLITE_DONE) {
        instance_wakes_free(rows, n);
        return sq_error(c, e, "list the wake-ups");
    }
    bool more = n > limit;
    if (more)
        free(rows[--n].instance_key);
    if (ret_more)
        *ret_more = more;
    *ret = rows;
    *ret_n = n;
    return 0;
}

/* Run a DELETE ... RETURNING id, tenant_id (bound ?1 before, ?2 limit) into o->refs. */
static int purge_run(Conn *c, PurgeOp *o, const char *sql, const char *what, Error *e)
{
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c, sql, &st, e);
    if (r < 0)
        return r;
    bind_usec(st, 1, o->before);
    sqlite3_bind_int64(st, 2, o->limit);
    o->refs = xcalloc(o->limit, sizeof *o->refs);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && o->n < o->limit)
        o->refs[o->n++] = (StoreRef){.id = col_text(st, 0), .tenant_id = col_text(st, 1)};
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return sq_error(c, e, what);
    return 0;
}

static int instance_purge_run(void *conn, WriteOp *op, Error *e)
{
    Conn *c = conn;
    /* The cascade (foreign_keys = ON) deletes checkpoints, events and signals with each row.
     * Without statistics the planner picks instances_status_seq and sorts every finished
     * instance for each batch; the finished_at index gives the oldest ones in order. */
    return purge_run(c, (PurgeOp *)op,
                     "DELETE FROM instances WHERE seq IN (SELECT seq FROM instances "
                     "INDEXED BY instances_finished "
                     "WHERE finished_at IS NOT NULL AND status <> 'suspended' "
                     "AND status IN ('completed', 'failed', 'cancelled') AND finished_at < ?1 "
                     "ORDER BY finished_at LIMIT ?2) RETURNING instance_id, tenant_id",
                     "delete finished instances", e);
}

static int image_purge_run(void *conn, WriteOp *op, Error *e)
{
    Conn *c = conn;
    return purge_run(c, (PurgeOp *)op,
                     "DELETE FROM images WHERE seq IN (SELECT i.seq FROM images i "
                     "WHERE i.created_at < ?1 "
                     "AND EXISTS (SELECT 1 FROM images n WHERE n.tenant_id = i.tenant_id "
                     "AND n.name = i.name AND n.version > i.version) "
                     "AND NOT EXISTS (SELECT 1 FROM instances u WHERE u.image_id = i.image_id) "
                     "ORDER BY i.seq LIMIT ?2) RETURNING image_id, tenant_id",
                     "delete unused images", e);
}

static int instance_count_by_status(Store *store, const char *tenant,
                                    uint64_t ret_counts[_INSTANCE_STATUS_MAX], Error *e)
{
    READER(SQ(store), c);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c,
                      "SELECT status, COUNT(*) FROM instances WHERE (?1 IS NULL OR "
                      "tenant_id = ?1) GROUP BY status",
                      &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, tenant);
    uint64_t counts[_INSTANCE_STATUS_MAX] = {0};
    int rc = SQLITE_DONE;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        InstanceStatus status = _INSTANCE_STATUS_INVALID;
        r = col_status(st, 0, NULL, &status, e);
        if (r < 0)
            return r;
        counts[status] = (uint64_t)sqlite3_column_int64(st, 1);
    }
    if (rc != SQLITE_DONE)
        return sq_error(c, e, "count instances");
    memcpy(ret_counts, counts, sizeof counts);
    return 0;
}

/* Append an event, with the lock (and possibly a transaction) held: 1 recorded, 0 when request_key
 * (may be NULL) was recorded before for the instance (nothing changes; *ret_id is that event's id).
 */
static int event_insert_locked(void *conn, const char *id, const char *type, const char *subtype,
                               const char *payload, const char *request_key, usec_t now,
                               int64_t *ret_id, Error *e)
{
    Conn *c = conn;
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c,
                      "INSERT INTO events (instance_key, type, subtype, payload, created_at, "
                      "request_key) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (instance_key, "
                      "request_key) WHERE request_key IS NOT NULL DO NOTHING",
                      &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_text(st, 2, type);
    bind_text(st, 3, subtype);
    bind_text(st, 4, payload);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)now);
    bind_text(st, 6, request_key);
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error_child(c, e, "append the event", id);
    if (sqlite3_changes(c->db) > 0) {
        if (ret_id)
            *ret_id = sqlite3_last_insert_rowid(c->db);
        return 1;
    }
    _cleanup_reset_ sqlite3_stmt *q = NULL;
    r = sq_cached(c, "SELECT id FROM events WHERE instance_key = ? AND request_key = ?", &q, e);
    if (r < 0)
        return r;
    bind_text(q, 1, id);
    bind_text(q, 2, request_key);
    if (sqlite3_step(q) != SQLITE_ROW)
        return sq_error(c, e, "read the event recorded before");
    if (ret_id)
        *ret_id = sqlite3_column_int64(q, 0);
    return 0;
}

static int event_append_locked(Conn *c, const char *id, const char *type, const char *subtype,
                               const char *payload, usec_t now, int64_t *ret_id, Error *e)
{
    int r = event_insert_locked(c, id, type, subtype, payload, NULL, now, ret_id, e);
    return r < 0 ? r : 0;
}

/* Record a new checkpoint on its instance: its checkpoint_id, heartbeat and restart count, and a
 * "checkpoint" event. With token_hash, only while the instance is pending or running that
 * launch: -ESTALE otherwise (the caller's savepoint then drops the row). */
static int checkpoint_stored_locked(Conn *c, const char *id, const char *key,
                                    const char *token_hash, usec_t now, Error *e)
{
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c,
                      "UPDATE instances SET checkpoint_id = ?2, updated_at = ?3, "
                      "heartbeat_at = ?3, auto_restarts = 0 WHERE instance_key = ?1 "
                      "AND (?4 IS NULL OR (token_hash = ?4 AND status IN ('pending', 'running')))",
                      &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_text(st, 2, key);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)now);
    bind_text(st, 4, token_hash);
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error(c, e, "record the checkpoint on the instance");
    if (sqlite3_changes(c->db) == 0)
        return error_set(e, -ESTALE,
                         "instance \"%s\" is no longer running the launch that saves checkpoint "
                         "\"%s\"; the process should exit",
                         id, key);
    return event_append_locked(c, id, "checkpoint", key, NULL, now, NULL, e);
}

/* Read a stored checkpoint with the lock held: 1 and the bytes, 0 if there is none. */
static int checkpoint_read_locked(Conn *c, const char *id, const char *key, void **ret_data,
                                  size_t *ret_n, usec_t *ret_created, Error *e)
{
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(
        c, "SELECT data, created_at FROM checkpoints WHERE instance_key = ? AND key = ?", &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_text(st, 2, key);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return sq_error(c, e, "read the checkpoint");
    size_t n = 0;
    void *data = col_blob(st, 0, &n);
    if (ret_data)
        *ret_data = data;
    else
        free(data);
    if (ret_n)
        *ret_n = n;
    if (ret_created)
        *ret_created = col_usec(st, 1);
    return 1;
}

static int signal_get_locked(Conn *c, const char *id, SignalKind *ret_kind, char **ret_payload,
                             Error *e);

/* Insert a checkpoint unless its key exists: 1 inserted, 0 the key was there (nothing changed). */
static int checkpoint_insert_locked(Conn *c, const char *id, const char *key, const void *data,
                                    size_t n, usec_t now, Error *e)
{
    _cleanup_reset_ sqlite3_stmt *ins = NULL;
    int r = sq_cached(c,
                      "INSERT INTO checkpoints (instance_key, key, data, created_at) "
                      "VALUES (?, ?, ?, ?) ON CONFLICT (instance_key, key) DO NOTHING",
                      &ins, e);
    if (r < 0)
        return r;
    bind_text(ins, 1, id);
    bind_text(ins, 2, key);
    /* a non-NULL pointer even for 0 bytes: an empty blob, not SQL NULL */
    sqlite3_bind_blob64(ins, 3, data ? data : "", n, SQLITE_STATIC);
    sqlite3_bind_int64(ins, 4, (sqlite3_int64)now);
    if (sqlite3_step(ins) != SQLITE_DONE)
        return sq_error_child(c, e, "save the checkpoint", id);
    return sqlite3_changes(c->db) > 0;
}

static int checkpoint_save_run(void *conn, WriteOp *op, Error *e)
{
    Conn *c = conn;
    CheckpointSaveOp *o = (CheckpointSaveOp *)op;
    usec_t now = now_usec(CLOCK_REALTIME);
    int r = checkpoint_insert_locked(c, o->id, o->key, o->data, o->n, now, e);
    if (r < 0)
        return r;
    int result = 1;
    if (r == 0) {
        /* First write wins: hand back what is stored, change nothing. */
        r = checkpoint_read_locked(c, o->id, o->key, o->want_stored ? &o->stored : NULL,
                                   &o->stored_n, NULL, e);
        if (r == 0)
            r = error_set(e, -EIO, "checkpoint \"%s\" of instance \"%s\" vanished", o->key, o->id);
        result = 0;
    } else
        r = checkpoint_stored_locked(c, o->id, o->key, o->token_hash, now, e);
    if (r >= 0 && o->want_signal)
        r = signal_get_locked(c, o->id, &o->signal, NULL, e);
    return r < 0 ? r : result;
}

static int checkpoint_get(Store *store, const char *id, const char *key, void **ret_data,
                          size_t *ret_n, usec_t *ret_created, Error *e)
{
    READER(SQ(store), c);
    int r = checkpoint_read_locked(c, id, key, ret_data, ret_n, ret_created, e);
    if (r == 0)
        return error_set(e, -ENOENT, "checkpoint \"%s\" of instance \"%s\" does not exist", key,
                         id);
    return r < 0 ? r : 0;
}

static int checkpoint_list(Store *store, const char *id, int64_t after_seq, unsigned limit,
                           CheckpointInfo **ret, size_t *ret_n, bool *ret_more, Error *e)
{
    READER(SQ(store), c);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    /* length() of a blob reads its size from the record header, not the bytes */
    int r = sq_cached(c,
                      "SELECT key, length(data), created_at, seq FROM checkpoints "
                      "WHERE instance_key = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                      &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    sqlite3_bind_int64(st, 2, after_seq);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)limit + 1);

    CheckpointInfo *rows = xcalloc(limit + 1, sizeof *rows);
    size_t n = 0;
    int rc = SQLITE_DONE;
    while (n < limit + 1 && (rc = sqlite3_step(st)) == SQLITE_ROW)
        rows[n++] = (CheckpointInfo){
            .key = col_text(st, 0),
            .size = (size_t)sqlite3_column_int64(st, 1),
            .created_at = col_usec(st, 2),
            .seq = sqlite3_column_int64(st, 3),
        };
    if (n < limit + 1 && rc != SQLITE_DONE) {
        checkpoint_infos_free(rows, n);
        return sq_error(c, e, "list checkpoints");
    }
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
    Conn *c = conn;
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
    READER(SQ(store), c);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c,
                      "SELECT id, instance_key, type, subtype, payload, created_at FROM events "
                      "WHERE instance_key = ?1 AND id > ?2 AND (?3 IS NULL OR type = ?3) AND "
                      "(?4 IS NULL OR subtype = ?4) AND (?5 = 0 OR created_at >= ?5) AND "
                      "(?6 = 0 OR created_at < ?6) ORDER BY id LIMIT ?7",
                      &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, f->instance_key);
    sqlite3_bind_int64(st, 2, f->after_id);
    bind_text(st, 3, f->type);
    bind_text(st, 4, f->subtype);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)f->after);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)f->before);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)f->limit + 1);

    EventRecord *rows = xcalloc(f->limit + 1, sizeof *rows);
    size_t n = 0;
    int rc = SQLITE_DONE;
    while (n < f->limit + 1 && (rc = sqlite3_step(st)) == SQLITE_ROW)
        rows[n++] = (EventRecord){
            .id = sqlite3_column_int64(st, 0),
            .instance_key = col_text(st, 1),
            .type = col_text(st, 2),
            .subtype = col_text(st, 3),
            .payload = col_text(st, 4),
            .created_at = col_usec(st, 5),
        };
    if (n < f->limit + 1 && rc != SQLITE_DONE) {
        event_records_free(rows, n);
        return sq_error(c, e, "list events");
    }
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

/* The rank of a control signal type in SQL: cancel outranks pause outranks resume. */
#define SIGNAL_RANK(col) "(CASE " col " WHEN 'cancel' THEN 3 WHEN 'pause' THEN 2 ELSE 1 END)"

static int signal_send_run(void *conn, WriteOp *op, Error *e)
{
    Conn *c = conn;
    SignalOp *o = (SignalOp *)op;
    const char *id = o->id, *payload = o->payload;
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    /* One statement: insert, or replace a pending signal that does not outrank the new one. */
    int r = sq_cached(c,
                      "INSERT INTO signals (instance_key, type, payload, created_at) "
                      "VALUES (?, ?, ?, ?) ON CONFLICT (instance_key) DO UPDATE SET "
                      "type = excluded.type, payload = excluded.payload, "
                      "created_at = excluded.created_at "
                      "WHERE " SIGNAL_RANK("signals.type") " <= " SIGNAL_RANK("excluded.type"),
                      &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_signal(st, 2, o->kind);
    bind_text(st, 3, payload);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)now_usec(CLOCK_REALTIME));
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error_child(c, e, "store the signal", id);
    return sqlite3_changes(c->db) > 0;
}

static int signal_get_locked(Conn *c, const char *id, SignalKind *ret_kind, char **ret_payload,
                             Error *e)
{
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c, "SELECT type, payload FROM signals WHERE instance_key = ?", &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sq_error(c, e, "read the signal");
    SignalKind kind = _SIGNAL_KIND_INVALID;
    if (rc == SQLITE_ROW && (r = col_signal(st, 0, id, &kind, e)) < 0)
        return r;
    *ret_kind = kind;
    if (ret_payload)
        *ret_payload = rc == SQLITE_ROW ? col_text(st, 1) : NULL;
    return rc == SQLITE_ROW;
}

static int signal_get(Store *store, const char *id, SignalKind *ret_kind, char **ret_payload,
                      Error *e)
{
    READER(SQ(store), c);
    return signal_get_locked(c, id, ret_kind, ret_payload, e);
}

static int signal_ack_run(void *conn, WriteOp *op, Error *e)
{
    Conn *c = conn;
    SignalOp *o = (SignalOp *)op;
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c, "DELETE FROM signals WHERE instance_key = ? AND type = ?", &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, o->id);
    bind_signal(st, 2, o->kind);
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error(c, e, "acknowledge the signal");
    return sqlite3_changes(c->db) > 0;
}

static int custom_signal_put_run(void *conn, WriteOp *op, Error *e)
{
    Conn *c = conn;
    SignalOp *o = (SignalOp *)op;
    const char *id = o->id, *wait_key = o->wait_key, *payload = o->payload;
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c,
                      "INSERT INTO custom_signals (instance_key, wait_key, payload, created_at) "
                      "VALUES (?, ?, ?, ?) ON CONFLICT (instance_key, wait_key) DO UPDATE SET "
                      "payload = excluded.payload, created_at = excluded.created_at",
                      &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_text(st, 2, wait_key);
    bind_text(st, 3, payload);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)now_usec(CLOCK_REALTIME));
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error_child(c, e, "store the custom signal", id);
    return 0;
}

static int custom_signal_take_run(void *conn, WriteOp *op, Error *e)
{
    Conn *c = conn;
    SignalOp *o = (SignalOp *)op;
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c,
                      "DELETE FROM custom_signals WHERE instance_key = ? AND wait_key = ? "
                      "RETURNING payload",
                      &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, o->id);
    bind_text(st, 2, o->wait_key);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return sq_error(c, e, "take the custom signal");
    _cleanup_free_ char *payload = col_text(st, 0);
    /* (instance_key, wait_key) is the primary key: one row at most; run the statement out. */
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error(c, e, "take the custom signal");
    o->taken = TAKE_PTR(payload);
    return 1;
}

/* Take a custom signal and save its payload as checkpoint o->checkpoint_key, in one
 * transaction. */
static int custom_signal_deliver_run(void *conn, WriteOp *op, Error *e)
{
    Conn *c = conn;
    SignalOp *o = (SignalOp *)op;
    /* The key taken means the wait has its outcome (a delivery whose reply was lost, repeated):
     * say so whether or not another signal is pending, which stays. */
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c, "SELECT 1 FROM checkpoints WHERE instance_key = ? AND key = ?", &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, o->id);
    bind_text(st, 2, o->checkpoint_key);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sq_error(c, e, "look up the checkpoint");
    if (rc == SQLITE_ROW)
        r = error_set(e, -EEXIST,
                      "checkpoint \"%s\" of instance \"%s\" exists already; read it, the wait's "
                      "outcome is there",
                      o->checkpoint_key, o->id);
    if (r < 0)
        return r;
    r = custom_signal_take_run(c, op, e);
    if (r <= 0)
        return r;
    const char *bytes = o->taken ? o->taken : "null";
    usec_t now = now_usec(CLOCK_REALTIME);
    r = checkpoint_insert_locked(c, o->id, o->checkpoint_key, bytes, strlen(bytes), now, e);
    if (r == 0) /* read as absent above, in this transaction */
        r = error_set(e, -EIO, "checkpoint \"%s\" of instance \"%s\" appeared", o->checkpoint_key,
                      o->id);
    if (r > 0)
        r = checkpoint_stored_locked(c, o->id, o->checkpoint_key, o->token_hash, now, e);
    return r < 0 ? r : 1; /* on failure the savepoint puts the signal back; o->taken is freed */
}

static int custom_signal_exists(Store *store, const char *id, const char *wait_key, Error *e)
{
    READER(SQ(store), c);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c, "SELECT 1 FROM custom_signals WHERE instance_key = ? AND wait_key = ?",
                      &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_text(st, 2, wait_key);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sq_error(c, e, "look up the custom signal");
    return rc == SQLITE_ROW;
}

/* Times are integer microseconds here, so a bucket is the end time rounded down to the unit. */
static int tenant_metrics(Store *store, const char *tenant, usec_t start, usec_t end, usec_t unit,
                          MetricsBucket *m, size_t n, Error *e)
{
    READER(SQ(store), c);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(
        c,
        "SELECT finished_at / ?4 * ?4 AS bucket, status, COUNT(*), "
        "COUNT(started_at), SUM(finished_at - started_at), "
        "MIN(finished_at - started_at), MAX(finished_at - started_at), "
        "COUNT(NULLIF(memory_peak_bytes, 0)), SUM(memory_peak_bytes), MAX(memory_peak_bytes) "
        "FROM instances WHERE tenant_id = ?1 AND finished_at >= ?2 AND "
        "finished_at < ?3 AND status IN ('completed', 'failed', 'cancelled') "
        "GROUP BY bucket, status",
        &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, tenant);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)start);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)end);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)unit);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        MetricsRow row = {
            .bucket = col_usec(st, 0),
            .count = (uint64_t)sqlite3_column_int64(st, 2),
            .timed = (uint64_t)sqlite3_column_int64(st, 3),
            .duration_sum = col_usec(st, 4),
            .duration_min = col_usec(st, 5),
            .duration_max = col_usec(st, 6),
            .measured = (uint64_t)sqlite3_column_int64(st, 7),
            .memory_sum = (uint64_t)sqlite3_column_int64(st, 8),
            .memory_max = (uint64_t)sqlite3_column_int64(st, 9),
        };
        r = col_status(st, 1, NULL, &row.status, e);
        if (r >= 0)
            r = store__metrics_add(m, n, unit, &row, e);
        if (r < 0)
            return r;
    }
    if (rc != SQLITE_DONE)
        return sq_error(c, e, "read the tenant's metrics");
    return 0;
}

/* ---- owners and leases (one daemon at a time on a SQLite file: store.h) ------------------- */

static int daemon_list(Store *store, DaemonRecord **ret, size_t *ret_n, Error *e)
{
    READER(SQ(store), c);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c,
                      "SELECT d.id, d.host, d.pid, d.started_at, d.lease_until, "
                      "(SELECT COUNT(*) FROM instances i WHERE i.owner = d.id AND i.status IN "
                      "('pending', 'running', 'suspended')) FROM daemons d ORDER BY d.id LIMIT ?1",
                      &st, e);
    if (r < 0)
        return r;
    sqlite3_bind_int(st, 1, STORE_LIST_MAX);
    usec_t now = now_usec(CLOCK_REALTIME);
    DaemonRecord *v = NULL;
    size_t n = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        v = xrealloc(v, (n + 1) * sizeof *v);
        v[n++] = (DaemonRecord){.id = xstrdup((const char *)sqlite3_column_text(st, 0)),
                                .host = xstrdup((const char *)sqlite3_column_text(st, 1)),
                                .pid = sqlite3_column_int(st, 2),
                                .started_at = col_usec(st, 3),
                                .lease_until = col_usec(st, 4),
                                .live = col_usec(st, 4) > now,
                                .instances = (uint64_t)sqlite3_column_int64(st, 5)};
    }
    if (rc != SQLITE_DONE) {
        daemon_records_free(v, n);
        return sq_error(c, e, "list the daemons");
    }
    *ret = v;
    *ret_n = n;
    return 0;
}

static int daemon_register_run(void *conn, WriteOp *op, Error *e)
{
    Conn *c = conn;
    DaemonOp *o = (DaemonOp *)op;
    usec_t now = now_usec(CLOCK_REALTIME);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c, "SELECT host, lease_until FROM daemons WHERE id = ?1", &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, o->id);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sq_error(c, e, "read the daemon's registration");
    if (rc == SQLITE_ROW && col_usec(st, 1) > now &&
        strcmp((const char *)sqlite3_column_text(st, 0), o->host) != 0)
        return error_set(e, -EBUSY,
                         "daemon id \"%s\" is in use by a daemon on host \"%s\" whose lease has "
                         "not ended; hint: each daemon needs its own DATA_DIR (the id is kept in "
                         "DATA_DIR/daemon-id)",
                         o->id, (const char *)sqlite3_column_text(st, 0));
    _cleanup_reset_ sqlite3_stmt *ins = NULL;
    r = sq_cached(
        c,
        "INSERT INTO daemons (id, host, pid, started_at, lease_until) "
        "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO UPDATE SET host = excluded.host, "
        "pid = excluded.pid, started_at = excluded.started_at, "
        "lease_until = excluded.lease_until",
        &ins, e);
    if (r < 0)
        return r;
    bind_text(ins, 1, o->id);
    bind_text(ins, 2, o->host);
    sqlite3_bind_int(ins, 3, o->pid);
    sqlite3_bind_int64(ins, 4, (sqlite3_int64)now);
    sqlite3_bind_int64(ins, 5, (sqlite3_int64)(now + o->lease));
    if (sqlite3_step(ins) != SQLITE_DONE)
        return sq_error(c, e, "register the daemon");
    return 0;
}

static int daemon_renew_run(void *conn, WriteOp *op, Error *e)
{
    Conn *c = conn;
    DaemonOp *o = (DaemonOp *)op;
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c, "UPDATE daemons SET lease_until = ?2 WHERE id = ?1", &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, o->id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)(now_usec(CLOCK_REALTIME) + o->lease));
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error(c, e, "renew the daemon's lease");
    o->renewed = sqlite3_changes(c->db) > 0;
    return 0;
}

static int daemon_unregister_run(void *conn, WriteOp *op, Error *e)
{
    Conn *c = conn;
    DaemonOp *o = (DaemonOp *)op;
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = sq_cached(c, "DELETE FROM daemons WHERE id = ?1", &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, o->id);
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error(c, e, "unregister the daemon");
    return 0;
}

static int instance_adopt_run(void *conn, WriteOp *op, Error *e)
{
    Conn *c = conn;
    AdoptOp *o = (AdoptOp *)op;
    int r;
    if (o->expired_too) {
        _cleanup_reset_ sqlite3_stmt *del = NULL;
        r = sq_cached(c, "DELETE FROM daemons WHERE id <> ?1 AND lease_until < ?2", &del, e);
        if (r < 0)
            return r;
        bind_text(del, 1, o->owner);
        sqlite3_bind_int64(del, 2, (sqlite3_int64)now_usec(CLOCK_REALTIME));
        if (sqlite3_step(del) != SQLITE_DONE)
            return sq_error(c, e, "remove the daemons whose lease ended");
    }
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    r = sq_cached(c,
                  "UPDATE instances SET owner = ?1 WHERE seq IN (SELECT seq FROM instances i "
                  "WHERE seq > ?3 AND (status IN ('pending', 'running', 'suspended') "
                  "OR (exit_code IS NULL AND attempt > 0)) "
                  "AND (owner IS NULL OR NOT EXISTS (SELECT 1 FROM daemons d "
                  "WHERE d.id = i.owner)) ORDER BY seq LIMIT ?2) RETURNING instance_key, seq",
                  &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, o->owner);
    sqlite3_bind_int64(st, 2, o->limit);
    sqlite3_bind_int64(st, 3, o->after);
    o->keys = xcalloc(o->limit + 1, sizeof *o->keys);
    o->last = o->after; /* a run again after a lost batch starts over */
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && o->n < o->limit) {
        o->keys[o->n++] = col_text(st, 0);
        o->last = MAX(o->last, (int64_t)sqlite3_column_int64(st, 1));
    }
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return sq_error(c, e, "take over instances");
    return 0;
}

static const StoreOps sqlite_ops = {
    .name = "sqlite",
    .close = sqlite_close,
    .info = sqlite_info,
    .ping = sqlite_ping,
    .backup = sqlite_backup,
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
};

static int make_parent_dir(const char *path, Error *e)
{
    _cleanup_free_ char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    int r = fileio_mkdir_p(dir, 0750);
    if (r < 0)
        return error_set(e, r, "could not create directory \"%s\": %s", dir, strerror(-r));
    return 0;
}

/* Process-wide SQLite settings, before the library initialises. Memory statistics take one global
 * mutex on every allocation of every connection, which the readers of several HTTP threads would
 * contend on (measured: most of the futex calls of a status-read load); nothing reads them. */
static void sqlite_configure(void)
{
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); /* SQLITE_MISUSE if already initialised */
}

/* The VFS of every connection. "unix-excl" is SQLite's unix VFS with the database file locked
 * exclusively by this process (other connections of the process share it) and the WAL index in
 * this process's memory instead of the -shm file. Every read transaction then takes its read
 * lock in memory: with the shared -shm file each took and dropped a POSIX lock, two fcntl()
 * calls and a process-wide mutex per read (measured: the status API at 0.74 of the bare
 * server's rate with it, 0.91 without, docs/benchmarks.md). The price: no other process can
 * read the database while the daemon runs (a sqlite3 shell, an online ".backup"); backups go
 * through the daemon (store_backup, GET /api/v1/backup), and a second daemon given the same
 * database, wherever it lies, is refused. */
#define SQLITE_VFS "unix-excl"

static int conn_open(Conn *c, const char *path, int flags, Error *e)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sqlite_configure);
    if (sqlite3_open_v2(path, &c->db, flags | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE,
                        SQLITE_VFS) != SQLITE_OK)
        return error_set(e, -EIO, "could not open database \"%s\": %s", path,
                         c->db ? sqlite3_errmsg(c->db) : "out of memory");
    sqlite3_busy_timeout(c->db, 5000);
    return 0;
}

int store__sqlite_open(const char *path, Store **ret, Error *e)
{
    int r = make_parent_dir(path, e);
    if (r < 0)
        return r;

    SqliteStore *s = xcalloc(1, sizeof *s);
    s->base.ops = &sqlite_ops;
    s->base.batch = &s->batch;
    pthread_mutex_init(&s->writer.lock, NULL);
    for (size_t i = 0; i < SQLITE_READERS; i++)
        pthread_mutex_init(&s->readers[i].lock, NULL);

    /* The writer creates and migrates the database, so the readers open a current schema in WAL
     * mode (the mode is persistent; the -shm file the readers share exists once it is set). */
    r = conn_open(&s->writer, path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, e);
    if (r < 0) {
        sqlite_close(&s->base);
        return r;
    }
    /* the first access takes the exclusive lock: another process holding the file fails it */
    sqlite3_busy_timeout(s->writer.db, 0);
    r = sq_exec(&s->writer, "PRAGMA journal_mode = WAL", e, "configure the database");
    if (r < 0 && (sqlite3_errcode(s->writer.db) & 0xff) == SQLITE_BUSY) {
        error_done(e);
        r = error_set(e, -EBUSY,
                      "could not open database \"%s\": another process has it open; the daemon "
                      "needs it to itself (close any sqlite3 shell on it, or stop the other "
                      "daemon)",
                      path);
        sqlite_close(&s->base);
        return r;
    }
    sqlite3_busy_timeout(s->writer.db, 5000);
    /* Foreign keys are off while migrations run: a migration that rebuilds a table drops the old
     * one, which would otherwise delete every row that references it. Each migration checks
     * them before it commits (run_migrations). */
    if (r >= 0)
        r = sq_exec(&s->writer, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF", e,
                    "configure the database");
    if (r >= 0)
        r = run_migrations(&s->writer, e);
    if (r >= 0)
        s->schema_version = r;
    if (r >= 0) {
        int k = sq_exec(&s->writer, "PRAGMA foreign_keys = ON", e, "configure the database");
        if (k < 0)
            r = k;
    }
    for (size_t i = 0; r >= 0 && i < SQLITE_READERS; i++) {
        r = conn_open(&s->readers[i], path, SQLITE_OPEN_READONLY, e);
        if (r >= 0)
            r = sq_exec(&s->readers[i], "PRAGMA query_only = ON", e, "configure the database");
    }
    if (r < 0) {
        error_prefix(e, "database \"%s\"", path);
        sqlite_close(&s->base);
        return r;
    }
#ifdef RUNTARA_FAULT_INJECTION
    const char *lose = secure_getenv("RUNTARA_FAULT_STORE_LOSE_BATCH");
    if (lose) /* lose every Nth batch, as if its COMMIT had failed */
        s->batch.fault_lose_every = (unsigned)strtoul(lose, NULL, 10);
#endif
    r = store_batch_init(&s->batch, &sqlite_tx, &s->writer, &s->writer.lock, e);
    if (r < 0) {
        sqlite_close(&s->base);
        return r;
    }
    *ret = &s->base;
    return 0;
}
