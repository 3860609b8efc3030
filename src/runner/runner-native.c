/* The native runner: the instance's program runs as a plain process under runtara-shim, in a
 * session of its own (so it survives the daemon), its working directory the run directory. The
 * daemon watches the shim through a pidfd and reads its exit record once it ends. Stop signals go
 * to the shim, which forwards them to the program's process group (SIGKILL as SIGQUIT, since a
 * SIGKILL cannot be forwarded).
 *
 * Starting a process costs milliseconds here, and a launch used to cost two in a row (the shim,
 * then the program). So the runner keeps one shim started ahead (runner_prestart): idle, in its
 * own session with its signals blocked as at any launch, waiting on a socket for its launch
 * (shim-launch.h). A launch hands it the run directory, arguments and environment, and only the
 * program's own start is left on the launch's path. Idle shims are made by fork() in a zygote, one
 * shim process started once (shim-launch.h), rather than each started as a new process image
 * (figures in docs/benchmarks.md); they are the zygote's children, so the runner watches them
 * through their pidfd, as it watches a shim found after a restart. If zygotes keep failing, idle
 * shims are started directly again, as our children. An idle shim exits by itself when its socket
 * closes, and the zygote when its own does (the runner freed, or the daemon gone, even by kill -9),
 * so none is left behind.
 *
 * A daemon that starts again finds a shim left running through the POSIX lock the shim holds on
 * shim.lock for its whole life: F_GETLK names the holder's pid, which cannot be a recycled pid
 * (the lock goes when the shim does) and which a reboot clears. A pidfd of a process that is not
 * our child cannot be waited for, but it becomes readable when the process ends, and the exit
 * record (exit-status.h) tells the rest. */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../base/alloc.h"
#include "../base/log.h"
#include "oci-spec.h"
#include "runner-internal.h"
#include "shim-launch.h"

/* How long a hand-over may wait for the idle shim to take the launch before it is given up. */
#define HAND_OVER_TIMEOUT_SECS 5

typedef struct NativeRunner {
    Runner base;
    bool oci; /* the OCI runner: the shim in its OCI mode (runner-oci.c) */
    RunnerOciSettings o;
    char *shim;
    char *server_socket; /* the instance API's, for shims to connect to at the launch; or NULL */
    /* the shim started ahead, waiting on idle_sock for its launch; idle_pid 0 if there is none */
    pid_t idle_pid;
    int idle_pidfd, idle_sock;
    bool idle_forked; /* made by the zygote: its child, not ours */
    /* the zygote that makes idle shims (shim-launch.h); zyg_pid 0 if there is none */
    pid_t zyg_pid;
    int zyg_pidfd, zyg_sock;
    unsigned zyg_failures; /* in a row: after a few, idle shims are started directly */
} NativeRunner;

typedef struct NativeProcess {
    RunnerProcess base;
    pid_t pid; /* the shim */
    int pidfd;
    int dirfd; /* the run directory */
    bool reaped;
    bool attached; /* not our child: found through its lock after a restart, or the zygote's */
    int shim_status;
    int attempt; /* the launch's: an exit record of another is not this launch's */
    NativeRunner *runner;
    char cid[OCI_ID_MAX]; /* the container's id (OCI), or "" */
} NativeProcess;

static const RunnerOps native_ops, oci_ops;

static int check_paths(const RunnerLaunch *spec, Error *e)
{
    struct stat st;
    if (spec->executable[0] != '/' || stat(spec->executable, &st) < 0)
        return error_set(e, spec->executable[0] != '/' ? -EINVAL : -errno,
                         "could not use executable \"%s\": %s", spec->executable,
                         spec->executable[0] != '/' ? "not an absolute path" : strerror(errno));
    if (!S_ISREG(st.st_mode) || access(spec->executable, X_OK) < 0)
        return error_set(e, -EACCES, "could not use executable \"%s\": not an executable file",
                         spec->executable);
    return 0;
}

/* Build the shim's argv; the strings live in `store` (freed by the caller). */
static void shim_argv(const NativeRunner *r, const RunnerLaunch *spec, const RunnerOciLaunch *oci,
                      char *store[8], const char *argv[24])
{
    size_t n = 0, k = 0;
    argv[n++] = r->shim;
    if (spec->token) { /* in the launch message only: a shim's argv is anyone's to read */
        argv[n++] = "--token";
        argv[n++] = spec->token;
    }
    argv[n++] = "--attempt";
    argv[n++] = store[k++] = xasprintf("%d", spec->attempt);
    argv[n++] = "--log-limit";
    argv[n++] = store[k++] = xasprintf("%llu", (unsigned long long)spec->log_limit);
    const struct {
        const char *flag;
        uint64_t v;
    } lim[] = {{"--rlimit-as", spec->limits.address_space_bytes},
               {"--rlimit-cpu", spec->limits.cpu_secs},
               {"--rlimit-nofile", spec->limits.open_files}};
    for (size_t i = 0; i < 3; i++)
        if (lim[i].v > 0) {
            argv[n++] = lim[i].flag;
            argv[n++] = store[k++] = xasprintf("%llu", (unsigned long long)lim[i].v);
        }
    if (r->oci) {
        const char *opts[] = {"--oci-runtime", r->o.runtime, "--oci-id",   oci->cid,
                              "--oci-bundle",  oci->bundle,  "--oci-root", r->o.state_dir};
        for (size_t i = 0; i < ELEMENTSOF(opts); i++)
            argv[n++] = opts[i];
        if (r->o.systemd_cgroup)
            argv[n++] = "--oci-systemd-cgroup";
        else { /* the shim reads the container's cgroups there, whether its init lives or not */
            argv[n++] = "--oci-cgroups-path";
            argv[n++] = oci->cgroups_path;
        }
    } else {
        argv[n++] = "--";
        argv[n++] = spec->executable;
    }
    argv[n] = NULL;
    store[k] = NULL;
}

/* Make a send or receive on sock, the runner's end of a shim's socket, give up after
 * HAND_OVER_TIMEOUT_SECS: a shim that stopped answering must not hold the event loop for ever. */
static void give_up_after_timeout(int sock)
{
    struct timeval tv = {.tv_sec = HAND_OVER_TIMEOUT_SECS};
    (void)setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    (void)setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

/* Start the shim with mode ("--launch-fd": an idle shim; "--zygote": the zygote) and one end
 * of a new socket pair as its fd 3, in a session of its own; its pid, a pidfd of it and the
 * other end of the socket pair (give_up_after_timeout()). */
static int shim_spawn(NativeRunner *r, const char *mode, pid_t *ret_pid, int *ret_pidfd,
                      int *ret_sock, Error *e)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t taken, all;
    int sv[2];
    char fdarg[16];
    pid_t pid;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return error_set(e, -errno, "could not start \"%s\": %m", r->shim);
    snprintf(fdarg, sizeof fdarg, "%d", SHIM_LAUNCH_FD);
    const char *argv[] = {r->shim,          mode, fdarg, r->server_socket ? "--connect" : NULL,
                          r->server_socket, NULL};
    const char *envp[] = {NULL};
    /* the shim takes these through a signalfd: blocked from its first instruction, so a stop
     * that comes while it starts is queued for it rather than killing it (shim.c) */
    sigemptyset(&taken);
    sigaddset(&taken, SIGCHLD);
    sigaddset(&taken, SIGTERM);
    sigaddset(&taken, SIGINT);
    sigaddset(&taken, SIGHUP);
    sigaddset(&taken, SIGQUIT);
    sigfillset(&all);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addchdir_np(&fa, "/"); /* until its launch names the run directory */
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, sv[1], SHIM_LAUNCH_FD);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr,
                             POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setsigmask(&attr, &taken);
    posix_spawnattr_setsigdefault(&attr, &all);
    int k = -posix_spawn(&pid, r->shim, &fa, &attr, (char *const *)argv, (char *const *)envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    (void)close(sv[1]);
    if (k < 0) {
        (void)close(sv[0]);
        return error_set(e, k, "could not start \"%s\": %s", r->shim, strerror(-k));
    }
    int pidfd = pidfd_open(pid, 0);
    if (pidfd < 0) {
        k = -errno;
        (void)close(sv[0]);
        (void)kill(pid, SIGKILL);
        (void)waitpid(pid, NULL, 0);
        return error_set(e, k, "could not watch process %d: %s", pid, strerror(-k));
    }
    give_up_after_timeout(sv[0]);
    *ret_pid = pid;
    *ret_pidfd = pidfd;
    *ret_sock = sv[0];
    return 0;
}

/* Let go of a shim process of ours: closing its socket ends it; kill it as well if it is to go
 * at once (it may be stuck), and reap it if it is our child, waiting at most wait_ms. */
static void shim_discard(pid_t *pid, int *pidfd, int *sock, bool kill_it, int wait_ms)
{
    if (*pid == 0)
        return;
    (void)close(*sock);
    if (kill_it)
        (void)pidfd_send_signal(*pidfd, SIGKILL, NULL, 0);
    struct pollfd pfd = {*pidfd, POLLIN, 0};
    if (poll(&pfd, 1, wait_ms) == 1) {
        siginfo_t si = {0};
        (void)waitid((idtype_t)P_PIDFD, (id_t)*pidfd, &si, WEXITED | WNOHANG);
    }
    (void)close(*pidfd);
    *pid = 0;
    *pidfd = *sock = -1;
}

static bool process_gone(int pidfd)
{
    struct pollfd pfd = {pidfd, POLLIN, 0};
    return poll(&pfd, 1, 0) != 0;
}

/* After this many zygotes in a row that could not make a shim, shims are started directly. */
#define ZYGOTE_FAILURES_MAX 3

/* An idle shim from the zygote (started first if there is none, or if it has ended): 0, or < 0
 * if none could be had that way (the caller starts one directly). */
static int zygote_fork(NativeRunner *r)
{
    if (r->zyg_pid != 0 && process_gone(r->zyg_pidfd))
        shim_discard(&r->zyg_pid, &r->zyg_pidfd, &r->zyg_sock, true, 0);
    Error e = ERROR_INIT;
    int k = r->zyg_pid != 0
                ? 0
                : shim_spawn(r, "--zygote", &r->zyg_pid, &r->zyg_pidfd, &r->zyg_sock, &e);
    error_done(&e);
    ShimZygoteReply reply = {0};
    int fds[2] = {-1, -1};
    if (k == 0)
        k = send(r->zyg_sock, "z", 1, MSG_NOSIGNAL) == 1 ? 0 : -errno;
    if (k == 0)
        k = shim_recv_fds(r->zyg_sock, &reply, sizeof reply, fds, 2);
    if (k == 0 && (reply.magic != SHIM_ZYGOTE_MAGIC || reply.pid <= 0)) {
        (void)close(fds[0]);
        (void)close(fds[1]);
        k = -EBADMSG;
    }
    if (k < 0) {
        shim_discard(&r->zyg_pid, &r->zyg_pidfd, &r->zyg_sock, true, 1000);
        if (++r->zyg_failures == ZYGOTE_FAILURES_MAX)
            log_warning("the shim's zygote failed %d times in a row (%s); shims are started one "
                        "by one from now on",
                        ZYGOTE_FAILURES_MAX, strerror(-k));
        return k;
    }
    r->zyg_failures = 0;
    give_up_after_timeout(fds[1]);
    r->idle_pid = reply.pid;
    r->idle_pidfd = fds[0];
    r->idle_sock = fds[1];
    r->idle_forked = true;
    return 0;
}

/* Make an idle shim (shim-launch.h): forked by the zygote (by a new one if the one there has
 * failed), or started directly if zygotes keep failing. */
static int idle_spawn(NativeRunner *r, Error *e)
{
    for (int tries = 0; tries < 2 && r->zyg_failures < ZYGOTE_FAILURES_MAX; tries++)
        if (zygote_fork(r) == 0)
            return 0;
    r->idle_forked = false;
    return shim_spawn(r, "--launch-fd", &r->idle_pid, &r->idle_pidfd, &r->idle_sock, e);
}

/* Let go of the idle shim (see shim_discard()). */
static void idle_discard(NativeRunner *r, bool kill_it, int wait_ms)
{
    shim_discard(&r->idle_pid, &r->idle_pidfd, &r->idle_sock, kill_it, wait_ms);
}

/* Whether the idle shim has ended (killed while it waited). */
static bool idle_gone(const NativeRunner *r)
{
    return process_gone(r->idle_pidfd);
}

static int send_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, buf, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return errno == EAGAIN ? -ETIMEDOUT : -errno;
        buf += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Send the launch to the idle shim: the run directory as an fd and the strings, in one message
 * when the socket takes it whole. */
static int hand_over(NativeRunner *r, const RunnerLaunch *spec, int dirfd,
                     const RunnerOciLaunch *oci)
{
    char *store[8];
    const char *argv[24];
    static const char *const none[] = {NULL};
    size_t len = 1; /* the empty string between argv and the environment */

    /* what the program sees of the host: the run directory as its HOME, the socket's own path */
    _cleanup_free_ char *home = xasprintf("HOME=%s", spec->run_dir);
    _cleanup_free_ char *addr =
        r->server_socket ? xasprintf("RUNTARA_SERVER_ADDR=unix:%s", r->server_socket) : NULL;
    const char *base[] = {"PATH=/usr/local/bin:/usr/bin:/bin", home, addr};
    const char *const *envp = spec->envp;
    if (r->oci) { /* the container's environment is in its config.json */
        base[0] = base[1] = base[2] = NULL;
        envp = none;
    }
    shim_argv(r, spec, oci, store, argv);
    for (size_t i = 0; argv[i]; i++)
        len += strlen(argv[i]) + 1;
    for (size_t i = 0; i < ELEMENTSOF(base); i++)
        len += base[i] ? strlen(base[i]) + 1 : 0;
    for (size_t i = 0; envp[i]; i++)
        len += strlen(envp[i]) + 1;
    int k = len > SHIM_LAUNCH_MAX ? -E2BIG : 0;
    _cleanup_free_ char *buf = k < 0 ? NULL : xmalloc(len);
    char *p = buf;
    for (size_t i = 0; k == 0 && argv[i]; i++)
        p = stpcpy(p, argv[i]) + 1;
    if (k == 0)
        *p++ = '\0';
    for (size_t i = 0; k == 0 && i < ELEMENTSOF(base); i++)
        if (base[i])
            p = stpcpy(p, base[i]) + 1;
    for (size_t i = 0; k == 0 && envp[i]; i++)
        p = stpcpy(p, envp[i]) + 1;
    for (size_t i = 0; store[i]; i++)
        free(store[i]);
    if (k < 0)
        return k;

    ssize_t n = shim_launch_send(r->idle_sock, dirfd, (uint32_t)len, buf, len);
    if (n >= 0) {
        size_t sent = (size_t)n;
        if (sent < sizeof(ShimLaunchHeader)) {
            ShimLaunchHeader h = {.magic = SHIM_LAUNCH_MAGIC, .len = (uint32_t)len};
            k = send_all(r->idle_sock, (const char *)&h + sent, sizeof h - sent);
            sent = sizeof h;
        }
        sent -= sizeof(ShimLaunchHeader);
        if (k == 0)
            k = send_all(r->idle_sock, buf + sent, len - sent);
    } else
        k = n == -EAGAIN ? -ETIMEDOUT : (int)n;
    explicit_bzero(buf, len); /* the token */
    return k;
}

/* Hand spec to the idle shim (starting one first if there is none, or if the one there has
 * ended); on success the shim is the launch's and no longer idle. */
static int launch_shim(NativeRunner *r, const RunnerLaunch *spec, int dirfd,
                       const RunnerOciLaunch *oci, pid_t *ret_pid, int *ret_pidfd, bool *ret_forked,
                       Error *e)
{
    for (int tries = 0;; tries++) {
        if (r->idle_pid != 0 && idle_gone(r))
            idle_discard(r, true, 0);
        int k = r->idle_pid != 0 ? 0 : idle_spawn(r, e);
        if (k < 0)
            return k;
        k = hand_over(r, spec, dirfd, oci);
        if (k >= 0)
            break;
        if (k == -E2BIG) /* nothing was sent: the shim still waits, for the next launch */
            return error_set(e, k, "could not hand the launch to \"%s\": %s", r->shim,
                             strerror(-k));
        /* it ended while it waited (EPIPE), or does not take its launch: another, once */
        idle_discard(r, true, 1000);
        if (tries > 0)
            return error_set(e, k, "could not hand the launch to \"%s\": %s", r->shim,
                             strerror(-k));
    }
    *ret_pid = r->idle_pid;
    *ret_pidfd = r->idle_pidfd;
    *ret_forked = r->idle_forked;
    /* the launch is queued on the shim's end: it reads all of it, then the end of the stream */
    (void)close(r->idle_sock);
    r->idle_pid = 0;
    r->idle_pidfd = r->idle_sock = -1;
    return 0;
}

static int native_prestart(Runner *runner, Error *e)
{
    NativeRunner *r = (NativeRunner *)runner;
    /* a container's start costs tens of milliseconds, the shim's one: not worth a process that
     * waits, and a container cannot be handed the connection made ahead anyway */
    if (r->oci)
        return 0;
    if (r->idle_pid != 0 && idle_gone(r))
        idle_discard(r, true, 0);
    return r->idle_pid != 0 ? 0 : idle_spawn(r, e);
}

/* What the shim creates in every run directory it is handed (shim.c: take_lock), with the same
 * mode; it opens it with O_CREAT, so finding it changes nothing else. Not stderr.log: a native
 * shim makes it at the program's first output, and one in OCI mode before the container starts
 * (shim_log()), so a program that writes nothing costs no file. */
static int native_ready_dir(Runner *runner, int dirfd, Error *e)
{
    (void)runner;
    int fd =
        openat(dirfd, SHIM_LOCK_FILE, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0)
        return error_set(e, -errno, "could not create %s: %m", SHIM_LOCK_FILE);
    (void)close(fd);
    return 0;
}

static int native_launch(Runner *runner, const RunnerLaunch *spec, RunnerProcess **ret, Error *e)
{
    NativeRunner *r = (NativeRunner *)runner;
    int k = check_paths(spec, e);
    if (k < 0)
        return k;
    int dirfd = open(spec->run_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return error_set(e, -errno, "could not open run directory \"%s\": %m", spec->run_dir);
    pid_t pid = 0;
    int pidfd = -1;
    bool forked = false;
    RunnerOciLaunch oci = {.cid = ""};
    if (r->oci)
        k = runner__oci_prepare(&r->o, r->server_socket, spec, &oci, e);
    if (k >= 0)
        k = launch_shim(r, spec, dirfd, &oci, &pid, &pidfd, &forked, e);
    runner__oci_launch_done(&oci);
    if (k < 0) {
        if (r->oci && oci.cid[0])
            runner__oci_finish(&r->o, oci.cid, false);
        (void)close(dirfd);
        return k;
    }
    NativeProcess *p = xcalloc(1, sizeof *p);
    *p = (NativeProcess){.base.ops = r->base.ops,
                         .pid = pid,
                         .pidfd = pidfd,
                         .dirfd = dirfd,
                         .attached = forked, /* the zygote's child: watched as one found */
                         .attempt = spec->attempt,
                         .runner = r};
    memcpy(p->cid, oci.cid, sizeof p->cid);
    *ret = &p->base;
    return 0;
}

static int native_fd(RunnerProcess *p)
{
    return ((NativeProcess *)p)->pidfd;
}

static pid_t native_pid(RunnerProcess *p)
{
    return ((NativeProcess *)p)->pid;
}

static int native_signal(RunnerProcess *proc, int sig)
{
    NativeProcess *p = (NativeProcess *)proc;
    if (p->reaped)
        return -ESRCH;
    return RET_NERRNO(pidfd_send_signal(p->pidfd, sig == SIGKILL ? SIGQUIT : SIGTERM, NULL, 0));
}

static void contain(NativeRunner *r, int dirfd);

static int native_reap(RunnerProcess *proc, ExitStatus *ret, Error *e)
{
    NativeProcess *p = (NativeProcess *)proc;
    if (!p->reaped && p->attached) {
        /* not our child: its parent (init) reaps it; a readable pidfd means it has ended */
        struct pollfd pfd = {p->pidfd, POLLIN, 0};
        if (poll(&pfd, 1, 0) == 0)
            return -EAGAIN;
        p->reaped = true;
        p->shim_status = -1;
    }
    if (!p->reaped) {
        siginfo_t si = {0};
        if (waitid((idtype_t)P_PIDFD, (id_t)p->pidfd, &si, WEXITED | WNOHANG) < 0)
            return error_set(e, -errno, "could not reap process %d: %m", p->pid);
        if (si.si_pid == 0)
            return -EAGAIN;
        p->reaped = true;
        p->shim_status = si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status;
    }
    int k = exit_status_read(p->dirfd, ret, e);
    if (k >= 0 && ret->attempt != p->attempt) /* its shim ended before it took the lock */
        k = -ENOENT;
    if (k == -ENOENT)
        contain(p->runner, p->dirfd);
    else if (p->runner->oci && p->cid[0])
        runner__oci_finish(&p->runner->o, p->cid, false); /* the shim deleted the container */
    if (k == -ENOENT)
        return error_set(e, -EIO,
                         "the supervisor of process %d ended (status %d) without "
                         "recording how the program ended",
                         p->pid, p->shim_status);
    return k;
}

/* The pid holding the shim's lock in dirfd, 0 if none holds it. */
static int lock_holder(int lockfd, pid_t *ret)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(lockfd, F_GETLK, &fl) < 0)
        return -errno;
    *ret = fl.l_type == F_UNLCK ? 0 : fl.l_pid;
    return 0;
}

/* The attempt the shim wrote into its lock file; it writes it right after taking the lock, so a
 * shim caught in between is given a moment. */
static int read_lock_attempt(int lockfd, int *ret)
{
    for (int tries = 0; tries < 100; tries++) {
        char buf[128] = "";
        ssize_t n = pread(lockfd, buf, sizeof buf - 1, 0);
        if (n < 0)
            return -errno;
        if (n > 0 && memchr(buf, '\n', (size_t)n)) {
            *ret = atoi(buf);
            return 0;
        }
        (void)usleep(10 * 1000);
    }
    return -EBADMSG;
}

/* What the shim recorded in its lock file about its program ("ATTEMPT\nWHAT BOOT\n": WHAT the
 * program's process group, or oci:<container id>), if that was in this boot: false if there is
 * nothing to trust. */
static bool read_lock_what(int lockfd, char what[static OCI_ID_MAX + 8])
{
    char buf[256] = "", boot[64] = "", theirs[64] = "";
    ssize_t n = pread(lockfd, buf, sizeof buf - 1, 0);
    const char *line = n > 0 ? memchr(buf, '\n', (size_t)n) : NULL;
    if (!line || sscanf(line + 1, "%83s %63s", what, theirs) != 2)
        return false;
    _cleanup_close_ int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    ssize_t k = fd < 0 ? -1 : read(fd, boot, sizeof boot - 1);
    if (k <= 0)
        return 0;
    boot[strcspn(boot, "\n")] = '\0';
    return strcmp(boot, theirs) == 0;
}

/* Kill the processes of group pgid that run in the run directory dirfd (their working directory),
 * and wait for them. Both, because the group's id comes from shim.lock, which a native program
 * could rewrite: never may a planted id make the daemon kill another instance's processes, or
 * anyone's. A SIGKILLed process ends within moments; the wait is bounded, for one stuck in the
 * kernel. Scans /proc: a rare path (a killed shim). */
DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir)

static void kill_group_in(pid_t pgid, int dirfd)
{
    struct stat want;
    _cleanup_(closedirp) DIR *proc = opendir("/proc");
    if (fstat(dirfd, &want) < 0 || !proc)
        return;
    int pidfds[64];
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(proc))) {
        char path[64], buf[512];
        int pid = atoi(de->d_name), pgrp = 0;
        struct stat cwd;
        if (pid <= 1)
            continue;
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t k = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
        const char *end = k > 0 ? (buf[k] = '\0', strrchr(buf, ')')) : NULL;
        if (!end || sscanf(end + 1, " %*c %*d %d", &pgrp) != 1 || pgrp != pgid)
            continue;
        snprintf(path, sizeof path, "/proc/%d/cwd", pid);
        if (stat(path, &cwd) < 0 || cwd.st_dev != want.st_dev || cwd.st_ino != want.st_ino)
            continue;
        int pidfd = pidfd_open(pid, 0);
        if (pidfd >= 0 && pidfd_send_signal(pidfd, SIGKILL, NULL, 0) == 0 && n < ELEMENTSOF(pidfds))
            pidfds[n++] = pidfd;
        else if (pidfd >= 0)
            (void)close(pidfd);
    }
    for (size_t i = 0; i < n; i++) {
        struct pollfd p = {pidfds[i], POLLIN, 0};
        (void)poll(&p, 1, 5000);
        (void)close(pidfds[i]);
    }
}

/* The shim of dirfd is gone without recording an exit (it was killed): its program got SIGKILL
 * with it (PR_SET_PDEATHSIG), and so does what is left of the program's group in its run
 * directory now, unless another shim holds the directory. Returns once
 * the group's leader has ended, so that nothing of the launch runs when its end is recorded and
 * a relaunch cannot overlap it. Processes that left the group are out of reach: the OCI runner is
 * the isolation that holds them (docs/operations.md#isolation). */
static void contain(NativeRunner *r, int dirfd)
{
    _cleanup_close_ int lockfd = openat(dirfd, SHIM_LOCK_FILE, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    char what[OCI_ID_MAX + 8] = "";
    pid_t holder = 0;
    /* a shim that holds the lock is alive, and what the file names is its: the shim that ended
     * without a record was one refused because of it (another launch still runs there) */
    if (lockfd < 0 || lock_holder(lockfd, &holder) < 0 || holder > 0 ||
        !read_lock_what(lockfd, what))
        return;
    if (strncmp(what, "oci:", 4) == 0) {
        if (r->oci) /* the whole container ends with its init (its own pid namespace) */
            runner__oci_finish(&r->o, what + 4, true);
        return;
    }
    pid_t pgid = atoi(what);
    if (pgid > 1)
        kill_group_in(pgid, dirfd);
}

static int native_attach(Runner *runner, const char *run_dir, int *ret_attempt, RunnerProcess **ret,
                         Error *e)
{
    (void)runner;
    _cleanup_close_ int dirfd = open(run_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return errno == ENOENT ? 0 : error_set(e, -errno, "could not open \"%s\": %m", run_dir);
    _cleanup_close_ int lockfd = openat(dirfd, SHIM_LOCK_FILE, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (lockfd < 0)
        return errno == ENOENT ? 0
                               : error_set(e, -errno, "could not open %s in \"%s\": %m",
                                           SHIM_LOCK_FILE, run_dir);
    pid_t pid = 0, again = 0;
    int k = lock_holder(lockfd, &pid);
    if (k < 0)
        return error_set(e, k, "could not test the lock in \"%s\": %s", run_dir, strerror(-k));
    if (pid <= 0) {
        ExitStatus st;
        if (exit_status_read(dirfd, &st, NULL) == -ENOENT)
            contain((NativeRunner *)runner, dirfd); /* a shim killed while no daemon watched */
        return 0;
    }
    int pidfd = pidfd_open(pid, 0);
    if (pidfd < 0)
        return errno == ESRCH ? 0 : error_set(e, -errno, "could not watch process %d: %m", pid);
    /* still the holder after the pidfd was taken: the pidfd is that shim, not a recycled pid */
    k = lock_holder(lockfd, &again);
    int attempt = 0;
    if (k >= 0 && again == pid)
        k = read_lock_attempt(lockfd, &attempt);
    if (k < 0 || again != pid) {
        (void)close(pidfd);
        return k < 0 ? error_set(e, k, "could not read %s in \"%s\": %s", SHIM_LOCK_FILE, run_dir,
                                 strerror(-k))
                     : 0;
    }
    NativeProcess *p = xcalloc(1, sizeof *p);
    *p = (NativeProcess){.base.ops = runner->ops,
                         .pid = pid,
                         .pidfd = pidfd,
                         .dirfd = TAKE_FD(dirfd),
                         .attached = true,
                         .attempt = attempt,
                         .runner = (NativeRunner *)runner};
    char what[OCI_ID_MAX + 8] = "";
    if (read_lock_what(lockfd, what) && strncmp(what, "oci:", 4) == 0 &&
        strlen(what + 4) < sizeof p->cid)
        memcpy(p->cid, what + 4, strlen(what + 4) + 1);
    *ret_attempt = attempt;
    *ret = &p->base;
    return 1;
}

static int native_collect(Runner *runner, const char *run_dir, ExitStatus *ret, Error *e)
{
    NativeRunner *r = (NativeRunner *)runner;
    _cleanup_close_ int dirfd = open(run_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return error_set(e, -errno, "could not open \"%s\": %m", run_dir);
    int k = exit_status_read(dirfd, ret, e);
    _cleanup_close_ int lockfd =
        k < 0 || !r->oci ? -1 : openat(dirfd, SHIM_LOCK_FILE, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    char what[OCI_ID_MAX + 8] = "";
    if (lockfd >= 0 && read_lock_what(lockfd, what) && strncmp(what, "oci:", 4) == 0)
        runner__oci_finish(&r->o, what + 4, false); /* its bundle, if still there */
    return k;
}

static void native_process_free(RunnerProcess *proc)
{
    NativeProcess *p = (NativeProcess *)proc;
    (void)close(p->pidfd);
    (void)close(p->dirfd);
    free(p);
}

static void native_free(Runner *runner)
{
    NativeRunner *r = (NativeRunner *)runner;
    idle_discard(r, false, 1000); /* it exits when its socket closes */
    shim_discard(&r->zyg_pid, &r->zyg_pidfd, &r->zyg_sock, false, 1000); /* so does the zygote */
    if (r->oci) {
        OciRuntime rt = runner__oci_runtime(&r->o);
        oci_cgroups_release(&rt); /* unless containers still run, to be found by the next daemon */
    }
    free(r->shim);
    free(r->server_socket);
    free((char *)r->o.runtime);
    free((char *)r->o.state_dir);
    free((char *)r->o.bundles_dir);
    free((char *)r->o.launches_dir);
    free((char *)r->o.socket_dir);
    free((char *)r->o.seccomp_bpf);
    oci_mounts_free((OciMount *)r->o.mounts, r->o.n_mounts);
    free(r);
}

/* One machinery, two runner types: the OCI runner differs in what runner-oci.c prepares. */
#define SHIM_RUNNER_OPS(t)                                                                         \
    {                                                                                              \
        .type = (t), .launch = native_launch, .prestart = native_prestart,                         \
        .ready_dir = native_ready_dir, .attach = native_attach, .collect = native_collect,         \
        .fd = native_fd, .pid = native_pid, .signal = native_signal, .reap = native_reap,          \
        .process_free = native_process_free, .free = native_free,                                  \
    }
static const RunnerOps native_ops = SHIM_RUNNER_OPS(RUNNER_NATIVE);
static const RunnerOps oci_ops = SHIM_RUNNER_OPS(RUNNER_OCI);

int runner_native_new(const RunnerSettings *s, Runner **ret, Error *e)
{
    const char *shim_path = s->shim_path, *server_socket = s->server_socket;
    /* absolute, since the spawn changes into the run directory first */
    char *abs = shim_path ? realpath(shim_path, NULL) : NULL;
    if (!abs || access(abs, X_OK) < 0) {
        free(abs);
        return error_set(e, -ENOENT, "could not find runtara-shim at \"%s\"",
                         shim_path ? shim_path : "(unknown)");
    }
    NativeRunner *r = xcalloc(1, sizeof *r);
    r->base.ops = &native_ops;
    r->shim = abs;
    r->server_socket = server_socket ? xstrdup(server_socket) : NULL;
    r->idle_pidfd = r->idle_sock = -1;
    r->zyg_pidfd = r->zyg_sock = -1;
    *ret = &r->base;
    return 0;
}

int runner_oci_sweep(Runner *runner, Error *e)
{
    NativeRunner *r = (NativeRunner *)runner;
    OciRuntime rt = runner__oci_runtime(&r->o);
    char **ids = NULL;
    size_t n = 0;
    int k = oci_runtime_list_ours(&rt, OCI_ID_PREFIX, "stopped", &ids, &n, e);
    for (size_t i = 0; k >= 0 && i < n; i++)
        runner__oci_finish(&r->o, ids[i], true);
    oci_ids_free(ids);
    return k < 0 ? k : (int)n;
}

int runner_oci_server_ready(Runner *runner, Error *e)
{
    NativeRunner *r = (NativeRunner *)runner;
    return runner__oci_link_socket(&r->o, r->server_socket, e);
}

int runner_oci_new(const RunnerSettings *s, const RunnerOciSettings *o, Runner **ret, Error *e)
{
    Runner *runner = NULL;
    int k = runner_native_new(s, &runner, e);
    if (k < 0)
        return k;
    NativeRunner *r = (NativeRunner *)runner;
    r->base.ops = &oci_ops;
    r->oci = true;
    r->o = (RunnerOciSettings){.runtime = xstrdup(o->runtime),
                               .state_dir = xstrdup(o->state_dir),
                               .bundles_dir = xstrdup(o->bundles_dir),
                               .launches_dir = xstrdup(o->launches_dir),
                               .socket_dir = xstrdup(o->socket_dir),
                               .systemd_cgroup = o->systemd_cgroup,
                               .uid = o->uid,
                               .gid = o->gid,
                               .seccomp_bpf = o->seccomp_bpf ? xstrdup(o->seccomp_bpf) : NULL,
                               .mounts = oci_mounts_copy(o->mounts, o->n_mounts),
                               .n_mounts = o->n_mounts};
    *ret = runner;
    return 0;
}
