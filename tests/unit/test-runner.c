/* The native runner with the real runtara-shim: exit codes, stop by SIGTERM and SIGKILL to the
 * whole process group, the output cap, spawn failures, environment and resource limits. */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/base/alloc.h"
#include "../../src/base/fileio.h"
#include "../../src/runner/runner.h"
#include "../../src/runner/shim-launch.h"
#include "../lib/tests.h"

static Runner *runner;
static char *shim_path;

/* A run directory holding an executable script with the given body. */
static char *make_script(const char *body, char **ret_dir)
{
    char *dir = tests_tmpdir();
    char *path = xasprintf("%s/prog", dir);
    FILE *f = fopen(path, "we");
    fprintf(f, "#!/bin/sh\n%s\n", body);
    fclose(f);
    chmod(path, 0755);
    *ret_dir = dir;
    return path;
}

static int launch(const char *exe, const char *dir, uint64_t log_limit, const RunnerLimits *lim,
                  RunnerProcess **ret)
{
    static const char *const envp[] = {"PATH=/usr/bin:/bin", "RUNTARA_INSTANCE_ID=inst-1", NULL};
    RunnerLaunch spec = {
        .instance_id = "inst-1",
        .executable = exe,
        .run_dir = dir,
        .envp = envp,
        .log_limit = log_limit,
    };
    if (lim)
        spec.limits = *lim;
    Error e = ERROR_INIT;
    int r = runner_launch(runner, &spec, ret, &e);
    if (r < 0)
        printf("# launch: %s\n", error_message(&e));
    error_done(&e);
    return r;
}

/* Wait for the process to end (the fd becomes readable: no polling of the process) and reap. */
static int wait_exit(RunnerProcess *p, ExitStatus *st)
{
    struct pollfd pfd = {runner_process_fd(p), POLLIN, 0};
    if (poll(&pfd, 1, 20000) != 1)
        return -ETIMEDOUT;
    Error e = ERROR_INIT;
    int r = runner_process_reap(p, st, &e);
    if (r < 0)
        printf("# reap: %s\n", error_message(&e));
    error_done(&e);
    return r;
}

static char *read_log(const char *dir)
{
    _cleanup_free_ char *path = xasprintf("%s/stderr.log", dir);
    char *data = NULL;
    if (fileio_read_all(path, 1 << 20, &data, NULL) < 0)
        return xstrdup("");
    return data;
}

TEST(exit_code_output_and_environment)
{
    _cleanup_free_ char *dir = NULL;
    _cleanup_free_ char *exe =
        make_script("echo out $RUNTARA_INSTANCE_ID; echo err >&2; pwd; exit 3", &dir);
    RunnerProcess *p = NULL;
    ASSERT_OK(launch(exe, dir, 1 << 20, NULL, &p));
    ExitStatus st;
    ASSERT_OK(wait_exit(p, &st));
    ASSERT_EQ(st.kind, EXIT_KIND_EXITED);
    ASSERT_EQ(st.exit_code, 3);
    ASSERT_TRUE(st.pid > 0 && st.finished_at >= st.started_at);
    _cleanup_free_ char *log = read_log(dir);
    ASSERT_TRUE(strstr(log, "out inst-1\n") != NULL);
    ASSERT_TRUE(strstr(log, "err\n") != NULL);
    ASSERT_TRUE(strstr(log, dir) != NULL); /* the working directory is the run directory */
    ASSERT_EQ(st.log_bytes, strlen(log));
    p = runner_process_free(p);
}

TEST(sigterm_reaches_the_program_handler)
{
    _cleanup_free_ char *dir = NULL;
    _cleanup_free_ char *exe = make_script(
        "trap 'echo got term; exit 7' TERM; echo ready > ready; while :; do sleep 0.05; done",
        &dir);
    RunnerProcess *p = NULL;
    ASSERT_OK(launch(exe, dir, 1 << 20, NULL, &p));
    _cleanup_free_ char *ready = xasprintf("%s/ready", dir);
    for (int i = 0; i < 400 && access(ready, F_OK) < 0; i++)
        usleep(5000);
    ASSERT_OK(runner_process_signal(p, SIGTERM));
    ExitStatus st;
    ASSERT_OK(wait_exit(p, &st));
    ASSERT_EQ(st.exit_code, 7);
    _cleanup_free_ char *log = read_log(dir);
    ASSERT_TRUE(strstr(log, "got term") != NULL);
    p = runner_process_free(p);
}

TEST(sigkill_ends_the_whole_group)
{
    _cleanup_free_ char *dir = NULL;
    _cleanup_free_ char *exe = make_script(
        "trap '' TERM; sleep 1000 & echo $! > child; while :; do sleep 0.05; done", &dir);
    RunnerProcess *p = NULL;
    ASSERT_OK(launch(exe, dir, 1 << 20, NULL, &p));
    _cleanup_free_ char *child = xasprintf("%s/child", dir);
    _cleanup_free_ char *pidtext = NULL;
    /* the shell creates the file before it writes the pid: wait for a whole line */
    for (int i = 0; i < 400; i++) {
        pidtext = mfree(pidtext);
        if (fileio_read_all(child, 64, &pidtext, NULL) >= 0 && strchr(pidtext, '\n'))
            break;
        usleep(5000);
    }
    ASSERT_NOT_NULL(pidtext);
    pid_t grandchild = atoi(pidtext);
    ASSERT_TRUE(grandchild > 0);

    ASSERT_OK(runner_process_signal(p, SIGTERM)); /* ignored by the program */
    usleep(100000);
    ASSERT_OK(runner_process_signal(p, SIGKILL));
    ExitStatus st;
    ASSERT_OK(wait_exit(p, &st));
    ASSERT_EQ(st.kind, EXIT_KIND_SIGNALED);
    ASSERT_EQ(st.code, SIGKILL);
    ASSERT_EQ(st.exit_code, 128 + SIGKILL);
    /* the background child died with the group (allow init a moment to reap it) */
    _cleanup_free_ char *proc = xasprintf("/proc/%d/stat", grandchild);
    bool gone = false;
    for (int i = 0; i < 200 && !gone; i++) {
        _cleanup_free_ char *stat = NULL;
        gone = fileio_read_all(proc, 4096, &stat, NULL) < 0 || strstr(stat, ") Z ") != NULL;
        if (!gone)
            usleep(10000);
    }
    ASSERT_TRUE(gone);
    ASSERT_EQ(runner_process_signal(p, SIGTERM), -ESRCH);
    p = runner_process_free(p);
}

/* A program that writes nothing leaves no stderr.log (a file is an inode, and on this machine's
 * file system an expensive one); the first byte makes it. Sanitizer builds open it from the start
 * for their reports (shim.c: SHIM_LOG_EAGER). */
TEST(stderr_log_is_made_at_the_first_output)
{
    for (int writes = 0; writes < 2; writes++) {
        _cleanup_free_ char *dir = NULL;
        _cleanup_free_ char *exe = make_script(writes ? "echo hi; exit 0" : "exit 0", &dir);
        RunnerProcess *p = NULL;
        ASSERT_OK(launch(exe, dir, 4096, NULL, &p));
        ExitStatus st;
        ASSERT_OK(wait_exit(p, &st));
        p = runner_process_free(p);
        _cleanup_free_ char *path = xasprintf("%s/stderr.log", dir);
        bool made = access(path, F_OK) == 0;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
        ASSERT_TRUE(made);
#else
        ASSERT_EQ(made, writes == 1);
#endif
        ASSERT_EQ(st.log_bytes, writes ? 3u : 0u);
        if (writes) {
            _cleanup_free_ char *log = read_log(dir);
            ASSERT_STREQ(log, "hi\n");
        }
    }
}

TEST(output_beyond_the_cap_is_counted_not_kept)
{
    _cleanup_free_ char *dir = NULL;
    _cleanup_free_ char *exe =
        make_script("i=0; while [ $i -lt 2000 ]; do echo 0123456789012345678901234567890123456789;"
                    " i=$((i+1)); done",
                    &dir);
    RunnerProcess *p = NULL;
    ASSERT_OK(launch(exe, dir, 1000, NULL, &p));
    ExitStatus st;
    ASSERT_OK(wait_exit(p, &st));
    ASSERT_EQ(st.exit_code, 0);
    ASSERT_EQ(st.log_bytes, 1000);
    ASSERT_EQ(st.log_dropped, 2000 * 41 - 1000);
    _cleanup_free_ char *log = read_log(dir);
    ASSERT_EQ(strlen(log), 1000);
    p = runner_process_free(p);
}

TEST(resource_limits_apply)
{
    _cleanup_free_ char *dir = NULL;
    _cleanup_free_ char *exe = make_script("ulimit -n", &dir);
    RunnerLimits lim = {.open_files = 64};
    RunnerProcess *p = NULL;
    ASSERT_OK(launch(exe, dir, 4096, &lim, &p));
    ExitStatus st;
    ASSERT_OK(wait_exit(p, &st));
    _cleanup_free_ char *log = read_log(dir);
    ASSERT_STREQ(log, "64\n");
    p = runner_process_free(p);
}

TEST(unusable_programs_fail_clearly)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    RunnerProcess *p = NULL;
    Error e = ERROR_INIT;
    static const char *const envp[] = {NULL};
    RunnerLaunch spec = {.executable = "/nonexistent/prog", .run_dir = dir, .envp = envp};
    ASSERT_EQ(runner_launch(runner, &spec, &p, &e), -ENOENT);
    ASSERT_TRUE(strstr(error_message(&e), "/nonexistent/prog") != NULL);
    spec.executable = "relative/prog";
    ASSERT_EQ(runner_launch(runner, &spec, &p, &e), -EINVAL);
    error_done(&e);

    /* executable bit, but not a program the kernel can run: the shim records a spawn failure */
    _cleanup_free_ char *bad = xasprintf("%s/garbage", dir);
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_OK(fileio_write_atomic(dfd, "garbage", "\x01\x02\x03\x04", 4, 0755));
    spec.executable = bad;
    spec.log_limit = 4096;
    ASSERT_OK(runner_launch(runner, &spec, &p, &e));
    ExitStatus st;
    ASSERT_OK(wait_exit(p, &st));
    ASSERT_EQ(st.kind, EXIT_KIND_SPAWN_FAILED);
    ASSERT_EQ(st.exit_code, 127);
    ASSERT_TRUE(strstr(st.error, "could not execute") != NULL);
    p = runner_process_free(p);
}

/* The spawn failure names the program's path, whatever bytes it holds: the exit record is still
 * written, so the exit is not lost. */
TEST(a_spawn_failure_of_a_path_that_is_not_utf8_is_recorded)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_OK(fileio_write_atomic(dfd,
                                  "garb\xff"
                                  "age",
                                  "\x01\x02\x03\x04", 4, 0755));
    _cleanup_free_ char *bad = xasprintf("%s/garb\xff"
                                         "age",
                                         dir);
    static const char *const envp[] = {NULL};
    RunnerLaunch spec = {.executable = bad, .run_dir = dir, .envp = envp, .log_limit = 4096};
    RunnerProcess *p = NULL;
    ASSERT_OK(runner_launch(runner, &spec, &p, NULL));
    ExitStatus st;
    ASSERT_OK(wait_exit(p, &st));
    ASSERT_EQ(st.kind, EXIT_KIND_SPAWN_FAILED);
    ASSERT_TRUE(strstr(st.error, "garb\xef\xbf\xbd"
                                 "age") != NULL);
    p = runner_process_free(p);
}

/* An error message of the longest length, cut by the reader in the middle of a character, is
 * cut at the character before it and can be written again. */
TEST(a_long_exit_error_reads_back_whole_characters)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    char error[300];
    memset(error, 'x', 254);
    snprintf(error + 254, sizeof error - 254, "\xc3\xa9\xc3\xa9");
    _cleanup_free_ char *text = xasprintf(
        "1\n{\"kind\":\"spawn_failed\",\"code\":2,\"exit_code\":127,\"pid\":0,\"log_bytes\":0,"
        "\"log_dropped\":0,\"cpu_usec\":0,\"max_rss_bytes\":0,\"started_at\":1,"
        "\"finished_at\":2,\"error\":\"%s\"}\n",
        error);
    ASSERT_OK(fileio_write_atomic(dfd, SHIM_LOCK_FILE, text, strlen(text), 0640));
    ExitStatus st, again;
    ASSERT_OK(exit_status_read(dfd, &st, NULL));
    ASSERT_TRUE(strlen(st.error) < sizeof st.error);
    ASSERT_TRUE(strcmp(st.error + strlen(st.error) - 3, "...") == 0);
    _cleanup_close_ int lockfd =
        openat(dfd, SHIM_LOCK_FILE, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    ASSERT_TRUE(lockfd >= 0);
    ASSERT_OK(exit_status_write(lockfd, &st));
    ASSERT_OK(exit_status_read(dfd, &again, NULL));
    ASSERT_STREQ(again.error, st.error);
}

/* A lock file that holds the record of an earlier launch, left by a shim of that launch: a shim
 * that ends before it takes the lock (here: refused, the lock held) has recorded nothing, and the
 * earlier record is not taken for this launch's. */
TEST(an_earlier_exit_record_is_not_mistaken_for_this_launch)
{
    _cleanup_free_ char *dir = NULL;
    _cleanup_free_ char *exe = make_script("exit 0", &dir);
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    _cleanup_close_ int lockfd =
        openat(dfd, SHIM_LOCK_FILE, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    ASSERT_TRUE(lockfd >= 0);
    ASSERT_EQ(write(lockfd, "1\n", 2), 2);
    ExitStatus old = {.kind = EXIT_KIND_EXITED, .code = 99, .exit_code = 99, .attempt = 1};
    ASSERT_OK(exit_status_write(lockfd, &old));
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    ASSERT_OK(fcntl(lockfd, F_SETLK, &fl));
    static const char *const envp[] = {"PATH=/usr/bin:/bin", NULL};
    RunnerLaunch spec = {
        .instance_id = "inst-1", .executable = exe, .run_dir = dir, .envp = envp, .attempt = 2};
    RunnerProcess *p = NULL;
    ASSERT_OK(runner_launch(runner, &spec, &p, NULL));
    struct pollfd pfd = {runner_process_fd(p), POLLIN, 0};
    ASSERT_EQ(poll(&pfd, 1, 20000), 1);
    ExitStatus st = {0};
    Error e = ERROR_INIT;
    ASSERT_TRUE(runner_process_reap(p, &st, &e) < 0);
    ASSERT_TRUE(strstr(error_message(&e), "without recording how the program ended") != NULL);
    error_done(&e);
    p = runner_process_free(p);
}

/* What a daemon started again does: it forgot the launch, finds the shim through its lock, and
 * watches, stops and reaps it like its own; once it has ended, its exit status is collected. */
TEST(a_left_running_shim_is_found_and_its_exit_collected)
{
    _cleanup_free_ char *dir = NULL;
    _cleanup_free_ char *exe = make_script("echo started; exec sleep 60", &dir);
    static const char *const envp[] = {"PATH=/usr/bin:/bin", NULL};
    RunnerLaunch spec = {
        .instance_id = "inst-1", .executable = exe, .run_dir = dir, .envp = envp, .attempt = 7};
    RunnerProcess *p = NULL, *again = NULL;
    Error e = ERROR_INIT;
    ExitStatus st;
    int attempt = 0;

    /* nothing ran here yet */
    ASSERT_EQ(runner_attach(runner, dir, &attempt, &again, &e), 0);
    ASSERT_EQ(runner_collect(runner, dir, &st, &e), -ENOENT);
    error_done(&e);

    ASSERT_OK(runner_launch(runner, &spec, &p, &e));
    pid_t pid = runner_process_pid(p);
    /* the shim takes its lock right after it starts */
    int r = 0;
    for (int i = 0; i < 500 && (r = runner_attach(runner, dir, &attempt, &again, &e)) == 0; i++)
        (void)usleep(2000);
    ASSERT_EQ(r, 1);
    ASSERT_EQ(attempt, 7);
    ASSERT_EQ(runner_process_pid(again), pid);
    ASSERT_EQ(runner_collect(runner, dir, &st, &e), -ENOENT); /* still running */
    error_done(&e);

    /* the attached handle stops it, and its end is seen through the pidfd */
    ASSERT_OK(runner_process_signal(again, SIGKILL));
    ASSERT_OK(wait_exit(again, &st));
    ASSERT_EQ(st.kind, EXIT_KIND_SIGNALED);
    ASSERT_EQ(st.code, SIGKILL);
    ASSERT_EQ(st.attempt, 7);
    again = runner_process_free(again);

    /* gone: no shim to find, but its exit status stays for collection */
    ASSERT_EQ(runner_attach(runner, dir, &attempt, &again, &e), 0);
    ASSERT_OK(runner_collect(runner, dir, &st, &e));
    ASSERT_EQ(st.exit_code, 128 + SIGKILL);
    ASSERT_EQ(st.attempt, 7);
    ASSERT_OK(wait_exit(p, &st)); /* the child is reaped by its parent as usual */
    ASSERT_EQ(st.attempt, 7);
    p = runner_process_free(p);
}

TEST(a_second_shim_in_the_same_run_directory_refuses)
{
    _cleanup_free_ char *dir = NULL;
    _cleanup_free_ char *exe = make_script("exec sleep 60", &dir);
    static const char *const envp[] = {"PATH=/usr/bin:/bin", NULL};
    RunnerLaunch spec = {
        .instance_id = "inst-1", .executable = exe, .run_dir = dir, .envp = envp, .attempt = 1};
    RunnerProcess *first = NULL, *second = NULL, *found = NULL;
    Error e = ERROR_INIT;
    int attempt = 0, r = 0;

    ASSERT_OK(runner_launch(runner, &spec, &first, &e));
    for (int i = 0; i < 500 && (r = runner_attach(runner, dir, &attempt, &found, &e)) == 0; i++)
        (void)usleep(2000);
    ASSERT_EQ(r, 1);
    found = runner_process_free(found);
    /* the first one's program group, on the lock file's second line once it has spawned */
    _cleanup_free_ char *lock_path = xasprintf("%s/shim.lock", dir);
    pid_t pgid = 0;
    for (int i = 0; i < 500 && pgid <= 1; i++) {
        _cleanup_free_ char *lock = NULL;
        ASSERT_OK(fileio_read_all(lock_path, 4096, &lock, NULL));
        if (strchr(lock, '\n'))
            pgid = atoi(strchr(lock, '\n') + 1);
        if (pgid <= 1)
            (void)usleep(2000);
    }
    ASSERT_TRUE(pgid > 1);
    spec.attempt = 2;
    ASSERT_OK(runner_launch(runner, &spec, &second, &e));
    struct pollfd pfd = {runner_process_fd(second), POLLIN, 0};
    ASSERT_EQ(poll(&pfd, 1, 20000), 1);
    ExitStatus st;
    ASSERT_TRUE(runner_process_reap(second, &st, &e) < 0); /* it recorded nothing */
    error_done(&e);
    second = runner_process_free(second);
    /* and the first one's program was left alone: it is alive at once after the reap, not only
     * when the first shim notices */
    _cleanup_free_ char *stat_path = xasprintf("/proc/%d/stat", (int)pgid);
    char stat[512] = "";
    int fd = open(stat_path, O_RDONLY | O_CLOEXEC);
    ASSERT_TRUE(fd >= 0 && read(fd, stat, sizeof stat - 1) > 0);
    (void)close(fd);
    ASSERT_NOT_NULL(strrchr(stat, ')'));
    ASSERT_TRUE(strrchr(stat, ')')[2] != 'Z'); /* not killed, waiting for its shim's reap */
    /* the first still runs, and is still the one found */
    ASSERT_EQ(runner_attach(runner, dir, &attempt, &found, &e), 1);
    ASSERT_EQ(attempt, 1);
    ASSERT_EQ(runner_process_pid(found), runner_process_pid(first));
    found = runner_process_free(found);
    ASSERT_OK(runner_process_signal(first, SIGKILL));
    ASSERT_OK(wait_exit(first, &st));
    ASSERT_EQ(st.attempt, 1);
    first = runner_process_free(first);
}

/* Up to max - 1 bytes of a /proc file (whose size stat() does not know); -1 if unreadable. */
static ssize_t read_proc(const char *path, char *buf, size_t max)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, max - 1);
    (void)close(fd);
    if (n >= 0)
        buf[n] = '\0';
    return n;
}

/* The runtara-shim processes among the children of pid with a working directory of "/" (not
 * launched yet: a launched one is in its run directory) and flag among their arguments. */
static size_t shims_in_root(pid_t parent, const char *flag, pid_t *pids, size_t max)
{
    char children[4096], args[4096];
    _cleanup_free_ char *path = xasprintf("/proc/%d/task/%d/children", parent, parent);
    size_t n = 0;
    if (read_proc(path, children, sizeof children) < 0)
        return 0;
    char *save = NULL;
    for (char *tok = strtok_r(children, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
        pid_t pid = atoi(tok);
        _cleanup_free_ char *cmd = xasprintf("/proc/%d/cmdline", pid);
        _cleanup_free_ char *cwd = xasprintf("/proc/%d/cwd", pid);
        char where[8] = "";
        ssize_t len = read_proc(cmd, args, sizeof args);
        /* just spawned: its arguments appear once its exec has gone a little further */
        for (int i = 0; i < 1000 && len == 0; i++) {
            (void)usleep(1000);
            len = read_proc(cmd, args, sizeof args);
        }
        if (len <= 0 || readlink(cwd, where, 7) != 1 || strcmp(where, "/") != 0)
            continue;
        bool match = false;
        for (ssize_t i = 0; i < len; i += (ssize_t)strlen(args + i) + 1)
            match |= strcmp(args + i, flag) == 0;
        if (match && n < max)
            pids[n++] = pid;
    }
    return n;
}

/* The idle shims, waiting for a launch: the children of our zygotes (shim-launch.h), and any
 * started directly (our children, with --launch-fd). */
static size_t idle_shims(pid_t *pids, size_t max)
{
    pid_t zygotes[8];
    size_t n = shims_in_root(getpid(), "--launch-fd", pids, max);
    size_t nz = shims_in_root(getpid(), "--zygote", zygotes, ELEMENTSOF(zygotes));
    for (size_t i = 0; i < nz; i++)
        n += shims_in_root(zygotes[i], "--zygote", pids + n, max - n);
    return n;
}

/* Whether pid ends within about a second: exits (a zombie is enough), or with reaped, is gone
 * altogether. */
static bool ends(pid_t pid, bool reaped)
{
    _cleanup_free_ char *path = xasprintf("/proc/%d/stat", (int)pid);
    for (int i = 0; i < 1000; i++) {
        char stat[512];
        if (read_proc(path, stat, sizeof stat) <= 0 || !strrchr(stat, ')') ||
            (!reaped && strrchr(stat, ')')[2] == 'Z'))
            return true;
        (void)usleep(1000);
    }
    return false;
}

static bool exists(pid_t pid)
{
    return kill(pid, 0) == 0 || errno != ESRCH;
}

TEST(a_prestarted_shim_takes_the_launch)
{
    _cleanup_free_ char *dir = NULL;
    _cleanup_free_ char *exe = make_script("echo hello $RUNTARA_INSTANCE_ID; pwd; exit 5", &dir);
    pid_t idle[4];

    ASSERT_OK(runner_prestart(runner, NULL));
    ASSERT_EQ(idle_shims(idle, 4), 1);
    pid_t ahead = idle[0];
    ASSERT_OK(runner_prestart(runner, NULL)); /* one waits already: no second one */
    ASSERT_EQ(idle_shims(idle, 4), 1);
    ASSERT_EQ(idle[0], ahead);

    RunnerProcess *p = NULL;
    ASSERT_OK(launch(exe, dir, 1 << 20, NULL, &p));
    ASSERT_EQ(runner_process_pid(p), ahead); /* the launch went to the shim started ahead */
    ExitStatus st;
    ASSERT_OK(wait_exit(p, &st));
    ASSERT_EQ(st.exit_code, 5);
    _cleanup_free_ char *log = read_log(dir);
    ASSERT_TRUE(strstr(log, "hello inst-1\n") != NULL);
    ASSERT_TRUE(strstr(log, dir) != NULL); /* it moved into the run directory */
    ASSERT_EQ(idle_shims(idle, 4), 0);     /* used up: the next one is the caller's to ready */
    p = runner_process_free(p);
}

TEST(an_idle_shim_that_died_is_replaced_at_the_launch)
{
    _cleanup_free_ char *dir = NULL;
    _cleanup_free_ char *exe = make_script("exit 4", &dir);
    pid_t idle[4];

    ASSERT_OK(runner_prestart(runner, NULL));
    ASSERT_EQ(idle_shims(idle, 4), 1);
    pid_t dead = idle[0];
    ASSERT_OK(kill(dead, SIGKILL));
    ASSERT_TRUE(ends(dead, false));

    RunnerProcess *p = NULL;
    ASSERT_OK(launch(exe, dir, 1 << 20, NULL, &p));
    ASSERT_TRUE(runner_process_pid(p) != dead);
    ExitStatus st;
    ASSERT_OK(wait_exit(p, &st));
    ASSERT_EQ(st.exit_code, 4);
    ASSERT_TRUE(ends(dead, true)); /* and the dead one was reaped */
    p = runner_process_free(p);
}

/* Field k (0: the state) after the command of /proc/PID/stat; -1 if unreadable. */
static long stat_field(pid_t pid, int k)
{
    _cleanup_free_ char *path = xasprintf("/proc/%d/stat", (int)pid);
    char stat[512];
    if (read_proc(path, stat, sizeof stat) <= 0 || !strrchr(stat, ')'))
        return -1;
    char *p = strrchr(stat, ')') + 2;
    for (int i = 0; i < k && p; i++)
        p = strchr(p, ' ') ? strchr(p, ' ') + 1 : NULL;
    return p ? strtol(p, NULL, 10) : -1;
}

/* Idle shims are forked by one zygote (shim-launch.h), each a session of its own; a zygote that
 * died is replaced at the next launch; the zygote ends with its runner. */
TEST(idle_shims_are_forked_by_a_zygote_that_ends_with_its_runner)
{
    _cleanup_free_ char *dir = NULL;
    /* the program waits on a FIFO, so its shim is alive while the test reads its stat */
    _cleanup_free_ char *exe = make_script("read _ < \"$(dirname \"$0\")/go\"; exit 3", &dir);
    _cleanup_free_ char *go = xasprintf("%s/go", dir);
    ASSERT_OK(mkfifo(go, 0600));
    pid_t shims[3], parents[3];
    for (int i = 0; i < 3; i++) {
        RunnerProcess *p = NULL;
        ASSERT_OK(launch(exe, dir, 1 << 20, NULL, &p));
        shims[i] = runner_process_pid(p);
        parents[i] = (pid_t)stat_field(shims[i], 1);
        /* its session's leader (from its first step after the fork: it may not be there yet) */
        for (int k = 0; k < 1000 && stat_field(shims[i], 3) != shims[i]; k++)
            (void)usleep(1000);
        ASSERT_EQ(stat_field(shims[i], 3), shims[i]);
        int fd = open(go, O_WRONLY | O_CLOEXEC); /* blocks until the program opens it */
        ASSERT_TRUE(fd >= 0);
        ASSERT_EQ(write(fd, "\n", 1), 1);
        (void)close(fd);
        ExitStatus st;
        ASSERT_OK(wait_exit(p, &st)); /* watched and collected, though not our child */
        ASSERT_EQ(st.exit_code, 3);
        p = runner_process_free(p);
        if (i == 1) /* the zygote killed: the next launch has a new one */
            ASSERT_OK(kill(parents[1], SIGKILL));
    }
    ASSERT_TRUE(parents[0] != getpid() && parents[0] > 1);
    ASSERT_EQ(parents[1], parents[0]);
    ASSERT_TRUE(parents[2] != parents[0] && parents[2] > 1);
    ASSERT_EQ(stat_field(parents[2], 1), getpid()); /* the zygote is the runner's child */
    ASSERT_TRUE(ends(parents[0], true));            /* and the dead one was reaped */

    Runner *other = NULL;
    pid_t idle[8];
    size_t n = idle_shims(idle, 8);
    ASSERT_OK(runner_native_new(&(RunnerSettings){.shim_path = shim_path}, &other, NULL));
    ASSERT_OK(runner_prestart(other, NULL));
    pid_t after[8];
    ASSERT_EQ(idle_shims(after, 8), n + 1);
    pid_t zygote = 0;
    for (size_t i = 0; i < n + 1; i++)
        if (stat_field(after[i], 1) != parents[2])
            zygote = (pid_t)stat_field(after[i], 1);
    ASSERT_TRUE(zygote > 1);
    other = runner_free(other);
    ASSERT_TRUE(ends(zygote, true));
}

TEST(an_idle_shim_exits_when_its_runner_goes)
{
    Runner *other = NULL;
    pid_t before[4], after[4];
    size_t n = idle_shims(before, 4);
    ASSERT_OK(runner_native_new(&(RunnerSettings){.shim_path = shim_path}, &other, NULL));
    ASSERT_OK(runner_prestart(other, NULL));
    ASSERT_EQ(idle_shims(after, 4), n + 1);
    pid_t pid = 0;
    for (size_t i = 0; i < n + 1; i++) {
        bool known = false;
        for (size_t k = 0; k < n; k++)
            known |= after[i] == before[k];
        if (!known)
            pid = after[i];
    }
    ASSERT_TRUE(pid > 0);
    /* the runner only closes the socket and waits: the shim ends by itself */
    other = runner_free(other);
    ASSERT_FALSE(exists(pid));
}

/* A daemon that dies while it hands a launch over leaves a shim with part of it: the shim acts
 * only on a complete launch, so it exits without touching the run directory. */
TEST(an_idle_shim_ignores_a_launch_cut_short)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    int sv[2];
    ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, sv[1], SHIM_LAUNCH_FD);
    char *argv[] = {shim_path, "--launch-fd", "3", NULL};
    char *envp[] = {NULL};
    pid_t pid;
    ASSERT_EQ(posix_spawn(&pid, shim_path, &fa, NULL, argv, envp), 0);
    posix_spawn_file_actions_destroy(&fa);
    (void)close(sv[1]);

    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_TRUE(dirfd >= 0);
    static const char strings[] = "runtara-shim\0--\0/bin/true\0\0PATH=/bin";
    /* 20 bytes of the announced strings, and then the "daemon" dies */
    ASSERT_EQ(shim_launch_send(sv[0], dirfd, sizeof strings, strings, 20),
              (ssize_t)sizeof(ShimLaunchHeader) + 20);
    (void)close(sv[0]);
    (void)close(dirfd);

    int status = -1;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    _cleanup_free_ char *lock = xasprintf("%s/shim.lock", dir);
    _cleanup_free_ char *log = xasprintf("%s/stderr.log", dir);
    ASSERT_TRUE(access(lock, F_OK) < 0 && errno == ENOENT);
    ASSERT_TRUE(access(log, F_OK) < 0 && errno == ENOENT);
}

static int mock_run(const char *const *envp, int sig, ExitStatus *st)
{
    Runner *mock = NULL;
    RunnerProcess *p = NULL;
    _cleanup_free_ char *dir = tests_tmpdir();
    RunnerLaunch spec = {.executable = "/none", .run_dir = dir, .envp = envp};
    int r = runner_mock_new(&mock);
    if (r >= 0)
        r = runner_launch(mock, &spec, &p, NULL);
    if (r >= 0 && sig)
        r = runner_process_signal(p, sig);
    if (r >= 0) {
        struct pollfd pfd = {runner_process_fd(p), POLLIN, 0};
        r = poll(&pfd, 1, 5000) == 1 ? runner_process_reap(p, st, NULL) : -ETIMEDOUT;
    }
    runner_process_free(p);
    runner_free(mock);
    return r;
}

TEST(mock_runner_pretends_exits)
{
    ExitStatus st;
    static const char *const ok[] = {NULL};
    ASSERT_OK(mock_run(ok, 0, &st));
    ASSERT_EQ(st.kind, EXIT_KIND_EXITED);
    ASSERT_EQ(st.exit_code, 0);
    static const char *const three[] = {"MOCK_EXIT=3", NULL};
    ASSERT_OK(mock_run(three, 0, &st));
    ASSERT_EQ(st.exit_code, 3);
    static const char *const sig[] = {"MOCK_EXIT=signal:9", NULL};
    ASSERT_OK(mock_run(sig, 0, &st));
    ASSERT_EQ(st.kind, EXIT_KIND_SIGNALED);
    ASSERT_EQ(st.exit_code, 137);
    /* a long "run" ends at once on SIGTERM */
    static const char *const slow[] = {"MOCK_DELAY_MS=60000", NULL};
    usec_t t0 = now_usec(CLOCK_MONOTONIC);
    ASSERT_OK(mock_run(slow, SIGTERM, &st));
    ASSERT_EQ(st.exit_code, 128 + SIGTERM);
    ASSERT_TRUE(now_usec(CLOCK_MONOTONIC) - t0 < 2 * USEC_PER_SEC);
}

int main(int argc, char **argv)
{
    static const TestCase tests[] = {
        T(exit_code_output_and_environment),
        T(sigterm_reaches_the_program_handler),
        T(sigkill_ends_the_whole_group),
        T(stderr_log_is_made_at_the_first_output),
        T(output_beyond_the_cap_is_counted_not_kept),
        T(resource_limits_apply),
        T(unusable_programs_fail_clearly),
        T(an_earlier_exit_record_is_not_mistaken_for_this_launch),
        T(a_left_running_shim_is_found_and_its_exit_collected),
        T(a_second_shim_in_the_same_run_directory_refuses),
        T(a_prestarted_shim_takes_the_launch),
        T(an_idle_shim_that_died_is_replaced_at_the_launch),
        T(an_idle_shim_exits_when_its_runner_goes),
        T(idle_shims_are_forked_by_a_zygote_that_ends_with_its_runner),
        T(an_idle_shim_ignores_a_launch_cut_short),
        T(mock_runner_pretends_exits),
        T(a_spawn_failure_of_a_path_that_is_not_utf8_is_recorded),
        T(a_long_exit_error_reads_back_whole_characters),
    };
    _cleanup_free_ char *shim = runner_find_shim();
    Error e = ERROR_INIT;
    shim_path = shim;
    if (runner_native_new(&(RunnerSettings){.shim_path = shim}, &runner, &e) < 0) {
        printf("# %s (set RUNTARA_SHIM_PATH)\n0 passed, 1 failed\n", error_message(&e));
        return 1;
    }
    int r = tests_run(tests, sizeof tests / sizeof tests[0], argc, argv);
    runner = runner_free(runner);
    return r;
}
