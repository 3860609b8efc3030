/* The SQLite backend: WAL, synchronous=FULL (an acknowledged write survives power loss), foreign
 * keys on, one connection serialised by a mutex. Migrations are applied at open, each in its own
 * transaction, and recorded in schema_migrations. */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/alloc.h"
#include "../base/fileio.h"
#include "../base/strbuf.h"
#include "store-internal.h"

typedef struct SqliteStore {
    Store base;
    sqlite3 *db;
    pthread_mutex_t lock;
    int schema_version;
} SqliteStore;

#define SQ(s) ((SqliteStore *)(s))

/* The errno for the connection's last error: a missing parent row is -ENOENT, a CHECK or NOT NULL
 * violation -EINVAL, any other constraint (UNIQUE, PRIMARY KEY) -EEXIST. */
static int sq_code(SqliteStore *s)
{
    int rc = sqlite3_extended_errcode(s->db);
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

static int sq_error(SqliteStore *s, Error *e, const char *what)
{
    return error_set(e, sq_code(s), "could not %s: %s", what, sqlite3_errmsg(s->db));
}

static int no_instance(Error *e, const char *id)
{
    return error_set(e, -ENOENT, "instance \"%s\" does not exist", id);
}

/* sq_error for a write into a table that references instances: a foreign key failure means the
 * instance does not exist, and says so. */
static int sq_error_child(SqliteStore *s, Error *e, const char *what, const char *id)
{
    if (sqlite3_extended_errcode(s->db) == SQLITE_CONSTRAINT_FOREIGNKEY)
        return no_instance(e, id);
    return sq_error(s, e, what);
}

static void finalizep(sqlite3_stmt **st)
{
    if (*st)
        sqlite3_finalize(*st);
}
#define _cleanup_stmt_ _cleanup_(finalizep)

static void unlockp(SqliteStore **s)
{
    if (*s)
        pthread_mutex_unlock(&(*s)->lock);
}
/* Hold the connection lock until the end of the scope. */
#define LOCKED(s)                                                                                  \
    _cleanup_(unlockp) _unused_ SqliteStore *_locked_ = (pthread_mutex_lock(&(s)->lock), (s))

static int sq_exec(SqliteStore *s, const char *sql, Error *e, const char *what)
{
    if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return sq_error(s, e, what);
    return 0;
}

static int sq_prepare(SqliteStore *s, const char *sql, sqlite3_stmt **ret, Error *e)
{
    if (sqlite3_prepare_v2(s->db, sql, -1, ret, NULL) != SQLITE_OK)
        return sq_error(s, e, "prepare a statement");
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

static int sq_begin(SqliteStore *s, Error *e)
{
    return sq_exec(s, "BEGIN IMMEDIATE", e, "begin a transaction");
}

static void sq_rollback(SqliteStore *s)
{
    (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

static int run_migrations(SqliteStore *s, Error *e)
{
    int r =
        sq_exec(s,
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
                e, "create the migration table");
    if (r < 0)
        return r;

    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    r = sq_prepare(s, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &st, e);
    if (r < 0)
        return r;
    if (sqlite3_step(st) != SQLITE_ROW)
        return sq_error(s, e, "read the schema version");
    int current = sqlite3_column_int(st, 0);
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
        r = sq_exec(s, "BEGIN IMMEDIATE", e, "begin a migration");
        if (r >= 0)
            r = sq_exec(s, m->sql, e, "apply a migration");
        if (r >= 0)
            r = sq_exec(s, record, e, "record a migration");
        if (r >= 0)
            r = sq_exec(s, "COMMIT", e, "commit a migration");
        if (r < 0) {
            (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            return error_prefix(e, "migration %03d_%s", m->version, m->name);
        }
    }
    s->schema_version = latest;
    return 0;
}

static void sqlite_close(Store *store)
{
    SqliteStore *s = SQ(store);
    sqlite3_close(s->db);
    pthread_mutex_destroy(&s->lock);
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
    SqliteStore *s = SQ(store);
    LOCKED(s);
    return sq_exec(s, "SELECT 1", e, "query the store");
}

static int image_insert(Store *store, ImageRecord *rec, Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *q = NULL, *ins = NULL;
    int r = sq_exec(s, "BEGIN IMMEDIATE", e, "begin a transaction");
    if (r < 0)
        return r;

    r = sq_prepare(s,
                   "SELECT COALESCE(MAX(version), 0) + 1 FROM images WHERE tenant_id = ? AND "
                   "name = ?",
                   &q, e);
    if (r < 0)
        goto fail;
    bind_text(q, 1, rec->tenant_id);
    bind_text(q, 2, rec->name);
    if (sqlite3_step(q) != SQLITE_ROW) {
        r = sq_error(s, e, "read the image version");
        goto fail;
    }
    rec->version = sqlite3_column_int64(q, 0);

    r = sq_prepare(s,
                   "INSERT INTO images (image_id, tenant_id, name, version, description, "
                   "runner_type, labels, sha256, size_bytes, created_at) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   &ins, e);
    if (r < 0)
        goto fail;
    bind_text(ins, 1, rec->image_id);
    bind_text(ins, 2, rec->tenant_id);
    bind_text(ins, 3, rec->name);
    sqlite3_bind_int64(ins, 4, rec->version);
    bind_text(ins, 5, rec->description);
    bind_text(ins, 6, rec->runner_type);
    bind_text(ins, 7, rec->labels_json ? rec->labels_json : "{}");
    bind_text(ins, 8, rec->sha256);
    sqlite3_bind_int64(ins, 9, (sqlite3_int64)rec->size_bytes);
    sqlite3_bind_int64(ins, 10, (sqlite3_int64)rec->created_at);
    if (sqlite3_step(ins) != SQLITE_DONE) {
        r = sq_error(s, e, "insert the image");
        goto fail;
    }
    rec->seq = sqlite3_last_insert_rowid(s->db);
    return sq_exec(s, "COMMIT", e, "commit the image");
fail:
    (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return r;
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
    SqliteStore *s = SQ(store);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(s,
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
        return sq_error(s, e, "read the image");
    read_image(st, ret);
    return 0;
}

/* Escape LIKE wildcards so a name prefix matches literally. */
static char *like_prefix(const char *p)
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

static int image_list(Store *store, const ImageFilter *f, ImageRecord **ret, size_t *ret_n,
                      bool *ret_more, Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    _cleanup_free_ char *like = f->name_prefix ? like_prefix(f->name_prefix) : NULL;
    int r = sq_prepare(s,
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
        return sq_error(s, e, "list images");
    }
    *ret_more = n > f->limit;
    if (*ret_more)
        image_record_done(&rows[--n]);
    *ret = rows;
    *ret_n = n;
    return 0;
}

static int image_delete(Store *store, const char *id, const char *tenant, Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *q = NULL, *del = NULL;
    int r = sq_exec(s, "BEGIN IMMEDIATE", e, "begin a transaction");
    if (r < 0)
        return r;

    r = sq_prepare(s,
                   "SELECT (SELECT COUNT(*) FROM images WHERE image_id = ?1 AND "
                   "(?2 IS NULL OR tenant_id = ?2)), (SELECT COUNT(*) FROM instances WHERE "
                   "image_id = ?1 AND status IN ('pending', 'running', 'suspended'))",
                   &q, e);
    if (r < 0)
        goto fail;
    bind_text(q, 1, id);
    bind_text(q, 2, tenant);
    if (sqlite3_step(q) != SQLITE_ROW) {
        r = sq_error(s, e, "look up the image");
        goto fail;
    }
    if (sqlite3_column_int64(q, 0) == 0) {
        r = error_set(e, -ENOENT, "image \"%s\" does not exist", id);
        goto fail;
    }
    sqlite3_int64 users = sqlite3_column_int64(q, 1);
    if (users > 0) {
        r = error_set(e, -EBUSY, "image \"%s\" is used by %lld unfinished instance%s", id,
                      (long long)users, users == 1 ? "" : "s");
        goto fail;
    }
    r = sq_prepare(s, "DELETE FROM images WHERE image_id = ?", &del, e);
    if (r < 0)
        goto fail;
    bind_text(del, 1, id);
    if (sqlite3_step(del) != SQLITE_DONE) {
        r = sq_error(s, e, "delete the image");
        goto fail;
    }
    return sq_exec(s, "COMMIT", e, "commit the delete");
fail:
    (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return r;
}

static int query_int(SqliteStore *s, const char *sql, const char *arg, int64_t *ret, Error *e)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(s, sql, &st, e);
    if (r < 0)
        return r;
    if (arg)
        bind_text(st, 1, arg);
    if (sqlite3_step(st) != SQLITE_ROW)
        return sq_error(s, e, "query the store");
    *ret = sqlite3_column_int64(st, 0);
    return 0;
}

static int image_exists(Store *store, const char *id, Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    int64_t n = 0;
    int r = query_int(s, "SELECT COUNT(*) FROM images WHERE image_id = ?", id, &n, e);
    return r < 0 ? r : n > 0;
}

static int image_count(Store *store, uint64_t *ret, Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    int64_t n = 0;
    int r = query_int(s, "SELECT COUNT(*) FROM images", NULL, &n, e);
    if (r >= 0)
        *ret = (uint64_t)n;
    return r;
}

#define INSTANCE_COLUMNS                                                                           \
    "seq, instance_id, tenant_id, image_id, status, termination_reason, input, output, error, "    \
    "env, request_hash, token_hash, checkpoint_id, exit_code, timeout_secs, attempt, created_at, " \
    "updated_at, started_at, finished_at, heartbeat_at, sleep_until"

static void read_instance(sqlite3_stmt *st, InstanceRecord *r)
{
    *r = (InstanceRecord){
        .seq = sqlite3_column_int64(st, 0),
        .instance_id = col_text(st, 1),
        .tenant_id = col_text(st, 2),
        .image_id = col_text(st, 3),
        .status = col_text(st, 4),
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
    };
}

/* instance_get with the lock already held. */
static int instance_get_locked(SqliteStore *s, const char *id, const char *tenant,
                               InstanceRecord *ret, Error *e)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(s,
                       "SELECT " INSTANCE_COLUMNS " FROM instances WHERE instance_id = ?1 AND "
                       "(?2 IS NULL OR tenant_id = ?2)",
                       &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_text(st, 2, tenant);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return no_instance(e, id);
    if (rc != SQLITE_ROW)
        return sq_error(s, e, "read the instance");
    read_instance(st, ret);
    return 0;
}

static int instance_insert_minimal(Store *store, const char *id, const char *tenant,
                                   const char *image_id, const char *status, Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(s,
                       "INSERT INTO instances (instance_id, tenant_id, image_id, status, "
                       "created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                       &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_text(st, 2, tenant);
    bind_text(st, 3, image_id);
    bind_text(st, 4, status);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)now_usec(CLOCK_REALTIME));
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error(s, e, "insert the instance");
    return 0;
}

static int instance_create(Store *store, const InstanceRecord *rec, InstanceRecord *ret_existing,
                           Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(s,
                       "INSERT INTO instances (instance_id, tenant_id, image_id, status, "
                       "created_at, updated_at, input, env, timeout_secs, request_hash) "
                       "VALUES (?1, ?2, ?3, 'pending', ?4, ?4, ?5, ?6, ?7, ?8) "
                       "ON CONFLICT (instance_id) DO NOTHING",
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
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error(s, e, "insert the instance");
    if (sqlite3_changes(s->db) > 0)
        return 0;

    /* The id exists. Instances are never deleted by the daemon, so the row is there to read. */
    if (ret_existing) {
        r = instance_get_locked(s, rec->instance_id, NULL, ret_existing, e);
        if (r < 0)
            return r;
    }
    return error_set(e, -EEXIST, "instance \"%s\" already exists", rec->instance_id);
}

static int instance_get(Store *store, const char *id, const char *tenant, InstanceRecord *ret,
                        Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    return instance_get_locked(s, id, tenant, ret, e);
}

/* Whether an instance row exists: 1, 0 or a negative errno. */
static int instance_exists_locked(SqliteStore *s, const char *id, Error *e)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(s, "SELECT 1 FROM instances WHERE instance_id = ?", &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sq_error(s, e, "look up the instance");
    return rc == SQLITE_ROW;
}

static int instance_transition(Store *store, const char *id, const char *from_status,
                               const InstanceUpdate *u, Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    /* ?7 is clear_result: it resets the result columns unless the update sets them itself. */
    int r = sq_prepare(
        s,
        "UPDATE instances SET status = ?3, termination_reason = ?4, "
        "exit_code = CASE WHEN ?5 THEN ?6 WHEN ?7 THEN NULL ELSE exit_code END, "
        "output = CASE WHEN ?8 IS NOT NULL THEN ?8 WHEN ?7 THEN NULL ELSE output END, "
        "error = CASE WHEN ?9 IS NOT NULL THEN ?9 WHEN ?7 THEN NULL ELSE error END, "
        "token_hash = COALESCE(?10, token_hash), attempt = attempt + ?11, "
        "started_at = COALESCE(?12, started_at), "
        "finished_at = CASE WHEN ?13 IS NOT NULL THEN ?13 WHEN ?7 THEN NULL ELSE finished_at END, "
        "updated_at = ?14 "
        "WHERE instance_id = ?1 AND status = ?2",
        &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_text(st, 2, from_status);
    bind_text(st, 3, u->to_status);
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
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error(s, e, "update the instance");
    if (sqlite3_changes(s->db) > 0)
        return 1;

    /* Not applied: a lost race, or no such instance. Rows are never deleted, so this is exact. */
    r = instance_exists_locked(s, id, e);
    if (r < 0)
        return r;
    return r ? 0 : no_instance(e, id);
}

/* The WHERE clause of an instance list, built only from constant fragments with named
 * parameters (bind_instance_filter binds them); values are never formatted into SQL. */
static void instance_where(StrBuf *b, const InstanceFilter *f, bool with_cursor)
{
    strbuf_puts(b, " WHERE 1");
    if (f->tenant_id)
        strbuf_puts(b, " AND tenant_id = :tenant");
    if (f->status)
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
    bind_named_text(st, ":status", f->status);
    bind_named_text(st, ":image", f->image_id);
    bind_named_int64(st, ":created_after", (int64_t)f->created_after);
    bind_named_int64(st, ":created_before", (int64_t)f->created_before);
    bind_named_int64(st, ":finished_after", (int64_t)f->finished_after);
    bind_named_int64(st, ":finished_before", (int64_t)f->finished_before);
    bind_named_int64(st, ":before_seq", f->before_seq);
    bind_named_int64(st, ":limit", (int64_t)f->limit + 1);
}

static int instance_count_locked(SqliteStore *s, const InstanceFilter *f, uint64_t *ret, Error *e)
{
    _cleanup_(strbuf_done) StrBuf sql = STRBUF_INIT;
    strbuf_puts(&sql, "SELECT COUNT(*) FROM instances");
    instance_where(&sql, f, false);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(s, sql.buf, &st, e);
    if (r < 0)
        return r;
    bind_instance_filter(st, f);
    if (sqlite3_step(st) != SQLITE_ROW)
        return sq_error(s, e, "count instances");
    *ret = (uint64_t)sqlite3_column_int64(st, 0);
    return 0;
}

static int instance_page_locked(SqliteStore *s, const InstanceFilter *f, InstanceRecord **ret,
                                size_t *ret_n, bool *ret_more, Error *e)
{
    _cleanup_(strbuf_done) StrBuf sql = STRBUF_INIT;
    strbuf_puts(&sql, "SELECT " INSTANCE_COLUMNS " FROM instances");
    instance_where(&sql, f, true);
    strbuf_puts(&sql, " ORDER BY seq DESC LIMIT :limit");
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(s, sql.buf, &st, e);
    if (r < 0)
        return r;
    bind_instance_filter(st, f);

    InstanceRecord *rows = xcalloc(f->limit + 1, sizeof *rows);
    size_t n = 0;
    int rc = SQLITE_DONE;
    while (n < f->limit + 1 && (rc = sqlite3_step(st)) == SQLITE_ROW)
        read_instance(st, &rows[n++]);
    if (n < f->limit + 1 && rc != SQLITE_DONE) {
        instance_records_free(rows, n);
        return sq_error(s, e, "list instances");
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
    SqliteStore *s = SQ(store);
    LOCKED(s);
    InstanceRecord *rows = NULL;
    size_t n = 0;
    bool more = false;
    uint64_t total = 0;
    /* One read transaction, so the page and the total see the same snapshot. */
    int r = sq_exec(s, "BEGIN", e, "begin a transaction");
    if (r < 0)
        return r;
    r = instance_page_locked(s, f, &rows, &n, &more, e);
    if (r >= 0 && ret_total)
        r = instance_count_locked(s, f, &total, e);
    if (r >= 0)
        r = sq_exec(s, "COMMIT", e, "end the transaction");
    if (r < 0) {
        sq_rollback(s);
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

static int instance_heartbeat(Store *store, const char *id, usec_t now, Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(s, "UPDATE instances SET heartbeat_at = ?2 WHERE instance_id = ?1", &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)now);
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error(s, e, "record the heartbeat");
    return sqlite3_changes(s->db) > 0 ? 0 : no_instance(e, id);
}

static int instance_count_by_status(Store *store, const char *tenant,
                                    uint64_t ret_counts[STORE_INSTANCE_STATUS_N], Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(s,
                       "SELECT status, COUNT(*) FROM instances WHERE (?1 IS NULL OR "
                       "tenant_id = ?1) GROUP BY status",
                       &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, tenant);
    uint64_t counts[STORE_INSTANCE_STATUS_N] = {0};
    int rc = SQLITE_DONE;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int i = store__status_index((const char *)sqlite3_column_text(st, 0));
        if (i >= 0)
            counts[i] = (uint64_t)sqlite3_column_int64(st, 1);
    }
    if (rc != SQLITE_DONE)
        return sq_error(s, e, "count instances");
    memcpy(ret_counts, counts, sizeof counts);
    return 0;
}

/* Append an event with the lock (and possibly a transaction) already held. */
static int event_append_locked(SqliteStore *s, const char *id, const char *type,
                               const char *subtype, const char *payload, usec_t now,
                               int64_t *ret_id, Error *e)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(s,
                       "INSERT INTO events (instance_id, type, subtype, payload, created_at) "
                       "VALUES (?, ?, ?, ?, ?)",
                       &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_text(st, 2, type);
    bind_text(st, 3, subtype);
    bind_text(st, 4, payload);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)now);
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error_child(s, e, "append the event", id);
    if (ret_id)
        *ret_id = sqlite3_last_insert_rowid(s->db);
    return 0;
}

/* The new checkpoint's side effects: the instance's checkpoint_id, and a "checkpoint" event. */
static int checkpoint_stored_locked(SqliteStore *s, const char *id, const char *key, usec_t now,
                                    Error *e)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(s,
                       "UPDATE instances SET checkpoint_id = ?2, updated_at = ?3 "
                       "WHERE instance_id = ?1",
                       &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_text(st, 2, key);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)now);
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error(s, e, "record the checkpoint on the instance");
    return event_append_locked(s, id, "checkpoint", key, NULL, now, NULL, e);
}

/* Read a stored checkpoint with the lock held: 1 and the bytes, 0 if there is none. */
static int checkpoint_read_locked(SqliteStore *s, const char *id, const char *key, void **ret_data,
                                  size_t *ret_n, usec_t *ret_created, Error *e)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(
        s, "SELECT data, created_at FROM checkpoints WHERE instance_id = ? AND key = ?", &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_text(st, 2, key);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return sq_error(s, e, "read the checkpoint");
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

static int checkpoint_save(Store *store, const char *id, const char *key, const void *data,
                           size_t n, void **ret_data, size_t *ret_n, Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *ins = NULL;
    usec_t now = now_usec(CLOCK_REALTIME);
    int r = sq_begin(s, e);
    if (r < 0)
        return r;

    r = sq_prepare(s,
                   "INSERT INTO checkpoints (instance_id, key, data, created_at) "
                   "VALUES (?, ?, ?, ?) ON CONFLICT (instance_id, key) DO NOTHING",
                   &ins, e);
    if (r < 0)
        goto fail;
    bind_text(ins, 1, id);
    bind_text(ins, 2, key);
    /* a non-NULL pointer even for 0 bytes: an empty blob, not SQL NULL */
    sqlite3_bind_blob64(ins, 3, data ? data : "", n, SQLITE_STATIC);
    sqlite3_bind_int64(ins, 4, (sqlite3_int64)now);
    if (sqlite3_step(ins) != SQLITE_DONE) {
        r = sq_error_child(s, e, "save the checkpoint", id);
        goto fail;
    }
    if (sqlite3_changes(s->db) == 0) {
        /* First write wins: hand back what is stored, change nothing. */
        r = checkpoint_read_locked(s, id, key, ret_data, ret_n, NULL, e);
        if (r == 0)
            r = error_set(e, -EIO, "checkpoint \"%s\" of instance \"%s\" vanished", key, id);
        if (r < 0)
            goto fail;
        sq_rollback(s);
        return 0;
    }
    r = checkpoint_stored_locked(s, id, key, now, e);
    if (r < 0)
        goto fail;
    r = sq_exec(s, "COMMIT", e, "commit the checkpoint");
    if (r < 0)
        goto fail;
    if (ret_data) {
        *ret_data = xmalloc(n ? n : 1);
        if (n)
            memcpy(*ret_data, data, n);
    }
    if (ret_n)
        *ret_n = n;
    return 1;
fail:
    sq_rollback(s);
    return r;
}

static int checkpoint_get(Store *store, const char *id, const char *key, void **ret_data,
                          size_t *ret_n, usec_t *ret_created, Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    int r = checkpoint_read_locked(s, id, key, ret_data, ret_n, ret_created, e);
    if (r == 0)
        return error_set(e, -ENOENT, "checkpoint \"%s\" of instance \"%s\" does not exist", key,
                         id);
    return r < 0 ? r : 0;
}

static int checkpoint_list(Store *store, const char *id, int64_t after_seq, unsigned limit,
                           CheckpointInfo **ret, size_t *ret_n, bool *ret_more, Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    /* length() of a blob reads its size from the record header, not the bytes */
    int r = sq_prepare(s,
                       "SELECT key, length(data), created_at, seq FROM checkpoints "
                       "WHERE instance_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
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
        return sq_error(s, e, "list checkpoints");
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

static int event_append(Store *store, const char *id, const char *type, const char *subtype,
                        const char *payload, int64_t *ret_id, Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    return event_append_locked(s, id, type, subtype, payload, now_usec(CLOCK_REALTIME), ret_id, e);
}

static int event_list(Store *store, const EventFilter *f, EventRecord **ret, size_t *ret_n,
                      bool *ret_more, Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(s,
                       "SELECT id, instance_id, type, subtype, payload, created_at FROM events "
                       "WHERE instance_id = ?1 AND id > ?2 AND (?3 IS NULL OR type = ?3) AND "
                       "(?4 IS NULL OR subtype = ?4) AND (?5 = 0 OR created_at >= ?5) AND "
                       "(?6 = 0 OR created_at < ?6) ORDER BY id LIMIT ?7",
                       &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, f->instance_id);
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
            .instance_id = col_text(st, 1),
            .type = col_text(st, 2),
            .subtype = col_text(st, 3),
            .payload = col_text(st, 4),
            .created_at = col_usec(st, 5),
        };
    if (n < f->limit + 1 && rc != SQLITE_DONE) {
        event_records_free(rows, n);
        return sq_error(s, e, "list events");
    }
    bool more = n > f->limit;
    if (more) {
        EventRecord *last = &rows[--n];
        free(last->instance_id);
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

static int signal_send(Store *store, const char *id, const char *type, const char *payload,
                       Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    /* One statement: insert, or replace a pending signal that does not outrank the new one. */
    int r = sq_prepare(s,
                       "INSERT INTO signals (instance_id, type, payload, created_at) "
                       "VALUES (?, ?, ?, ?) ON CONFLICT (instance_id) DO UPDATE SET "
                       "type = excluded.type, payload = excluded.payload, "
                       "created_at = excluded.created_at "
                       "WHERE " SIGNAL_RANK("signals.type") " <= " SIGNAL_RANK("excluded.type"),
                       &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_text(st, 2, type);
    bind_text(st, 3, payload);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)now_usec(CLOCK_REALTIME));
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error_child(s, e, "store the signal", id);
    return sqlite3_changes(s->db) > 0;
}

static int signal_get(Store *store, const char *id, char **ret_type, char **ret_payload, Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(s, "SELECT type, payload FROM signals WHERE instance_id = ?", &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sq_error(s, e, "read the signal");
    *ret_type = rc == SQLITE_ROW ? col_text(st, 0) : NULL;
    if (ret_payload)
        *ret_payload = rc == SQLITE_ROW ? col_text(st, 1) : NULL;
    return rc == SQLITE_ROW;
}

static int signal_ack(Store *store, const char *id, const char *type, Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(s, "DELETE FROM signals WHERE instance_id = ? AND type = ?", &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_text(st, 2, type);
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error(s, e, "acknowledge the signal");
    return sqlite3_changes(s->db) > 0;
}

static int custom_signal_put(Store *store, const char *id, const char *wait_key,
                             const char *payload, Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(s,
                       "INSERT INTO custom_signals (instance_id, wait_key, payload, created_at) "
                       "VALUES (?, ?, ?, ?) ON CONFLICT (instance_id, wait_key) DO UPDATE SET "
                       "payload = excluded.payload, created_at = excluded.created_at",
                       &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_text(st, 2, wait_key);
    bind_text(st, 3, payload);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)now_usec(CLOCK_REALTIME));
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error_child(s, e, "store the custom signal", id);
    return 0;
}

static int custom_signal_take(Store *store, const char *id, const char *wait_key,
                              char **ret_payload, Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(s,
                       "DELETE FROM custom_signals WHERE instance_id = ? AND wait_key = ? "
                       "RETURNING payload",
                       &st, e);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_text(st, 2, wait_key);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return sq_error(s, e, "take the custom signal");
    _cleanup_free_ char *payload = col_text(st, 0);
    /* (instance_id, wait_key) is the primary key: one row at most; run the statement out. */
    if (sqlite3_step(st) != SQLITE_DONE)
        return sq_error(s, e, "take the custom signal");
    if (ret_payload)
        *ret_payload = TAKE_PTR(payload);
    return 1;
}

static const StoreOps sqlite_ops = {
    .name = "sqlite",
    .close = sqlite_close,
    .info = sqlite_info,
    .ping = sqlite_ping,
    .image_insert = image_insert,
    .image_get = image_get,
    .image_list = image_list,
    .image_delete = image_delete,
    .image_exists = image_exists,
    .image_count = image_count,
    .instance_insert_minimal = instance_insert_minimal,
    .instance_create = instance_create,
    .instance_get = instance_get,
    .instance_transition = instance_transition,
    .instance_list = instance_list,
    .instance_heartbeat = instance_heartbeat,
    .instance_count_by_status = instance_count_by_status,
    .checkpoint_save = checkpoint_save,
    .checkpoint_get = checkpoint_get,
    .checkpoint_list = checkpoint_list,
    .event_append = event_append,
    .event_list = event_list,
    .signal_send = signal_send,
    .signal_get = signal_get,
    .signal_ack = signal_ack,
    .custom_signal_put = custom_signal_put,
    .custom_signal_take = custom_signal_take,
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

int store__sqlite_open(const char *path, Store **ret, Error *e)
{
    int r = make_parent_dir(path, e);
    if (r < 0)
        return r;

    SqliteStore *s = xcalloc(1, sizeof *s);
    s->base.ops = &sqlite_ops;
    pthread_mutex_init(&s->lock, NULL);
    if (sqlite3_open_v2(path, &s->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX |
                            SQLITE_OPEN_EXRESCODE,
                        NULL) != SQLITE_OK) {
        r = error_set(e, -EIO, "could not open database \"%s\": %s", path,
                      s->db ? sqlite3_errmsg(s->db) : "out of memory");
        sqlite_close(&s->base);
        return r;
    }
    sqlite3_busy_timeout(s->db, 5000);
    r = sq_exec(s, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON",
                e, "configure the database");
    if (r >= 0)
        r = run_migrations(s, e);
    if (r < 0) {
        error_prefix(e, "database \"%s\"", path);
        sqlite_close(&s->base);
        return r;
    }
    *ret = &s->base;
    return 0;
}
