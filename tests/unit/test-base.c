/* Unit tests for src/base: ids, parsers, time, strbuf, errors, durable files. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/base/alloc.h"
#include "../../src/base/digest.h"
#include "../../src/base/error.h"
#include "../../src/base/fileio.h"
#include "../../src/base/hashmap.h"
#include "../../src/base/id.h"
#include "../../src/base/log.h"
#include "../../src/base/parse-util.h"
#include "../../src/base/strbuf.h"
#include "../../src/base/time-util.h"
#include "../../src/base/utf8.h"
#include "../lib/tests.h"

TEST(id_validation)
{
    ASSERT_TRUE(id_is_valid("acme"));
    ASSERT_TRUE(id_is_valid("a"));
    ASSERT_TRUE(id_is_valid("Tenant_1.prod-eu"));
    ASSERT_FALSE(id_is_valid(""));
    ASSERT_FALSE(id_is_valid(NULL));
    ASSERT_FALSE(id_is_valid("a/b"));
    ASSERT_FALSE(id_is_valid(".."));
    ASSERT_FALSE(id_is_valid("a..b"));
    ASSERT_FALSE(id_is_valid(".hidden"));
    ASSERT_FALSE(id_is_valid("-flag"));
    ASSERT_FALSE(id_is_valid("a b"));
    ASSERT_FALSE(id_is_valid("caf\xc3\xa9"));

    char longid[300];
    memset(longid, 'x', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    ASSERT_FALSE(id_is_valid(longid));
    longid[129] = '\0';
    ASSERT_FALSE(id_is_valid(longid)); /* 129 characters */
    longid[128] = '\0';
    ASSERT_TRUE(id_is_valid(longid)); /* 128: the maximum */
}

TEST(uuid_format)
{
    char a[37], b[37];
    ASSERT_OK(id_new_uuid(a));
    ASSERT_OK(id_new_uuid(b));
    ASSERT_EQ(strlen(a), 36);
    ASSERT_EQ(a[14], '4');
    ASSERT_TRUE(strchr("89ab", a[19]) != NULL);
    ASSERT_TRUE(strcmp(a, b) != 0);
    ASSERT_TRUE(id_is_valid(a));
}

TEST(parse_numbers)
{
    uint64_t v;
    bool b;
    ASSERT_OK(parse_uint64("8002", &v));
    ASSERT_EQ(v, 8002);
    ASSERT_EQ(parse_uint64("", &v), -EINVAL);
    ASSERT_EQ(parse_uint64("-1", &v), -EINVAL);
    ASSERT_EQ(parse_uint64("12x", &v), -EINVAL);
    ASSERT_EQ(parse_uint64("18446744073709551616", &v), -ERANGE);
    ASSERT_OK(parse_uint64("18446744073709551615", &v));
    ASSERT_OK(parse_size("1G", &v));
    ASSERT_EQ(v, 1ULL << 30);
    ASSERT_OK(parse_size("16MiB", &v));
    ASSERT_EQ(v, 16ULL << 20);
    ASSERT_OK(parse_size("4096", &v));
    ASSERT_EQ(v, 4096);
    ASSERT_EQ(parse_size("1X", &v), -EINVAL);
    ASSERT_EQ(parse_size("99999999999T", &v), -ERANGE);
    ASSERT_OK(parse_boolean("yes", &b));
    ASSERT_TRUE(b);
    ASSERT_OK(parse_boolean("0", &b));
    ASSERT_FALSE(b);
    ASSERT_EQ(parse_boolean("maybe", &b), -EINVAL);
}

TEST(format_uint64_digits)
{
    char buf[21];
    ASSERT_STREQ(format_uint64(buf, 0), "0");
    ASSERT_STREQ(format_uint64(buf, 7), "7");
    ASSERT_STREQ(format_uint64(buf, 1000), "1000");
    ASSERT_STREQ(format_uint64(buf, UINT64_MAX), "18446744073709551615");
    for (uint64_t v = 1; v < UINT64_MAX / 3; v = v * 3 + 1) {
        char want[32];
        snprintf(want, sizeof want, "%llu", (unsigned long long)v);
        ASSERT_STREQ(format_uint64(buf, v), want);
    }
}

TEST(rfc3339_round_trip)
{
    char buf[40];
    usec_t t = 1795435200123000ULL, back = 0;
    ASSERT_STREQ(format_rfc3339(buf, sizeof buf, t), "2026-11-23T12:00:00.123Z");
    ASSERT_OK(parse_rfc3339(buf, &back));
    ASSERT_EQ(back, t);
    ASSERT_OK(parse_rfc3339("2026-11-23T12:00:00Z", &back));
    ASSERT_EQ(back, 1795435200000000ULL);
    ASSERT_EQ(parse_rfc3339("2026-11-23 12:00:00", &back), -EINVAL);
    ASSERT_EQ(parse_rfc3339("2026-11-23T12:00:00+02:00", &back), -EINVAL);
}

/* The hand-made civil-date conversion agrees with gmtime_r + strftime: every day boundary and a
 * second before it from 1970 to 2400 (leap years, centuries, 2000 and 2100), and odd times. */
TEST(rfc3339_matches_gmtime)
{
    char buf[40], want[40];
    unsigned checked = 0;
    for (time_t day = 0; day < 157000; day += 1) {
        time_t secs[] = {day * 86400, day * 86400 + 86399, day * 86400 + (day * 7919) % 86400};
        for (size_t i = 0; i < ELEMENTSOF(secs); i++) {
            struct tm tm;
            gmtime_r(&secs[i], &tm);
            size_t l = strftime(want, sizeof want, "%Y-%m-%dT%H:%M:%S", &tm);
            unsigned ms = (unsigned)(day % 1000);
            snprintf(want + l, sizeof want - l, ".%03uZ", ms);
            usec_t t = (usec_t)secs[i] * USEC_PER_SEC + ms * USEC_PER_MSEC + 999;
            if (strcmp(format_rfc3339(buf, sizeof buf, t), want) != 0) {
                ASSERT_STREQ(buf, want);
                break;
            }
            checked++;
        }
    }
    ASSERT_EQ(checked, 3 * 157000U);
    ASSERT_STREQ(format_rfc3339(buf, 11, 0), "1970-01-01"); /* truncated to the buffer */
}

TEST(strbuf_and_error)
{
    StrBuf b = STRBUF_INIT;
    for (int i = 0; i < 1000; i++)
        strbuf_printf(&b, "%d,", i);
    ASSERT_EQ(b.len, strlen(b.buf));
    ASSERT_TRUE(strncmp(b.buf, "0,1,2,", 6) == 0);
    char *s = strbuf_steal(&b);
    ASSERT_NULL(b.buf);
    free(s);

    Error e = ERROR_INIT;
    ASSERT_EQ(error_set(&e, -ENOENT, "image \"%s\" does not exist", "x"), -ENOENT);
    ASSERT_EQ(error_prefix(&e, "could not start instance"), -ENOENT);
    ASSERT_STREQ(error_message(&e), "could not start instance: image \"x\" does not exist");
    error_done(&e);
    ASSERT_NULL(e.msg);
    ASSERT_EQ(error_set(NULL, -EIO, "ignored"), -EIO);
}

TEST(sha256_known_vector)
{
    Sha256 *h = sha256_new();
    char hex[65];
    sha256_update(h, "ab", 2);
    sha256_update(h, "c", 1);
    sha256_final_hex(h, hex);
    h = sha256_free(h);
    ASSERT_STREQ(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(tmpfile_link_and_discard)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_TRUE(dfd >= 0);

    TmpFile t = TMPFILE_INIT;
    ASSERT_OK(tmpfile_open(dfd, 0644, &t));
    ASSERT_OK(fileio_write_all(t.fd, "hello", 5));
    ASSERT_OK(tmpfile_link_durable(&t, dfd, "final"));
    ASSERT_EQ(t.fd, -EBADF);

    _cleanup_free_ char *path = xasprintf("%s/final", dir);
    _cleanup_free_ char *data = NULL;
    size_t len = 0;
    ASSERT_OK(fileio_read_all(path, 100, &data, &len));
    ASSERT_STREQ(data, "hello");
    ASSERT_EQ(fileio_read_all(path, 3, &data, &len), -EFBIG);

    /* a second file under the same name is refused, and a discarded one leaves nothing */
    ASSERT_OK(tmpfile_open(dfd, 0644, &t));
    ASSERT_OK(fileio_write_all(t.fd, "x", 1));
    ASSERT_EQ(tmpfile_link_durable(&t, dfd, "final"), -EEXIST);
    ASSERT_OK(tmpfile_open(dfd, 0644, &t));
    tmpfile_done(&t);
    ASSERT_EQ(fileio_sweep_prefix(dfd, FILEIO_TMP_PREFIX), 0);
}

/* Read the whole file at path (the redirected stderr) into a new string. */
/* fork(); the child (0) writes its standard error to path, and logs at level info. */
static pid_t fork_logging_to(const char *path)
{
    fflush(stderr);
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0 || dup2(fd, STDERR_FILENO) != STDERR_FILENO)
        _exit(3);
    log_max_level = LOG_INFO;
    return 0;
}

static char *slurp(const char *path)
{
    char *data = NULL;
    if (fileio_read_all(path, 1 << 20, &data, NULL) < 0)
        return xstrdup("(unreadable)");
    return data;
}

/* An abort() (a failed assertion) writes the lines still buffered: in a child, which aborts. */
TEST(log_buffer_written_on_abort)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    _cleanup_free_ char *path = xasprintf("%s/stderr", dir);
    pid_t pid = fork_logging_to(path);
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) {
        if (log_buffer_start() < 0)
            _exit(4);
        log_info("the last words %d", 42);
        abort(); /* well within the writer's 10 ms */
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    _cleanup_free_ char *all = slurp(path);
    ASSERT_NOT_NULL(strstr(all, "msg=\"the last words 42\""));
}

/* Whatever bytes a field or message holds, every log line is valid UTF-8: in logfmt a byte that
 * is not part of a valid sequence is written \xNN, valid multi-byte text is kept; in JSON it
 * becomes U+FFFD. */
TEST(log_lines_are_valid_utf8)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    _cleanup_free_ char *path = xasprintf("%s/stderr", dir);
    pid_t pid = fork_logging_to(path);
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) {
        const char *fields[] = {"path", "/caf\xc3\xa9/\xff\xed\xa0\x80", NULL};
        log_full_errno_fields(LOG_INFO, 0, fields, "bad \xfe byte");
        log_set_format(LOG_FORMAT_JSON);
        log_full_errno_fields(LOG_INFO, 0, fields, "bad \xfe byte");
        _exit(0);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    _cleanup_free_ char *all = slurp(path);
    ASSERT_TRUE(utf8_is_valid(all, strlen(all)));
    ASSERT_NOT_NULL(
        strstr(all, "msg=\"bad \\xfe byte\" path=\"/caf\xc3\xa9/\\xff\\xed\\xa0\\x80\""));
    ASSERT_NOT_NULL(strstr(all, "\"path\":\"/caf\\u00E9/\\uFFFD\\uFFFD\\uFFFD\\uFFFD\""));
}

/* Buffered lines: info lines wait (at most LOG_FLUSH_USEC), a warning writes everything before
 * it and itself at once and in order, stopping writes the rest, and lines after the stop go out
 * directly. */
TEST(log_buffer_order_and_flush)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    _cleanup_free_ char *path = xasprintf("%s/stderr", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    ASSERT_TRUE(fd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    ASSERT_TRUE(saved >= 0 && dup2(fd, STDERR_FILENO) == STDERR_FILENO);
    close(fd);
    int level = log_max_level;
    log_max_level = LOG_INFO;

    ASSERT_OK(log_buffer_start());
    log_info("first %d", 1);
    log_info("second %d", 2);
    _cleanup_free_ char *early = slurp(path); /* a write(2) this soon would be a bug */
    log_warning("third %d", 3);
    _cleanup_free_ char *after_warning = slurp(path);
    log_info("fourth %d", 4);
    char *late = NULL;
    for (int i = 0; i < 500; i++) { /* the writer's batch: 10 ms, give it 5 s */
        free(late);
        late = slurp(path);
        if (strstr(late, "fourth"))
            break;
        usleep(10000);
    }
    for (int i = 0; i < 3000; i++)
        log_info("bulk line %d", i); /* past the high mark and the buffer's size */
    log_buffer_stop();
    log_info("fifth %d", 5);
    _cleanup_free_ char *all = slurp(path);

    log_max_level = level;
    ASSERT_TRUE(dup2(saved, STDERR_FILENO) == STDERR_FILENO);
    close(saved);

    ASSERT_NULL(strstr(early, "first"));
    const char *a = strstr(after_warning, "msg=\"first 1\""),
               *b = strstr(after_warning, "msg=\"second 2\""),
               *c = strstr(after_warning, "msg=\"third 3\"");
    ASSERT_TRUE(a && b && c && a < b && b < c);
    ASSERT_NULL(strstr(after_warning, "fourth"));
    ASSERT_NOT_NULL(strstr(late, "fourth 4"));
    free(late);
    size_t lines = 0;
    for (const char *p = all; (p = strchr(p, '\n')); p++)
        lines++;
    ASSERT_EQ(lines, 3005U);
    const char *bulk_last = strstr(all, "msg=\"bulk line 2999\""), *fifth = strstr(all, "fifth 5");
    ASSERT_TRUE(bulk_last && fifth && bulk_last < fifth);
    ASSERT_NOT_NULL(strstr(all, "msg=\"bulk line 0\""));
}

TEST(write_atomic_and_rm_rf)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_OK(fileio_write_atomic(dfd, "k", "one", 3, 0600));
    ASSERT_OK(fileio_write_atomic(dfd, "k", "two!", 4, 0600));
    ASSERT_OK(fileio_write_replace(dfd, "r", "three", 5, 0600));
    _cleanup_free_ char *rpath = xasprintf("%s/r", dir);
    _cleanup_free_ char *rdata = NULL;
    ASSERT_OK(fileio_read_all(rpath, 100, &rdata, NULL));
    ASSERT_STREQ(rdata, "three");
    ASSERT_EQ(fileio_sweep_prefix(dfd, FILEIO_TMP_PREFIX), 0); /* no temporary file left behind */
    _cleanup_free_ char *path = xasprintf("%s/k", dir);
    _cleanup_free_ char *data = NULL;
    ASSERT_OK(fileio_read_all(path, 100, &data, NULL));
    ASSERT_STREQ(data, "two!");

    _cleanup_free_ char *deep = xasprintf("%s/a/b/c", dir);
    ASSERT_OK(fileio_mkdir_p(deep, 0755));
    ASSERT_OK(fileio_mkdir_p(deep, 0755)); /* there already */
    _cleanup_free_ char *leaf = xasprintf("%s/a/b/c/d", dir);
    ASSERT_OK(fileio_mkdir_p(leaf, 0755)); /* one more level */
    struct stat lst;
    ASSERT_OK(stat(leaf, &lst));
    ASSERT_TRUE(S_ISDIR(lst.st_mode));
    _cleanup_free_ char *under_file = xasprintf("%s/k/x", dir);
    ASSERT_EQ(fileio_mkdir_p(under_file, 0755), -ENOTDIR);
    ASSERT_OK(fileio_write_atomic(dfd, ".tmp-leftover", "x", 1, 0600));
    ASSERT_EQ(fileio_sweep_prefix(dfd, FILEIO_TMP_PREFIX), 1);
    ASSERT_OK(fileio_rm_rf_at(dfd, "a"));
    struct stat st;
    ASSERT_EQ(fstatat(dfd, "a", &st, 0), -1);
    ASSERT_OK(fileio_rm_rf_at(dfd, "a"));
}

TEST(hashmap_against_a_reference)
{
    /* random puts and removes against a plain array model, across many resizes */
    enum { N = 2000 };
    static int model[N];
    static int values[N];
    Hashmap *m = hashmap_new();
    unsigned seed = 12345;
    for (int step = 0; step < 50000; step++) {
        seed = seed * 1103515245 + 12345;
        int k = (int)((seed >> 8) % N);
        char key[16];
        snprintf(key, sizeof key, "inst-%d", k);
        if ((seed >> 4) % 3 == 0) {
            void *v = hashmap_remove(m, key);
            ASSERT_TRUE((v != NULL) == (model[k] != 0));
            model[k] = 0;
        } else {
            values[k] = k;
            hashmap_put(m, key, &values[k]);
            model[k] = 1;
        }
    }
    size_t live = 0;
    for (int k = 0; k < N; k++) {
        char key[16];
        snprintf(key, sizeof key, "inst-%d", k);
        int *v = hashmap_get(m, key);
        ASSERT_TRUE((v != NULL) == (model[k] != 0));
        if (v)
            ASSERT_EQ(*v, k);
        live += model[k];
    }
    ASSERT_EQ(hashmap_size(m), live);
    size_t i = 0, seen = 0;
    const char *key;
    while (hashmap_next(m, &i, &key, NULL))
        seen++;
    ASSERT_EQ(seen, live);
    m = hashmap_free(m);
}

/* utf8_is_valid() against a decoder-by-definition: every 1-4 byte string over a set of boundary
 * bytes, checked against the code point it would encode (RFC 3629: shortest form, no surrogates,
 * at most U+10FFFF). */
static bool reference_valid(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        size_t len = c < 0x80             ? 1
                     : (c & 0xe0) == 0xc0 ? 2
                     : (c & 0xf0) == 0xe0 ? 3
                     : (c & 0xf8) == 0xf0 ? 4
                                          : 0;
        if (len == 0 || i + len > n)
            return false;
        uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1fu : len == 3 ? c & 0x0fu : c & 0x07u;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i + k] & 0x3fu);
        }
        static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

TEST(utf8_validation_and_repair)
{
    static const unsigned char bytes[] = {0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f,
                                          0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0,
                                          0xed, 0xee, 0xef, 0xf0, 0xf4, 0xf5, 0xff};
    size_t nb = ELEMENTSOF(bytes), checked = 0, valid = 0;
    unsigned char buf[4];
    for (size_t len = 1; len <= 4; len++) {
        size_t total = 1;
        for (size_t k = 0; k < len; k++)
            total *= nb;
        for (size_t idx = 0; idx < total; idx++) {
            size_t v = idx;
            for (size_t k = 0; k < len; k++, v /= nb)
                buf[k] = bytes[v % nb];
            bool want = reference_valid(buf, len);
            if (utf8_is_valid((const char *)buf, len) != want)
                TEST_FAIL("utf8_is_valid disagrees on %zu bytes %02x %02x %02x %02x", len, buf[0],
                          len > 1 ? buf[1] : 0, len > 2 ? buf[2] : 0, len > 3 ? buf[3] : 0);
            checked++;
            valid += want;
        }
    }
    ASSERT_TRUE(checked > 190000 && valid > 1000);

    /* Repair: each bad byte becomes U+FFFD, good text is kept, the result is valid. */
    _cleanup_free_ char *a = utf8_make_valid("a\xff\xc3\xa9\xed\xa0\x80z", 0);
    ASSERT_STREQ(a, "a\xef\xbf\xbd\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdz");
    ASSERT_TRUE(utf8_is_valid(a, strlen(a)));
    /* Cut at a character boundary, never inside one, and marked. */
    _cleanup_free_ char *b = utf8_make_valid("ab\xc3\xa9\xc3\xa9", 3);
    ASSERT_STREQ(b, "ab...");
    _cleanup_free_ char *c = utf8_make_valid("ab\xc3\xa9", 4);
    ASSERT_STREQ(c, "ab\xc3\xa9");
    /* The JSON string is never NULL and always dumps. */
    json_t *j = utf8_json_string("\xc0\xaf/..\xf5", 0);
    ASSERT_TRUE(j != NULL);
    _cleanup_free_ char *d = json_dumps(j, JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
    json_decref(j);
    ASSERT_STREQ(d, "\"\\uFFFD\\uFFFD/..\\uFFFD\"");
    ASSERT_TRUE(utf8_is_text("caf\xc3\xa9 au lait"));
    ASSERT_FALSE(utf8_is_text("tab\there"));
    ASSERT_FALSE(utf8_is_text("\xed\xa0\x80"));
}

TESTS_MAIN(T(utf8_validation_and_repair), T(log_lines_are_valid_utf8),
           T(hashmap_against_a_reference), T(id_validation), T(uuid_format), T(parse_numbers),
           T(format_uint64_digits), T(rfc3339_round_trip), T(rfc3339_matches_gmtime),
           T(strbuf_and_error), T(sha256_known_vector), T(tmpfile_link_and_discard),
           T(write_atomic_and_rm_rf), T(log_buffer_order_and_flush), T(log_buffer_written_on_abort))
