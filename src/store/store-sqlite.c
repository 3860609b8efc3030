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
#include "store-internal.h"

typedef struct SqliteStore {
    Store base;
    sqlite3 *db;
    pthread_mutex_t lock;
    int schema_version;
} SqliteStore;

#define SQ(s) ((SqliteStore *)(s))

static int sq_error(SqliteStore *s, Error *e, const char *what)
{
    int rc = sqlite3_extended_errcode(s->db);
    int code = (rc & 0xff) == SQLITE_FULL         ? -ENOSPC
               : (rc & 0xff) == SQLITE_CONSTRAINT ? -EEXIST
                                                  : -EIO;
    return error_set(e, code, "could not %s: %s", what, sqlite3_errmsg(s->db));
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
    int rc;
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

static int instance_insert_minimal(Store *store, const char *id, const char *tenant,
                                   const char *image_id, const char *status, Error *e)
{
    SqliteStore *s = SQ(store);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = sq_prepare(s,
                       "INSERT INTO instances (instance_id, tenant_id, image_id, status, "
                       "created_at) VALUES (?, ?, ?, ?, ?)",
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
