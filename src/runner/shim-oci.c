#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../base/alloc.h"
#include "../base/fileio.h"
#include "../base/parse-util.h"
#include "shim-oci.h"

extern char **environ;

/* The cgroup directories of the container, read from /proc/PID/cgroup while its init lives (once
 * it has exited, the kernel shows a cgroup v1 zombie in the root cgroups). */
typedef struct Cgroups {
    char *memory_v1, *cpuacct_v1; /* /sys/fs/cgroup/<hierarchy><path> */
    char *unified;                /* the cgroup2 directory, pure v2 or hybrid */
} Cgroups;

/* Read a small file of /proc or /sys (whose size stat() gives as 0) into buf, NUL-terminated. */
static int read_small(const char *path, char *buf, size_t size)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -errno;
    size_t len = 0;
    while (len < size - 1) {
        ssize_t k = read(fd, buf + len, size - 1 - len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        if (k == 0)
            break;
        len += (size_t)k;
    }
    buf[len] = '\0';
    return 0;
}

static void cgroups_done(Cgroups *c)
{
    free(c->memory_v1);
    free(c->cpuacct_v1);
    free(c->unified);
}

/* Whether the comma-separated list has the controller. */
static bool has_controller(const char *list, size_t len, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p < list + len;) {
        const char *comma = memchr(p, ',', (size_t)(list + len - p));
        size_t k = comma ? (size_t)(comma - p) : (size_t)(list + len - p);
        if (k == n && memcmp(p, name, n) == 0)
            return true;
        p += k + 1;
    }
    return false;
}

/* The container's cgroup directories: from /proc/PID/cgroup of its init, or, given the
 * container's cgroupfs path (cgroups_path, absolute: the runtime makes it in every hierarchy),
 * from the shim's own list of hierarchies with that path, which needs no living init. */
static void read_cgroups(pid_t pid, const char *cgroups_path, Cgroups *ret)
{
    char path[64];
    if (cgroups_path)
        snprintf(path, sizeof path, "/proc/self/cgroup");
    else
        snprintf(path, sizeof path, "/proc/%d/cgroup", (int)pid);
    char text[8192];
    if (read_small(path, text, sizeof text) < 0)
        return;
    struct stat st;
    bool pure_v2 = stat("/sys/fs/cgroup/cgroup.controllers", &st) == 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        const char *ctl = c1 + 1, *cg = cgroups_path ? cgroups_path : c2 + 1;
        size_t ctl_len = (size_t)(c2 - ctl);
        /* an init that already ended (an OOM kill can come first) shows the root cgroup: its
         * figures are the whole machine's, not the container's; none is better */
        if (!cgroups_path && strcmp(cg, "/") == 0)
            continue;
        if (ctl_len == 0 && !ret->unified)
            ret->unified = xasprintf("/sys/fs/cgroup%s%s", pure_v2 ? "" : "/unified", cg);
        if (has_controller(ctl, ctl_len, "memory") && !ret->memory_v1)
            ret->memory_v1 = xasprintf("/sys/fs/cgroup/%.*s%s", (int)ctl_len, ctl, cg);
        if (has_controller(ctl, ctl_len, "cpuacct") && !ret->cpuacct_v1)
            ret->cpuacct_v1 = xasprintf("/sys/fs/cgroup/%.*s%s", (int)ctl_len, ctl, cg);
    }
}

/* A number from dir/file, or from the line "key N" in it when key is given; false if absent. */
static bool read_number(const char *dir, const char *file, const char *key, uint64_t *ret)
{
    if (!dir)
        return false;
    _cleanup_free_ char *path = xasprintf("%s/%s", dir, file);
    char text[4096];
    if (read_small(path, text, sizeof text) < 0)
        return false;
    char *p = text;
    if (key) {
        size_t n = strlen(key);
        for (p = text; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
            if (strncmp(p, key, n) == 0 && p[n] == ' ')
                break;
        if (!p)
            return false;
        p += strlen(key) + 1;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(p, &end, 10);
    if (errno != 0 || end == p)
        return false;
    *ret = v;
    return true;
}

/* Peak memory, CPU time and the OOM killer, from cgroup v1 where the controller is there, else
 * from cgroup2. Best effort: what cannot be read stays 0. */
static void read_metrics(const Cgroups *c, ExitStatus *st)
{
    uint64_t v;
    if (read_number(c->memory_v1, "memory.max_usage_in_bytes", NULL, &v) ||
        read_number(c->unified, "memory.peak", NULL, &v))
        st->memory_peak_bytes = v;
    if (read_number(c->cpuacct_v1, "cpuacct.usage", NULL, &v))
        st->cpu_usec = v / 1000;
    else if (read_number(c->unified, "cpu.stat", "usage_usec", &v))
        st->cpu_usec = v;
    if (read_number(c->memory_v1, "memory.oom_control", "oom_kill", &v) ||
        read_number(c->unified, "memory.events", "oom_kill", &v))
        st->oom = v > 0;
    /* the peak of the whole container: what max_rss_bytes means to a reader of the exit record */
    st->max_rss_bytes = st->memory_peak_bytes;
}

/* Run `<runtime> [--root R] [--systemd-cgroup] --log L --log-format json args...` with stdout and
 * stderr to out_fd (-1: /dev/null), and wait for it. The wait status, or -errno if it could not be
 * executed. */
static int runtime_run(const ShimOci *o, int out_fd, const char *const *args, int pass_fd)
{
    _cleanup_free_ char *log = xasprintf("%s/%s", o->bundle, SHIM_OCI_LOG_FILE);
    const char *argv[24];
    size_t n = 0;
    argv[n++] = o->runtime;
    if (o->root) {
        argv[n++] = "--root";
        argv[n++] = o->root;
    }
    if (o->systemd_cgroup)
        argv[n++] = "--systemd-cgroup";
    argv[n++] = "--log";
    argv[n++] = log;
    argv[n++] = "--log-format";
    argv[n++] = "json";
    for (size_t i = 0; args[i] && n < ELEMENTSOF(argv) - 1; i++)
        argv[n++] = args[i];
    argv[n] = NULL;

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    if (pass_fd >= 0) /* fd 3, for --preserve-fds 1 */
        posix_spawn_file_actions_adddup2(&fa, pass_fd, 3);
    if (out_fd >= 0) {
        posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO);
        posix_spawn_file_actions_adddup2(&fa, out_fd, STDERR_FILENO);
    } else { /* its messages are in its log too */
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
    }
    posix_spawnattr_init(&attr);
    /* the shim's blocked signals (its signalfd's) are no business of the runtime's, nor of the
     * container's init, which inherits them from it */
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    pid_t pid;
    int r = posix_spawnp(&pid, o->runtime, &fa, &attr, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (r != 0)
        return -r;
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -errno;
    return status;
}

/* The runtime's last error message from its JSON log, or "" (the caller frees it). */
static char *runtime_error(const ShimOci *o)
{
    _cleanup_free_ char *path = xasprintf("%s/%s", o->bundle, SHIM_OCI_LOG_FILE), *text = NULL;
    char *msg = xstrdup("");
    if (fileio_read_all_flags(path, O_NOFOLLOW, 1 << 20, &text, NULL) < 0)
        return msg;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        json_t *j = json_loads(line, 0, NULL);
        const char *level = json_string_value(json_object_get(j, "level"));
        const char *m = json_string_value(json_object_get(j, "msg"));
        if (m && level && strcmp(level, "error") == 0) {
            free(msg);
            msg = xstrdup(m);
        }
        json_decref(j);
    }
    return msg;
}

/* What a failed runtime command says, in st->error. */
static int start_failed(const ShimOci *o, ExitStatus *st, const char *what, int status)
{
    st->kind = EXIT_KIND_SPAWN_FAILED;
    st->exit_code = 127;
    if (status < 0) {
        snprintf(st->error, sizeof st->error, "could not execute OCI runtime \"%s\": %s",
                 o->runtime, strerror(-status));
        return status;
    }
    _cleanup_free_ char *why = runtime_error(o);
    snprintf(st->error, sizeof st->error, "could not %s container \"%s\" with \"%s\" (%s %d)%s%s",
             what, o->id, o->runtime, WIFEXITED(status) ? "exit status" : "signal",
             WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), *why ? ": " : "", why);
    return -EIO;
}

static pid_t read_pid_file(const ShimOci *o)
{
    _cleanup_free_ char *path = xasprintf("%s/%s", o->bundle, SHIM_OCI_PID_FILE), *text = NULL;
    uint64_t pid;
    if (fileio_read_all_flags(path, O_NOFOLLOW, 64, &text, NULL) < 0)
        return -1;
    text[strcspn(text, "\n")] = '\0';
    if (parse_uint64(text, &pid) < 0 || pid == 0 || pid > INT32_MAX)
        return -1;
    return (pid_t)pid;
}

typedef struct Wait {
    pid_t init;
    bool done;
    int status;
    bool term_as_kill; /* SIGKILL stood in for a SIGTERM the init would have died of */
} Wait;

/* Whether the process catches or ignores sig (/proc/PID/status SigCgt, SigIgn). As pid 1 of its
 * namespace the init is spared the default action of every signal it does not catch, which for
 * SIGTERM is to die: the shim then does it with SIGKILL, so that a stop ends a container's
 * program as it ends a native one. */
static bool handles_signal(pid_t pid, int sig)
{
    char path[64], text[4096];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    if (read_small(path, text, sizeof text) < 0)
        return true; /* unknown: let the signal be */
    const char *const keys[] = {"SigCgt:", "SigIgn:"};
    for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
        const char *p = strstr(text, keys[i]);
        if (p && (strtoull(p + strlen(keys[i]), NULL, 16) >> (sig - 1) & 1))
            return true;
    }
    return false;
}

static void handle_signal(const ShimOciIo *io, Wait *w)
{
    struct signalfd_siginfo si;
    if (read(io->sigfd, &si, sizeof si) != sizeof si)
        return;
    if (si.ssi_signo == SIGCHLD) {
        /* the init, and whatever else the runtime left to the subreaper */
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
            if (pid == w->init && !w->done) {
                w->done = true;
                w->status = status;
            }
    } else if (!w->done) {
        int sig = si.ssi_signo == SIGQUIT ? SIGKILL : SIGTERM;
        if (sig == SIGTERM && !handles_signal(w->init, SIGTERM)) {
            sig = SIGKILL;
            w->term_as_kill = true;
        }
        (void)kill(w->init, sig);
    }
}

/* Wait for the init to end while copying the output, then drain what is left of it for at most a
 * second (the pid namespace ends with its init, so only a leak could keep it open). */
static void wait_init(const ShimOciIo *io, Wait *w)
{
    /* it may have ended before the signalfd could tell: the SIGCHLD came while the runtime was
     * waited for */
    int status;
    if (waitpid(w->init, &status, WNOHANG) == w->init) {
        w->done = true;
        w->status = status;
    }
    while (!w->done || *io->pipefd >= 0) {
        struct pollfd p[2] = {{io->sigfd, POLLIN, 0}, {*io->pipefd, POLLIN, 0}};
        int r = poll(p, *io->pipefd >= 0 ? 2 : 1, w->done ? 1000 : -1);
        if (r < 0 && errno != EINTR)
            break;
        if (r == 0 && w->done)
            break;
        if (r > 0 && p[0].revents)
            handle_signal(io, w);
        if (r > 0 && *io->pipefd >= 0 && p[1].revents)
            io->pump(io->userdata);
    }
}

int shim_oci_run(const ShimOci *o, int pipe_w, const ShimOciIo *io, ExitStatus *st)
{
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
        st->kind = EXIT_KIND_SPAWN_FAILED;
        st->exit_code = 127;
        snprintf(st->error, sizeof st->error, "could not become a subreaper: %s", strerror(errno));
        return -errno;
    }
    _cleanup_free_ char *pid_file = xasprintf("%s/%s", o->bundle, SHIM_OCI_PID_FILE);
    _cleanup_free_ char *log = xasprintf("%s/%s", o->bundle, SHIM_OCI_LOG_FILE);
    (void)unlink(pid_file);
    (void)unlink(log);

    /* One runtime call: `run --detach` creates and starts the container, whose init is then
     * reparented to the shim, a subreaper, and waited for. (create, then start, cost a second
     * call, ~1.6 ms of a start with crun: docs/benchmarks.md.) The token's pipe, if any, becomes
     * the container's fd 3 (RUNTARA_INSTANCE_TOKEN_FD). */
    const char *const run[] = {"run",    "--detach",       "--bundle", o->bundle, "--pid-file",
                               pid_file, "--preserve-fds", "1",        o->id,     NULL};
    const char *const run_plain[] = {"run",        "--detach", "--bundle", o->bundle,
                                     "--pid-file", pid_file,   o->id,      NULL};
    int status = o->token_fd >= 0 ? runtime_run(o, pipe_w, run, o->token_fd)
                                  : runtime_run(o, pipe_w, run_plain, -1);
    /* from now on only the container holds the pipe: its end is the container's */
    (void)close(pipe_w);
    Wait w = {.init = status == 0 ? read_pid_file(o) : -1};
    Cgroups cg = {0};
    int r = 0;
    if (status != 0)
        r = start_failed(o, st, "run", status);
    else if (w.init <= 0) {
        st->kind = EXIT_KIND_SPAWN_FAILED;
        st->exit_code = 127;
        snprintf(st->error, sizeof st->error, "could not read the pid of container \"%s\"", o->id);
        r = -ESRCH;
    } else {
        /* with cgroupfs the path is known; with systemd, read it while the init may still live */
        read_cgroups(w.init, o->cgroups_path, &cg);
        wait_init(io, &w);
        if (WIFSIGNALED(w.status)) {
            st->kind = EXIT_KIND_SIGNALED;
            st->code = WTERMSIG(w.status);
            if (st->code == SIGKILL && w.term_as_kill) /* what a native program would show */
                st->code = SIGTERM;
            st->exit_code = 128 + st->code;
        } else {
            st->kind = EXIT_KIND_EXITED;
            st->code = st->exit_code = WEXITSTATUS(w.status);
        }
        st->pid = w.init;
        read_metrics(&cg, st);
    }
    const char *const del[] = {"delete", "--force", o->id, NULL};
    (void)runtime_run(o, -1, del, -1);
    cgroups_done(&cg);
    return r;
}
