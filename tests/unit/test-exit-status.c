/* exit.json: the OCI mode's figures (oom, memory_peak_bytes) round-trip, and a file written
 * before they existed still reads. */
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
    ASSERT_OK(exit_status_write(dfd, &st));
    ASSERT_OK(exit_status_read(dfd, &again, NULL));
    close(dfd);
    ASSERT_EQ(again.kind, EXIT_KIND_SIGNALED);
    ASSERT_EQ(again.exit_code, 137);
    ASSERT_TRUE(again.oom);
    ASSERT_EQ(again.memory_peak_bytes, 33554432);
    ASSERT_EQ(again.cpu_usec, 26407);
}

TEST(an_exit_file_of_before_reads)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    static const char old[] =
        "{\"kind\":\"exited\",\"code\":3,\"exit_code\":3,\"pid\":7,\"attempt\":1,\"log_bytes\":5,"
        "\"log_dropped\":0,\"cpu_usec\":1000,\"max_rss_bytes\":4096,\"started_at\":1,"
        "\"finished_at\":2,\"error\":\"\"}";
    ASSERT_OK(fileio_write_atomic(dfd, EXIT_STATUS_FILE, old, sizeof old - 1, 0644));
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

/* The run directory is the program's too: an exit file it made huge, or not JSON, is an error
 * that says so, never a read without end. */
TEST(an_oversized_or_broken_exit_file_is_refused)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    size_t n = 64 * 1024 + 1;
    _cleanup_free_ char *big = xmalloc(n);
    memset(big, ' ', n);
    ASSERT_OK(fileio_write_atomic(dfd, EXIT_STATUS_FILE, big, n, 0644));
    ExitStatus st;
    Error e = ERROR_INIT;
    ASSERT_EQ(exit_status_read(dfd, &st, &e), -EFBIG);
    ASSERT_STREQ(error_message(&e), "could not read exit.json: larger than 64 KiB");
    error_done(&e);
    ASSERT_OK(fileio_write_atomic(dfd, EXIT_STATUS_FILE, "{\"kind\":", 8, 0644));
    ASSERT_EQ(exit_status_read(dfd, &st, &e), -EBADMSG);
    ASSERT_TRUE(strncmp(error_message(&e), "could not parse exit.json: ", 27) == 0);
    error_done(&e);
    close(dfd);
}

TESTS_MAIN(T(container_figures_round_trip), T(an_exit_file_of_before_reads),
           T(an_oversized_or_broken_exit_file_is_refused))
