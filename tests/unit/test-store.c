/* The store conformance suite. Every backend must pass it unchanged; today that is SQLite (a temp
 * file), and the PostgreSQL backend joins by adding its URL to backends(). */
#include <pthread.h>
#include <sqlite3.h>

#include "../../src/base/alloc.h"
#include "../../src/store/store.h"
#include "../lib/tests.h"

static char *test_url(void)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    return xasprintf("sqlite:%s/sub/dir/runtara.db", dir);
}

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
    ASSERT_STREQ(info.backend, "sqlite");
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

    sqlite3 *db = NULL;
    ASSERT_EQ(sqlite3_open(url + 7, &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "INSERT INTO schema_migrations VALUES (999, 'from_the_future', 0)",
                           NULL, NULL, NULL),
              SQLITE_OK);
    sqlite3_close(db);

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
    ASSERT_EQ(store_open("mysql://x", &s, &e), -EINVAL);
    ASSERT_TRUE(strstr(error_message(&e), "mysql://x") != NULL);
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
    ASSERT_OK(store_instance_insert_minimal(s, "inst1", "acme", "busy", "running", NULL));
    ASSERT_OK(store_instance_insert_minimal(s, "inst2", "acme", "busy", "completed", NULL));

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
    ASSERT_OK(store_instance_insert_minimal(s, "i1", "acme", "done", "failed", NULL));
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

TESTS_MAIN(T(open_migrates_and_reopens), T(refuses_newer_schema), T(bad_url_and_unwritable_path),
           T(image_versions_per_tenant_and_name), T(image_list_pages_in_stable_order),
           T(image_delete_refused_while_in_use), T(image_delete_when_only_finished_instances),
           T(concurrent_registrations_get_distinct_versions))
