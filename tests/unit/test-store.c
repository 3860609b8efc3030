/* The store conformance suite. Every backend passes it unchanged: SQLite (a temp file; meson test
 * "store") and PostgreSQL (RUNTARA_TEST_STORE=postgres; meson test "store_pg": a new database per
 * test on the server of TEST_DATABASE_URL, or on a throwaway cluster that scripts/pg-cluster.sh
 * starts for the run). Tests named sqlite_* and pg_* reach behind the store into its own
 * database and run on their backend only. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/base/alloc.h"
#include "../../src/base/fileio.h"
#include "../../src/base/strbuf.h"
#include "../../src/store/store.h"
#include "../lib/tests.h"

/* The backend under test. */
static StoreBackend backend(void)
{
    const char *b = getenv("RUNTARA_TEST_STORE");
    return b && strcmp(b, "postgres") == 0 ? STORE_POSTGRES : STORE_SQLITE;
}

static char pg_cluster_dir[64];

static void pg_cluster_stop(void)
{
    _cleanup_free_ char *cmd = xasprintf("'%s/scripts/pg-cluster.sh' stop '%s/cluster'",
                                         getenv("RUNTARA_SOURCE_DIR"), pg_cluster_dir);
    if (system(cmd) != 0)
        printf("# could not stop the PostgreSQL cluster in %s\n", pg_cluster_dir);
    _cleanup_free_ char *rm = xasprintf("rm -rf '%s'", pg_cluster_dir);
    if (system(rm) != 0)
        printf("# could not remove %s\n", pg_cluster_dir);
}

/* The server the PostgreSQL tests use: TEST_DATABASE_URL, or a cluster started once. */
static const char *pg_admin_url(void)
{
    static char *url;
    if (url || (url = getenv("TEST_DATABASE_URL")))
        return url;
    snprintf(pg_cluster_dir, sizeof pg_cluster_dir, "/tmp/runtara-pg-XXXXXX");
    if (!mkdtemp(pg_cluster_dir) || chmod(pg_cluster_dir, 0755) < 0)
        return NULL;
    _cleanup_free_ char *cmd = xasprintf("'%s/scripts/pg-cluster.sh' start '%s/cluster'",
                                         getenv("RUNTARA_SOURCE_DIR"), pg_cluster_dir);
    FILE *f = popen(cmd, "r");
    char line[512] = "";
    bool ok = f && fgets(line, sizeof line, f) != NULL;
    if (f && pclose(f) != 0)
        ok = false;
    if (!ok) {
        printf("# could not start a PostgreSQL cluster (%s)\n", cmd);
        return NULL;
    }
    atexit(pg_cluster_stop);
    line[strcspn(line, "\n")] = '\0';
    return url = xstrdup(line);
}

/* A new database on the PostgreSQL server, as a libpq keyword string naming it. */
static char *pg_fresh_url(void)
{
    static atomic_uint counter;
    const char *admin = pg_admin_url();
    if (!admin)
        return NULL;
    PGconn *c = PQconnectdb(admin);
    char name[64];
    snprintf(name, sizeof name, "rt_%d_%u", (int)getpid(), atomic_fetch_add(&counter, 1));
    _cleanup_free_ char *sql = xasprintf("CREATE DATABASE %s", name);
    PGresult *res = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
    bool ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        printf("# could not create a database: %s\n", PQerrorMessage(c));
    PQclear(res);
    /* the connection's own options, with the new database */
    StrBuf b = STRBUF_INIT;
    PQconninfoOption *opts = ok ? PQconninfo(c) : NULL;
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (o->val && *o->val && strcmp(o->keyword, "dbname") != 0) {
            strbuf_printf(&b, "%s='", o->keyword);
            for (const char *v = o->val; *v; v++) {
                if (*v == '\'' || *v == '\\')
                    strbuf_putc(&b, '\\');
                strbuf_putc(&b, *v);
            }
            strbuf_puts(&b, "' ");
        }
    strbuf_printf(&b, "dbname=%s", name);
    PQconninfoFree(opts);
    PQfinish(c);
    if (!ok) {
        strbuf_done(&b);
        return NULL;
    }
    return strbuf_steal(&b);
}

/* A new, empty store of the backend under test. */
static char *test_url(void)
{
    if (backend() == STORE_POSTGRES) {
        char *url = pg_fresh_url();
        return url ? url : xstrdup("postgresql:///unavailable");
    }
    _cleanup_free_ char *dir = tests_tmpdir();
    return xasprintf("sqlite:%s/sub/dir/runtara.db", dir);
}

/* Run sql on the database of url behind the store's back (closed or open). */
static int raw_exec(const char *url, const char *sql)
{
    if (backend() == STORE_POSTGRES) {
        PGconn *c = PQconnectdb(url);
        PGresult *res = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
        ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
            printf("# %s: %s\n", sql, PQerrorMessage(c));
        PQclear(res);
        PQfinish(c);
        return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -EIO;
    }
    sqlite3 *db = NULL;
    int rc = sqlite3_open(url + 7, &db);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -EIO;
}

#define ONLY_ON(b, name)                                                                           \
    do {                                                                                           \
        if (backend() != (b))                                                                      \
            TEST_SKIP("reaches into " name "'s own database");                                     \
    } while (0)

static Store *open_store(void)
{
    _cleanup_free_ char *url = test_url();
    Store *s = NULL;
    Error e = ERROR_INIT;
    if (store_open(url, &s, &e) < 0) {
        printf("# store_open: %s\n", error_message(&e));
        error_done(&e);
        return NULL;
    }
    return s;
}

static ImageRecord make_image(const char *id, const char *tenant, const char *name)
{
    return (ImageRecord){
        .image_id = xstrdup(id),
        .tenant_id = xstrdup(tenant),
        .name = xstrdup(name),
        .runner_type = xstrdup("native"),
        .labels_json = xstrdup("{\"team\":\"core\"}"),
        .sha256 = xstrdup("ab"),
        .size_bytes = 42,
        .created_at = 1000,
    };
}

TEST(open_migrates_and_reopens)
{
    _cleanup_free_ char *url = test_url();
    Store *s = NULL;
    ASSERT_OK(store_open(url, &s, NULL));
    StoreInfo info;
    store_info(s, &info);
    ASSERT_STREQ(info.backend, backend() == STORE_POSTGRES ? "postgres" : "sqlite");
    ASSERT_EQ(info.schema_version, info.schema_latest);
    ASSERT_TRUE(info.schema_version >= 1);
    ASSERT_OK(store_ping(s, NULL));
    s = store_close(s);
    /* a second open finds the schema current and applies nothing */
    ASSERT_OK(store_open(url, &s, NULL));
    s = store_close(s);
}

TEST(refuses_newer_schema)
{
    _cleanup_free_ char *url = test_url();
    Store *s = NULL;
    ASSERT_OK(store_open(url, &s, NULL));
    s = store_close(s);

    ASSERT_OK(
        raw_exec(url, backend() == STORE_POSTGRES
                          ? "INSERT INTO schema_migrations (version, name) "
                            "VALUES (999, 'from_the_future')"
                          : "INSERT INTO schema_migrations VALUES (999, 'from_the_future', 0)"));

    Error e = ERROR_INIT;
    ASSERT_EQ(store_open(url, &s, &e), -EPROTO);
    ASSERT_NULL(s);
    ASSERT_TRUE(strstr(error_message(&e), "newer than this binary") != NULL);
    error_done(&e);
}

TEST(bad_url_and_unwritable_path)
{
    Store *s = NULL;
    Error e = ERROR_INIT;
    /* what was expected, never the URL itself (it may hold a password) */
    ASSERT_EQ(store_open("mysql://u:pw@x", &s, &e), -EINVAL);
    ASSERT_TRUE(strstr(error_message(&e), "expected sqlite:PATH, postgres://") != NULL);
    ASSERT_TRUE(strstr(error_message(&e), "pw@x") == NULL);
    error_done(&e);
    ASSERT_TRUE(store_open("sqlite:/proc/runtara/x.db", &s, &e) < 0);
    ASSERT_TRUE(strstr(error_message(&e), "/proc/runtara") != NULL);
    error_done(&e);
}

TEST(image_versions_per_tenant_and_name)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ImageRecord a = make_image("i1", "acme", "hello");
    ImageRecord b = make_image("i2", "acme", "hello");
    ImageRecord c = make_image("i3", "other", "hello");
    ASSERT_OK(store_image_insert(s, &a, NULL));
    ASSERT_OK(store_image_insert(s, &b, NULL));
    ASSERT_OK(store_image_insert(s, &c, NULL));
    ASSERT_EQ(a.version, 1);
    ASSERT_EQ(b.version, 2);
    ASSERT_EQ(c.version, 1);
    ASSERT_TRUE(b.seq > a.seq);

    /* the same image id twice is a conflict */
    ImageRecord dup = make_image("i1", "acme", "x");
    ASSERT_EQ(store_image_insert(s, &dup, NULL), -EEXIST);

    ImageRecord got;
    ASSERT_OK(store_image_get(s, "i2", "acme", &got, NULL));
    ASSERT_STREQ(got.name, "hello");
    ASSERT_STREQ(got.labels_json, "{\"team\":\"core\"}");
    ASSERT_EQ(got.size_bytes, 42);
    ASSERT_NULL(got.description);
    image_record_done(&got);
    /* another tenant's image is "does not exist", exactly as an unknown id */
    Error e = ERROR_INIT;
    ASSERT_EQ(store_image_get(s, "i2", "other", &got, &e), -ENOENT);
    ASSERT_STREQ(error_message(&e), "image \"i2\" does not exist");
    ASSERT_EQ(store_image_get(s, "nope", NULL, &got, &e), -ENOENT);
    error_done(&e);
    uint64_t n = 0;
    ASSERT_OK(store_image_count(s, &n, NULL));
    ASSERT_EQ(n, 3);

    image_record_done(&a);
    image_record_done(&b);
    image_record_done(&c);
    image_record_done(&dup);
    s = store_close(s);
}

TEST(image_list_pages_in_stable_order)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    for (int i = 0; i < 25; i++) {
        char id[16], name[16];
        snprintf(id, sizeof id, "img%02d", i);
        snprintf(name, sizeof name, i % 2 ? "odd_%d" : "even%%%d", i);
        ImageRecord r = make_image(id, i < 20 ? "acme" : "other", name);
        ASSERT_OK(store_image_insert(s, &r, NULL));
        image_record_done(&r);
    }
    /* walk acme's 20 images 7 at a time: newest first, no gaps, no repeats */
    ImageFilter f = {.tenant_id = "acme", .limit = 7};
    int seen = 0, expect = 19;
    for (int page = 0; page < 5; page++) {
        ImageRecord *rows = NULL;
        size_t n = 0;
        bool more = false;
        ASSERT_OK(store_image_list(s, &f, &rows, &n, &more, NULL));
        for (size_t i = 0; i < n; i++) {
            char id[16];
            snprintf(id, sizeof id, "img%02d", expect--);
            ASSERT_STREQ(rows[i].image_id, id);
            seen++;
        }
        if (n > 0)
            f.before_seq = rows[n - 1].seq;
        image_records_free(rows, n);
        if (!more)
            break;
    }
    ASSERT_EQ(seen, 20);

    /* a prefix matches literally: "_" in "even_" is no wildcard, so "even%0" does not match */
    ImageFilter pf = {.tenant_id = "acme", .name_prefix = "odd_1", .limit = 100};
    ImageRecord *rows = NULL;
    size_t n = 0;
    bool more = true;
    ASSERT_OK(store_image_list(s, &pf, &rows, &n, &more, NULL));
    ASSERT_EQ(n, 6); /* odd_1, odd_11, odd_13, odd_15, odd_17, odd_19 */
    ASSERT_FALSE(more);
    image_records_free(rows, n);
    ImageFilter wf = {.name_prefix = "even_", .limit = 100};
    ASSERT_OK(store_image_list(s, &wf, &rows, &n, &more, NULL));
    ASSERT_EQ(n, 0);
    image_records_free(rows, n);
    s = store_close(s);
}

TEST(image_delete_refused_while_in_use)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ImageRecord a = make_image("busy", "acme", "w");
    ASSERT_OK(store_image_insert(s, &a, NULL));
    image_record_done(&a);
    ASSERT_OK(store_instance_insert_minimal(s, "inst1", "acme", "busy", INSTANCE_RUNNING, NULL));
    ASSERT_OK(store_instance_insert_minimal(s, "inst2", "acme", "busy", INSTANCE_COMPLETED, NULL));

    Error e = ERROR_INIT;
    ASSERT_EQ(store_image_delete(s, "busy", "other", &e), -ENOENT);
    ASSERT_EQ(store_image_delete(s, "busy", "acme", &e), -EBUSY);
    ASSERT_STREQ(error_message(&e), "image \"busy\" is used by 1 unfinished instance");
    error_done(&e);
    ASSERT_EQ(store_image_exists(s, "busy", NULL), 1);
    s = store_close(s);
}

TEST(image_delete_when_only_finished_instances)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ImageRecord a = make_image("done", "acme", "w");
    ASSERT_OK(store_image_insert(s, &a, NULL));
    image_record_done(&a);
    ASSERT_OK(store_instance_insert_minimal(s, "i1", "acme", "done", INSTANCE_FAILED, NULL));
    ASSERT_OK(store_image_delete(s, "done", NULL, NULL));
    ASSERT_EQ(store_image_exists(s, "done", NULL), 0);
    ASSERT_EQ(store_image_delete(s, "done", NULL, NULL), -ENOENT);
    s = store_close(s);
}

typedef struct {
    Store *s;
    int base;
    int failures;
} Writer;

static void *insert_many(void *arg)
{
    Writer *w = arg;
    for (int i = 0; i < 50; i++) {
        char id[32];
        snprintf(id, sizeof id, "t%d-%d", w->base, i);
        ImageRecord r = make_image(id, "acme", "same-name");
        if (store_image_insert(w->s, &r, NULL) < 0)
            w->failures++;
        image_record_done(&r);
    }
    return NULL;
}

TEST(concurrent_registrations_get_distinct_versions)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    pthread_t t[4];
    Writer w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (Writer){.s = s, .base = i};
        pthread_create(&t[i], NULL, insert_many, &w[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ASSERT_EQ(w[i].failures, 0);
    }
    ImageFilter f = {.name = "same-name", .limit = 1000};
    ImageRecord *rows = NULL;
    size_t n = 0;
    bool more;
    ASSERT_OK(store_image_list(s, &f, &rows, &n, &more, NULL));
    ASSERT_EQ(n, 200);
    for (size_t i = 0; i < n; i++)
        ASSERT_EQ(rows[i].version, (int64_t)(200 - i));
    image_records_free(rows, n);
    s = store_close(s);
}

/* ---- instances ---- */

/* The key of an instance of tenant "acme" (most tests use it), or key itself if it names a
 * tenant already ("beta/x"). Rotating buffers: a few may be used in one expression. */
static const char *K(const char *key)
{
    static _Thread_local char buf[8][STORE_INSTANCE_KEY_MAX + 1];
    static _Thread_local unsigned next;
    if (strchr(key, '/'))
        return key;
    char *b = buf[next++ % 8];
    snprintf(b, sizeof buf[0], "acme/%s", key);
    return b;
}

static int create_instance(Store *s, const char *id, const char *tenant, const char *image,
                           usec_t created_at)
{
    InstanceRecord rec = {
        .instance_id = (char *)id,
        .tenant_id = (char *)tenant,
        .image_id = (char *)image,
        .created_at = created_at,
    };
    return store_instance_create(s, &rec, NULL, NULL, NULL, NULL);
}

/* Move an instance along with only a status change; returns what transition returns. */
static int move(Store *s, const char *id, InstanceStatus from, InstanceStatus to)
{
    InstanceUpdate u = {.to_status = to};
    return store_instance_transition(s, K(id), from, &u, NULL);
}

/* A running instance whose launch has token hash token_hash; 0 or what failed. */
static int create_running(Store *s, const char *id, const char *token_hash)
{
    InstanceRecord rec = {.instance_id = (char *)id,
                          .tenant_id = "acme",
                          .image_id = "img",
                          .token_hash = (char *)token_hash};
    int r = store_instance_create(s, &rec, NULL, NULL, NULL, NULL);
    if (r >= 0)
        r = move(s, id, INSTANCE_PENDING, INSTANCE_RUNNING) == 1 ? 0 : -EIO;
    return r;
}

/* The instance API finds an instance by its launch's token, whatever its tenant; the same id in
 * two tenants is two instances. */
TEST(instances_are_named_by_tenant_and_found_by_token)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    InstanceRecord a = {
        .instance_id = "same", .tenant_id = "acme", .image_id = "img", .token_hash = "tok-a"};
    InstanceRecord b = {
        .instance_id = "same", .tenant_id = "beta", .image_id = "img", .token_hash = "tok-b"};
    ASSERT_OK(store_instance_create(s, &a, NULL, NULL, NULL, NULL));
    ASSERT_OK(store_instance_create(s, &b, NULL, NULL, NULL, NULL));
    ASSERT_EQ(store_instance_create(s, &b, NULL, NULL, NULL, NULL), -EEXIST);
    InstanceRecord got;
    ASSERT_OK(store_instance_get_by_token(s, "tok-b", &got, NULL));
    ASSERT_STREQ(got.instance_key, "beta/same");
    ASSERT_STREQ(got.tenant_id, "beta");
    instance_record_done(&got);
    ASSERT_EQ(store_instance_get_by_token(s, "tok-x", &got, NULL), -ENOENT);
    /* each has its own checkpoints */
    ASSERT_EQ(store_checkpoint_save(s, "acme/same", "k", NULL, "a", 1, NULL, NULL, NULL, NULL), 1);
    ASSERT_EQ(store_checkpoint_save(s, "beta/same", "k", NULL, "b", 1, NULL, NULL, NULL, NULL), 1);
    void *data = NULL;
    size_t n = 0;
    ASSERT_OK(store_checkpoint_get(s, "beta/same", "k", &data, &n, NULL, NULL));
    ASSERT_TRUE(n == 1 && memcmp(data, "b", 1) == 0);
    free(data);
    /* an admin's lookup by id alone: ambiguous with two, the one otherwise */
    ASSERT_EQ(store_instance_find(s, "same", &got, NULL), -ENOTUNIQ);
    ASSERT_EQ(store_instance_find(s, "other", &got, NULL), -ENOENT);
    InstanceRecord c = {.instance_id = "only", .tenant_id = "beta", .image_id = "img"};
    ASSERT_OK(store_instance_create(s, &c, NULL, NULL, NULL, NULL));
    ASSERT_OK(store_instance_find(s, "only", &got, NULL));
    ASSERT_STREQ(got.instance_key, "beta/only");
    instance_record_done(&got);
    s = store_close(s);
}

TEST(instance_create_and_duplicate)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    InstanceRecord rec = {
        .instance_id = "inst-1",
        .tenant_id = "acme",
        .image_id = "img-1",
        .status = INSTANCE_COMPLETED, /* ignored: a new instance is pending */
        .input = "{\"n\":1}",
        .env = "{\"A\":\"b\"}",
        .request_hash = "h1",
        .timeout_secs = 60,
        .attempt = 7, /* ignored */
        .created_at = 5000,
    };
    ASSERT_OK(store_instance_create(s, &rec, NULL, NULL, NULL, NULL));

    InstanceRecord got;
    ASSERT_OK(store_instance_get(s, "acme/inst-1", "acme", &got, NULL));
    ASSERT_TRUE(got.seq > 0);
    ASSERT_STREQ(got.instance_id, "inst-1");
    ASSERT_STREQ(got.tenant_id, "acme");
    ASSERT_STREQ(got.image_id, "img-1");
    ASSERT_EQ(got.status, INSTANCE_PENDING);
    ASSERT_STREQ(got.input, "{\"n\":1}");
    ASSERT_STREQ(got.env, "{\"A\":\"b\"}");
    ASSERT_STREQ(got.request_hash, "h1");
    ASSERT_EQ(got.timeout_secs, 60);
    ASSERT_EQ(got.attempt, 0);
    ASSERT_EQ(got.created_at, 5000);
    ASSERT_EQ(got.updated_at, 5000);
    ASSERT_NULL(got.termination_reason);
    ASSERT_NULL(got.output);
    ASSERT_NULL(got.error);
    ASSERT_NULL(got.token_hash);
    ASSERT_NULL(got.checkpoint_id);
    ASSERT_FALSE(got.has_exit_code);
    ASSERT_EQ(got.started_at, 0);
    ASSERT_EQ(got.finished_at, 0);
    ASSERT_EQ(got.heartbeat_at, 0);
    ASSERT_EQ(got.sleep_until, 0);
    instance_record_done(&got);

    /* the same id again: -EEXIST, and the existing row for the idempotency check */
    InstanceRecord again = rec;
    again.request_hash = "h2";
    again.input = "{\"n\":2}";
    InstanceRecord existing = {0};
    Error e = ERROR_INIT;
    ASSERT_EQ(store_instance_create(s, &again, &existing, NULL, NULL, &e), -EEXIST);
    ASSERT_STREQ(error_message(&e), "instance \"inst-1\" of tenant \"acme\" already exists");
    ASSERT_STREQ(existing.request_hash, "h1");
    ASSERT_STREQ(existing.input, "{\"n\":1}");
    ASSERT_EQ(existing.status, INSTANCE_PENDING);
    instance_record_done(&existing);
    ASSERT_EQ(store_instance_create(s, &again, NULL, NULL, NULL, &e), -EEXIST);
    error_done(&e);
    ASSERT_OK(store_instance_get(s, "acme/inst-1", NULL, &got, NULL));
    ASSERT_STREQ(got.request_hash, "h1"); /* unchanged */
    instance_record_done(&got);

    /* defaults */
    ASSERT_OK(create_instance(s, "inst-2", "acme", "img-1", 0));
    ASSERT_OK(store_instance_get(s, "acme/inst-2", NULL, &got, NULL));
    ASSERT_STREQ(got.input, "{}");
    ASSERT_STREQ(got.env, "{}");
    ASSERT_STREQ(got.request_hash, "");
    ASSERT_EQ(got.timeout_secs, 300);
    ASSERT_TRUE(got.created_at > 0);
    ASSERT_TRUE(got.seq > 0);
    instance_record_done(&got);

    /* the first launch's token, issued with the row */
    InstanceRecord issued = {
        .instance_id = "inst-3", .tenant_id = "acme", .image_id = "img-1", .token_hash = "ab12"};
    ASSERT_OK(store_instance_create(s, &issued, NULL, NULL, NULL, NULL));
    ASSERT_OK(store_instance_get(s, "acme/inst-3", NULL, &got, NULL));
    ASSERT_STREQ(got.token_hash, "ab12");
    ASSERT_EQ(got.status, INSTANCE_PENDING);
    ASSERT_EQ(got.attempt, 0);
    instance_record_done(&got);

    /* required fields */
    InstanceRecord bad = {.instance_id = "x", .image_id = "img-1"};
    ASSERT_EQ(store_instance_create(s, &bad, NULL, NULL, NULL, NULL), -EINVAL);
    bad = (InstanceRecord){.instance_id = "", .tenant_id = "acme", .image_id = "img-1"};
    ASSERT_EQ(store_instance_create(s, &bad, NULL, NULL, NULL, NULL), -EINVAL);
    s = store_close(s);
}

TEST(instance_get_is_tenant_scoped)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ASSERT_OK(create_instance(s, "inst-1", "acme", "img", 1));
    InstanceRecord got = {0};
    Error e = ERROR_INIT;
    ASSERT_EQ(store_instance_get(s, "acme/inst-1", "other", &got, &e), -ENOENT);
    ASSERT_STREQ(error_message(&e), "instance \"acme/inst-1\" does not exist");
    ASSERT_NULL(got.instance_id); /* ret is written only on success */
    ASSERT_EQ(store_instance_get(s, "acme/nope", NULL, &got, &e), -ENOENT);
    ASSERT_STREQ(error_message(&e), "instance \"acme/nope\" does not exist");
    error_done(&e);
    ASSERT_OK(store_instance_get(s, "acme/inst-1", NULL, &got, NULL));
    instance_record_done(&got);
    ASSERT_OK(store_instance_get(s, "acme/inst-1", "acme", &got, NULL));
    instance_record_done(&got);
    s = store_close(s);
}

TEST(instance_transition_is_guarded)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ASSERT_OK(create_instance(s, "i", "acme", "img", 1000));

    InstanceUpdate start = {.to_status = INSTANCE_RUNNING,
                            .token_hash = "tok1",
                            .bump_attempt = true,
                            .started_at = 2000};
    ASSERT_EQ(store_instance_transition(s, "acme/i", INSTANCE_PENDING, &start, NULL), 1);
    InstanceRecord got;
    ASSERT_OK(store_instance_get(s, "acme/i", NULL, &got, NULL));
    ASSERT_EQ(got.status, INSTANCE_RUNNING);
    ASSERT_EQ(got.attempt, 1);
    ASSERT_STREQ(got.token_hash, "tok1");
    ASSERT_EQ(got.started_at, 2000);
    ASSERT_NULL(got.termination_reason);
    ASSERT_TRUE(got.updated_at > 1000);
    instance_record_done(&got);

    InstanceUpdate done = {.to_status = INSTANCE_COMPLETED,
                           .reason = "completed",
                           .set_exit_code = true,
                           .exit_code = 0,
                           .output = "{\"ok\":true}",
                           .finished_at = 3000};
    ASSERT_EQ(store_instance_transition(s, "acme/i", INSTANCE_RUNNING, &done, NULL), 1);
    InstanceRecord first;
    ASSERT_OK(store_instance_get(s, "acme/i", NULL, &first, NULL));
    ASSERT_EQ(first.status, INSTANCE_COMPLETED);
    ASSERT_STREQ(first.termination_reason, "completed");
    ASSERT_TRUE(first.has_exit_code);
    ASSERT_EQ(first.exit_code, 0);
    ASSERT_STREQ(first.output, "{\"ok\":true}");
    ASSERT_EQ(first.finished_at, 3000);
    ASSERT_STREQ(first.token_hash, "tok1"); /* NULL token_hash leaves it */
    ASSERT_EQ(first.started_at, 2000);      /* 0 leaves it */

    /* a late "failed" from "running" loses: 0, and nothing changes */
    InstanceUpdate late = {.to_status = INSTANCE_FAILED,
                           .reason = "crashed",
                           .set_exit_code = true,
                           .exit_code = 137,
                           .error = "killed",
                           .finished_at = 9000};
    ASSERT_EQ(store_instance_transition(s, "acme/i", INSTANCE_RUNNING, &late, NULL), 0);
    ASSERT_EQ(store_instance_transition(s, "acme/i", INSTANCE_RUNNING, &done, NULL), 0);
    ASSERT_OK(store_instance_get(s, "acme/i", NULL, &got, NULL));
    ASSERT_EQ(got.status, INSTANCE_COMPLETED);
    ASSERT_STREQ(got.termination_reason, "completed");
    ASSERT_EQ(got.exit_code, 0);
    ASSERT_NULL(got.error);
    ASSERT_EQ(got.finished_at, 3000);
    ASSERT_EQ(got.updated_at, first.updated_at);
    instance_record_done(&got);
    instance_record_done(&first);

    Error e = ERROR_INIT;
    ASSERT_EQ(store_instance_transition(s, "acme/nope", INSTANCE_RUNNING, &done, &e), -ENOENT);
    ASSERT_STREQ(error_message(&e), "instance \"acme/nope\" does not exist");
    InstanceUpdate bogus = {.to_status = _INSTANCE_STATUS_MAX};
    ASSERT_EQ(store_instance_transition(s, "acme/i", INSTANCE_COMPLETED, &bogus, &e), -EINVAL);
    ASSERT_STREQ(error_message(&e), "invalid instance status 6");
    ASSERT_EQ(store_instance_transition(s, "acme/i", _INSTANCE_STATUS_INVALID, &done, &e), -EINVAL);
    error_done(&e);
    s = store_close(s);
}

TEST(instance_transition_clear_result_and_bump_attempt)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ASSERT_OK(create_instance(s, "i", "acme", "img", 1000));
    InstanceUpdate start = {
        .to_status = INSTANCE_RUNNING, .bump_attempt = true, .started_at = 2000};
    ASSERT_EQ(store_instance_transition(s, "acme/i", INSTANCE_PENDING, &start, NULL), 1);
    ASSERT_EQ(store_checkpoint_save(s, "acme/i", "step-1", NULL, "x", 1, NULL, NULL, NULL, NULL),
              1);
    InstanceUpdate fail = {.to_status = INSTANCE_FAILED,
                           .reason = "crashed",
                           .set_exit_code = true,
                           .exit_code = 139,
                           .output = "{\"partial\":1}",
                           .error = "segfault",
                           .finished_at = 3000};
    ASSERT_EQ(store_instance_transition(s, "acme/i", INSTANCE_RUNNING, &fail, NULL), 1);

    /* an operator resume: a fresh attempt from the checkpoints */
    InstanceUpdate resume = {.to_status = INSTANCE_RUNNING,
                             .clear_result = true,
                             .bump_attempt = true,
                             .token_hash = "tok2",
                             .started_at = 4000};
    ASSERT_EQ(store_instance_transition(s, "acme/i", INSTANCE_FAILED, &resume, NULL), 1);
    InstanceRecord got;
    ASSERT_OK(store_instance_get(s, "acme/i", NULL, &got, NULL));
    ASSERT_EQ(got.status, INSTANCE_RUNNING);
    ASSERT_EQ(got.attempt, 2);
    ASSERT_NULL(got.output);
    ASSERT_NULL(got.error);
    ASSERT_NULL(got.termination_reason);
    ASSERT_FALSE(got.has_exit_code);
    ASSERT_EQ(got.finished_at, 0);
    ASSERT_EQ(got.started_at, 4000);
    ASSERT_STREQ(got.token_hash, "tok2");
    ASSERT_STREQ(got.checkpoint_id, "step-1"); /* checkpoints survive a resume */
    instance_record_done(&got);

    /* explicit fields win over clear_result; without bump_attempt the attempt stays */
    InstanceUpdate both = {.to_status = INSTANCE_FAILED,
                           .reason = "timeout",
                           .clear_result = true,
                           .set_exit_code = true,
                           .exit_code = 124,
                           .error = "timed out",
                           .finished_at = 5000};
    ASSERT_EQ(store_instance_transition(s, "acme/i", INSTANCE_RUNNING, &both, NULL), 1);
    ASSERT_OK(store_instance_get(s, "acme/i", NULL, &got, NULL));
    ASSERT_EQ(got.status, INSTANCE_FAILED);
    ASSERT_STREQ(got.termination_reason, "timeout");
    ASSERT_TRUE(got.has_exit_code);
    ASSERT_EQ(got.exit_code, 124);
    ASSERT_STREQ(got.error, "timed out");
    ASSERT_NULL(got.output);
    ASSERT_EQ(got.finished_at, 5000);
    ASSERT_EQ(got.attempt, 2);
    instance_record_done(&got);
    s = store_close(s);
}

#define RACERS 8
#define RACE_INSTANCES 20

typedef struct {
    Store *s;
    int index;
    pthread_barrier_t *start;
    int wins[RACE_INSTANCES];
    int errors;
} Racer;

static void *race_transitions(void *arg)
{
    Racer *r = arg;
    pthread_barrier_wait(r->start);
    for (int i = 0; i < RACE_INSTANCES; i++) {
        char id[32];
        snprintf(id, sizeof id, "race-%d", i);
        InstanceUpdate u = {.to_status = r->index % 2 ? INSTANCE_COMPLETED : INSTANCE_FAILED,
                            .set_exit_code = true,
                            .exit_code = r->index};
        int k = store_instance_transition(r->s, K(id), INSTANCE_RUNNING, &u, NULL);
        if (k < 0)
            r->errors++;
        else
            r->wins[i] += k;
    }
    return NULL;
}

TEST(concurrent_transitions_exactly_one_wins)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    for (int i = 0; i < RACE_INSTANCES; i++) {
        char id[32];
        snprintf(id, sizeof id, "race-%d", i);
        ASSERT_OK(create_instance(s, id, "acme", "img", 0));
        ASSERT_EQ(move(s, id, INSTANCE_PENDING, INSTANCE_RUNNING), 1);
    }
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, RACERS);
    pthread_t t[RACERS];
    Racer *racers = xcalloc(RACERS, sizeof *racers);
    for (int k = 0; k < RACERS; k++) {
        racers[k] = (Racer){.s = s, .index = k, .start = &start};
        pthread_create(&t[k], NULL, race_transitions, &racers[k]);
    }
    for (int k = 0; k < RACERS; k++)
        pthread_join(t[k], NULL);
    pthread_barrier_destroy(&start);

    for (int i = 0; i < RACE_INSTANCES; i++) {
        int wins = 0, winner = -1;
        for (int k = 0; k < RACERS; k++) {
            ASSERT_EQ(racers[k].errors, 0);
            wins += racers[k].wins[i];
            if (racers[k].wins[i])
                winner = k;
        }
        ASSERT_EQ(wins, 1);
        char id[32];
        snprintf(id, sizeof id, "race-%d", i);
        InstanceRecord got;
        ASSERT_OK(store_instance_get(s, K(id), NULL, &got, NULL));
        ASSERT_EQ(got.exit_code, winner); /* the row holds the winner's update alone */
        ASSERT_EQ(got.status, winner % 2 ? INSTANCE_COMPLETED : INSTANCE_FAILED);
        instance_record_done(&got);
    }
    free(racers);
    s = store_close(s);
}

/* The ids of one page, in order, joined by spaces; owned by the caller. */
static char *list_ids(Store *s, const InstanceFilter *f, uint64_t *ret_total, bool *ret_more,
                      int64_t *ret_last_seq)
{
    InstanceRecord *rows = NULL;
    size_t n = 0;
    if (store_instance_list(s, f, &rows, &n, ret_more, ret_total, ret_last_seq, NULL) < 0)
        return NULL;
    StrBuf b = STRBUF_INIT;
    strbuf_puts(&b, "");
    for (size_t i = 0; i < n; i++)
        strbuf_printf(&b, "%s%s", i ? " " : "", rows[i].instance_id);
    instance_records_free(rows, n);
    return strbuf_steal(&b);
}

TEST(instance_list_filters_and_totals)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    /* a1..a4 for acme (img-x, img-x, img-y, img-y), b1..b2 for beta; created at 100, 200, ... */
    const char *ids[] = {"a1", "a2", "a3", "a4", "b1", "b2"};
    const char *tenants[] = {"acme", "acme", "acme", "acme", "beta", "beta"};
    const char *images[] = {"img-x", "img-x", "img-y", "img-y", "img-x", "img-y"};
    for (int i = 0; i < 6; i++)
        ASSERT_OK(create_instance(s, ids[i], tenants[i], images[i], (usec_t)(i + 1) * 100));
    /* a2 and b1 completed (finished at 1000 and 2000), a3 running */
    InstanceUpdate fin = {.to_status = INSTANCE_COMPLETED, .finished_at = 1000};
    ASSERT_EQ(store_instance_transition(s, "acme/a2", INSTANCE_PENDING, &fin, NULL), 1);
    fin.finished_at = 2000;
    ASSERT_EQ(store_instance_transition(s, "beta/b1", INSTANCE_PENDING, &fin, NULL), 1);
    ASSERT_EQ(move(s, "a3", INSTANCE_PENDING, INSTANCE_RUNNING), 1);

    struct {
        InstanceFilter f;
        const char *ids;
    } cases[] = {
        {{.limit = 100}, "b2 b1 a4 a3 a2 a1"},
        {{.tenant_id = "acme", .limit = 100}, "a4 a3 a2 a1"},
        {{.tenant_id = "nobody", .limit = 100}, ""},
        {{.has_status = true, .status = INSTANCE_PENDING, .limit = 100}, "b2 a4 a1"},
        {{.tenant_id = "acme", .has_status = true, .status = INSTANCE_COMPLETED, .limit = 100},
         "a2"},
        {{.image_id = "img-x", .limit = 100}, "b1 a2 a1"},
        {{.tenant_id = "beta", .image_id = "img-y", .limit = 100}, "b2"},
        {{.created_after = 200, .limit = 100}, "b2 b1 a4 a3 a2"},
        {{.created_before = 300, .limit = 100}, "a2 a1"},
        {{.created_after = 200, .created_before = 500, .limit = 100}, "a4 a3 a2"},
        {{.finished_after = 1, .limit = 100}, "b1 a2"},
        {{.finished_after = 1000, .finished_before = 2000, .limit = 100}, "a2"},
        {{.finished_before = 2001, .tenant_id = "beta", .limit = 100}, "b1"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        uint64_t total = 0;
        bool more = true;
        _cleanup_free_ char *got = list_ids(s, &cases[i].f, &total, &more, NULL);
        if (!got || strcmp(got, cases[i].ids) != 0)
            TEST_FAIL("case %zu: \"%s\" != \"%s\"", i, got ? got : "(error)", cases[i].ids);
        size_t words = *cases[i].ids ? 1 : 0;
        for (const char *c = cases[i].ids; *c; c++)
            words += *c == ' ';
        ASSERT_EQ(total, words);
        ASSERT_FALSE(more);
    }

    /* the total ignores cursor and limit */
    InstanceFilter f = {.tenant_id = "acme", .limit = 1};
    uint64_t total = 0;
    bool more = false;
    int64_t last = 0;
    _cleanup_free_ char *page = list_ids(s, &f, &total, &more, &last);
    ASSERT_STREQ(page, "a4");
    ASSERT_EQ(total, 4);
    ASSERT_TRUE(more);
    ASSERT_TRUE(last > 0);

    /* bounds */
    InstanceRecord *rows = NULL;
    size_t n = 0;
    Error e = ERROR_INIT;
    f.limit = 0;
    ASSERT_EQ(store_instance_list(s, &f, &rows, &n, NULL, NULL, NULL, &e), -EINVAL);
    ASSERT_STREQ(error_message(&e), "list limit 0 is out of range (1 to 1000)");
    f.limit = STORE_LIST_MAX + 1;
    ASSERT_EQ(store_instance_list(s, &f, &rows, &n, NULL, NULL, NULL, &e), -EINVAL);
    f = (InstanceFilter){.has_status = true, .status = _INSTANCE_STATUS_INVALID, .limit = 10};
    ASSERT_EQ(store_instance_list(s, &f, &rows, &n, NULL, NULL, NULL, &e), -EINVAL);
    error_done(&e);
    ASSERT_NULL(rows);
    f = (InstanceFilter){.limit = STORE_LIST_MAX};
    ASSERT_OK(store_instance_list(s, &f, &rows, &n, NULL, NULL, NULL, NULL));
    ASSERT_EQ(n, 6);
    instance_records_free(rows, n);
    s = store_close(s);
}

TEST(instance_list_pages_while_inserting)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    for (int i = 0; i < 25; i++) {
        char id[16];
        snprintf(id, sizeof id, "old%02d", i);
        ASSERT_OK(create_instance(s, id, "acme", "img", 0));
    }
    ASSERT_OK(create_instance(s, "theirs", "beta", "img", 0));

    /* walk acme 7 at a time while new instances arrive between pages */
    InstanceFilter f = {.tenant_id = "acme", .limit = 7};
    int expect = 24, pages = 0, added = 0;
    for (;;) {
        InstanceRecord *rows = NULL;
        size_t n = 0;
        bool more = false;
        uint64_t total = 0;
        int64_t last = -1;
        ASSERT_OK(store_instance_list(s, &f, &rows, &n, &more, &total, &last, NULL));
        ASSERT_EQ(total, 25 + added);
        for (size_t i = 0; i < n; i++) {
            char id[16];
            snprintf(id, sizeof id, "old%02d", expect--);
            ASSERT_STREQ(rows[i].instance_id, id);
            if (i > 0)
                ASSERT_TRUE(rows[i].seq < rows[i - 1].seq);
        }
        ASSERT_EQ(last, n > 0 ? rows[n - 1].seq : 0);
        instance_records_free(rows, n);
        pages++;
        if (!more)
            break;
        f.before_seq = last;
        char id[16];
        snprintf(id, sizeof id, "new%02d", added++);
        ASSERT_OK(create_instance(s, id, "acme", "img", 0));
    }
    ASSERT_EQ(expect, -1); /* every old row once, none skipped */
    ASSERT_EQ(pages, 4);

    /* the first page now starts with the newest arrival */
    InstanceFilter first = {.tenant_id = "acme", .limit = 1};
    _cleanup_free_ char *top = list_ids(s, &first, NULL, NULL, NULL);
    ASSERT_STREQ(top, "new02");
    s = store_close(s);
}

TEST(instance_heartbeat_and_counts)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ASSERT_OK(create_instance(s, "a", "acme", "img", 0));
    ASSERT_OK(create_instance(s, "b", "acme", "img", 0));
    ASSERT_OK(create_instance(s, "c", "acme", "img", 0));
    ASSERT_OK(create_instance(s, "d", "beta", "img", 0));
    ASSERT_EQ(move(s, "a", INSTANCE_PENDING, INSTANCE_RUNNING), 1);
    ASSERT_EQ(move(s, "b", INSTANCE_PENDING, INSTANCE_RUNNING), 1);
    ASSERT_EQ(move(s, "b", INSTANCE_RUNNING, INSTANCE_SUSPENDED), 1);
    ASSERT_EQ(move(s, "beta/d", INSTANCE_PENDING, INSTANCE_CANCELLED), 1);

    ASSERT_OK(store_instance_heartbeat(s, "acme/a", NULL, 123456, NULL));
    InstanceRecord got;
    ASSERT_OK(store_instance_get(s, "acme/a", NULL, &got, NULL));
    ASSERT_EQ(got.heartbeat_at, 123456);
    ASSERT_EQ(got.status, INSTANCE_RUNNING);
    instance_record_done(&got);
    ASSERT_EQ(store_instance_heartbeat(s, "acme/zz", NULL, 1, NULL), -ENOENT);

    uint64_t all[_INSTANCE_STATUS_MAX], acme[_INSTANCE_STATUS_MAX], none[_INSTANCE_STATUS_MAX];
    ASSERT_OK(store_instance_count_by_status(s, NULL, all, NULL));
    ASSERT_OK(store_instance_count_by_status(s, "acme", acme, NULL));
    ASSERT_OK(store_instance_count_by_status(s, "nobody", none, NULL));
    const uint64_t want_all[] = {1, 1, 1, 0, 0, 1}, want_acme[] = {1, 1, 1, 0, 0, 0};
    for (int i = 0; i < _INSTANCE_STATUS_MAX; i++) {
        ASSERT_EQ(all[i], want_all[i]);
        ASSERT_EQ(acme[i], want_acme[i]);
        ASSERT_EQ(none[i], 0);
    }
    ASSERT_EQ(all[INSTANCE_RUNNING], 1);
    ASSERT_EQ(all[INSTANCE_CANCELLED], 1);
    s = store_close(s);
}

/* Suspend a running instance until `until`, waiting for wait_key (or NULL). */
static int suspend_until(Store *s, const char *id, usec_t until, const char *wait_key)
{
    InstanceUpdate u = {.to_status = INSTANCE_SUSPENDED,
                        .reason = wait_key ? "waiting_signal" : "sleeping",
                        .sleep_until = until,
                        .wait_key = wait_key};
    return store_instance_transition(s, K(id), INSTANCE_RUNNING, &u, NULL);
}

TEST(wake_claim_is_guarded_and_listed)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    const char *ids[] = {"w1", "w2", "w3", "w4"};
    for (int i = 0; i < 4; i++) {
        ASSERT_OK(create_instance(s, ids[i], "acme", "img", 0));
        ASSERT_EQ(move(s, ids[i], INSTANCE_PENDING, INSTANCE_RUNNING), 1);
    }
    ASSERT_EQ(suspend_until(s, "w1", 5000, NULL), 1);
    ASSERT_EQ(suspend_until(s, "w2", 7000, "approval"), 1);
    ASSERT_EQ(suspend_until(s, "w3", 6000, NULL), 1);
    /* w4 stays running: no wake-up */

    InstanceRecord got;
    ASSERT_OK(store_instance_get(s, "acme/w2", NULL, &got, NULL));
    ASSERT_EQ(got.sleep_until, 7000);
    ASSERT_STREQ(got.wait_key, "approval");
    ASSERT_STREQ(got.termination_reason, "waiting_signal");
    instance_record_done(&got);

    /* listed by seq, paged by the cursor */
    InstanceWake *w = NULL;
    size_t n = 0;
    bool more = false;
    ASSERT_OK(store_instance_list_wakes(s, NULL, 0, 2, &w, &n, &more, NULL));
    ASSERT_EQ(n, 2);
    ASSERT_TRUE(more);
    ASSERT_STREQ(w[0].instance_key, "acme/w1");
    ASSERT_EQ(w[0].sleep_until, 5000);
    ASSERT_STREQ(w[1].instance_key, "acme/w2");
    int64_t cursor = w[1].seq;
    instance_wakes_free(w, n);
    ASSERT_OK(store_instance_list_wakes(s, NULL, cursor, 2, &w, &n, &more, NULL));
    ASSERT_EQ(n, 1);
    ASSERT_FALSE(more);
    ASSERT_STREQ(w[0].instance_key, "acme/w3");
    instance_wakes_free(w, n);
    ASSERT_EQ(store_instance_list_wakes(s, NULL, 0, 0, &w, &n, NULL, NULL), -EINVAL);

    /* the claim applies only with the deadline the row holds; a stale one changes nothing */
    InstanceUpdate claim = {.to_status = INSTANCE_PENDING, .guard_sleep_until = 4999};
    ASSERT_EQ(store_instance_transition(s, "acme/w1", INSTANCE_SUSPENDED, &claim, NULL), 0);
    claim.guard_sleep_until = 5000;
    ASSERT_EQ(store_instance_transition(s, "acme/w1", INSTANCE_SUSPENDED, &claim, NULL), 1);
    ASSERT_EQ(store_instance_transition(s, "acme/w1", INSTANCE_SUSPENDED, &claim, NULL), 0);
    ASSERT_OK(store_instance_get(s, "acme/w1", NULL, &got, NULL));
    ASSERT_EQ(got.status, INSTANCE_PENDING);
    ASSERT_EQ(got.sleep_until, 0); /* every transition clears what it does not set */
    ASSERT_NULL(got.wait_key);
    instance_record_done(&got);
    ASSERT_OK(store_instance_list_wakes(s, NULL, 0, 10, &w, &n, NULL, NULL));
    ASSERT_EQ(n, 2);
    instance_wakes_free(w, n);

    /* an update that keeps the status (the exit code of the process that fell asleep) can keep
     * the wake-up */
    InstanceUpdate exit_code = {.to_status = INSTANCE_SUSPENDED,
                                .reason = "waiting_signal",
                                .set_exit_code = true,
                                .keep_wake = true};
    ASSERT_EQ(store_instance_transition(s, "acme/w2", INSTANCE_SUSPENDED, &exit_code, NULL), 1);
    ASSERT_OK(store_instance_get(s, "acme/w2", NULL, &got, NULL));
    ASSERT_EQ(got.sleep_until, 7000);
    ASSERT_STREQ(got.wait_key, "approval");
    ASSERT_TRUE(got.has_exit_code);
    instance_record_done(&got);
    s = store_close(s);
}

TEST(transitions_in_one_batch)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    const char *ids[] = {"b1", "b2", "b3"};
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(create_instance(s, ids[i], "acme", "img", 0));
        ASSERT_EQ(move(s, ids[i], INSTANCE_PENDING, INSTANCE_RUNNING), 1);
        ASSERT_EQ(suspend_until(s, ids[i], 1000 + i, NULL), 1);
    }
    InstanceUpdate claim1 = {.to_status = INSTANCE_PENDING, .guard_sleep_until = 1000},
                   stale = {.to_status = INSTANCE_PENDING, .guard_sleep_until = 999},
                   claim3 = {.to_status = INSTANCE_PENDING, .guard_sleep_until = 1002};
    InstanceTransition t[] = {
        {.instance_key = "acme/b1",
         .from_status = INSTANCE_SUSPENDED,
         .u = &claim1,
         .event_type = "woken",
         .event_payload = "{\"late_ms\":1}"},
        {.instance_key = "acme/b2",
         .from_status = INSTANCE_SUSPENDED,
         .u = &stale,
         .event_type = "woken"},
        {.instance_key = "acme/gone",
         .from_status = INSTANCE_SUSPENDED,
         .u = &claim1,
         .event_type = "woken"},
        {.instance_key = "acme/b3", .from_status = INSTANCE_SUSPENDED, .u = &claim3},
    };
    ASSERT_OK(store_instance_transitions(s, t, 4, NULL));
    ASSERT_EQ(t[0].result, 1);
    ASSERT_EQ(t[1].result, 0);
    ASSERT_EQ(t[2].result, -ENOENT);
    ASSERT_EQ(t[3].result, 1);
    const InstanceStatus want[] = {INSTANCE_PENDING, INSTANCE_SUSPENDED, INSTANCE_PENDING};
    for (int i = 0; i < 3; i++) {
        InstanceRecord got;
        ASSERT_OK(store_instance_get(s, K(ids[i]), NULL, &got, NULL));
        ASSERT_EQ(got.status, want[i]);
        instance_record_done(&got);
    }
    /* the event only where the change applied and one was asked for */
    EventRecord *ev = NULL;
    size_t n = 0;
    EventFilter f = {.instance_key = "acme/b1", .type = "woken", .limit = 10};
    ASSERT_OK(store_event_list(s, &f, &ev, &n, NULL, NULL));
    ASSERT_EQ(n, 1);
    ASSERT_STREQ(ev[0].payload, "{\"late_ms\":1}");
    event_records_free(ev, n);
    f.instance_key = "acme/b2";
    ASSERT_OK(store_event_list(s, &f, &ev, &n, NULL, NULL));
    ASSERT_EQ(n, 0);
    event_records_free(ev, n);
    ASSERT_OK(store_instance_transitions(s, NULL, 0, NULL));
    s = store_close(s);
}

/* An event before the change's own (a process's exit before the end it causes), in its
 * transaction: only when the change applies, in that order, once per request key. */
TEST(a_transition_records_a_first_event_once_per_key)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ASSERT_OK(create_instance(s, "x", "acme", "img", 0));
    ASSERT_EQ(move(s, "x", INSTANCE_PENDING, INSTANCE_RUNNING), 1);
    InstanceUpdate fail = {.to_status = INSTANCE_FAILED};
    InstanceTransition t = {.instance_key = "acme/x",
                            .from_status = INSTANCE_SUSPENDED, /* not its status */
                            .u = &fail,
                            .event_type = "failed",
                            .first_event = "exited",
                            .first_payload = "{\"exit_code\":3}",
                            .first_key = "exited:t1"};
    ASSERT_OK(store_instance_transitions(s, &t, 1, NULL));
    ASSERT_EQ(t.result, 0);
    t.from_status = INSTANCE_RUNNING;
    ASSERT_OK(store_instance_transitions(s, &t, 1, NULL));
    ASSERT_EQ(t.result, 1);
    /* the same key again, with a change that applies: the first event is not recorded twice */
    t.from_status = INSTANCE_FAILED;
    t.event_type = NULL;
    ASSERT_OK(store_instance_transitions(s, &t, 1, NULL));
    ASSERT_EQ(t.result, 1);
    EventRecord *ev = NULL;
    size_t n = 0;
    EventFilter f = {.instance_key = "acme/x", .limit = 10};
    ASSERT_OK(store_event_list(s, &f, &ev, &n, NULL, NULL));
    ASSERT_EQ(n, 2);
    ASSERT_STREQ(ev[0].type, "exited");
    ASSERT_STREQ(ev[0].payload, "{\"exit_code\":3}");
    ASSERT_STREQ(ev[1].type, "failed");
    event_records_free(ev, n);
    s = store_close(s);
}

/* A launch is recorded only while its token is the instance's, with a second event (the
 * program's register) in the same transaction. */
TEST(a_launch_is_recorded_only_for_its_token_with_a_second_event)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    InstanceRecord rec = {
        .instance_id = "l", .tenant_id = "acme", .image_id = "img", .token_hash = "new-launch"};
    ASSERT_OK(store_instance_create(s, &rec, NULL, NULL, NULL, NULL));
    InstanceUpdate old = {.to_status = INSTANCE_RUNNING, .guard_token_hash = "old-launch"},
                   now = {.to_status = INSTANCE_RUNNING, .guard_token_hash = "new-launch"};
    InstanceTransition t = {.instance_key = "acme/l",
                            .from_status = INSTANCE_PENDING,
                            .u = &old,
                            .event_type = "started",
                            .then_event = "registered"};
    ASSERT_OK(store_instance_transitions(s, &t, 1, NULL));
    ASSERT_EQ(t.result, 0);
    t.u = &now;
    ASSERT_OK(store_instance_transitions(s, &t, 1, NULL));
    ASSERT_EQ(t.result, 1);
    InstanceRecord got;
    ASSERT_OK(store_instance_get(s, "acme/l", NULL, &got, NULL));
    ASSERT_EQ(got.status, INSTANCE_RUNNING);
    instance_record_done(&got);
    EventRecord *ev = NULL;
    size_t n = 0;
    EventFilter f = {.instance_key = "acme/l", .limit = 10};
    ASSERT_OK(store_event_list(s, &f, &ev, &n, NULL, NULL));
    ASSERT_EQ(n, 2);
    ASSERT_STREQ(ev[0].type, "started");
    ASSERT_STREQ(ev[1].type, "registered");
    ASSERT_TRUE(ev[1].id == ev[0].id + 1 && ev[1].created_at == ev[0].created_at);
    ASSERT_NULL(ev[1].payload);
    event_records_free(ev, n);
    s = store_close(s);
}

TEST(auto_restarts_count_until_a_checkpoint)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ASSERT_OK(create_instance(s, "r", "acme", "img", 0));
    InstanceUpdate bump = {.to_status = INSTANCE_PENDING, .restarts = 1};
    ASSERT_EQ(store_instance_transition(s, "acme/r", INSTANCE_PENDING, &bump, NULL), 1);
    ASSERT_EQ(store_instance_transition(s, "acme/r", INSTANCE_PENDING, &bump, NULL), 1);
    InstanceRecord got;
    ASSERT_OK(store_instance_get(s, "acme/r", NULL, &got, NULL));
    ASSERT_EQ(got.auto_restarts, 2);
    instance_record_done(&got);
    /* a plain transition leaves the count */
    ASSERT_EQ(move(s, "r", INSTANCE_PENDING, INSTANCE_RUNNING), 1);
    ASSERT_OK(store_instance_get(s, "acme/r", NULL, &got, NULL));
    ASSERT_EQ(got.auto_restarts, 2);
    ASSERT_EQ(got.heartbeat_at, 0);
    instance_record_done(&got);
    /* a new checkpoint is progress: the count starts again, and it counts as a heartbeat */
    usec_t before = now_usec(CLOCK_REALTIME);
    ASSERT_EQ(store_checkpoint_save(s, "acme/r", "k", NULL, "v", 1, NULL, NULL, NULL, NULL), 1);
    ASSERT_OK(store_instance_get(s, "acme/r", NULL, &got, NULL));
    ASSERT_EQ(got.auto_restarts, 0);
    ASSERT_TRUE(got.heartbeat_at >= before);
    instance_record_done(&got);
    /* a guarded bump from the wrong status changes nothing */
    ASSERT_EQ(store_instance_transition(s, "acme/r", INSTANCE_PENDING, &bump, NULL), 0);
    bump.to_status = INSTANCE_RUNNING;
    ASSERT_EQ(store_instance_transition(s, "acme/r", INSTANCE_RUNNING, &bump, NULL), 1);
    ASSERT_OK(store_instance_get(s, "acme/r", NULL, &got, NULL));
    ASSERT_EQ(got.auto_restarts, 1);
    instance_record_done(&got);
    InstanceUpdate reset = {.to_status = INSTANCE_RUNNING, .restarts = -1};
    ASSERT_EQ(store_instance_transition(s, "acme/r", INSTANCE_RUNNING, &reset, NULL), 1);
    ASSERT_OK(store_instance_get(s, "acme/r", NULL, &got, NULL));
    ASSERT_EQ(got.auto_restarts, 0);
    instance_record_done(&got);
    s = store_close(s);
}

/* ---- tenant metrics ---- */

/* Move a pending instance to status, started and finished at the given times (0: none) with
 * the given peak memory (0: none reported). */
static int end_run(Store *s, const char *id, InstanceStatus status, usec_t started, usec_t finished,
                   uint64_t memory)
{
    InstanceUpdate u = {.to_status = status,
                        .started_at = started,
                        .finished_at = finished,
                        .set_exit_code = true,
                        .memory_peak_bytes = memory};
    return store_instance_transition(s, K(id), INSTANCE_PENDING, &u, NULL);
}

TEST(tenant_metrics_count_ended_instances_per_bucket)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    const usec_t day = (usec_t)1795392000 * USEC_PER_SEC; /* 2026-11-23T00:00:00Z */
    const usec_t H = 3600 * USEC_PER_SEC, M = 60 * USEC_PER_SEC;
    const char *ids[] = {"a", "b", "c", "d", "e", "f", "g", "h"};
    for (size_t i = 0; i < ELEMENTSOF(ids); i++)
        ASSERT_OK(create_instance(s, ids[i], i == 5 ? "beta" : "acme", "img", 0));
    /* 10:00-11:00: one completed (15 min), one failed (50 min), one completed with no memory
     * reported (5 min); a suspension does not count */
    ASSERT_EQ(end_run(s, "a", INSTANCE_COMPLETED, day + 10 * H + 5 * M, day + 10 * H + 20 * M, 100),
              1);
    ASSERT_EQ(end_run(s, "b", INSTANCE_FAILED, day + 10 * H, day + 10 * H + 50 * M, 300), 1);
    ASSERT_EQ(end_run(s, "h", INSTANCE_COMPLETED, day + 10 * H + 30 * M, day + 10 * H + 35 * M, 0),
              1);
    ASSERT_EQ(end_run(s, "d", INSTANCE_SUSPENDED, day + 10 * H, day + 10 * H + 30 * M, 0), 1);
    /* 12:00-13:00: cancelled before it ever started: counted, no duration */
    ASSERT_EQ(end_run(s, "c", INSTANCE_CANCELLED, 0, day + 12 * H + 10 * M, 0), 1);
    /* before the range, and another tenant's; "g" never ends */
    ASSERT_EQ(end_run(s, "e", INSTANCE_COMPLETED, day + 8 * H, day + 9 * H + 29 * M, 50), 1);
    ASSERT_EQ(end_run(s, "beta/f", INSTANCE_COMPLETED, day + 10 * H, day + 10 * H + 10 * M, 70), 1);

    MetricsBucket *m = NULL;
    size_t n = 0;
    ASSERT_OK(store_tenant_metrics(s, "acme", day + 9 * H + 30 * M, day + 12 * H + 30 * M,
                                   METRICS_HOUR, &m, &n, NULL));
    ASSERT_EQ(n, 4); /* 09:00 to 12:00, both included, the empty ones too */
    for (size_t i = 0; i < n; i++)
        ASSERT_EQ(m[i].start, day + (9 + i) * H);
    ASSERT_EQ(m[0].invocations, 0);
    ASSERT_EQ(m[0].timed, 0);
    ASSERT_EQ(m[1].invocations, 3);
    ASSERT_EQ(m[1].succeeded, 2);
    ASSERT_EQ(m[1].failed, 1);
    ASSERT_EQ(m[1].cancelled, 0);
    ASSERT_EQ(m[1].timed, 3);
    ASSERT_EQ(m[1].duration_sum, 70 * M);
    ASSERT_EQ(m[1].duration_min, 5 * M);
    ASSERT_EQ(m[1].duration_max, 50 * M);
    ASSERT_EQ(m[1].measured, 2);
    ASSERT_EQ(m[1].memory_sum, 400);
    ASSERT_EQ(m[1].memory_max, 300);
    ASSERT_EQ(m[2].invocations, 0);
    ASSERT_EQ(m[3].invocations, 1);
    ASSERT_EQ(m[3].cancelled, 1);
    ASSERT_EQ(m[3].timed, 0);
    ASSERT_EQ(m[3].measured, 0);
    free(m);

    /* by day: one bucket, and the end is exclusive */
    ASSERT_OK(
        store_tenant_metrics(s, "acme", day, day + 12 * H + 10 * M, METRICS_DAY, &m, &n, NULL));
    ASSERT_EQ(n, 1);
    ASSERT_EQ(m[0].start, day);
    ASSERT_EQ(m[0].invocations, 4);
    ASSERT_EQ(m[0].cancelled, 0);
    free(m);
    ASSERT_OK(store_tenant_metrics(s, "beta", day, day + 23 * H, METRICS_DAY, &m, &n, NULL));
    ASSERT_EQ(n, 1);
    ASSERT_EQ(m[0].invocations, 1);
    ASSERT_EQ(m[0].memory_max, 70);
    free(m);

    Error e = ERROR_INIT;
    ASSERT_EQ(store_tenant_metrics(s, "acme", day + H, day + H, METRICS_HOUR, &m, &n, &e), -EINVAL);
    ASSERT_TRUE(strstr(error_message(&e), "start must come before end") != NULL);
    error_done(&e);
    ASSERT_EQ(store_tenant_metrics(s, "acme", day - (usec_t)STORE_METRICS_BUCKETS_MAX * H, day,
                                   METRICS_HOUR, &m, &n, &e),
              -EINVAL);
    ASSERT_TRUE(strstr(error_message(&e), "more than the 13200") != NULL);
    error_done(&e);
    ASSERT_EQ(store_tenant_metrics(s, "", day, day + H, METRICS_HOUR, &m, &n, NULL), -EINVAL);
    s = store_close(s);
}

/* ---- retention ---- */

static int finish_at(Store *s, const char *id, InstanceStatus status, usec_t at)
{
    InstanceUpdate u = {.to_status = status, .finished_at = at};
    return store_instance_transition(s, K(id), INSTANCE_PENDING, &u, NULL);
}

TEST(purge_deletes_old_finished_instances_only)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    const char *ids[] = {"old-done", "old-failed",    "old-cancelled",
                         "new-done", "old-suspended", "live"};
    for (int i = 0; i < 6; i++)
        ASSERT_OK(create_instance(s, ids[i], i == 1 ? "beta" : "acme", "img", 0));
    ASSERT_EQ(finish_at(s, "old-done", INSTANCE_COMPLETED, 100), 1);
    ASSERT_EQ(finish_at(s, "beta/old-failed", INSTANCE_FAILED, 300), 1);
    ASSERT_EQ(finish_at(s, "old-cancelled", INSTANCE_CANCELLED, 200), 1);
    ASSERT_EQ(finish_at(s, "new-done", INSTANCE_COMPLETED, 5000), 1);
    ASSERT_EQ(finish_at(s, "old-suspended", INSTANCE_SUSPENDED, 100), 1);
    ASSERT_EQ(store_checkpoint_save(s, "acme/old-done", "k", NULL, "v", 1, NULL, NULL, NULL, NULL),
              1);
    ASSERT_OK(store_custom_signal_put(s, "acme/old-done", "w", NULL, NULL));

    StoreRef *refs = NULL;
    size_t n = 0;
    /* oldest first, at most the limit */
    ASSERT_OK(store_instance_purge(s, 1000, 2, &refs, &n, NULL));
    ASSERT_EQ(n, 2);
    ASSERT_STREQ(refs[0].id, "old-done");
    ASSERT_STREQ(refs[0].tenant_id, "acme");
    ASSERT_STREQ(refs[1].id, "old-cancelled");
    store_refs_free(refs, n);
    ASSERT_OK(store_instance_purge(s, 1000, 10, &refs, &n, NULL));
    ASSERT_EQ(n, 1);
    ASSERT_STREQ(refs[0].id, "old-failed");
    ASSERT_STREQ(refs[0].tenant_id, "beta");
    store_refs_free(refs, n);
    ASSERT_OK(store_instance_purge(s, 1000, 10, &refs, &n, NULL));
    ASSERT_EQ(n, 0);
    store_refs_free(refs, n);

    InstanceRecord got;
    ASSERT_EQ(store_instance_get(s, "acme/old-done", NULL, &got, NULL), -ENOENT);
    void *data = NULL;
    size_t dn = 0;
    ASSERT_EQ(store_checkpoint_get(s, "acme/old-done", "k", &data, &dn, NULL, NULL), -ENOENT);
    ASSERT_EQ(store_custom_signal_take(s, "acme/old-done", "w", NULL, NULL), 0);
    /* suspended, pending and recent instances stay */
    for (int i = 3; i < 6; i++) {
        ASSERT_OK(store_instance_get(s, K(ids[i]), NULL, &got, NULL));
        instance_record_done(&got);
    }
    /* a transition of a deleted instance says so */
    ASSERT_EQ(move(s, "old-done", INSTANCE_COMPLETED, INSTANCE_PENDING), -ENOENT);
    s = store_close(s);
}

TEST(purge_deletes_superseded_unused_images)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    /* three versions of "app", one of "solo" */
    const char *imgs[] = {"app-1", "app-2", "app-3", "solo-1"};
    for (int i = 0; i < 4; i++) {
        ImageRecord rec = make_image(imgs[i], "acme", i < 3 ? "app" : "solo");
        ASSERT_OK(store_image_insert(s, &rec, NULL));
        image_record_done(&rec);
    }
    /* app-2 is still used by a finished instance: its results point at it */
    ASSERT_OK(create_instance(s, "uses-2", "acme", "app-2", 0));
    ASSERT_EQ(finish_at(s, "uses-2", INSTANCE_COMPLETED, 10), 1);

    StoreRef *refs = NULL;
    size_t n = 0;
    ASSERT_OK(store_image_purge(s, 500, 10, &refs, &n, NULL)); /* created_at 1000: too new */
    ASSERT_EQ(n, 0);
    store_refs_free(refs, n);
    ASSERT_OK(store_image_purge(s, 2000, 10, &refs, &n, NULL));
    ASSERT_EQ(n, 1); /* app-1: superseded and unused; app-3 and solo-1 are the newest */
    ASSERT_STREQ(refs[0].id, "app-1");
    ASSERT_STREQ(refs[0].tenant_id, "acme");
    store_refs_free(refs, n);
    ASSERT_EQ(store_image_exists(s, "app-1", NULL), 0);
    ASSERT_EQ(store_image_exists(s, "app-2", NULL), 1);

    /* once the instance is purged, app-2 goes too */
    ASSERT_OK(store_instance_purge(s, 100, 10, &refs, &n, NULL));
    ASSERT_EQ(n, 1);
    store_refs_free(refs, n);
    ASSERT_OK(store_image_purge(s, 2000, 10, &refs, &n, NULL));
    ASSERT_EQ(n, 1);
    ASSERT_STREQ(refs[0].id, "app-2");
    store_refs_free(refs, n);
    ASSERT_EQ(store_image_exists(s, "app-3", NULL), 1);
    ASSERT_EQ(store_image_exists(s, "solo-1", NULL), 1);
    s = store_close(s);
}

/* ---- checkpoints ---- */

TEST(checkpoint_first_write_wins)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ASSERT_OK(create_instance(s, "i", "acme", "img", 0));
    const char first[] = {'a', '\0', 'b', '\0', '\xff'};
    const char second[] = "something else";

    void *data = NULL;
    size_t n = 0;
    ASSERT_EQ(store_checkpoint_save(s, "acme/i", "step-1", NULL, first, sizeof first, &data, &n,
                                    NULL, NULL),
              1);
    ASSERT_EQ(n, sizeof first);
    ASSERT_TRUE(data != first && memcmp(data, first, n) == 0);
    free(data);

    /* the same key again: 0, and the first bytes (which the caller replays) */
    ASSERT_EQ(store_checkpoint_save(s, "acme/i", "step-1", NULL, second, sizeof second, &data, &n,
                                    NULL, NULL),
              0);
    ASSERT_EQ(n, sizeof first);
    ASSERT_TRUE(memcmp(data, first, n) == 0);
    free(data);
    usec_t created = 0;
    ASSERT_OK(store_checkpoint_get(s, "acme/i", "step-1", &data, &n, &created, NULL));
    ASSERT_EQ(n, sizeof first);
    ASSERT_TRUE(memcmp(data, first, n) == 0);
    ASSERT_TRUE(created > 0);
    free(data);

    InstanceRecord got;
    ASSERT_OK(store_instance_get(s, "acme/i", NULL, &got, NULL));
    ASSERT_STREQ(got.checkpoint_id, "step-1");
    instance_record_done(&got);

    /* a second key moves checkpoint_id; replaying the first one does not move it back */
    ASSERT_EQ(store_checkpoint_save(s, "acme/i", "step-2", NULL, "", 0, &data, &n, NULL, NULL), 1);
    ASSERT_NOT_NULL(data);
    ASSERT_EQ(n, 0);
    free(data);
    ASSERT_EQ(store_checkpoint_save(s, "acme/i", "step-1", NULL, second, 3, NULL, NULL, NULL, NULL),
              0);
    ASSERT_OK(store_instance_get(s, "acme/i", NULL, &got, NULL));
    ASSERT_STREQ(got.checkpoint_id, "step-2");

    instance_record_done(&got);
    ASSERT_OK(store_checkpoint_get(s, "acme/i", "step-2", &data, &n, NULL, NULL));
    ASSERT_EQ(n, 0); /* an empty checkpoint is stored, not missing */
    free(data);

    /* one "checkpoint" event per key actually stored */
    EventFilter ef = {.instance_key = "acme/i", .type = "checkpoint", .limit = 10};
    EventRecord *ev = NULL;
    size_t nev = 0;
    bool more = true;
    ASSERT_OK(store_event_list(s, &ef, &ev, &nev, &more, NULL));
    ASSERT_EQ(nev, 2);
    ASSERT_STREQ(ev[0].subtype, "step-1");
    ASSERT_STREQ(ev[1].subtype, "step-2");
    ASSERT_FALSE(more);
    event_records_free(ev, nev);

    /* the pending control signal comes back with the save, stored or replayed */
    SignalKind sig = SIGNAL_RESUME; /* overwritten with none */
    ASSERT_EQ(store_checkpoint_save(s, "acme/i", "sig-a", NULL, "x", 1, NULL, NULL, &sig, NULL), 1);
    ASSERT_EQ(sig, _SIGNAL_KIND_INVALID);
    ASSERT_EQ(store_signal_send(s, "acme/i", SIGNAL_PAUSE, NULL, NULL), 1);
    ASSERT_EQ(store_checkpoint_save(s, "acme/i", "sig-b", NULL, "x", 1, NULL, NULL, &sig, NULL), 1);
    ASSERT_EQ(sig, SIGNAL_PAUSE);
    sig = SIGNAL_RESUME;
    ASSERT_EQ(store_checkpoint_save(s, "acme/i", "step-1", NULL, "x", 1, NULL, NULL, &sig, NULL),
              0);
    ASSERT_EQ(sig, SIGNAL_PAUSE);

    Error e = ERROR_INIT;
    ASSERT_EQ(store_checkpoint_get(s, "acme/i", "step-3", &data, &n, NULL, &e), -ENOENT);
    ASSERT_STREQ(error_message(&e), "checkpoint \"step-3\" of instance \"acme/i\" does not exist");
    ASSERT_EQ(store_checkpoint_save(s, "acme/i", "", NULL, "x", 1, NULL, NULL, NULL, &e), -EINVAL);
    error_done(&e);
    s = store_close(s);
}

/* A save bound to a launch (token_hash) stores nothing once that launch is over, checked in the
 * save's own transaction. */
TEST(checkpoint_save_is_bound_to_its_launch)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ASSERT_OK(create_running(s, "i", "launch-1"));
    ASSERT_EQ(store_checkpoint_save(s, "acme/i", "a", "launch-1", "x", 1, NULL, NULL, NULL, NULL),
              1);
    void *data = NULL;
    size_t n = 0;

    /* another launch's token: nothing stored, the instance untouched */
    Error e = ERROR_INIT;
    ASSERT_EQ(store_checkpoint_save(s, "acme/i", "b", "launch-0", "y", 1, NULL, NULL, NULL, &e),
              -ESTALE);
    ASSERT_STREQ(error_message(&e),
                 "instance \"acme/i\" is no longer running the launch that saves "
                 "checkpoint \"b\"; the process should exit");
    error_done(&e);
    ASSERT_EQ(store_checkpoint_get(s, "acme/i", "b", &data, &n, NULL, NULL), -ENOENT);
    InstanceRecord got = {0};
    ASSERT_EQ(store_instance_get(s, "acme/i", NULL, &got, NULL), 0);
    ASSERT_STREQ(got.checkpoint_id, "a");
    instance_record_done(&got);

    /* the same launch after its instance ended: refused too */
    ASSERT_EQ(move(s, "i", INSTANCE_RUNNING, INSTANCE_CANCELLED), 1);
    ASSERT_EQ(store_checkpoint_save(s, "acme/i", "c", "launch-1", "z", 1, NULL, NULL, NULL, NULL),
              -ESTALE);
    ASSERT_EQ(store_checkpoint_get(s, "acme/i", "c", &data, &n, NULL, NULL), -ENOENT);
    /* a key saved before still replays: reading changes nothing */
    ASSERT_EQ(store_checkpoint_save(s, "acme/i", "a", "launch-1", "q", 1, &data, &n, NULL, NULL),
              0);
    ASSERT_EQ(n, 1u);
    ASSERT_EQ(memcmp(data, "x", 1), 0);
    free(data);
    /* no token: no launch check (the store's other callers) */
    ASSERT_EQ(store_checkpoint_save(s, "acme/i", "d", NULL, "w", 1, NULL, NULL, NULL, NULL), 1);
    s = store_close(s);
}

/* Saves racing in shared batches (PostgreSQL sends a batch of saves in one pipeline): each gets
 * its own answer. Half the threads save with a token of an earlier launch: every one of those is
 * refused and stores nothing, while the others store every key once, and a key saved twice keeps
 * its first bytes. */
#define BOUND_THREADS 16
#define BOUND_SAVES 40

typedef struct BoundArgs {
    Store *s;
    int t;
    int answers[BOUND_SAVES];
} BoundArgs;

static void *save_bound(void *arg)
{
    BoundArgs *a = arg;
    char key[32], id[32];
    snprintf(id, sizeof id, "acme/b%d", a->t / 2);
    const char *token = a->t % 2 ? "old" : "live";
    for (int k = 0; k < BOUND_SAVES; k++) {
        snprintf(key, sizeof key, "k%d", k / 2); /* each key twice */
        a->answers[k] =
            store_checkpoint_save(a->s, id, key, token, key, strlen(key), NULL, NULL, NULL, NULL);
    }
    return NULL;
}

TEST(racing_saves_bound_to_their_launch_in_shared_batches)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    for (int i = 0; i < BOUND_THREADS / 2; i++) {
        char id[32];
        snprintf(id, sizeof id, "b%d", i);
        ASSERT_OK(create_running(s, id, "live"));
    }
    pthread_t th[BOUND_THREADS];
    static BoundArgs args[BOUND_THREADS];
    for (int t = 0; t < BOUND_THREADS; t++) {
        args[t] = (BoundArgs){.s = s, .t = t};
        pthread_create(&th[t], NULL, save_bound, &args[t]);
    }
    for (int t = 0; t < BOUND_THREADS; t++)
        pthread_join(th[t], NULL);
    for (int t = 0; t < BOUND_THREADS; t++)
        for (int k = 0; k < BOUND_SAVES; k++) {
            /* the live launch: new, then the repeat; the old one's: refused, unless the live
             * thread of the instance stored the key first (then it replays: 0) */
            int want_live = k % 2 == 0 ? 1 : 0;
            int got = args[t].answers[k];
            if (t % 2 == 0 ? got != want_live && !(k % 2 == 0 && got == 0)
                           : got != -ESTALE && got != 0)
                TEST_FAIL("thread %d save %d: %d", t, k, got);
        }
    /* every key stored once, with its bytes, and nothing more */
    for (int i = 0; i < BOUND_THREADS / 2; i++) {
        char id[32];
        snprintf(id, sizeof id, "acme/b%d", i);
        CheckpointInfo *cps = NULL;
        size_t n = 0;
        ASSERT_OK(store_checkpoint_list(s, id, 0, 100, &cps, &n, NULL, NULL));
        checkpoint_infos_free(cps, n);
        ASSERT_EQ(n, (size_t)BOUND_SAVES / 2);
        void *data = NULL;
        size_t len = 0;
        ASSERT_OK(store_checkpoint_get(s, id, "k7", &data, &len, NULL, NULL));
        bool same = len == 2 && memcmp(data, "k7", 2) == 0;
        free(data);
        ASSERT_TRUE(same);
    }
    s = store_close(s);
}

TEST(checkpoint_list_reports_sizes)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ASSERT_OK(create_instance(s, "i", "acme", "img", 0));
    ASSERT_OK(create_instance(s, "j", "acme", "img", 0));
    size_t big = 1 << 20;
    _cleanup_free_ char *blob = xcalloc(big, 1);
    const size_t sizes[] = {3, 0, 1 << 20, 17, 1};
    for (int k = 0; k < 5; k++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", k);
        ASSERT_EQ(
            store_checkpoint_save(s, "acme/i", key, NULL, blob, sizes[k], NULL, NULL, NULL, NULL),
            1);
        ASSERT_EQ(store_checkpoint_save(s, "acme/j", key, NULL, blob, 1, NULL, NULL, NULL, NULL),
                  1);
    }
    /* oldest first, two at a time */
    int64_t after = 0;
    int seen = 0;
    for (int page = 0; page < 5; page++) {
        CheckpointInfo *c = NULL;
        size_t n = 0;
        bool more = false;
        ASSERT_OK(store_checkpoint_list(s, "acme/i", after, 2, &c, &n, &more, NULL));
        for (size_t k = 0; k < n; k++, seen++) {
            char key[16];
            snprintf(key, sizeof key, "k%d", seen);
            ASSERT_STREQ(c[k].key, key);
            ASSERT_EQ(c[k].size, sizes[seen]);
            ASSERT_TRUE(c[k].created_at > 0);
            ASSERT_TRUE(c[k].seq > after);
            after = c[k].seq;
        }
        checkpoint_infos_free(c, n);
        if (!more)
            break;
    }
    ASSERT_EQ(seen, 5);

    CheckpointInfo *c = NULL;
    size_t n = 7;
    bool more = true;
    ASSERT_OK(store_checkpoint_list(s, "acme/nope", 0, 10, &c, &n, &more, NULL));
    ASSERT_EQ(n, 0);
    ASSERT_FALSE(more);
    checkpoint_infos_free(c, n);
    ASSERT_EQ(store_checkpoint_list(s, "acme/i", 0, 0, &c, &n, &more, NULL), -EINVAL);
    ASSERT_EQ(store_checkpoint_list(s, "acme/i", 0, 1001, &c, &n, &more, NULL), -EINVAL);
    s = store_close(s);
}

/* Heartbeats and events bound to a launch (token_hash) change nothing once that launch is over,
 * checked in their own transaction. */
TEST(heartbeats_and_events_are_bound_to_their_launch)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ASSERT_OK(create_running(s, "i", "launch-1"));
    ASSERT_OK(store_instance_heartbeat(s, "acme/i", "launch-1", 1000, NULL));
    ASSERT_EQ(
        store_event_append_keyed(s, "acme/i", "progress", NULL, NULL, NULL, "launch-1", NULL, NULL),
        1);
    /* another launch's token */
    ASSERT_EQ(store_instance_heartbeat(s, "acme/i", "launch-0", 2000, NULL), -ESTALE);
    ASSERT_EQ(
        store_event_append_keyed(s, "acme/i", "progress", NULL, NULL, NULL, "launch-0", NULL, NULL),
        -ESTALE);
    /* the same launch after its instance ended */
    ASSERT_EQ(move(s, "i", INSTANCE_RUNNING, INSTANCE_COMPLETED), 1);
    Error e = ERROR_INIT;
    ASSERT_EQ(store_instance_heartbeat(s, "acme/i", "launch-1", 3000, &e), -ESTALE);
    ASSERT_STREQ(error_message(&e),
                 "instance \"acme/i\" is no longer running the launch that makes "
                 "this call; the process should exit");
    error_done(&e);
    ASSERT_EQ(store_event_append_keyed(s, "acme/i", "log", NULL, NULL, "k", "launch-1", NULL, NULL),
              -ESTALE);
    InstanceRecord got = {0};
    ASSERT_OK(store_instance_get(s, "acme/i", NULL, &got, NULL));
    ASSERT_EQ(got.heartbeat_at, 1000);
    instance_record_done(&got);
    EventFilter f = {.instance_key = "acme/i", .type = "log", .limit = 10};
    EventRecord *ev = NULL;
    size_t n = 0;
    ASSERT_OK(store_event_list(s, &f, &ev, &n, NULL, NULL));
    ASSERT_EQ(n, 0u);
    event_records_free(ev, n);
    /* unbound (the daemon's own records): still written */
    ASSERT_OK(store_instance_heartbeat(s, "acme/i", NULL, 4000, NULL));
    ASSERT_EQ(store_event_append_keyed(s, "acme/i", "log", NULL, NULL, NULL, NULL, NULL, NULL), 1);
    s = store_close(s);
}

/* ---- events ---- */

/* An event with a request key is recorded once per instance; repeats find the first. */
TEST(events_with_a_request_key_are_recorded_once)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ASSERT_OK(create_instance(s, "i", "acme", "img", 0));
    ASSERT_OK(create_instance(s, "j", "acme", "img", 0));
    int64_t a = 0, b = 0, c = 0, d = 0;
    ASSERT_EQ(store_event_append_keyed(s, "acme/i", "custom", "x", "1", "k-1", NULL, &a, NULL), 1);
    ASSERT_EQ(store_event_append_keyed(s, "acme/i", "custom", "y", "2", "k-1", NULL, &b, NULL), 0);
    ASSERT_EQ(b, a); /* the first one's id; its content stays */
    ASSERT_EQ(store_event_append_keyed(s, "acme/i", "custom", "x", "1", "k-2", NULL, &c, NULL), 1);
    ASSERT_EQ(store_event_append_keyed(s, "acme/j", "custom", "x", "1", "k-1", NULL, &d, NULL), 1);
    ASSERT_TRUE(c > a && d > c);
    /* without a key: every report counts */
    ASSERT_EQ(store_event_append_keyed(s, "acme/i", "custom", "x", "1", NULL, NULL, NULL, NULL), 1);
    ASSERT_EQ(store_event_append_keyed(s, "acme/i", "custom", "x", "1", NULL, NULL, NULL, NULL), 1);
    EventFilter f = {.instance_key = "acme/i", .limit = 10};
    EventRecord *ev = NULL;
    size_t n = 0;
    ASSERT_OK(store_event_list(s, &f, &ev, &n, NULL, NULL));
    ASSERT_EQ(n, 4u);
    ASSERT_EQ(ev[0].id, a);
    ASSERT_STREQ(ev[0].subtype, "x");
    event_records_free(ev, n);
    ASSERT_EQ(store_event_append_keyed(s, "acme/nope", "custom", NULL, NULL, "k", NULL, NULL, NULL),
              -ENOENT);
    s = store_close(s);
}

TEST(events_append_and_list)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ASSERT_OK(create_instance(s, "i", "acme", "img", 0));
    ASSERT_OK(create_instance(s, "j", "acme", "img", 0));
    int64_t ids[6];
    ASSERT_OK(store_event_append(s, "acme/i", "started", NULL, NULL, &ids[0], NULL));
    ASSERT_OK(store_event_append(s, "acme/j", "started", NULL, NULL, NULL, NULL));
    ASSERT_OK(store_event_append(s, "acme/i", "custom", "progress", "{\"pct\":10}", &ids[1], NULL));
    usleep(2000); /* distinct created_at for the time filters */
    ASSERT_OK(store_event_append(s, "acme/i", "custom", "progress", "{\"pct\":50}", &ids[2], NULL));
    ASSERT_OK(store_event_append(s, "acme/i", "custom", "note", "{}", &ids[3], NULL));
    usleep(2000);
    ASSERT_OK(store_event_append(s, "acme/i", "log", NULL, "hello", &ids[4], NULL));
    ASSERT_OK(store_event_append(s, "acme/i", "completed", NULL, NULL, &ids[5], NULL));
    for (int k = 1; k < 6; k++)
        ASSERT_TRUE(ids[k] > ids[k - 1]);

    EventFilter f = {.instance_key = "acme/i", .limit = 100};
    EventRecord *ev = NULL;
    size_t n = 0;
    bool more = true;
    ASSERT_OK(store_event_list(s, &f, &ev, &n, &more, NULL));
    ASSERT_EQ(n, 6);
    ASSERT_FALSE(more);
    ASSERT_EQ(ev[0].id, ids[0]);
    ASSERT_STREQ(ev[0].type, "started");
    ASSERT_NULL(ev[0].subtype);
    ASSERT_NULL(ev[0].payload);
    ASSERT_STREQ(ev[2].instance_key, "acme/i");
    ASSERT_STREQ(ev[2].payload, "{\"pct\":50}");
    usec_t t_mid = ev[2].created_at, t_end = ev[4].created_at;
    ASSERT_TRUE(ev[1].created_at < t_mid && t_mid < t_end);
    event_records_free(ev, n);

    /* type and subtype */
    f = (EventFilter){.instance_key = "acme/i", .type = "custom", .limit = 100};
    ASSERT_OK(store_event_list(s, &f, &ev, &n, &more, NULL));
    ASSERT_EQ(n, 3);
    event_records_free(ev, n);
    f.subtype = "progress";
    ASSERT_OK(store_event_list(s, &f, &ev, &n, &more, NULL));
    ASSERT_EQ(n, 2);
    ASSERT_EQ(ev[0].id, ids[1]);
    ASSERT_EQ(ev[1].id, ids[2]);
    event_records_free(ev, n);

    /* time range: [t_mid, t_end) holds the two events appended between the sleeps */
    f = (EventFilter){.instance_key = "acme/i", .after = t_mid, .before = t_end, .limit = 100};
    ASSERT_OK(store_event_list(s, &f, &ev, &n, &more, NULL));
    ASSERT_EQ(n, 2);
    ASSERT_EQ(ev[0].id, ids[2]);
    ASSERT_EQ(ev[1].id, ids[3]);
    event_records_free(ev, n);

    /* after_id paging, two at a time */
    f = (EventFilter){.instance_key = "acme/i", .limit = 2};
    int seen = 0;
    for (int page = 0; page < 5; page++) {
        ASSERT_OK(store_event_list(s, &f, &ev, &n, &more, NULL));
        for (size_t k = 0; k < n; k++)
            ASSERT_EQ(ev[k].id, ids[seen++]);
        if (n > 0)
            f.after_id = ev[n - 1].id;
        event_records_free(ev, n);
        if (!more)
            break;
    }
    ASSERT_EQ(seen, 6);

    Error e = ERROR_INIT;
    ASSERT_EQ(store_event_append(s, "acme/nope", "started", NULL, NULL, NULL, &e), -ENOENT);
    ASSERT_STREQ(error_message(&e), "instance \"acme/nope\" does not exist");
    ASSERT_EQ(store_event_append(s, "acme/i", "", NULL, NULL, NULL, &e), -EINVAL);
    f = (EventFilter){.instance_key = "acme/i", .limit = 0};
    ASSERT_EQ(store_event_list(s, &f, &ev, &n, &more, &e), -EINVAL);
    f = (EventFilter){.limit = 10};
    ASSERT_EQ(store_event_list(s, &f, &ev, &n, &more, &e), -EINVAL);
    error_done(&e);
    f = (EventFilter){.instance_key = "acme/nope", .limit = 10};
    ASSERT_OK(store_event_list(s, &f, &ev, &n, &more, NULL));
    ASSERT_EQ(n, 0);
    event_records_free(ev, n);
    s = store_close(s);
}

/* ---- signals ---- */

/* The pending control signal's kind by name, or "none"; "error" on failure. */
static const char *pending(Store *s, const char *id, char **ret_payload)
{
    SignalKind kind = SIGNAL_CANCEL; /* overwritten either way */
    int r = store_signal_get(s, K(id), &kind, ret_payload, NULL);
    if (r < 0)
        return "error";
    if ((r == 0) != (kind == _SIGNAL_KIND_INVALID))
        return "inconsistent";
    return r == 0 ? "none" : signal_kind_to_string(kind);
}

TEST(signal_priority)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ASSERT_OK(create_instance(s, "i", "acme", "img", 0));
    ASSERT_OK(create_instance(s, "j", "acme", "img", 0));
    ASSERT_STREQ(pending(s, "i", NULL), "none");

    /* pause then cancel: cancel replaces it */
    ASSERT_EQ(store_signal_send(s, "acme/i", SIGNAL_PAUSE, NULL, NULL), 1);
    ASSERT_EQ(store_signal_send(s, "acme/i", SIGNAL_CANCEL, "{\"why\":\"user\"}", NULL), 1);
    _cleanup_free_ char *payload = NULL;
    ASSERT_STREQ(pending(s, "i", &payload), "cancel");
    ASSERT_STREQ(payload, "{\"why\":\"user\"}");
    /* cancel then pause or resume: cancel stays */
    ASSERT_EQ(store_signal_send(s, "acme/i", SIGNAL_PAUSE, NULL, NULL), 0);
    ASSERT_EQ(store_signal_send(s, "acme/i", SIGNAL_RESUME, NULL, NULL), 0);
    ASSERT_STREQ(pending(s, "i", NULL), "cancel");
    /* ack only the matching type */
    ASSERT_EQ(store_signal_ack(s, "acme/i", SIGNAL_PAUSE, NULL), 0);
    ASSERT_STREQ(pending(s, "i", NULL), "cancel");
    ASSERT_EQ(store_signal_ack(s, "acme/i", SIGNAL_CANCEL, NULL), 1);
    ASSERT_STREQ(pending(s, "i", NULL), "none");
    ASSERT_EQ(store_signal_ack(s, "acme/i", SIGNAL_CANCEL, NULL), 0);

    /* resume after pause: pause stays; pause again replaces its payload */
    ASSERT_EQ(store_signal_send(s, "acme/j", SIGNAL_PAUSE, "1", NULL), 1);
    ASSERT_EQ(store_signal_send(s, "acme/j", SIGNAL_RESUME, NULL, NULL), 0);
    ASSERT_EQ(store_signal_send(s, "acme/j", SIGNAL_PAUSE, "2", NULL), 1);
    char *p = NULL;
    ASSERT_STREQ(pending(s, "j", &p), "pause");
    ASSERT_STREQ(p, "2");
    free(p);
    ASSERT_EQ(store_signal_ack(s, "acme/j", SIGNAL_PAUSE, NULL), 1);
    ASSERT_EQ(store_signal_send(s, "acme/j", SIGNAL_RESUME, NULL, NULL), 1);
    ASSERT_STREQ(pending(s, "j", &p), "resume");
    ASSERT_NULL(p);
    ASSERT_EQ(store_signal_send(s, "acme/j", SIGNAL_PAUSE, NULL, NULL),
              1); /* pause outranks resume */
    ASSERT_STREQ(pending(s, "j", NULL), "pause");
    ASSERT_STREQ(pending(s, "i", NULL), "none"); /* one slot per instance */

    Error e = ERROR_INIT;
    ASSERT_EQ(store_signal_send(s, "acme/nope", SIGNAL_CANCEL, NULL, &e), -ENOENT);
    ASSERT_STREQ(error_message(&e), "instance \"acme/nope\" does not exist");
    ASSERT_EQ(store_signal_send(s, "acme/i", _SIGNAL_KIND_MAX, NULL, &e), -EINVAL);
    ASSERT_STREQ(error_message(&e), "invalid signal kind 3");
    ASSERT_EQ(store_signal_ack(s, "acme/i", _SIGNAL_KIND_INVALID, &e), -EINVAL);
    error_done(&e);
    ASSERT_STREQ(pending(s, "nope", NULL), "none");
    s = store_close(s);
}

TEST(custom_signals_put_and_take)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ASSERT_OK(create_instance(s, "i", "acme", "img", 0));
    ASSERT_OK(store_custom_signal_put(s, "acme/i", "approval", "{\"v\":1}", NULL));
    ASSERT_OK(store_custom_signal_put(s, "acme/i", "approval", "{\"v\":2}", NULL)); /* replaces */
    ASSERT_OK(store_custom_signal_put(s, "acme/i", "other", NULL, NULL));

    char *payload = NULL;
    ASSERT_EQ(store_custom_signal_take(s, "acme/i", "approval", &payload, NULL), 1);
    ASSERT_STREQ(payload, "{\"v\":2}");
    free(payload);
    payload = NULL;
    ASSERT_EQ(store_custom_signal_take(s, "acme/i", "approval", &payload, NULL), 0);
    ASSERT_NULL(payload);
    ASSERT_EQ(store_custom_signal_take(s, "acme/i", "other", &payload, NULL), 1);
    ASSERT_NULL(payload); /* a signal without a payload */
    ASSERT_EQ(store_custom_signal_take(s, "acme/i", "other", NULL, NULL), 0);

    Error e = ERROR_INIT;
    ASSERT_EQ(store_custom_signal_put(s, "acme/nope", "k", "x", &e), -ENOENT);
    ASSERT_STREQ(error_message(&e), "instance \"acme/nope\" does not exist");
    ASSERT_EQ(store_custom_signal_put(s, "acme/i", "", "x", &e), -EINVAL);
    error_done(&e);
    ASSERT_EQ(store_custom_signal_take(s, "acme/nope", "k", NULL, NULL), 0);
    s = store_close(s);
}

/* A delivered signal is taken and saved as a checkpoint at once; when that cannot be done, it
 * stays pending. */
TEST(custom_signal_deliver_saves_it_as_a_checkpoint)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ASSERT_OK(create_running(s, "i", "launch-1"));
    char *payload = NULL;
    void *data = NULL;
    size_t n = 0;
    ASSERT_EQ(store_custom_signal_deliver(s, "acme/i", "approval", "approval", "launch-1", &payload,
                                          NULL),
              0); /* none pending: nothing saved */
    ASSERT_EQ(store_checkpoint_get(s, "acme/i", "approval", &data, &n, NULL, NULL), -ENOENT);

    ASSERT_OK(store_custom_signal_put(s, "acme/i", "approval", "{\"ok\":true}", NULL));
    ASSERT_EQ(store_custom_signal_deliver(s, "acme/i", "approval", "approval", "launch-1", &payload,
                                          NULL),
              1);
    ASSERT_STREQ(payload, "{\"ok\":true}");
    free(payload);
    payload = NULL;
    ASSERT_EQ(store_custom_signal_exists(s, "acme/i", "approval", NULL), 0);
    ASSERT_EQ(store_checkpoint_get(s, "acme/i", "approval", &data, &n, NULL, NULL), 0);
    ASSERT_EQ(n, strlen("{\"ok\":true}"));
    ASSERT_EQ(memcmp(data, "{\"ok\":true}", n), 0);
    free(data);
    InstanceRecord got = {0};
    ASSERT_EQ(store_instance_get(s, "acme/i", NULL, &got, NULL), 0);
    ASSERT_STREQ(got.checkpoint_id, "approval");
    instance_record_done(&got);

    /* the key is taken: the next signal stays pending */
    Error e = ERROR_INIT;
    ASSERT_OK(store_custom_signal_put(s, "acme/i", "approval", NULL, NULL));
    ASSERT_EQ(
        store_custom_signal_deliver(s, "acme/i", "approval", "approval", "launch-1", &payload, &e),
        -EEXIST);
    ASSERT_STREQ(error_message(&e),
                 "checkpoint \"approval\" of instance \"acme/i\" exists already; "
                 "read it, the wait's outcome is there");
    error_done(&e);
    ASSERT_EQ(store_custom_signal_exists(s, "acme/i", "approval", NULL), 1);
    /* also with no signal pending: the repeat of a delivery whose reply was lost */
    ASSERT_EQ(store_custom_signal_deliver(s, "acme/i", "none-sent", "approval", "launch-1",
                                          &payload, NULL),
              -EEXIST);
    /* another launch: refused, the signal stays, no checkpoint */
    ASSERT_EQ(
        store_custom_signal_deliver(s, "acme/i", "approval", "again", "launch-0", &payload, NULL),
        -ESTALE);
    ASSERT_EQ(store_custom_signal_exists(s, "acme/i", "approval", NULL), 1);
    ASSERT_EQ(store_checkpoint_get(s, "acme/i", "again", &data, &n, NULL, NULL), -ENOENT);
    /* a signal without a payload is saved as null */
    ASSERT_EQ(
        store_custom_signal_deliver(s, "acme/i", "approval", "again", "launch-1", &payload, NULL),
        1);
    ASSERT_NULL(payload);
    ASSERT_EQ(store_checkpoint_get(s, "acme/i", "again", &data, &n, NULL, NULL), 0);
    ASSERT_EQ(n, 4u);
    ASSERT_EQ(memcmp(data, "null", 4), 0);
    free(data);
    s = store_close(s);
}

/* ---- integrity ---- */

TEST(custom_signal_exists_until_taken)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ASSERT_OK(create_instance(s, "i", "acme", "img", 0));
    ASSERT_EQ(store_custom_signal_exists(s, "acme/i", "k", NULL), 0);
    ASSERT_OK(store_custom_signal_put(s, "acme/i", "k", "{}", NULL));
    ASSERT_EQ(store_custom_signal_exists(s, "acme/i", "k", NULL), 1);
    ASSERT_EQ(store_custom_signal_exists(s, "acme/i", "other", NULL), 0);
    ASSERT_EQ(store_custom_signal_exists(s, "acme/nobody", "k", NULL), 0);
    ASSERT_EQ(store_custom_signal_take(s, "acme/i", "k", NULL, NULL), 1);
    ASSERT_EQ(store_custom_signal_exists(s, "acme/i", "k", NULL), 0);
    ASSERT_EQ(store_custom_signal_exists(s, "acme/i", "", NULL), -EINVAL);
    s = store_close(s);
}

TEST(foreign_keys_hold)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    Error e = ERROR_INIT;
    ASSERT_EQ(store_checkpoint_save(s, "acme/ghost", "k", NULL, "x", 1, NULL, NULL, NULL, &e),
              -ENOENT);
    ASSERT_STREQ(error_message(&e), "instance \"acme/ghost\" does not exist");
    error_done(&e);
    /* nothing was stored, and no event either */
    ASSERT_OK(create_instance(s, "ghost", "acme", "img", 0));
    void *data = NULL;
    size_t n = 0;
    ASSERT_EQ(store_checkpoint_get(s, "acme/ghost", "k", &data, &n, NULL, NULL), -ENOENT);
    EventFilter f = {.instance_key = "acme/ghost", .limit = 10};
    EventRecord *ev = NULL;
    bool more;
    ASSERT_OK(store_event_list(s, &f, &ev, &n, &more, NULL));
    ASSERT_EQ(n, 0);
    event_records_free(ev, n);
    s = store_close(s);
}

/* ---- concurrency: many writers at once (the SQLite backend batches them: group commit) ---- */

/* A worker thread's first failed check, reported by the test that joins it. A thread that
 * fails a check skips the rest of its work but still meets the others at each round's barrier. */
typedef struct {
    char why[256];
} Failure;

#define CHECK(f, cond, fmt, ...)                                                                   \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            if (!(f)->why[0])                                                                      \
                snprintf((f)->why, sizeof(f)->why, "line %d: " fmt, __LINE__, ##__VA_ARGS__);      \
            return false;                                                                          \
        }                                                                                          \
    } while (0)

/* A writer thread of the concurrency tests below. The threads run their rounds in step (a
 * barrier before each), so that every round's writes meet in the same batches. A test's worker
 * struct has a Stepper as its first member. */
typedef struct Stepper Stepper;
struct Stepper {
    Store *s;
    int t; /* the thread's number */
    int rounds;
    pthread_barrier_t *barrier;
    bool (*round)(Stepper *w, int i); /* false (and f set) on a failed check */
    Failure f;
};

static void *stepper_main(void *arg)
{
    Stepper *w = arg;
    bool ok = true;
    for (int i = 0; i < w->rounds; i++) {
        pthread_barrier_wait(w->barrier);
        ok = ok && w->round(w, i);
    }
    return NULL;
}

/* Run n threads on s, rounds rounds of round each. The workers are n structs of size bytes
 * from base, each with a Stepper first (set here; the rest is the caller's). True if no thread
 * failed a check; the failures are printed. */
static bool steppers_run(Store *s, void *base, size_t size, int n, int rounds,
                         bool (*round)(Stepper *w, int i))
{
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, (unsigned)n);
    pthread_t *th = xcalloc((size_t)n, sizeof *th);
    for (int t = 0; t < n; t++) {
        Stepper *w = (Stepper *)((char *)base + (size_t)t * size);
        *w = (Stepper){.s = s, .t = t, .rounds = rounds, .barrier = &barrier, .round = round};
        pthread_create(&th[t], NULL, stepper_main, w);
    }
    bool ok = true;
    for (int t = 0; t < n; t++) {
        pthread_join(th[t], NULL);
        const Stepper *w = (const Stepper *)((char *)base + (size_t)t * size);
        if (w->f.why[0]) {
            printf("# thread %d: %s\n", t, w->f.why);
            ok = false;
        }
    }
    pthread_barrier_destroy(&barrier);
    free(th);
    return ok;
}

#define MIX_THREADS 32
#define MIX_ROUNDS 20
#define MIX_SHARED 8

typedef struct {
    Stepper w;
    int64_t last_event;       /* the id of its previous event */
    char got[MIX_ROUNDS][32]; /* the bytes checkpoint_save handed back, per round */
    int ckpt_won[MIX_ROUNDS]; /* checkpoint_save returned 1 */
    int race_won[MIX_ROUNDS]; /* the racing transition returned 1 */
    int64_t event_id[MIX_ROUNDS];
} Mixer;

/* One round of a mixing thread: false (and its f set) on a failed check. */
static bool mix_round(Stepper *w, int i)
{
    Mixer *m = (Mixer *)w;
    int64_t *last = &m->last_event;
    Failure *f = &w->f;
    char own[32], race[32], shared[32], events_of[32], key[32], mine[32];
    snprintf(own, sizeof own, "own-%d", w->t);
    snprintf(events_of, sizeof events_of, "shared-%d", w->t % MIX_SHARED);
    snprintf(shared, sizeof shared, "shared-%d", i % MIX_SHARED);
    snprintf(key, sizeof key, "k%d", i);
    snprintf(mine, sizeof mine, "t%d-r%d", w->t, i);

    /* every thread saves the same key this round: first write wins */
    void *data = NULL;
    size_t n = 0;
    int r = store_checkpoint_save(w->s, K(shared), key, NULL, mine, strlen(mine), &data, &n, NULL,
                                  NULL);
    CHECK(f, r == 0 || r == 1, "checkpoint_save %s/%s: %d", shared, key, r);
    CHECK(f, n < sizeof m->got[i], "checkpoint of %zu bytes", n);
    memcpy(m->got[i], data, n);
    m->got[i][n] = '\0';
    free(data);
    data = NULL;
    m->ckpt_won[i] = r;
    CHECK(f, r == 0 || strcmp(m->got[i], mine) == 0, "won but got \"%s\"", m->got[i]);
    /* read your write: visible to the next read as soon as the call returns */
    r = store_checkpoint_get(w->s, K(shared), key, &data, &n, NULL, NULL);
    CHECK(f, r == 0, "checkpoint_get %s/%s after save: %d", shared, key, r);
    CHECK(f, n == strlen(m->got[i]) && memcmp(data, m->got[i], n) == 0,
          "checkpoint_get %s/%s differs from what save returned", shared, key);
    free(data);

    int64_t id = 0;
    r = store_event_append(w->s, K(events_of), "mix", NULL, mine, &id, NULL);
    CHECK(f, r == 0, "event_append: %d", r);
    CHECK(f, id > *last, "event id %" PRId64 " after %" PRId64, id, *last);
    *last = m->event_id[i] = id;
    EventFilter ef = {.instance_key = K(events_of), .after_id = id - 1, .limit = 1};
    EventRecord *ev = NULL;
    size_t nev = 0;
    r = store_event_list(w->s, &ef, &ev, &nev, NULL, NULL);
    CHECK(f, r == 0 && nev == 1, "event_list after append: %d, %zu rows", r, nev);
    bool same = ev[0].id == id && ev[0].payload && strcmp(ev[0].payload, mine) == 0;
    event_records_free(ev, nev);
    CHECK(f, same, "event %" PRId64 " not read back", id);

    /* every thread races for the same transition this round: exactly one wins */
    snprintf(race, sizeof race, "mrace-%d", i);
    InstanceUpdate ru = {.to_status = w->t % 2 ? INSTANCE_COMPLETED : INSTANCE_FAILED,
                         .set_exit_code = true,
                         .exit_code = w->t};
    r = store_instance_transition(w->s, K(race), INSTANCE_RUNNING, &ru, NULL);
    CHECK(f, r == 0 || r == 1, "racing transition: %d", r);
    m->race_won[i] = r;

    /* the thread's own instance: each transition applies and is read back at once */
    InstanceStatus from = i % 2 ? INSTANCE_SUSPENDED : INSTANCE_RUNNING,
                   to = i % 2 ? INSTANCE_RUNNING : INSTANCE_SUSPENDED;
    InstanceUpdate ou = {.to_status = to, .exit_code = i, .set_exit_code = true};
    r = store_instance_transition(w->s, K(own), from, &ou, NULL);
    CHECK(f, r == 1, "own transition %s -> %s: %d", instance_status_to_string(from),
          instance_status_to_string(to), r);
    r = store_instance_heartbeat(w->s, K(own), NULL, (usec_t)(i + 1), NULL);
    CHECK(f, r == 0, "heartbeat: %d", r);
    InstanceRecord got;
    r = store_instance_get(w->s, K(own), NULL, &got, NULL);
    CHECK(f, r == 0, "instance_get: %d", r);
    same = got.status == to && got.exit_code == i && got.heartbeat_at == (usec_t)(i + 1);
    instance_record_done(&got);
    CHECK(f, same, "own instance not read back after round %d", i);
    return true;
}

TEST(concurrent_mixed_writes)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    char id[32];
    for (int k = 0; k < MIX_SHARED; k++) {
        snprintf(id, sizeof id, "shared-%d", k);
        ASSERT_OK(create_instance(s, id, "acme", "img", 0));
    }
    for (int t = 0; t < MIX_THREADS; t++) {
        snprintf(id, sizeof id, "own-%d", t);
        ASSERT_OK(create_instance(s, id, "acme", "img", 0));
        ASSERT_EQ(move(s, id, INSTANCE_PENDING, INSTANCE_RUNNING), 1);
    }
    for (int i = 0; i < MIX_ROUNDS; i++) {
        snprintf(id, sizeof id, "mrace-%d", i);
        ASSERT_OK(create_instance(s, id, "acme", "img", 0));
        ASSERT_EQ(move(s, id, INSTANCE_PENDING, INSTANCE_RUNNING), 1);
    }

    Mixer *m = xcalloc(MIX_THREADS, sizeof *m);
    if (!steppers_run(s, m, sizeof *m, MIX_THREADS, MIX_ROUNDS, mix_round)) {
        free(m);
        store_close(s);
        TEST_FAIL("a writer thread failed a check");
    }

    for (int i = 0; i < MIX_ROUNDS; i++) {
        int ckpt_wins = 0, race_wins = 0, ckpt_winner = -1, race_winner = -1;
        for (int t = 0; t < MIX_THREADS; t++) {
            ckpt_wins += m[t].ckpt_won[i];
            race_wins += m[t].race_won[i];
            if (m[t].ckpt_won[i])
                ckpt_winner = t;
            if (m[t].race_won[i])
                race_winner = t;
        }
        ASSERT_EQ(ckpt_wins, 1);
        ASSERT_EQ(race_wins, 1);
        /* every loser was handed the winner's bytes */
        char winner[32];
        snprintf(winner, sizeof winner, "t%d-r%d", ckpt_winner, i);
        for (int t = 0; t < MIX_THREADS; t++)
            ASSERT_STREQ(m[t].got[i], winner);
        InstanceRecord got;
        snprintf(id, sizeof id, "mrace-%d", i);
        ASSERT_OK(store_instance_get(s, K(id), NULL, &got, NULL));
        ASSERT_EQ(got.exit_code, race_winner);
        ASSERT_EQ(got.status, race_winner % 2 ? INSTANCE_COMPLETED : INSTANCE_FAILED);
        instance_record_done(&got);
    }

    /* every event is there once, in id order, with the id its append returned */
    for (int k = 0; k < MIX_SHARED; k++) {
        snprintf(id, sizeof id, "shared-%d", k);
        EventFilter ef = {.instance_key = K(id), .type = "mix", .limit = 1000};
        EventRecord *ev = NULL;
        size_t n = 0;
        ASSERT_OK(store_event_list(s, &ef, &ev, &n, NULL, NULL));
        size_t want = (size_t)MIX_ROUNDS * (MIX_THREADS / MIX_SHARED);
        bool ok = n == want;
        for (size_t j = 0; ok && j < n; j++) {
            int t = -1, i = -1;
            ok = (j == 0 || ev[j].id > ev[j - 1].id) && ev[j].payload &&
                 sscanf(ev[j].payload, "t%d-r%d", &t, &i) == 2 && t >= 0 && t < MIX_THREADS &&
                 t % MIX_SHARED == k && i >= 0 && i < MIX_ROUNDS && m[t].event_id[i] == ev[j].id;
        }
        event_records_free(ev, n);
        ASSERT_TRUE(ok);
        /* one checkpoint event per round whose key went to this instance */
        EventFilter cf = {.instance_key = K(id), .type = "checkpoint", .limit = 1000};
        ASSERT_OK(store_event_list(s, &cf, &ev, &n, NULL, NULL));
        event_records_free(ev, n);
        ASSERT_EQ(n, (MIX_ROUNDS - k + MIX_SHARED - 1) / MIX_SHARED);
    }
    free(m);
    s = store_close(s);
}

#define ISO_THREADS 16
#define ISO_ROUNDS 40

typedef struct {
    Stepper w;
    int saved; /* checkpoints and events this thread stored */
} Isolator;

/* One round: writes bound to fail, queued beside writes bound to succeed. */
static bool isolation_round(Stepper *w, int i)
{
    Isolator *iso = (Isolator *)w;
    Failure *f = &w->f;
    char ghost[32], key[32], msg[64];
    snprintf(ghost, sizeof ghost, "ghost-%d-%d", w->t, i);
    snprintf(key, sizeof key, "t%d-r%d", w->t, i);
    snprintf(msg, sizeof msg, "instance \"acme/%s\" does not exist", ghost);
    for (int step = 0; step < 2; step++) {
        Error e = ERROR_INIT;
        int r;
        if ((step + w->t + i) % 2 == 0) {
            /* failing: unknown instance, a duplicate id; and a transition that does not
             * apply (0 is no failure, but changes nothing) */
            r = store_checkpoint_save(w->s, K(ghost), key, NULL, "x", 1, NULL, NULL, NULL, &e);
            bool as_expected = r == -ENOENT && strcmp(error_message(&e), msg) == 0;
            error_done(&e);
            CHECK(f, as_expected, "checkpoint for %s: %d", ghost, r);
            r = store_event_append(w->s, K(ghost), "ok", NULL, NULL, NULL, &e);
            as_expected = r == -ENOENT && strcmp(error_message(&e), msg) == 0;
            error_done(&e);
            CHECK(f, as_expected, "event for %s: %d", ghost, r);
            InstanceRecord dup = {.instance_id = "real", .tenant_id = "acme", .image_id = "y"};
            InstanceRecord existing = {0};
            r = store_instance_create(w->s, &dup, &existing, NULL, NULL, NULL);
            as_expected =
                r == -EEXIST && existing.instance_id && strcmp(existing.tenant_id, "acme") == 0;
            instance_record_done(&existing);
            CHECK(f, as_expected, "duplicate create: %d", r);
            CHECK(f, move(w->s, "real", INSTANCE_COMPLETED, INSTANCE_FAILED) == 0,
                  "stale transition");
            r = store_custom_signal_put(w->s, K(ghost), "w", NULL, NULL);
            CHECK(f, r == -ENOENT, "custom signal for %s: %d", ghost, r);
        } else {
            void *data = NULL;
            size_t n = 0;
            r = store_checkpoint_save(w->s, "acme/real", key, NULL, key, strlen(key), &data, &n,
                                      NULL, &e);
            bool as_expected = r == 1 && n == strlen(key) && memcmp(data, key, n) == 0;
            free(data);
            data = NULL;
            error_done(&e);
            CHECK(f, as_expected, "checkpoint %s: %d", key, r);
            r = store_checkpoint_get(w->s, "acme/real", key, &data, &n, NULL, NULL);
            free(data);
            CHECK(f, r == 0, "checkpoint %s not read back: %d", key, r);
            r = store_event_append(w->s, "acme/real", "ok", NULL, key, NULL, NULL);
            CHECK(f, r == 0, "event: %d", r);
            r = store_custom_signal_put(w->s, "acme/real", key, key, NULL);
            CHECK(f, r == 0, "custom signal put: %d", r);
            char *payload = NULL;
            r = store_custom_signal_take(w->s, "acme/real", key, &payload, NULL);
            as_expected = r == 1 && payload && strcmp(payload, key) == 0;
            free(payload);
            CHECK(f, as_expected, "custom signal take: %d", r);
            iso->saved++;
        }
    }
    return true;
}

/* Run the isolation rounds on s (which it closes) and check everything. */
static void check_isolation(Store *s)
{
    ASSERT_NOT_NULL(s);
    ASSERT_OK(create_instance(s, "real", "acme", "img", 0));
    Isolator *w = xcalloc(ISO_THREADS, sizeof *w);
    bool failed = !steppers_run(s, w, sizeof *w, ISO_THREADS, ISO_ROUNDS, isolation_round);
    int saved = 0;
    for (int t = 0; t < ISO_THREADS; t++)
        saved += w[t].saved;
    free(w);
    if (failed) {
        store_close(s);
        TEST_FAIL("a writer thread failed a check");
    }
    ASSERT_EQ(saved, ISO_THREADS * ISO_ROUNDS);

    /* exactly the successful writes are stored, and nothing of the failed ones */
    CheckpointInfo *c = NULL;
    size_t n = 0;
    bool more = true;
    ASSERT_OK(store_checkpoint_list(s, "acme/real", 0, 1000, &c, &n, &more, NULL));
    checkpoint_infos_free(c, n);
    ASSERT_EQ(n, saved);
    ASSERT_FALSE(more);
    EventFilter ef = {.instance_key = "acme/real", .type = "ok", .limit = 1000};
    EventRecord *ev = NULL;
    ASSERT_OK(store_event_list(s, &ef, &ev, &n, NULL, NULL));
    event_records_free(ev, n);
    ASSERT_EQ(n, saved);
    InstanceRecord got;
    ASSERT_OK(store_instance_get(s, "acme/real", NULL, &got, NULL));
    ASSERT_EQ(got.status, INSTANCE_PENDING);
    ASSERT_STREQ(got.tenant_id, "acme");
    instance_record_done(&got);
    ASSERT_EQ(store_instance_get(s, "acme/ghost-0-0", NULL, &got, NULL), -ENOENT);
    uint64_t counts[_INSTANCE_STATUS_MAX];
    ASSERT_OK(store_instance_count_by_status(s, NULL, counts, NULL));
    ASSERT_EQ(counts[INSTANCE_PENDING], 1); /* "real" alone: no ghost row slipped in */
    s = store_close(s);
}

TEST(failing_writes_do_not_disturb_others)
{
    check_isolation(open_store());
}

/* Backend-specific: with the fault point that loses every second batch's transaction (as a
 * failed COMMIT or an I/O error would), each op of a lost batch runs again alone, and every
 * caller still gets the result of its own write. */
#ifdef RUNTARA_FAULT_INJECTION
/* A store whose every second batch's transaction is lost (RUNTARA_FAULT_STORE_LOSE_BATCH). */
static Store *open_store_losing_every_second_batch(void)
{
    setenv("RUNTARA_FAULT_STORE_LOSE_BATCH", "2", 1);
    Store *s = open_store();
    unsetenv("RUNTARA_FAULT_STORE_LOSE_BATCH");
    return s;
}
#endif

/* ---- the visible hook of instance creation ---- */

/* One create with a visible hook: what the hook saw, read back through the store's readers
 * while the create had not returned yet. */
typedef struct {
    Store *s;
    const char *id;
    atomic_int calls;
    bool seen;     /* the hook read the new row back */
    bool returned; /* set by the creating thread once the create returned */
} Visible;

static void note_visible(void *userdata)
{
    Visible *v = userdata;
    InstanceRecord got;
    bool found = store_instance_get(v->s, K(v->id), NULL, &got, NULL) == 0;
    v->seen = found && !v->returned && got.status == INSTANCE_PENDING;
    if (found)
        instance_record_done(&got);
    atomic_fetch_add(&v->calls, 1);
}

static int create_visible(Store *s, const char *id, Visible *v, Error *e)
{
    InstanceRecord rec = {.instance_id = (char *)id, .tenant_id = "acme", .image_id = "img"};
    *v = (Visible){.s = s, .id = id};
    int r = store_instance_create(s, &rec, NULL, note_visible, v, e);
    v->returned = true;
    return r;
}

TEST(instance_create_calls_visible_once_the_row_is_readable)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    Visible v;
    ASSERT_OK(create_visible(s, "vis", &v, NULL));
    ASSERT_EQ(atomic_load(&v.calls), 1);
    ASSERT_TRUE(v.seen);
    /* no row inserted, no call: a duplicate id, and a create refused before the store */
    ASSERT_EQ(create_visible(s, "vis", &v, NULL), -EEXIST);
    ASSERT_EQ(atomic_load(&v.calls), 0);
    InstanceRecord bad = {.instance_id = "vis-2", .tenant_id = "acme"};
    ASSERT_EQ(store_instance_create(s, &bad, NULL, note_visible, &v, NULL), -EINVAL);
    ASSERT_EQ(atomic_load(&v.calls), 0);
    s = store_close(s);
}

#define VIS_THREADS 16
#define VIS_ROUNDS 20

typedef struct {
    Stepper w;
    int won[VIS_ROUNDS];        /* this thread inserted the round's shared id */
    Visible shared[VIS_ROUNDS]; /* its hook on the shared id */
} VisWriter;

/* One round, all threads at once, so the creates share batches: an own id (with a hook on even
 * threads, none on odd ones), then the round's shared id (one wins, with a hook). */
static bool visible_round(Stepper *w, int i)
{
    VisWriter *vw = (VisWriter *)w;
    Failure *f = &w->f;
    char own[32], shared[32];
    snprintf(own, sizeof own, "own-%d-%d", w->t, i);
    snprintf(shared, sizeof shared, "shared-%d", i);
    Visible v;
    int r;
    if (w->t % 2 == 0) {
        r = create_visible(w->s, own, &v, NULL);
        CHECK(f, r == 0 && atomic_load(&v.calls) == 1 && v.seen, "%s: %d, %d calls, seen %d", own,
              r, atomic_load(&v.calls), v.seen);
    } else {
        r = create_instance(w->s, own, "acme", "img", 0);
        CHECK(f, r == 0, "%s: %d", own, r);
    }
    r = create_visible(w->s, xstrdup(shared), &vw->shared[i], NULL);
    CHECK(f, r == 0 || r == -EEXIST, "%s: %d", shared, r);
    vw->won[i] = r == 0;
    int calls = atomic_load(&vw->shared[i].calls);
    CHECK(f, calls == vw->won[i] && (!vw->won[i] || vw->shared[i].seen), "%s: %d calls, won %d",
          shared, calls, vw->won[i]);
    return true;
}

/* Run the rounds on s (which it closes): every inserted row's hook ran exactly once, and saw
 * it; no hook ran for a create that lost. */
static void check_visible_hooks(Store *s)
{
    ASSERT_NOT_NULL(s);
    VisWriter *w = xcalloc(VIS_THREADS, sizeof *w);
    bool failed = !steppers_run(s, w, sizeof *w, VIS_THREADS, VIS_ROUNDS, visible_round);
    int winners[VIS_ROUNDS] = {0};
    for (int t = 0; t < VIS_THREADS; t++)
        for (int i = 0; i < VIS_ROUNDS; i++) {
            winners[i] += w[t].won[i];
            free((char *)w[t].shared[i].id);
        }
    free(w);
    if (failed) {
        store_close(s);
        TEST_FAIL("a writer thread failed a check");
    }
    for (int i = 0; i < VIS_ROUNDS; i++)
        ASSERT_EQ(winners[i], 1);
    uint64_t counts[_INSTANCE_STATUS_MAX];
    ASSERT_OK(store_instance_count_by_status(s, NULL, counts, NULL));
    ASSERT_EQ(counts[INSTANCE_PENDING], VIS_THREADS * VIS_ROUNDS + VIS_ROUNDS);
    s = store_close(s);
}

TEST(instance_create_hooks_in_shared_batches)
{
    check_visible_hooks(open_store());
}

TEST(lost_batches_run_again)
{
#ifdef RUNTARA_FAULT_INJECTION
    check_isolation(open_store_losing_every_second_batch());
#else
    TEST_SKIP("built without fault injection");
#endif
}

/* A lost batch publishes nothing, so its hooks wait for the ops' runs alone: still once each. */
TEST(lost_batches_call_visible_hooks_once)
{
#ifdef RUNTARA_FAULT_INJECTION
    check_visible_hooks(open_store_losing_every_second_batch());
#else
    TEST_SKIP("built without fault injection");
#endif
}

/* The schema cascades an instance's deletion to its checkpoints, events, signals and custom
 * signals (retention deletes instances; the API does not). The row is deleted behind the store's
 * back, and what is left is read through the store. */
TEST(instance_delete_cascades)
{
    _cleanup_free_ char *url = test_url();
    Store *s = NULL;
    ASSERT_OK(store_open(url, &s, NULL));
    ASSERT_OK(create_instance(s, "i", "acme", "img", 0));
    ASSERT_OK(create_instance(s, "keep", "acme", "img", 0));
    const char *ids[] = {"i", "keep"};
    for (int k = 0; k < 2; k++) {
        ASSERT_EQ(store_checkpoint_save(s, K(ids[k]), "c", NULL, "x", 1, NULL, NULL, NULL, NULL),
                  1);
        ASSERT_OK(store_event_append(s, K(ids[k]), "log", NULL, NULL, NULL, NULL));
        ASSERT_EQ(store_signal_send(s, K(ids[k]), SIGNAL_PAUSE, NULL, NULL), 1);
        ASSERT_OK(store_custom_signal_put(s, K(ids[k]), "w", NULL, NULL));
    }
    s = store_close(s);
    ASSERT_OK(raw_exec(url, backend() == STORE_SQLITE
                                ? "PRAGMA foreign_keys = ON; DELETE FROM instances WHERE "
                                  "instance_id = 'i'"
                                : "DELETE FROM instances WHERE instance_id = 'i'"));
    ASSERT_OK(store_open(url, &s, NULL));
    /* "keep" keeps one checkpoint, two events (checkpoint + log), a signal and a custom signal;
     * "i" has none left */
    for (int k = 0; k < 2; k++) {
        size_t want = k == 0 ? 0 : 1;
        CheckpointInfo *cps = NULL;
        size_t n_cps = 9;
        ASSERT_OK(store_checkpoint_list(s, K(ids[k]), 0, 10, &cps, &n_cps, NULL, NULL));
        checkpoint_infos_free(cps, n_cps);
        EventRecord *ev = NULL;
        size_t n_ev = 9;
        EventFilter f = {.instance_key = K(ids[k]), .limit = 10};
        ASSERT_OK(store_event_list(s, &f, &ev, &n_ev, NULL, NULL));
        event_records_free(ev, n_ev);
        SignalKind kind;
        int sig = store_signal_get(s, K(ids[k]), &kind, NULL, NULL);
        int custom = store_custom_signal_exists(s, K(ids[k]), "w", NULL);
        ASSERT_EQ(n_cps, want);
        ASSERT_EQ(n_ev, 2 * want);
        ASSERT_EQ((size_t)sig, want);
        ASSERT_EQ((size_t)custom, want);
    }
    s = store_close(s);
}

/* PostgreSQL's enum types refuse a status or signal kind the schema does not name: the corrupt
 * rows sqlite_unknown_names_are_corrupt_rows reads cannot be written. */
TEST(pg_unknown_names_are_refused_by_the_schema)
{
    ONLY_ON(STORE_POSTGRES, "PostgreSQL");
    _cleanup_free_ char *url = test_url();
    Store *s = NULL;
    ASSERT_OK(store_open(url, &s, NULL));
    ASSERT_OK(create_instance(s, "i", "acme", "img", 0));
    ASSERT_EQ(store_signal_send(s, "acme/i", SIGNAL_PAUSE, NULL, NULL), 1);
    ASSERT_EQ(raw_exec(url, "UPDATE instances SET status = 'exploded'"), -EIO);
    ASSERT_EQ(raw_exec(url, "UPDATE signals SET type = 'kill'"), -EIO);
    InstanceRecord got;
    ASSERT_OK(store_instance_get(s, "acme/i", NULL, &got, NULL));
    ASSERT_EQ(got.status, INSTANCE_PENDING);
    instance_record_done(&got);
    s = store_close(s);
}

/* Write sql into the closed store at url behind its back, CHECK constraints off: rows no
 * version of the daemon writes, as a damaged or foreign database may hold. */
static int corrupt(const char *url, const char *sql)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open(url + 7, &db);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "PRAGMA ignore_check_constraints = ON", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -EIO;
}

/* Backend-specific (it writes the rows itself): a status or signal kind the store does not know
 * is a corrupt row, an error with a message for every read that meets it, never a value. */
TEST(sqlite_unknown_names_are_corrupt_rows)
{
    ONLY_ON(STORE_SQLITE, "SQLite");
    _cleanup_free_ char *url = test_url();
    Store *s = NULL;
    ASSERT_OK(store_open(url, &s, NULL));
    ASSERT_OK(create_instance(s, "i", "acme", "img", 0));
    ASSERT_OK(create_instance(s, "ok", "acme", "img", 0));
    ASSERT_EQ(store_signal_send(s, "acme/ok", SIGNAL_PAUSE, NULL, NULL), 1);
    s = store_close(s);
    ASSERT_OK(corrupt(url, "UPDATE instances SET status = 'exploded' WHERE instance_id = 'i'; "
                           "UPDATE signals SET type = 'kill'"));
    ASSERT_OK(store_open(url, &s, NULL));

    Error e = ERROR_INIT;
    InstanceRecord got;
    ASSERT_EQ(store_instance_get(s, "acme/i", NULL, &got, &e), -EIO);
    ASSERT_STREQ(error_message(&e), "corrupt instance row \"acme/i\": unknown status \"exploded\"");
    error_done(&e);
    ASSERT_EQ(store_instance_find(s, "i", &got, &e), -EIO);
    error_done(&e);
    InstanceRecord *rows = NULL;
    size_t n = 0;
    InstanceFilter f = {.tenant_id = "acme", .limit = 10};
    ASSERT_EQ(store_instance_list(s, &f, &rows, &n, NULL, NULL, NULL, &e), -EIO);
    ASSERT_NULL(rows);
    error_done(&e);
    uint64_t counts[_INSTANCE_STATUS_MAX];
    ASSERT_EQ(store_instance_count_by_status(s, NULL, counts, &e), -EIO);
    ASSERT_STREQ(error_message(&e), "corrupt instance row: unknown status \"exploded\"");
    error_done(&e);

    /* the other rows read as ever */
    ASSERT_OK(store_instance_get(s, "acme/ok", NULL, &got, NULL));
    ASSERT_EQ(got.status, INSTANCE_PENDING);
    instance_record_done(&got);
    f.has_status = true;
    f.status = INSTANCE_PENDING;
    ASSERT_OK(store_instance_list(s, &f, &rows, &n, NULL, NULL, NULL, NULL));
    ASSERT_EQ(n, 1);
    instance_records_free(rows, n);

    SignalKind kind;
    ASSERT_EQ(store_signal_get(s, "acme/ok", &kind, NULL, &e), -EIO);
    ASSERT_STREQ(error_message(&e), "corrupt signal row of instance \"acme/ok\": unknown kind "
                                    "\"kill\"");
    error_done(&e);
    /* a save that reports the pending signal meets it too, and stores nothing */
    ASSERT_EQ(store_checkpoint_save(s, "acme/ok", "c", NULL, "x", 1, NULL, NULL, &kind, &e), -EIO);
    error_done(&e);
    void *data = NULL;
    size_t n_data = 0;
    ASSERT_EQ(store_checkpoint_get(s, "acme/ok", "c", &data, &n_data, NULL, NULL), -ENOENT);
    ASSERT_EQ(store_signal_ack(s, "acme/ok", SIGNAL_PAUSE, NULL), 0);
    s = store_close(s);
}

/* ---- asynchronous checkpoint saves (store_checkpoint_save_async) ---- */

/* Completions of a group of asynchronous saves: the test waits until none is left. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int left;
} Pending;

/* What one completion saw (copied: the store frees what the callback leaves). */
typedef struct {
    Pending *p;
    int calls;
    int result;
    size_t n;
    bool has_data;
    char data[64];
    char signal[16];
    int code;
    char msg[128];
    char ikey[STORE_INSTANCE_KEY_MAX + 1]; /* the instance key, alive until done runs */
} Saved;

static void pending_init(Pending *p, int n)
{
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->left = n;
}

static void pending_wait(Pending *p)
{
    pthread_mutex_lock(&p->lock);
    while (p->left > 0)
        pthread_cond_wait(&p->cond, &p->lock);
    pthread_mutex_unlock(&p->lock);
}

static void pending_done(Pending *p)
{
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
}

static void saved_cb(CheckpointSaved *res, void *userdata)
{
    Saved *s = userdata;
    Pending *p = s->p;
    pthread_mutex_lock(&p->lock);
    s->calls++;
    s->result = res->result;
    s->n = res->n;
    s->has_data = res->data != NULL;
    if (res->data)
        memcpy(s->data, res->data, MIN(res->n, sizeof s->data - 1));
    snprintf(s->signal, sizeof s->signal, "%s",
             res->signal >= 0 ? signal_kind_to_string(res->signal) : "");
    s->code = res->error.code;
    snprintf(s->msg, sizeof s->msg, "%s", res->error.msg ? res->error.msg : "");
    p->left--;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

static int save_async(Store *s, const char *id, const char *key, const char *data, Saved *out,
                      Pending *p, Error *e)
{
    *out = (Saved){.p = p};
    snprintf(out->ikey, sizeof out->ikey, "%s", K(id));
    return store_checkpoint_save_async(s, out->ikey, key, NULL, data, strlen(data), saved_cb, out,
                                       e);
}

TEST(checkpoint_async_saves_and_replays)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ASSERT_OK(create_instance(s, "i", "acme", "img", 0));
    Pending p;
    Saved a[5];

    /* a new key: 1, no bytes handed back (they are the caller's), no signal */
    pending_init(&p, 1);
    ASSERT_OK(save_async(s, "i", "step-1", "first", &a[0], &p, NULL));
    pending_wait(&p);
    ASSERT_EQ(a[0].result, 1);
    ASSERT_EQ(a[0].n, 5);
    ASSERT_FALSE(a[0].has_data);
    ASSERT_STREQ(a[0].signal, "");
    void *data = NULL;
    size_t n = 0;
    ASSERT_OK(store_checkpoint_get(s, "acme/i", "step-1", &data, &n, NULL, NULL));
    ASSERT_TRUE(n == 5 && memcmp(data, "first", 5) == 0);
    free(data);

    /* the same key again: 0 with the stored bytes, and the pending signal of the same commit */
    ASSERT_EQ(store_signal_send(s, "acme/i", SIGNAL_PAUSE, NULL, NULL), 1);
    pending_init(&p, 2);
    ASSERT_OK(save_async(s, "i", "step-1", "second!", &a[1], &p, NULL));
    ASSERT_OK(save_async(s, "i", "step-2", "x", &a[2], &p, NULL));
    pending_wait(&p);
    ASSERT_EQ(a[1].result, 0);
    ASSERT_TRUE(a[1].has_data);
    ASSERT_EQ(a[1].n, 5);
    ASSERT_STREQ(a[1].data, "first");
    ASSERT_STREQ(a[1].signal, "pause");
    ASSERT_EQ(a[2].result, 1);
    ASSERT_STREQ(a[2].signal, "pause");

    /* an unknown instance: the error reaches the completion */
    pending_init(&p, 1);
    ASSERT_OK(save_async(s, "ghost", "k", "x", &a[3], &p, NULL));
    pending_wait(&p);
    ASSERT_EQ(a[3].result, -ENOENT);
    ASSERT_EQ(a[3].code, -ENOENT);
    ASSERT_STREQ(a[3].msg, "instance \"acme/ghost\" does not exist");

    /* refused arguments: an error at once, and the completion is never called */
    Error e = ERROR_INIT;
    ASSERT_EQ(save_async(s, "i", "", "x", &a[4], &p, &e), -EINVAL);
    error_done(&e);

    /* after quiescing, submissions are refused; synchronous writes still work */
    store_quiesce(s);
    ASSERT_EQ(save_async(s, "i", "step-3", "x", &a[4], &p, &e), -ESHUTDOWN);
    ASSERT_STREQ(error_message(&e), "cannot queue the checkpoint: the store is shutting down");
    error_done(&e);
    ASSERT_EQ(store_checkpoint_save(s, "acme/i", "step-3", NULL, "y", 1, NULL, NULL, NULL, NULL),
              1);
    s = store_close(s);
    /* closed: every completion has run, and each exactly once */
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(a[i].calls, 1);
    ASSERT_EQ(a[4].calls, 0);
    pending_done(&p);
}

/* A thread keeping batches running, so asynchronous saves queue behind them instead of
 * committing at once in their submitter. */
typedef struct {
    Store *s;
    atomic_bool stop;
    int failures;
} Busy;

static void *busy_writer(void *arg)
{
    Busy *b = arg;
    while (!atomic_load(&b->stop))
        if (store_event_append(b->s, "acme/busy", "log", NULL, NULL, NULL, NULL) < 0)
            b->failures++;
    return NULL;
}

#define ORDER_ROUNDS 200

TEST(checkpoint_async_ordered_with_sync_writes)
{
    Store *s = open_store();
    ASSERT_NOT_NULL(s);
    ASSERT_OK(create_instance(s, "i", "acme", "img", 0));
    ASSERT_OK(create_instance(s, "busy", "acme", "img", 0));
    Busy b = {.s = s};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, busy_writer, &b), 0);

    /* an asynchronous save, then a synchronous one of the same key from the same thread: the
     * asynchronous one was queued first, so it is applied first and wins */
    Pending p;
    pending_init(&p, ORDER_ROUNDS);
    Saved *a = xcalloc(ORDER_ROUNDS, sizeof *a);
    int sync_won = 0, wrong_bytes = 0;
    char(*keys)[16] = xcalloc(ORDER_ROUNDS, sizeof *keys); /* borrowed until each completes */
    for (int i = 0; i < ORDER_ROUNDS; i++) {
        char *key = keys[i];
        snprintf(key, sizeof keys[i], "k%d", i);
        ASSERT_OK(save_async(s, "i", key, "async", &a[i], &p, NULL));
        void *data = NULL;
        size_t n = 0;
        int r = store_checkpoint_save(s, "acme/i", key, NULL, "sync", 4, &data, &n, NULL, NULL);
        sync_won += r != 0;
        wrong_bytes += !(n == 5 && memcmp(data, "async", 5) == 0);
        free(data);
    }
    pending_wait(&p);
    atomic_store(&b.stop, true);
    pthread_join(th, NULL);
    ASSERT_EQ(b.failures, 0);
    ASSERT_EQ(sync_won, 0);
    ASSERT_EQ(wrong_bytes, 0);
    for (int i = 0; i < ORDER_ROUNDS; i++)
        ASSERT_EQ(a[i].result, 1);
    s = store_close(s);
    for (int i = 0; i < ORDER_ROUNDS; i++)
        ASSERT_EQ(a[i].calls, 1);
    free(a);
    free(keys);
    pending_done(&p);
}

#define ASYNC_THREADS 16
#define ASYNC_PER_THREAD 150

typedef struct {
    Store *s;
    int t;
    pthread_barrier_t *start;
    Pending p;
    Saved saved[ASYNC_PER_THREAD];
    char keys[ASYNC_PER_THREAD][16], bytes[ASYNC_PER_THREAD][32];
    int refused;
} Submitter;

/* Saves on the thread's own instance, and every third one for an instance that does not
 * exist: failures among successes in the same batches. */
static void *submit_many(void *arg)
{
    Submitter *m = arg;
    char own[32];
    snprintf(own, sizeof own, "own-%d", m->t);
    pthread_barrier_wait(m->start);
    for (int i = 0; i < ASYNC_PER_THREAD; i++) {
        /* borrowed by the store until the completion runs: one buffer per save */
        char *key = m->keys[i], *data = m->bytes[i];
        snprintf(key, sizeof m->keys[i], "k%d", i);
        snprintf(data, sizeof m->bytes[i], "t%d-%d", m->t, i);
        if (save_async(m->s, i % 3 == 2 ? "ghost" : own, key, data, &m->saved[i], &m->p, NULL) <
            0) {
            m->refused++;
            pthread_mutex_lock(&m->p.lock);
            m->p.left--;
            pthread_mutex_unlock(&m->p.lock);
        }
    }
    pending_wait(&m->p);
    return NULL;
}

static void check_many_submitters(Store *s)
{
    ASSERT_NOT_NULL(s);
    char id[32];
    for (int t = 0; t < ASYNC_THREADS; t++) {
        snprintf(id, sizeof id, "own-%d", t);
        ASSERT_OK(create_instance(s, id, "acme", "img", 0));
    }
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, ASYNC_THREADS);
    Submitter *m = xcalloc(ASYNC_THREADS, sizeof *m);
    pthread_t th[ASYNC_THREADS];
    for (int t = 0; t < ASYNC_THREADS; t++) {
        m[t].s = s;
        m[t].t = t;
        m[t].start = &start;
        pending_init(&m[t].p, ASYNC_PER_THREAD);
        ASSERT_EQ(pthread_create(&th[t], NULL, submit_many, &m[t]), 0);
    }
    for (int t = 0; t < ASYNC_THREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&start);
    s = store_close(s);

    int bad = 0;
    for (int t = 0; t < ASYNC_THREADS; t++) {
        bad += m[t].refused;
        for (int i = 0; i < ASYNC_PER_THREAD; i++) {
            const Saved *v = &m[t].saved[i];
            bool ok = v->calls == 1 && (i % 3 == 2 ? v->result == -ENOENT && v->code == -ENOENT
                                                   : v->result == 1 && v->n > 0 && !v->has_data);
            if (!ok && bad++ < 5)
                printf("# thread %d save %d: calls %d, result %d\n", t, i, v->calls, v->result);
        }
        pending_done(&m[t].p);
    }
    free(m);
    ASSERT_EQ(bad, 0);
}

TEST(checkpoint_async_many_submitters)
{
    check_many_submitters(open_store());
}

/* With every second batch's transaction lost, each op runs again alone and every completion
 * still gets its own result. */
TEST(async_lost_batches_run_again)
{
#ifdef RUNTARA_FAULT_INJECTION
    check_many_submitters(open_store_losing_every_second_batch());
#else
    TEST_SKIP("built without fault injection");
#endif
}

/* Backend-specific: the database belongs to the process that opened it (the "unix-excl" VFS):
 * another process can neither open a store on it nor read it, until the first closes it. The
 * other process is forked before this one opens anything (SQLite's record of the locks a
 * process holds is in its memory, which a fork would copy) and told when to try by a pipe. */
static int held_child(const char *url, int go_fd, int back_fd)
{
    char round;
    if (read(go_fd, &round, 1) != 1)
        return 4;
    Store *other = NULL;
    Error e = ERROR_INIT;
    int r = store_open(url, &other, &e);
    if (r != -EBUSY || !strstr(error_message(&e), "another process has it open"))
        return 2;
    sqlite3 *db = NULL; /* nor can a plain reader read it */
    int rc = sqlite3_open_v2(url + 7, &db, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "SELECT COUNT(*) FROM instances", NULL, NULL, NULL);
    sqlite3_close(db);
    if (rc != SQLITE_BUSY)
        return 3;
    if (write(back_fd, "t", 1) != 1 || read(go_fd, &round, 1) != 1) /* the first has closed it */
        return 4;
    r = store_open(url, &other, &e);
    InstanceRecord rec;
    if (r < 0 || store_instance_get(other, "acme/i", NULL, &rec, NULL) < 0)
        return 1;
    return 0;
}

TEST(sqlite_database_is_held_by_one_process)
{
    ONLY_ON(STORE_SQLITE, "SQLite");
    _cleanup_free_ char *url = test_url();
    int go[2], back[2];
    ASSERT_EQ(pipe(go), 0);
    ASSERT_EQ(pipe(back), 0);
    pid_t pid = fork();
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) {
        close(go[1]);
        close(back[0]);
        _exit(held_child(url, go[0], back[1]));
    }
    close(go[0]);
    close(back[1]);
    Store *s = NULL;
    ASSERT_OK(store_open(url, &s, NULL));
    ASSERT_OK(create_instance(s, "i", "acme", "img", 0));
    ASSERT_EQ(write(go[1], "1", 1), 1);
    char tried;
    (void)!read(back[0], &tried, 1); /* its two tries are over (or it left: see its status) */
    close(back[0]);
    s = store_close(s);
    ASSERT_EQ(write(go[1], "2", 1), 1);
    close(go[1]);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
}

typedef struct BackupWriter {
    Store *s;
    atomic_bool stop;
    int saved;
} BackupWriter;

static void *backup_writer(void *arg)
{
    BackupWriter *w = arg;
    while (!atomic_load(&w->stop)) {
        char key[32];
        snprintf(key, sizeof key, "k%d", w->saved);
        if (store_checkpoint_save(w->s, "acme/i", key, NULL, "x", 1, NULL, NULL, NULL, NULL) != 1)
            break;
        w->saved++;
    }
    return NULL;
}

/* A PostgreSQL store is backed up with pg_dump, and store_backup() says so. */
TEST(pg_backup_names_pg_dump)
{
    ONLY_ON(STORE_POSTGRES, "PostgreSQL");
    _cleanup_free_ char *url = test_url();
    _cleanup_free_ char *dir = tests_tmpdir();
    _cleanup_free_ char *path = xasprintf("%s/backup.db", dir);
    Store *s = NULL;
    ASSERT_OK(store_open(url, &s, NULL));
    Error e = ERROR_INIT;
    ASSERT_EQ(store_backup(s, path, 0, &e), -ENOSYS);
    ASSERT_TRUE(strstr(error_message(&e), "postgres database") &&
                strstr(error_message(&e), "pg_dump"));
    ASSERT_TRUE(access(path, F_OK) < 0);
    error_done(&e);
    s = store_close(s);
}

/* One daemon per PostgreSQL database in this version: a second store on it is refused, with a
 * message that says so, until the first closes. */
/* Owners: the rows a store creates, and those it moves to pending, are its daemon's; a wake
 * list and an instance list can keep to one owner. */
TEST(instances_belong_to_the_daemon_that_creates_or_launches_them)
{
    _cleanup_free_ char *url = test_url();
    Store *s = NULL;
    ASSERT_OK(store_open(url, &s, NULL));
    ASSERT_OK(create_instance(s, "legacy", "acme", "img", 0)); /* before an owner: none */
    store_set_owner(s, "d-a");
    ASSERT_OK(store_daemon_register(s, "host-1", 11, 60 * USEC_PER_SEC, NULL));
    ASSERT_OK(create_instance(s, "i1", "acme", "img", 0));
    InstanceRecord rec;
    ASSERT_OK(store_instance_get(s, "acme/i1", NULL, &rec, NULL));
    ASSERT_STREQ(rec.owner, "d-a");
    instance_record_done(&rec);
    ASSERT_OK(store_instance_get(s, "acme/legacy", NULL, &rec, NULL));
    ASSERT_NULL(rec.owner);
    instance_record_done(&rec);

    /* a suspended instance woken by another daemon becomes that one's */
    InstanceUpdate sleep = {.to_status = INSTANCE_SUSPENDED, .sleep_until = 5 * USEC_PER_SEC};
    ASSERT_EQ(store_instance_transition(s, "acme/i1", INSTANCE_PENDING, &sleep, NULL), 1);
    InstanceWake *w = NULL;
    size_t n = 0;
    ASSERT_OK(store_instance_list_wakes(s, "d-a", 0, 10, &w, &n, NULL, NULL));
    ASSERT_EQ(n, 1u);
    instance_wakes_free(w, n);
    store_set_owner(s, "d-b");
    ASSERT_OK(store_instance_list_wakes(s, "d-b", 0, 10, &w, &n, NULL, NULL));
    ASSERT_EQ(n, 0u);
    instance_wakes_free(w, n);
    InstanceUpdate wake = {.to_status = INSTANCE_PENDING, .guard_sleep_until = 5 * USEC_PER_SEC};
    ASSERT_EQ(store_instance_transition(s, "acme/i1", INSTANCE_SUSPENDED, &wake, NULL), 1);
    ASSERT_OK(store_instance_get(s, "acme/i1", NULL, &rec, NULL));
    ASSERT_STREQ(rec.owner, "d-b");
    instance_record_done(&rec);
    /* other moves leave the owner */
    ASSERT_EQ(move(s, "i1", INSTANCE_PENDING, INSTANCE_RUNNING), 1);
    store_set_owner(s, "d-c");
    ASSERT_EQ(move(s, "i1", INSTANCE_RUNNING, INSTANCE_COMPLETED), 1);
    ASSERT_OK(store_instance_get(s, "acme/i1", NULL, &rec, NULL));
    ASSERT_STREQ(rec.owner, "d-b");
    instance_record_done(&rec);

    InstanceFilter f = {.owner = "d-b", .limit = 10};
    InstanceRecord *rows = NULL;
    uint64_t total = 0;
    ASSERT_OK(store_instance_list(s, &f, &rows, &n, NULL, &total, NULL, NULL));
    ASSERT_EQ(n, 1u);
    ASSERT_EQ(total, 1u);
    ASSERT_STREQ(rows[0].instance_id, "i1");
    instance_records_free(rows, n);
    s = store_close(s);
}

/* A takeover: the instances that need a daemon and have none (no owner, an owner that stopped
 * cleanly, or with expired_too one whose lease ended) go to the taker; finished ones and those
 * of a live daemon stay. The dead daemon's row goes, so its renewal says it lost them. */
TEST(instances_of_a_daemon_whose_lease_ended_are_taken_over)
{
    _cleanup_free_ char *url = test_url();
    Store *s = NULL;
    ASSERT_OK(store_open(url, &s, NULL));
    ASSERT_OK(create_instance(s, "orphan", "acme", "img", 0));
    store_set_owner(s, "d-dead");
    ASSERT_OK(store_daemon_register(s, "host-1", 11, 1, NULL)); /* a lease of 1 us */
    ASSERT_OK(create_instance(s, "p", "acme", "img", 0));
    ASSERT_OK(create_instance(s, "r", "acme", "img", 0));
    ASSERT_EQ(move(s, "r", INSTANCE_PENDING, INSTANCE_RUNNING), 1);
    ASSERT_OK(create_instance(s, "done", "acme", "img", 0));
    ASSERT_EQ(move(s, "done", INSTANCE_PENDING, INSTANCE_COMPLETED), 1);
    store_set_owner(s, "d-live");
    ASSERT_OK(store_daemon_register(s, "host-2", 12, 60 * USEC_PER_SEC, NULL));
    ASSERT_OK(create_instance(s, "mine", "acme", "img", 0));
    usleep(2000);

    store_set_owner(s, "d-taker");
    ASSERT_OK(store_daemon_register(s, "host-3", 13, 60 * USEC_PER_SEC, NULL));
    /* the daemons, by id: whether each lease lives, and what each owns */
    DaemonRecord *d = NULL;
    size_t nd = 0;
    ASSERT_OK(store_daemon_list(s, &d, &nd, NULL));
    ASSERT_EQ(nd, 3u);
    ASSERT_STREQ(d[0].id, "d-dead");
    ASSERT_STREQ(d[0].host, "host-1");
    ASSERT_EQ(d[0].pid, 11);
    ASSERT_FALSE(d[0].live);
    ASSERT_EQ(d[0].instances, 2u); /* p and r; not the completed one */
    ASSERT_STREQ(d[1].id, "d-live");
    ASSERT_TRUE(d[1].live);
    ASSERT_EQ(d[1].instances, 1u);
    ASSERT_TRUE(d[1].lease_until > d[1].started_at);
    ASSERT_STREQ(d[2].id, "d-taker");
    ASSERT_EQ(d[2].instances, 0u);
    daemon_records_free(d, nd);
    char **keys = NULL;
    size_t n = 0;
    /* without expired_too, only the instance of no daemon */
    ASSERT_OK(store_instance_adopt(s, false, 10, &(int64_t){0}, &keys, &n, NULL));
    ASSERT_EQ(n, 1u);
    ASSERT_STREQ(keys[0], "acme/orphan");
    store_keys_free(keys, n);
    /* one pass in batches: the cursor moves to the last row taken */
    int64_t at = 0;
    ASSERT_OK(store_instance_adopt(s, true, 1, &at, &keys, &n, NULL)); /* the limit holds */
    ASSERT_EQ(n, 1u);
    InstanceRecord first;
    ASSERT_OK(store_instance_get(s, keys[0], NULL, &first, NULL));
    ASSERT_EQ(at, first.seq);
    instance_record_done(&first);
    store_keys_free(keys, n);
    ASSERT_OK(store_instance_adopt(s, true, 10, &at, &keys, &n, NULL));
    ASSERT_EQ(n, 1u);
    store_keys_free(keys, n);
    int64_t end = at;
    ASSERT_OK(store_instance_adopt(s, true, 10, &at, &keys, &n, NULL));
    ASSERT_EQ(n, 0u);
    ASSERT_EQ(at, end); /* nothing taken: the cursor stays */
    store_keys_free(keys, n);
    ASSERT_OK(store_daemon_list(s, &d, &nd, NULL)); /* the dead one's row went with its rows */
    ASSERT_EQ(nd, 2u);
    ASSERT_STREQ(d[0].id, "d-live");
    ASSERT_EQ(d[1].instances, 3u);
    daemon_records_free(d, nd);
    const char *want[][2] = {{"acme/orphan", "d-taker"},
                             {"acme/p", "d-taker"},
                             {"acme/r", "d-taker"},
                             {"acme/done", "d-dead"},
                             {"acme/mine", "d-live"}};
    for (size_t i = 0; i < ELEMENTSOF(want); i++) {
        InstanceRecord rec;
        ASSERT_OK(store_instance_get(s, want[i][0], NULL, &rec, NULL));
        ASSERT_STREQ(rec.owner, want[i][1]);
        instance_record_done(&rec);
    }
    store_set_owner(s, "d-dead");
    ASSERT_EQ(store_daemon_renew(s, 60 * USEC_PER_SEC, NULL), 0);
    store_set_owner(s, "d-live");
    ASSERT_EQ(store_daemon_renew(s, 60 * USEC_PER_SEC, NULL), 1);
    /* a clean stop hands over at once */
    ASSERT_OK(store_daemon_unregister(s, NULL));
    store_set_owner(s, "d-taker");
    ASSERT_OK(store_instance_adopt(s, false, 10, &(int64_t){0}, &keys, &n, NULL));
    ASSERT_EQ(n, 1u);
    ASSERT_STREQ(keys[0], "acme/mine");
    store_keys_free(keys, n);
    s = store_close(s);
}

/* A takeover pass reads on from its cursor: the rows at or before it are left for the next pass,
 * so a pass over many rows in batches reads each row once. */
TEST(a_takeover_pass_reads_on_from_its_cursor)
{
    _cleanup_free_ char *url = test_url();
    Store *s = NULL;
    ASSERT_OK(store_open(url, &s, NULL));
    ASSERT_OK(create_instance(s, "a", "acme", "img", 0)); /* no owner yet: every one an orphan */
    ASSERT_OK(create_instance(s, "b", "acme", "img", 0));
    ASSERT_OK(create_instance(s, "c", "acme", "img", 0));
    store_set_owner(s, "d-taker");
    ASSERT_OK(store_daemon_register(s, "host", 1, 60 * USEC_PER_SEC, NULL));
    InstanceRecord b, c;
    ASSERT_OK(store_instance_get(s, "acme/b", NULL, &b, NULL));
    ASSERT_OK(store_instance_get(s, "acme/c", NULL, &c, NULL));
    char **keys = NULL;
    size_t n = 0;
    int64_t at = b.seq;
    ASSERT_OK(store_instance_adopt(s, false, 10, &at, &keys, &n, NULL));
    ASSERT_EQ(n, 1u);
    ASSERT_STREQ(keys[0], "acme/c");
    ASSERT_EQ(at, c.seq);
    store_keys_free(keys, n);
    ASSERT_OK(store_instance_adopt(s, false, 10, &(int64_t){0}, &keys, &n, NULL));
    ASSERT_EQ(n, 2u);
    ASSERT_STREQ(keys[0], "acme/a");
    ASSERT_STREQ(keys[1], "acme/b");
    store_keys_free(keys, n);
    instance_record_done(&b);
    instance_record_done(&c);
    s = store_close(s);
}

/* One id, two machines: the second registration is refused while the first's lease lives; the
 * same machine (a restart after a crash) takes it over. */
TEST(a_daemon_id_is_refused_to_a_second_host_while_its_lease_lives)
{
    _cleanup_free_ char *url = test_url();
    Store *s = NULL;
    ASSERT_OK(store_open(url, &s, NULL));
    store_set_owner(s, "d-x");
    ASSERT_OK(store_daemon_register(s, "host-1", 11, 60 * USEC_PER_SEC, NULL));
    ASSERT_OK(store_daemon_register(s, "host-1", 12, 60 * USEC_PER_SEC, NULL));
    Error e = ERROR_INIT;
    ASSERT_EQ(store_daemon_register(s, "host-2", 13, 60 * USEC_PER_SEC, &e), -EBUSY);
    ASSERT_STREQ(error_message(&e),
                 "daemon id \"d-x\" is in use by a daemon on host \"host-1\" whose lease has not "
                 "ended; hint: each daemon needs its own DATA_DIR (the id is kept in "
                 "DATA_DIR/daemon-id)");
    error_done(&e);
    ASSERT_OK(store_daemon_register(s, "host-1", 14, 1, NULL));
    usleep(2000);
    ASSERT_OK(store_daemon_register(s, "host-2", 15, 60 * USEC_PER_SEC, NULL)); /* ended */
    s = store_close(s);
}

typedef struct Taker {
    Store *s;
    int64_t after; /* the cursor of its one pass */
    char **keys;
    size_t n;
    int r;
} Taker;

static void *take_all(void *arg)
{
    Taker *t = arg;
    for (;;) {
        char **keys = NULL;
        size_t n = 0;
        t->r = store_instance_adopt(t->s, true, 7, &t->after, &keys, &n, NULL);
        if (t->r < 0 || n == 0) {
            store_keys_free(keys, n);
            return NULL;
        }
        t->keys = xrealloc(t->keys, (t->n + n) * sizeof *t->keys);
        memcpy(t->keys + t->n, keys, n * sizeof *keys);
        t->n += n;
        free(keys);
    }
}

/* Daemons taking over at once, each on its own connection: every instance goes to exactly one. */
TEST(pg_concurrent_takeovers_give_each_instance_to_one_daemon)
{
    ONLY_ON(STORE_POSTGRES, "PostgreSQL");
    _cleanup_free_ char *url = test_url();
    Store *s = NULL;
    ASSERT_OK(store_open(url, &s, NULL));
    for (int i = 0; i < 60; i++) {
        char id[16];
        snprintf(id, sizeof id, "i%d", i);
        ASSERT_OK(create_instance(s, id, "acme", "img", 0));
    }
    Taker t[3] = {{0}};
    pthread_t th[3];
    for (size_t i = 0; i < 3; i++) {
        char owner[16];
        snprintf(owner, sizeof owner, "d-%zu", i);
        ASSERT_OK(store_open(url, &t[i].s, NULL));
        store_set_owner(t[i].s, owner);
        ASSERT_OK(store_daemon_register(t[i].s, "host", (int)i, 60 * USEC_PER_SEC, NULL));
    }
    for (size_t i = 0; i < 3; i++)
        ASSERT_EQ(pthread_create(&th[i], NULL, take_all, &t[i]), 0);
    size_t total = 0;
    for (size_t i = 0; i < 3; i++) {
        ASSERT_EQ(pthread_join(th[i], NULL), 0);
        ASSERT_OK(t[i].r);
        total += t[i].n;
        for (size_t k = 0; k < t[i].n; k++) {
            InstanceRecord rec;
            ASSERT_OK(store_instance_get(s, t[i].keys[k], NULL, &rec, NULL));
            char owner[16];
            snprintf(owner, sizeof owner, "d-%zu", i);
            ASSERT_STREQ(rec.owner, owner);
            instance_record_done(&rec);
        }
        store_keys_free(t[i].keys, t[i].n);
        t[i].s = store_close(t[i].s);
    }
    ASSERT_EQ(total, 60u);
    s = store_close(s);
}

/* Another session that holds locks and does not go on (a daemon stopped in the middle of a
 * transaction): a statement that waits for one of its locks fails alone, within half the store's
 * deadline, and says why; the server is not taken for hung, so the next call is answered; a
 * takeover leaves the locked rows for its next round rather than wait. */
TEST(pg_a_lock_held_by_a_stopped_session_fails_one_call_not_the_store)
{
    ONLY_ON(STORE_POSTGRES, "PostgreSQL");
    _cleanup_free_ char *url = test_url();
    Store *s = NULL;
    ASSERT_OK(store_open(url, &s, NULL));
    store_set_timeout(s, 2 * USEC_PER_SEC);
    ASSERT_OK(create_instance(s, "held", "acme", "img", 0));
    ASSERT_OK(create_instance(s, "free", "acme", "img", 0));
    PGconn *other = PQconnectdb(url);
    ASSERT_EQ(PQstatus(other), CONNECTION_OK);
    PGresult *res = PQexec(other, "BEGIN; UPDATE instances SET updated_at = updated_at "
                                  "WHERE instance_key = 'acme/held'");
    ASSERT_EQ(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);

    Error e = ERROR_INIT;
    InstanceUpdate u = {.to_status = INSTANCE_RUNNING};
    ASSERT_EQ(store_instance_transition(s, "acme/held", INSTANCE_PENDING, &u, &e), -ETIMEDOUT);
    ASSERT_TRUE(strstr(error_message(&e), "lock timeout") != NULL);
    ASSERT_TRUE(strstr(error_message(&e), "hint: another session held what it needed") != NULL);
    error_done(&e);
    /* answered, the other instance's write included: nothing took the server for hung */
    ASSERT_EQ(move(s, "free", INSTANCE_PENDING, INSTANCE_RUNNING), 1);
    InstanceRecord rec;
    ASSERT_OK(store_instance_get(s, "acme/held", NULL, &rec, NULL));
    ASSERT_EQ(rec.status, INSTANCE_PENDING);
    instance_record_done(&rec);

    store_set_owner(s, "d-taker");
    ASSERT_OK(store_daemon_register(s, "host", 1, 60 * USEC_PER_SEC, NULL));
    char **keys = NULL;
    size_t n = 0;
    ASSERT_OK(store_instance_adopt(s, false, 10, &(int64_t){0}, &keys, &n, NULL));
    ASSERT_EQ(n, 1u);
    ASSERT_STREQ(keys[0], "acme/free");
    store_keys_free(keys, n);
    PQclear(PQexec(other, "ROLLBACK"));
    /* the locked row was passed over: the next pass takes it */
    ASSERT_OK(store_instance_adopt(s, false, 10, &(int64_t){0}, &keys, &n, NULL));
    ASSERT_EQ(n, 1u);
    ASSERT_STREQ(keys[0], "acme/held");
    store_keys_free(keys, n);
    ASSERT_EQ(move(s, "held", INSTANCE_PENDING, INSTANCE_RUNNING), 1);
    PQfinish(other);
    s = store_close(s);
}

/* Image bytes for every daemon: kept once per content, in parts, read back whole; a store serving
 * one daemon has none to keep. */
TEST(image_bytes_are_kept_for_every_daemon_on_postgres_only)
{
    _cleanup_free_ char *url = test_url();
    _cleanup_free_ char *dir = tests_tmpdir();
    _cleanup_free_ char *in = xasprintf("%s/in", dir), *out = xasprintf("%s/out", dir);
    Store *s = NULL;
    ASSERT_OK(store_open(url, &s, NULL));
    size_t size = 2 * 1024 * 1024 + 123; /* three parts */
    _cleanup_free_ unsigned char *bytes = xmalloc(size);
    for (size_t i = 0; i < size; i++)
        bytes[i] = (unsigned char)(i * 7 + i / 4096);
    int fd = open(in, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT_TRUE(fd >= 0);
    ASSERT_OK(fileio_write_all(fd, bytes, size));
    int got = open(out, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT_TRUE(got >= 0);
    Error e = ERROR_INIT;
    if (backend() == STORE_SQLITE) {
        ASSERT_EQ(store_image_blob_put(s, "ab", fd, size, &e), -ENOSYS);
        ASSERT_STREQ(error_message(&e),
                     "a sqlite store serves one daemon, which keeps image files in its DATA_DIR");
        error_done(&e);
        ASSERT_EQ(store_image_blob_get(s, "ab", got, NULL), -ENOSYS);
    } else {
        ASSERT_EQ(store_image_blob_get(s, "ab", got, &e), -ENOENT);
        ASSERT_STREQ(error_message(&e), "the bytes of image content ab are not in the database");
        error_done(&e);
        ASSERT_OK(store_image_blob_put(s, "ab", fd, size, NULL));
        ASSERT_OK(store_image_blob_put(s, "ab", fd, size, NULL)); /* idempotent */
        ASSERT_OK(store_image_blob_get(s, "ab", got, NULL));
        struct stat st;
        ASSERT_EQ(fstat(got, &st), 0);
        ASSERT_EQ((size_t)st.st_size, size);
        _cleanup_free_ unsigned char *back = xmalloc(size);
        ASSERT_EQ(pread(got, back, size, 0), (ssize_t)size);
        ASSERT_EQ(memcmp(back, bytes, size), 0);
        /* bytes no image row has are collected once an hour old, at the next delete or purge;
         * those an image row has stay */
        ImageRecord rec = {.image_id = "img-cd",
                           .tenant_id = "acme",
                           .name = "n",
                           .runner_type = "native",
                           .labels_json = "{}",
                           .sha256 = "cd",
                           .size_bytes = size};
        ASSERT_OK(store_image_blob_put(s, "cd", fd, size, NULL));
        ASSERT_OK(store_image_insert(s, &rec, NULL));
        ASSERT_OK(raw_exec(url, "UPDATE image_blobs SET created_at = now() - interval '2 hours'"));
        ASSERT_OK(store_image_blob_put(s, "ab", fd, size, NULL)); /* kept again: refreshed */
        ASSERT_OK(raw_exec(url, "UPDATE image_blobs SET created_at = now() - interval '2 hours' "
                                "WHERE sha256 = 'cd'"));
        ASSERT_OK(store_image_delete(s, "img-cd", NULL, NULL));
        ASSERT_EQ(lseek(got, 0, SEEK_SET), 0);
        ASSERT_OK(store_image_blob_get(s, "ab", got, NULL));
        ASSERT_EQ(store_image_blob_get(s, "cd", got, NULL), -ENOENT);
    }
    (void)close(fd);
    (void)close(got);
    s = store_close(s);
}

/* Backend-specific: a backup taken while writes go on is a store of its own, consistent as of
 * one moment (the instance row agrees with its checkpoints), durable, and never overwrites. */
TEST(sqlite_backup_is_a_consistent_copy)
{
    ONLY_ON(STORE_SQLITE, "SQLite");
    _cleanup_free_ char *url = test_url();
    _cleanup_free_ char *dir = tests_tmpdir();
    _cleanup_free_ char *path = xasprintf("%s/backup.db", dir);
    _cleanup_free_ char *burl = xasprintf("sqlite:%s", path);
    Store *s = NULL;
    ASSERT_OK(store_open(url, &s, NULL));
    ASSERT_OK(create_instance(s, "i", "acme", "img", 0));
    BackupWriter w = {.s = s};
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, backup_writer, &w), 0);
    void *data = NULL;
    size_t len = 0;
    while (store_checkpoint_get(s, "acme/i", "k10", &data, &len, NULL, NULL) < 0)
        usleep(1000); /* some saves before the backup */
    free(data);
    Error e = ERROR_INIT;
    ASSERT_OK(store_backup(s, path, STORE_BACKUP_DURABLE, &e));
    struct stat before, after;
    ASSERT_EQ(stat(path, &before), 0);
    ASSERT_EQ(store_backup(s, path, 0, &e), -EEXIST);
    ASSERT_NOT_NULL(strstr(error_message(&e), "the file exists"));
    error_done(&e);
    ASSERT_EQ(stat(path, &after), 0); /* the refused backup left the file alone */
    ASSERT_EQ(before.st_ino, after.st_ino);
    ASSERT_EQ(before.st_size, after.st_size);
    /* a place where no file can be made is refused with the reason */
    _cleanup_free_ char *nodir = xasprintf("%s/missing/backup.db", dir);
    ASSERT_EQ(store_backup(s, nodir, 0, &e), -ENOENT);
    ASSERT_NOT_NULL(strstr(error_message(&e), "could not create backup"));
    error_done(&e);
    atomic_store(&w.stop, true);
    pthread_join(t, NULL);
    s = store_close(s);

    Store *b = NULL;
    ASSERT_OK(store_open(burl, &b, NULL));
    InstanceRecord rec;
    ASSERT_OK(store_instance_get(b, "acme/i", NULL, &rec, NULL));
    CheckpointInfo *cps = NULL;
    size_t n = 0;
    bool more = false;
    ASSERT_OK(store_checkpoint_list(b, "acme/i", 0, STORE_LIST_MAX, &cps, &n, &more, NULL));
    ASSERT_TRUE(n >= 11 && (int)n <= w.saved);
    ASSERT_NOT_NULL(rec.checkpoint_id); /* the row names the newest checkpoint in the copy */
    char want[32];
    snprintf(want, sizeof want, "k%zu", n - 1);
    ASSERT_STREQ(rec.checkpoint_id, want);
    ASSERT_FALSE(more);
    instance_record_done(&rec);
    checkpoint_infos_free(cps, n);
    b = store_close(b);
}

/* A relay on 127.0.0.1 in front of the PostgreSQL server of a URL, which the test clusters serve
 * on a unix socket only: each connection to its port is joined to a new one to the server. */
typedef struct Relay {
    int listen_fd;
    uint16_t port;
    struct sockaddr_storage target;
    socklen_t target_len;
    pthread_t thread;
} Relay;

/* Copy both ways between a and b until either ends, then close both. */
static void *relay_pump(void *arg)
{
    int *fds = arg;
    struct pollfd p[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
    char buf[16384];
    for (bool open = true; open && poll(p, 2, -1) > 0;)
        for (int i = 0; i < 2 && open; i++)
            if (p[i].revents) {
                ssize_t n = read(p[i].fd, buf, sizeof buf);
                open = n > 0 && write(p[1 - i].fd, buf, (size_t)n) == n;
            }
    (void)close(fds[0]);
    (void)close(fds[1]);
    free(fds);
    return NULL;
}

static void *relay_main(void *arg)
{
    Relay *r = arg;
    for (int fd; (fd = accept4(r->listen_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0;) {
        int *fds = xmalloc(2 * sizeof *fds);
        fds[0] = fd;
        fds[1] = socket(r->target.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        pthread_t t;
        if (fds[1] < 0 || connect(fds[1], (struct sockaddr *)&r->target, r->target_len) < 0 ||
            pthread_create(&t, NULL, relay_pump, fds) != 0) {
            (void)close(fds[0]);
            if (fds[1] >= 0)
                (void)close(fds[1]);
            free(fds);
            continue;
        }
        (void)pthread_detach(t);
    }
    return NULL;
}

/* Start a relay to the server of url; its keyword string for the relay (caller frees), or NULL. */
static char *relay_start(Relay *r, const char *url)
{
    PGconn *c = PQconnectdb(url);
    char *conninfo = NULL;
    const char *host = PQstatus(c) == CONNECTION_OK ? PQhost(c) : NULL;
    *r = (Relay){.listen_fd = -1};
    if (host && host[0] == '/') { /* the unix socket's directory */
        struct sockaddr_un *sun = (struct sockaddr_un *)&r->target;
        sun->sun_family = AF_UNIX;
        snprintf(sun->sun_path, sizeof sun->sun_path, "%s/.s.PGSQL.%s", host, PQport(c));
        r->target_len = sizeof *sun;
    } else if (host) {
        struct addrinfo *ai = NULL;
        if (getaddrinfo(host, PQport(c), &(struct addrinfo){.ai_socktype = SOCK_STREAM}, &ai) ==
            0) {
            memcpy(&r->target, ai->ai_addr, ai->ai_addrlen);
            r->target_len = ai->ai_addrlen;
            freeaddrinfo(ai);
        }
    }
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sin;
    if (r->target_len > 0 && (r->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) >= 0 &&
        bind(r->listen_fd, (struct sockaddr *)&sin, sizeof sin) == 0 &&
        listen(r->listen_fd, 16) == 0 &&
        getsockname(r->listen_fd, (struct sockaddr *)&sin, &len) == 0 &&
        pthread_create(&r->thread, NULL, relay_main, r) == 0) {
        r->port = ntohs(sin.sin_port);
        const char *password = PQpass(c);
        conninfo =
            xasprintf("host=127.0.0.1 port=%u dbname='%s' user='%s'%s%s%s", r->port, PQdb(c),
                      PQuser(c), password && *password ? " password='" : "",
                      password && *password ? password : "", password && *password ? "'" : "");
    } else if (r->listen_fd >= 0) {
        (void)close(r->listen_fd);
        r->listen_fd = -1;
    }
    PQfinish(c);
    return conninfo;
}

static void relay_stop(Relay *r)
{
    (void)shutdown(r->listen_fd, SHUT_RDWR); /* ends its accept() */
    pthread_join(r->thread, NULL);
    (void)close(r->listen_fd);
}

/* The options of the store's TCP connections to port (those of this process whose peer it is),
 * summed over them, and how many there are. */
static int keepalive_options(uint16_t port, int ret[5])
{
    static const int opts[5][2] = {{SOL_SOCKET, SO_KEEPALIVE},
                                   {IPPROTO_TCP, TCP_KEEPIDLE},
                                   {IPPROTO_TCP, TCP_KEEPINTVL},
                                   {IPPROTO_TCP, TCP_KEEPCNT},
                                   {IPPROTO_TCP, TCP_USER_TIMEOUT}};
    int n = 0;
    memset(ret, 0, 5 * sizeof *ret);
    for (int fd = 3; fd < 1024; fd++) {
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        if (getpeername(fd, (struct sockaddr *)&peer, &len) < 0 || peer.sin_family != AF_INET ||
            ntohs(peer.sin_port) != port)
            continue;
        n++;
        for (int i = 0; i < 5; i++) {
            int v = 0;
            socklen_t vl = sizeof v;
            if (getsockopt(fd, opts[i][0], opts[i][1], &v, &vl) == 0)
                ret[i] = v;
        }
    }
    return n;
}

/* Over TCP, a server that vanished must be found out in seconds, not after the kernel's
 * retransmissions (about 15 minutes): every connection of the store gets keepalives and a user
 * timeout, unless the URL says otherwise. */
TEST(pg_tcp_connections_get_keepalives_and_a_user_timeout)
{
    ONLY_ON(STORE_POSTGRES, "PostgreSQL");
    _cleanup_free_ char *url = test_url();
    Relay relay;
    _cleanup_free_ char *tcp = relay_start(&relay, url);
    ASSERT_TRUE(tcp != NULL);
    Store *s = NULL;
    ASSERT_OK(store_open(tcp, &s, NULL));
    ASSERT_OK(create_instance(s, "over-tcp", "acme", "img", 0)); /* the writer, used */
    int opt[5];
    ASSERT_TRUE(keepalive_options(relay.port, opt) >= 1);
    ASSERT_EQ(opt[0], 1);     /* SO_KEEPALIVE */
    ASSERT_EQ(opt[1], 5);     /* idle seconds before the first probe */
    ASSERT_EQ(opt[2], 2);     /* seconds between probes */
    ASSERT_EQ(opt[3], 3);     /* probes lost before the connection is given up */
    ASSERT_EQ(opt[4], 15000); /* ms data may stay unacknowledged */
    s = store_close(s);
    ASSERT_EQ(keepalive_options(relay.port, opt), 0);

    /* the URL's own settings win over the defaults */
    _cleanup_free_ char *mine = xasprintf("%s keepalives_idle=7 tcp_user_timeout=9000", tcp);
    ASSERT_OK(store_open(mine, &s, NULL));
    ASSERT_TRUE(keepalive_options(relay.port, opt) >= 1);
    ASSERT_EQ(opt[1], 7);
    ASSERT_EQ(opt[4], 9000);
    s = store_close(s);
    relay_stop(&relay);
}

TESTS_MAIN(T(open_migrates_and_reopens), T(refuses_newer_schema), T(bad_url_and_unwritable_path),
           T(image_versions_per_tenant_and_name), T(image_list_pages_in_stable_order),
           T(image_delete_refused_while_in_use), T(image_delete_when_only_finished_instances),
           T(concurrent_registrations_get_distinct_versions), T(instance_create_and_duplicate),
           T(instances_are_named_by_tenant_and_found_by_token), T(instance_get_is_tenant_scoped),
           T(instance_transition_is_guarded), T(instance_transition_clear_result_and_bump_attempt),
           T(concurrent_transitions_exactly_one_wins), T(instance_list_filters_and_totals),
           T(instance_list_pages_while_inserting), T(instance_heartbeat_and_counts),
           T(wake_claim_is_guarded_and_listed), T(transitions_in_one_batch),
           T(a_transition_records_a_first_event_once_per_key),
           T(a_launch_is_recorded_only_for_its_token_with_a_second_event),
           T(auto_restarts_count_until_a_checkpoint),
           T(tenant_metrics_count_ended_instances_per_bucket),
           T(purge_deletes_old_finished_instances_only), T(purge_deletes_superseded_unused_images),
           T(checkpoint_first_write_wins), T(checkpoint_save_is_bound_to_its_launch),
           T(racing_saves_bound_to_their_launch_in_shared_batches),
           T(checkpoint_list_reports_sizes), T(events_with_a_request_key_are_recorded_once),
           T(events_append_and_list), T(heartbeats_and_events_are_bound_to_their_launch),
           T(signal_priority), T(custom_signals_put_and_take),
           T(custom_signal_deliver_saves_it_as_a_checkpoint), T(custom_signal_exists_until_taken),
           T(foreign_keys_hold), T(instance_delete_cascades),
           T(pg_unknown_names_are_refused_by_the_schema), T(sqlite_unknown_names_are_corrupt_rows),
           T(concurrent_mixed_writes), T(failing_writes_do_not_disturb_others),
           T(lost_batches_run_again), T(instance_create_calls_visible_once_the_row_is_readable),
           T(instance_create_hooks_in_shared_batches), T(lost_batches_call_visible_hooks_once),
           T(checkpoint_async_saves_and_replays), T(checkpoint_async_ordered_with_sync_writes),
           T(checkpoint_async_many_submitters), T(async_lost_batches_run_again),
           T(sqlite_database_is_held_by_one_process),
           T(instances_belong_to_the_daemon_that_creates_or_launches_them),
           T(instances_of_a_daemon_whose_lease_ended_are_taken_over),
           T(a_takeover_pass_reads_on_from_its_cursor),
           T(a_daemon_id_is_refused_to_a_second_host_while_its_lease_lives),
           T(pg_concurrent_takeovers_give_each_instance_to_one_daemon),
           T(image_bytes_are_kept_for_every_daemon_on_postgres_only), T(pg_backup_names_pg_dump),
           T(pg_a_lock_held_by_a_stopped_session_fails_one_call_not_the_store),
           T(pg_tcp_connections_get_keepalives_and_a_user_timeout),
           T(sqlite_backup_is_a_consistent_copy))
