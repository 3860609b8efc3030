/* The exit record, which runtara-shim writes at the end of its lock file (shim.lock) in the run
 * directory and the runner reads at the exit or at recovery (exit_status_read()). A program shares
 * the directory with it, so the file may hold anything. What reads back is written again and
 * reads back the same. (An exit.json of an older shim goes through the same parser.) */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../src/runner/exit-status.h"
#include "fuzz-run-files.h"
#include "fuzz.h"

static int dirfd_in, dirfd_out;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    dirfd_in = open(fuzz_scratch_dir(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd_in < 0 || mkdirat(dirfd_in, "out", 0700) < 0)
        abort();
    dirfd_out = openat(dirfd_in, "out", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return dirfd_out < 0 ? -1 : 0;
}

static bool same(const ExitStatus *a, const ExitStatus *b)
{
    return a->kind == b->kind && a->code == b->code && a->exit_code == b->exit_code &&
           a->pid == b->pid && a->attempt == b->attempt && a->log_bytes == b->log_bytes &&
           a->log_dropped == b->log_dropped && a->cpu_usec == b->cpu_usec &&
           a->max_rss_bytes == b->max_rss_bytes && a->started_at == b->started_at &&
           a->finished_at == b->finished_at && strcmp(a->error, b->error) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ExitStatus st, again;
    Error e = ERROR_INIT;

    fuzz_write_file(fuzz_scratch_dir(), SHIM_LOCK_FILE, data, size);
    if (exit_status_read(dirfd_in, &st, &e) >= 0) {
        if (exit_kind_to_string(st.kind) == NULL)
            abort();
        int lockfd =
            openat(dirfd_out, SHIM_LOCK_FILE, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        if (lockfd < 0 || exit_status_write(lockfd, &st) < 0 ||
            exit_status_read(dirfd_out, &again, NULL) < 0 || !same(&st, &again))
            abort();
        (void)close(lockfd);
    } else if (!error_message(&e)[0])
        abort();
    error_done(&e);
    return 0;
}
