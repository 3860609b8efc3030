/* The exit record (exit-status.h): written at the end of the shim's lock file, after what the shim
 * wrote before it; the OCI mode's figures (oom, memory_peak_bytes) round-trip; a record of before
 * they existed still reads; what is not a whole record is refused with a reason. */
#include "../../src/runner/exit-status.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../../src/base/alloc.h"
#include "../../src/base/fileio.h"
#include "../lib/tests.h"

TEST(container_figures_round_trip)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ExitStatus st = {.kind = EXIT_KIND_SIGNALED,
                     .code = 9,
                     .exit_code = 137,
                     .pid = 42,
                     .attempt = 2,
                     .cpu_usec = 26407,
                     .max_rss_bytes = 33554432,
                     .memory_peak_bytes = 33554432,
                     .oom = true},
               again;
    int lockfd = openat(dfd, SHIM_LOCK_FILE, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    ASSERT_EQ(write(lockfd, "2\n1234 boot\n", 12), 12);
    ASSERT_OK(exit_status_write(lockfd, &st));
    close(lockfd);
    _cleanup_free_ char *path = xasprintf("%s/%s", dir, SHIM_LOCK_FILE), *text = NULL;
    ASSERT_OK(fileio_read_all(path, 4096, &text, NULL));
    static const char before[] = "2\n1234 boot\n{\"kind\":\"signaled\",";
    ASSERT_TRUE(strncmp(text, before, sizeof before - 1) == 0);
    ASSERT_EQ(text[strlen(text) - 1], '\n');
    ASSERT_OK(exit_status_read(dfd, &again, NULL));
    close(dfd);
    ASSERT_EQ(again.kind, EXIT_KIND_SIGNALED);
    ASSERT_EQ(again.exit_code, 137);
    ASSERT_TRUE(again.oom);
    ASSERT_EQ(again.memory_peak_bytes, 33554432);
    ASSERT_EQ(again.cpu_usec, 26407);
}

TEST(a_record_of_before_reads)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    static const char old[] =
        "1\n7 boot\n"
        "{\"kind\":\"exited\",\"code\":3,\"exit_code\":3,\"pid\":7,\"attempt\":1,\"log_bytes\":5,"
        "\"log_dropped\":0,\"cpu_usec\":1000,\"max_rss_bytes\":4096,\"started_at\":1,"
        "\"finished_at\":2,\"error\":\"\"}\n";
    ASSERT_OK(fileio_write_atomic(dfd, SHIM_LOCK_FILE, old, sizeof old - 1, 0640));
    ExitStatus st;
    Error e = ERROR_INIT;
    int r = exit_status_read(dfd, &st, &e);
    close(dfd);
    if (r < 0)
        TEST_FAIL("%s", error_message(&e));
    ASSERT_EQ(st.kind, EXIT_KIND_EXITED);
    ASSERT_EQ(st.exit_code, 3);
    ASSERT_EQ(st.cpu_usec, 1000);
    ASSERT_FALSE(st.oom);
    ASSERT_EQ(st.memory_peak_bytes, 0);
}

/* Make dirfd/shim.lock hold text. */
static int put(int dirfd, const char *text)
{
    return fileio_write_atomic(dirfd, SHIM_LOCK_FILE, text, strlen(text), 0640);
}

/* A record that is not whole (a machine that crashed while it was written), a lock file made
 * huge, or one without a record (the shim ended before it wrote one) is an error that says so,
 * never a read without end. */
TEST(an_oversized_torn_or_missing_record_is_refused)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ExitStatus st;
    Error e = ERROR_INIT;
    ASSERT_EQ(exit_status_read(dfd, &st, &e), -ENOENT); /* no lock file */
    error_done(&e);
    ASSERT_OK(put(dfd, "1\n7 boot\n"));
    ASSERT_EQ(exit_status_read(dfd, &st, &e), -ENOENT);
    ASSERT_STREQ(error_message(&e), "shim.lock holds no exit record");
    error_done(&e);
    ASSERT_OK(put(dfd, "1\n{\"kind\":\"exi"));
    ASSERT_EQ(exit_status_read(dfd, &st, &e), -EBADMSG);
    ASSERT_TRUE(strncmp(error_message(&e), "could not parse the exit record in shim.lock: ", 46) ==
                0);
    error_done(&e);
    ASSERT_OK(put(dfd, "1\n{\"kind\":\"lost\"}\n"));
    ASSERT_EQ(exit_status_read(dfd, &st, &e), -EBADMSG);
    ASSERT_TRUE(strncmp(error_message(&e), "invalid exit record in shim.lock: ", 34) == 0);
    error_done(&e);
    size_t n = 64 * 1024 + 1;
    _cleanup_free_ char *big = xmalloc(n);
    memset(big, ' ', n);
    ASSERT_OK(fileio_write_atomic(dfd, SHIM_LOCK_FILE, big, n, 0640));
    ASSERT_EQ(exit_status_read(dfd, &st, &e), -EFBIG);
    ASSERT_STREQ(error_message(&e), "could not read shim.lock: larger than 64 KiB");
    error_done(&e);
    close(dfd);
}

TESTS_MAIN(T(container_figures_round_trip), T(a_record_of_before_reads),
           T(an_oversized_torn_or_missing_record_is_refused))
