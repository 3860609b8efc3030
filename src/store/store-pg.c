/* The PostgreSQL backend (libpq). So far: the schema, brought up to date by
 * store__pg_migrate() (`runtara-environment migrate`); the StoreOps follow (#19). Migrations
 * are migrations/postgres/NNN_name.sql, embedded at build time, applied in order, each in its
 * own transaction, and recorded in schema_migrations; several daemons starting at once take
 * turns on a session advisory lock, so each migration runs once. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "../base/alloc.h"
#include "store-internal.h"

/* The advisory lock key of schema migrations: "runtara" in ASCII. */
#define PG_MIGRATION_LOCK "31084215016812897"

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
    PGconn *c = PQconnectdb(conninfo);
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
