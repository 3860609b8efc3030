/* runtara-shim: the supervisor of one instance process (the conmon / containerd-shim pattern).
 *
 *   runtara-shim [--attempt N] [--log-limit BYTES] [--rlimit-as BYTES] [--rlimit-cpu SECS]
 *                [--rlimit-nofile N] -- PROGRAM [ARGS...]
 *   runtara-shim --launch-fd FD [--connect PATH]
 *   runtara-shim --zygote FD [--connect PATH]
 *   runtara-shim [--attempt N] [--log-limit BYTES] --oci-runtime PATH --oci-id ID
 *                --oci-bundle DIR [--oci-root DIR] [--oci-systemd-cgroup]
 *                [--oci-cgroups-path PATH]
 *
 * The first form is a start by hand: it runs in the current directory with its environment. The
 * second is how the native runner starts it, ahead of the launch: it waits on FD for the same
 * arguments, the run directory and the program's environment (shim-launch.h), so that a launch
 * costs only the program's own start; if FD closes first, it exits without doing anything. With
 * --connect it also connects to the instance API's socket at PATH while it waits, and hands the
 * program that connection (shim-launch.h). The third makes such idle shims by fork(), one each
 * time the runner asks on FD, and exits when FD closes (shim-launch.h, "the zygote").
 *
 * Runs in the instance's run directory, in a session of its own, so it outlives the daemon. For
 * its whole life it holds a POSIX write lock on shim.lock, which holds the attempt N: a daemon
 * started again finds it there (runner_attach), and a second shim for the same run directory
 * refuses to start. It
 * starts PROGRAM in a new process group with stdin from /dev/null and stdout and stderr into a
 * pipe, which it copies to stderr.log up to the limit (the rest is counted, not kept). Signals to
 * the shim are forwarded to the whole group: SIGTERM, SIGINT and SIGHUP as SIGTERM, SIGQUIT as
 * SIGKILL. When PROGRAM ends, what is left of its group is killed, and the exit record at the end
 * of shim.lock says how it ended (exit-status.h); then the shim exits 0. Its own exit status
 * means nothing: the exit record is the truth.
 *
 * With --oci-runtime the program is a container's instead (shim-oci.h): the same lock, output and
 * exit record, with the container's cgroup figures added. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../base/alloc.h"
#include "../base/fileio.h"
#include "../base/parse-util.h"
#include "../base/time-util.h"
#include "exit-status.h"
#include "shim-launch.h"
#include "shim-oci.h"

extern char **environ;

typedef struct Shim {
    uint64_t log_limit;
    uint64_t attempt;
    uint64_t rlimit_as, rlimit_cpu, rlimit_nofile; /* 0 = leave */
    char **argv;
    char **envp; /* the program's environment */
    int logfd;   /* stderr.log, once opened (shim_log()); -1 before */
    bool log_failed, handed;
    int pipefd, sigfd;
    int pipe_w;    /* the write end of the program's output pipe, until the spawn */
    int server_fd; /* the connection to the instance API made ahead, until the spawn, or -1 */
    char server_env[2][64];
    char **server_envp; /* envp with those added, when the program is given the connection */
    char *token;        /* the launch's token, for the program through a pipe, or NULL */
    char token_env[64];
    int token_fd;    /* the read end of the token's pipe, until the spawn, or -1 */
    int setup_errno; /* why the signalfd or the pipe could not be made, or 0 */
    pid_t child;
    bool child_done;
    int wstatus;
    ExitStatus st;
    ShimOci oci; /* oci.runtime set: OCI mode */
} Shim;

static int parse_args(Shim *s, int argc, char **argv)
{
    static const struct option opts[] = {
        {"attempt", required_argument, NULL, 't'},
        {"log-limit", required_argument, NULL, 'l'},
        {"rlimit-as", required_argument, NULL, 'a'},
        {"rlimit-cpu", required_argument, NULL, 'c'},
        {"rlimit-nofile", required_argument, NULL, 'n'},
        {"token", required_argument, NULL, 'k'},
        {"oci-runtime", required_argument, NULL, 'R'},
        {"oci-id", required_argument, NULL, 'I'},
        {"oci-bundle", required_argument, NULL, 'B'},
        {"oci-root", required_argument, NULL, 'O'},
        {"oci-systemd-cgroup", no_argument, NULL, 'S'},
        {"oci-cgroups-path", required_argument, NULL, 'C'},
        {},
    };
    int c;
    s->log_limit = 10 << 20;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) >= 0) {
        if (c == 'k') {
            s->token = optarg;
            continue;
        }
        if (c == 'R' || c == 'I' || c == 'B' || c == 'O' || c == 'S' || c == 'C') {
            const char **field = c == 'R'   ? &s->oci.runtime
                                 : c == 'I' ? &s->oci.id
                                 : c == 'B' ? &s->oci.bundle
                                 : c == 'C' ? &s->oci.cgroups_path
                                            : &s->oci.root;
            if (c == 'S')
                s->oci.systemd_cgroup = true;
            else
                *field = optarg;
            continue;
        }
        uint64_t *field = c == 't'   ? &s->attempt
                          : c == 'l' ? &s->log_limit
                          : c == 'a' ? &s->rlimit_as
                          : c == 'c' ? &s->rlimit_cpu
                          : c == 'n' ? &s->rlimit_nofile
                                     : NULL;
        if (!field || parse_size(optarg, field) < 0) {
            fprintf(stderr, "runtara-shim: invalid arguments\n");
            return -EINVAL;
        }
    }
    if (s->oci.runtime) { /* the program is the container's, named in its config.json */
        if (!s->oci.id || !s->oci.bundle || s->oci.bundle[0] != '/' || optind < argc) {
            fprintf(stderr, "runtara-shim: --oci-runtime needs --oci-id and an absolute "
                            "--oci-bundle, and no program\n");
            return -EINVAL;
        }
        return 0;
    }
    if (optind >= argc || argv[optind][0] != '/') {
        fprintf(stderr, "runtara-shim: expected -- /absolute/program [args...]\n");
        return -EINVAL;
    }
    s->argv = argv + optind;
    return 0;
}

/* Connect to the instance API's unix socket at path, for the program to have (shim-launch.h);
 * -1 if that cannot be done at once: the program then connects itself. */
static int connect_ahead(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return -1;
    strcpy(sa.sun_path, path);
    /* non-blocking: a full listen backlog fails at once (EAGAIN) instead of holding the shim */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        (void)close(fd);
        fd = -1;
    }
    return fd;
}

/* Put the launch's token into a pipe of its own: no other process of the user can read it there,
 * as it could read an environment (/proc/PID/environ). Then forget it. */
static void make_token_pipe(Shim *s)
{
    if (!s->token)
        return;
    int p[2];
    size_t len = strlen(s->token);
    /* a token is 64 bytes: the pipe takes it whole, and the write end closes at once */
    if (pipe2(p, O_CLOEXEC) == 0) {
        /* above the fds the program gets, so that placing one cannot overwrite another */
        if (write(p[1], s->token, len) == (ssize_t)len)
            s->token_fd = fcntl(p[0], F_DUPFD_CLOEXEC, 10);
        (void)close(p[0]);
        (void)close(p[1]);
    }
    explicit_bzero(s->token, len);
}

/* At the launch: keep the connection made ahead only if the daemon has not closed it already
 * (its gate was full); give it the blocking mode a program expects of a new socket. Make the
 * token's pipe. Name both in the program's environment. */
static void ready_fds(Shim *s)
{
    if (s->server_fd >= 0) {
        struct pollfd p = {s->server_fd, POLLIN | POLLRDHUP, 0};
        int flags = fcntl(s->server_fd, F_GETFL);
        if (poll(&p, 1, 0) != 0 || flags < 0 ||
            fcntl(s->server_fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
            (void)close(s->server_fd);
            s->server_fd = -1;
        }
    }
    make_token_pipe(s);
    if (s->server_fd < 0 && s->token_fd < 0)
        return;
    size_t n = 0;
    while (s->envp[n])
        n++;
    char **envp = xcalloc(n + 4, sizeof *envp);
    memcpy(envp, s->envp, n * sizeof *envp);
    if (s->server_fd >= 0) {
        snprintf(s->server_env[0], sizeof s->server_env[0], "RUNTARA_SERVER_FD=%d", SHIM_SERVER_FD);
        snprintf(s->server_env[1], sizeof s->server_env[1], "RUNTARA_SERVER_FD_PPID=%d",
                 (int)getpid());
        envp[n++] = s->server_env[0];
        envp[n++] = s->server_env[1];
    }
    if (s->token_fd >= 0) {
        snprintf(s->token_env, sizeof s->token_env, "RUNTARA_INSTANCE_TOKEN_FD=%d", SHIM_TOKEN_FD);
        envp[n++] = s->token_env;
    }
    s->envp = s->server_envp = envp;
}

/* Sanitizer builds report on stderr, which must be the log from the start: there stderr.log is
 * opened before anything else, as it is in OCI mode (shim_log()). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SHIM_LOG_EAGER true
#else
#define SHIM_LOG_EAGER false
#endif

/* stderr.log, opened (created if need be) when there is a first byte to write into it: a program
 * that writes nothing costs no file (on the reference machine's ext4 each new inode is expensive:
 * docs/benchmarks.md). Once open it is also the shim's stderr, when the runner started it. -1 if it
 * cannot be opened; not tried again. In OCI mode it is opened before the container starts (the
 * run directory is open to the container's user, who must not make it first). A native program
 * runs as the daemon's user: nothing it could do to the file is beyond what it can do anyway. */
static int shim_log(Shim *s)
{
    if (s->logfd >= 0 || s->log_failed)
        return s->logfd;
    /* (O_NONBLOCK: a FIFO in its place fails at once instead of holding the shim) */
    s->logfd = open(SHIM_LOG_FILE,
                    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0640);
    s->log_failed = s->logfd < 0;
    if (s->logfd >= 0 && s->handed) /* its own reports go where a spawn used to put them */
        (void)dup2(s->logfd, STDERR_FILENO);
    return s->logfd;
}

static void set_limits(Shim *s)
{
    const struct {
        int resource;
        uint64_t value;
    } l[] = {
        {RLIMIT_AS, s->rlimit_as}, {RLIMIT_CPU, s->rlimit_cpu}, {RLIMIT_NOFILE, s->rlimit_nofile}};
    for (size_t i = 0; i < sizeof l / sizeof l[0]; i++)
        if (l[i].value > 0) {
            struct rlimit rl = {(rlim_t)l[i].value, (rlim_t)l[i].value};
            if (setrlimit(l[i].resource, &rl) < 0)
                dprintf(shim_log(s), "runtara-shim: could not set resource limit %d: %m\n",
                        l[i].resource);
        }
}

/* The child's side of spawn_child(), between vfork() and exec: only system calls. A failure's
 * errno goes into errpipe (close-on-exec: a successful exec closes it empty). */
static _noreturn_ void exec_child(Shim *s, int pipe_w, pid_t shim, int errpipe)
{
    sigset_t none;
    sigemptyset(&none);
    /* the program dies with its shim: never unsupervised, and never beside a relaunch */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != shim || setpgid(0, 0) < 0)
        goto fail;
    int null = open("/dev/null", O_RDONLY);
    if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(pipe_w, STDOUT_FILENO) < 0 ||
        dup2(pipe_w, STDERR_FILENO) < 0)
        goto fail;
    /* (the connection is never SHIM_SERVER_FD already: that was the launch socket's number when
     * it was made; the token's pipe sits above both) */
    if (s->server_fd >= 0 && dup2(s->server_fd, SHIM_SERVER_FD) < 0)
        goto fail;
    if (s->token_fd >= 0 && dup2(s->token_fd, SHIM_TOKEN_FD) < 0)
        goto fail;
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            (void)signal(sig, SIG_DFL);
    (void)sigprocmask(SIG_SETMASK, &none, NULL);
    execve(s->argv[0], s->argv, s->envp);
fail:;
    int err = errno;
    (void)!write(errpipe, &err, sizeof err);
    _exit(127);
}

/* Start the program in its own process group, to die with the shim; returns 0 or a positive
 * errno. vfork(), since the shim is suspended only until the child has called execve() (or a
 * sanitizer's fork() in its place: the pipe tells either way). */
static int spawn_child(Shim *s, int pipe_w)
{
    int errpipe[2], err = 0;
    if (pipe2(errpipe, O_CLOEXEC) < 0)
        return errno;
    /* above the fds the child places (SHIM_SERVER_FD, SHIM_TOKEN_FD), which would close it */
    int high = fcntl(errpipe[1], F_DUPFD_CLOEXEC, 10);
    (void)close(errpipe[1]);
    if (high < 0) {
        (void)close(errpipe[0]);
        return errno;
    }
    errpipe[1] = high;
    pid_t shim = getpid();
    pid_t pid = vfork();
    if (pid == 0)
        exec_child(s, pipe_w, shim, errpipe[1]);
    int saved = errno;
    (void)close(errpipe[1]);
    if (pid < 0) {
        (void)close(errpipe[0]);
        return saved;
    }
    ssize_t n;
    do
        n = read(errpipe[0], &err, sizeof err);
    while (n < 0 && errno == EINTR);
    (void)close(errpipe[0]);
    if (n == (ssize_t)sizeof err && err != 0) {
        (void)waitpid(pid, NULL, 0);
        return err;
    }
    s->child = pid;
    return 0;
}

static void pump_output(Shim *s)
{
    char buf[65536];
    ssize_t n = read(s->pipefd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        (void)close(s->pipefd);
        s->pipefd = -1;
        return;
    }
    uint64_t room = s->log_limit > s->st.log_bytes ? s->log_limit - s->st.log_bytes : 0;
    uint64_t keep = (uint64_t)n < room ? (uint64_t)n : room;
    if (keep > 0 && (shim_log(s) < 0 || fileio_write_all(s->logfd, buf, keep) < 0))
        keep = 0; /* counted as dropped */
    s->st.log_bytes += keep;
    s->st.log_dropped += (uint64_t)n - keep;
}

static void handle_signal(Shim *s)
{
    struct signalfd_siginfo si;
    if (read(s->sigfd, &si, sizeof si) != sizeof si)
        return;
    if (si.ssi_signo == SIGCHLD) {
        if (!s->child_done && waitpid(s->child, &s->wstatus, WNOHANG) == s->child) {
            s->child_done = true;
            /* the group ends with its leader: nothing may keep running or hold the pipe */
            (void)kill(-s->child, SIGKILL);
        }
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
    } else if (!s->child_done)
        (void)kill(-s->child, si.ssi_signo == SIGQUIT ? SIGKILL : SIGTERM);
}

static void run(Shim *s)
{
    while (!s->child_done || s->pipefd >= 0) {
        struct pollfd p[2] = {{s->sigfd, POLLIN, 0}, {s->pipefd, POLLIN, 0}};
        /* after the child is gone, drain what its group wrote for at most a second */
        int r = poll(p, s->pipefd >= 0 ? 2 : 1, s->child_done ? 1000 : -1);
        if (r < 0 && errno != EINTR)
            break;
        if (r == 0 && s->child_done)
            break;
        if (p[0].revents)
            handle_signal(s);
        if (s->pipefd >= 0 && p[1].revents)
            pump_output(s);
    }
}

static void record_exit(Shim *s)
{
    struct rusage ru;
    if (getrusage(RUSAGE_CHILDREN, &ru) == 0) {
        s->st.cpu_usec = (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 +
                         (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
        s->st.max_rss_bytes = (uint64_t)ru.ru_maxrss * 1024;
    }
    if (WIFSIGNALED(s->wstatus)) {
        s->st.kind = EXIT_KIND_SIGNALED;
        s->st.code = WTERMSIG(s->wstatus);
        s->st.exit_code = 128 + s->st.code;
    } else {
        s->st.kind = EXIT_KIND_EXITED;
        s->st.code = s->st.exit_code = WEXITSTATUS(s->wstatus);
    }
    s->st.pid = s->child;
}

static void pump_output_cb(void *userdata)
{
    pump_output(userdata);
}

/* The OCI mode's start and wait (shim-oci.h), in place of spawn_child(), run() and
 * record_exit(). */
static void supervise_oci(Shim *s)
{
    if (s->server_fd >= 0) /* a container cannot be handed it: its program connects itself */
        (void)close(s->server_fd);
    s->server_fd = -1;
    make_token_pipe(s); /* the container's fd 3: its config.json names it */
    s->oci.token_fd = s->token_fd;
    ShimOciIo io = {.sigfd = s->sigfd, .pipefd = &s->pipefd, .pump = pump_output_cb, .userdata = s};
    (void)shim_oci_run(&s->oci, s->pipe_w, &io, &s->st); /* (it closes pipe_w) */
    s->pipe_w = -1;
}

/* Read exactly n bytes: 1 when done, 0 if the stream ended first, or -errno. */
static int read_full(int fd, char *buf, size_t n)
{
    while (n > 0) {
        ssize_t k = read(fd, buf, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k < 0 ? -errno : 0;
        buf += k;
        n -= (size_t)k;
    }
    return 1;
}

/* Split n bytes of NUL-terminated strings into argv (up to the first empty string) and the
 * environment after it; both arrays point into buf. */
static void split_launch(char *buf, size_t n, Shim *s, int *ret_argc, char ***ret_argv)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += buf[i] == '\0';
    char **v = xcalloc(count + 2, sizeof *v);
    size_t k = 0, argc = 0;
    bool in_env = false;
    for (char *p = buf; p < buf + n; p += strlen(p) + 1) {
        if (!in_env && *p == '\0') {
            v[k++] = NULL; /* the end of argv */
            in_env = true;
            s->envp = v + k;
            continue;
        }
        v[k++] = p;
        argc += !in_env;
    }
    v[k] = NULL;
    if (!in_env)
        s->envp = v + k; /* no environment */
    *ret_argc = (int)argc;
    *ret_argv = v;
}

/* Wait on fd for the launch (shim-launch.h). 1 with it: the working directory is then the run
 * directory and *ret_argc / *ret_argv / s->envp are the launch's, pointing into *ret_buf (the
 * caller frees *ret_argv and *ret_buf). 0 if fd closed before a whole launch came: the daemon
 * is gone, nothing to do. */
static int receive_launch(Shim *s, int fd, int *ret_argc, char ***ret_argv, char **ret_buf)
{
    ShimLaunchHeader h;
    int dirfd = -1;
    int r = shim_recv_fds(fd, &h, sizeof h, &dirfd, 1);
    if (r == -EPIPE)
        return 0;
    if (r < 0)
        return r;
    if (h.magic != SHIM_LAUNCH_MAGIC || h.len == 0 || h.len > SHIM_LAUNCH_MAX) {
        (void)close(dirfd);
        return -EBADMSG;
    }
    char *buf = xmalloc(h.len);
    int k = read_full(fd, buf, h.len);
    if (k > 0 && buf[h.len - 1] != '\0')
        k = -EBADMSG;
    if (k > 0 && fchdir(dirfd) < 0)
        k = -errno;
    (void)close(dirfd);
    if (k <= 0) {
        free(buf);
        return k;
    }
    split_launch(buf, h.len, s, ret_argc, ret_argv);
    *ret_buf = buf;
    return 1;
}

/* Take the lock that marks this run directory as having a live shim, and record the attempt. */
static int take_lock(const Shim *s, int dirfd)
{
    int fd = openat(dirfd, SHIM_LOCK_FILE, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0)
        return -errno;
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_SETLK, &fl) < 0) {
        int k = errno == EAGAIN || errno == EACCES ? -EBUSY : -errno;
        (void)close(fd);
        return k;
    }
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%llu\n", (unsigned long long)s->attempt);
    if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
        int k = -errno;
        (void)close(fd);
        return k;
    }
    return fd; /* kept open until exit: closing any fd of the file would drop the lock */
}

/* Add what the program is and this boot to the lock file: its process group, or "oci:<id>" for a
 * container. If the shim is killed, whoever finds the lock free kills what is left of it
 * (runner-native.c), in this boot only. */
static void record_what(const char *what, int lockfd)
{
    char boot[64] = "", line[256];
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, boot, sizeof boot - 1);
    if (fd >= 0)
        (void)close(fd);
    if (n <= 0)
        return;
    boot[strcspn(boot, "\n")] = '\0';
    int len = snprintf(line, sizeof line, "%s %s\n", what, boot);
    struct stat st;
    if (fstat(lockfd, &st) == 0)
        (void)!pwrite(lockfd, line, (size_t)len, st.st_size);
}

/* --zygote: make idle shims by fork() as the runner asks for them (shim-launch.h), and reap them
 * when they end. Returns in each new shim, with the fd its launch comes on; in the zygote, once
 * its socket has closed (the runner is gone): -1. */
static int zygote(int sock)
{
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD); /* blocked since main() */
    int sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sigfd < 0)
        return -1;
    for (;;) {
        struct pollfd p[2] = {{sock, POLLIN, 0}, {sigfd, POLLIN, 0}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        struct signalfd_siginfo si;
        while (read(sigfd, &si, sizeof si) > 0)
            ;
        while (waitpid(-1, NULL, WNOHANG) > 0) /* shims whose program has ended */
            ;
        if (!p[0].revents)
            continue;
        char req;
        ssize_t k = read(sock, &req, 1);
        if (k < 0 && errno == EINTR)
            continue;
        int sv[2];
        if (k <= 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
            return -1; /* gone, or no shim can be made: the runner starts its own */
        pid_t pid = fork();
        if (pid == 0) {
            (void)close(sock);
            (void)close(sigfd);
            (void)close(sv[0]);
            (void)setsid(); /* a session of its own, as a shim started by the runner */
            return sv[1];
        }
        int pidfd = pid > 0 ? pidfd_open(pid, 0) : -1;
        ShimZygoteReply reply = {.magic = SHIM_ZYGOTE_MAGIC, .pid = pid};
        int fds[2] = {pidfd, sv[0]};
        bool sent = pidfd >= 0 && shim_send_fds(sock, &reply, sizeof reply, fds, 2) == 0;
        if (pidfd >= 0)
            (void)close(pidfd);
        (void)close(sv[0]);
        (void)close(sv[1]); /* the shim's end: it ends when its launch socket closes unused */
        if (!sent)
            return -1;
    }
}

/* Supervise the program of argv from the run directory (the working directory), as the
 * header says; returns the shim's exit status. */
static int supervise(Shim *s, bool handed, int argc, char **argv)
{
    if (parse_args(s, argc, argv) < 0)
        return 2;

    s->handed = handed;
    int dirfd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0 || ((SHIM_LOG_EAGER || s->oci.runtime) && shim_log(s) < 0)) {
        fprintf(stderr, "runtara-shim: could not open %s in the run directory: %m\n",
                dirfd < 0 ? "." : SHIM_LOG_FILE);
        return 1;
    }
    int lockfd = take_lock(s, dirfd);
    if (lockfd < 0) {
        /* nothing recorded: the lock file belongs to the shim that holds the lock */
        dprintf(shim_log(s), "runtara-shim: could not lock %s: %s\n", SHIM_LOCK_FILE,
                lockfd == -EBUSY ? "another launch of this instance still runs"
                                 : strerror(-lockfd));
        return 1;
    }
    s->st.attempt = (int)s->attempt;
    s->st.started_at = now_usec(CLOCK_REALTIME);
    if (s->setup_errno != 0) {
        s->st = (ExitStatus){
            .kind = EXIT_KIND_SPAWN_FAILED, .exit_code = 127, .attempt = (int)s->attempt};
        snprintf(s->st.error, sizeof s->st.error, "could not set up the supervisor: %s",
                 strerror(s->setup_errno));
    } else if (s->oci.runtime) {
        char what[128];
        snprintf(what, sizeof what, "oci:%s", s->oci.id);
        record_what(what, lockfd); /* before the container exists: a kill finds it then */
        supervise_oci(s);          /* (its limits are the container's: none set on the shim) */
    } else {
        ready_fds(s); /* (it allocates: before a small RLIMIT_AS applies) */
        set_limits(s);
        int r = spawn_child(s, s->pipe_w);
        (void)close(s->pipe_w);
        s->pipe_w = -1;
        if (s->server_fd >= 0) /* the program's now: it closes when the program is done */
            (void)close(s->server_fd);
        if (s->token_fd >= 0)
            (void)close(s->token_fd);
        s->server_fd = s->token_fd = -1;
        char what[32];
        snprintf(what, sizeof what, "%d", (int)s->child);
        if (r == 0)
            record_what(what, lockfd);
        if (r != 0) {
            s->st.kind = EXIT_KIND_SPAWN_FAILED;
            s->st.exit_code = 127;
            snprintf(s->st.error, sizeof s->st.error, "could not execute \"%s\": %s", s->argv[0],
                     strerror(r));
        } else {
            run(s);
            record_exit(s);
        }
    }
    s->st.finished_at = now_usec(CLOCK_REALTIME);
    int k = exit_status_write(lockfd, &s->st);
    if (k < 0) {
        dprintf(shim_log(s), "runtara-shim: could not write the exit record into %s: %s\n",
                SHIM_LOCK_FILE, strerror(-k));
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    Shim s = {.logfd = -1,
              .pipefd = -1,
              .sigfd = -1,
              .pipe_w = -1,
              .server_fd = -1,
              .token_fd = -1,
              .envp = environ};
    /* its memory holds a token and its program's environment: no other process of the user may
     * read it (/proc/PID/mem, environ) or trace it */
    (void)prctl(PR_SET_DUMPABLE, 0);
    _cleanup_free_ char *launch = NULL;
    _cleanup_free_ char **launch_argv = NULL;
    /* The signals the shim takes through its signalfd are blocked before anything else: one that
     * came before would kill it with nothing recorded. The runner starts it with them blocked
     * already (so not even the moment before main() is open); this covers a start by hand. */
    sigset_t mask;
    sigemptyset(&mask);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig == SIGCHLD || sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT)
            sigaddset(&mask, sig);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    bool zygote_mode = (argc == 3 || (argc == 5 && strcmp(argv[3], "--connect") == 0)) &&
                       strcmp(argv[1], "--zygote") == 0;
    bool handed = (argc == 3 || (argc == 5 && strcmp(argv[3], "--connect") == 0)) &&
                  strcmp(argv[1], "--launch-fd") == 0;
    uint64_t fd = 0;
    if ((zygote_mode || handed) && (parse_uint64(argv[2], &fd) < 0 || fd > INT_MAX)) {
        fprintf(stderr, "runtara-shim: invalid arguments\n");
        return 2;
    }
    if (zygote_mode) {
        int k = zygote((int)fd);
        if (k < 0)
            return 0;
        fd = (uint64_t)k; /* a new shim, idle until its launch comes on fd */
        handed = true;
    }
    /* made before the launch, so an idle shim has them ready: the launch's path is shorter */
    int pipe_fds[2];
    s.sigfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (s.sigfd < 0 || pipe2(pipe_fds, O_CLOEXEC) < 0)
        s.setup_errno = errno;
    else {
        s.pipefd = pipe_fds[0];
        s.pipe_w = pipe_fds[1];
    }
    if (handed) {
        const char *server = argc == 5 ? argv[4] : NULL;
        /* idle until the runner hands over a launch; only then is there a run directory */
        int k = receive_launch(&s, (int)fd, &argc, &launch_argv, &launch);
        if (k <= 0) {
            if (k < 0)
                fprintf(stderr, "runtara-shim: could not receive the launch: %s\n", strerror(-k));
            return k < 0 ? 2 : 0;
        }
        (void)close((int)fd);
        argv = launch_argv;
        /* At the launch, not while idle: the daemon's connection gate closes a connection whose
         * request does not come within its header deadline, and an idle shim may wait for
         * hours. The daemon accepts it while the program starts. */
        if (server)
            s.server_fd = connect_ahead(server);
    }
    int r = supervise(&s, handed, argc, argv);
    free(s.server_envp);
    return r;
}
