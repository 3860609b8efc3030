/* isolation-probe: a static test program that tries one way out of its container and reports.
 *
 *   isolation-probe NAME          or, with no argument, input.json: {"try": "NAME", ...}
 *
 * It runs in the working directory (/data in a container) and writes what it saw to output.json
 * there and to stdout, as {"try": NAME, "escaped": BOOL, ...}, then exits 0: the test that runs it
 * asserts "escaped": false. The attempts:
 *
 *   read-host-file    open /etc/shadow, /etc/passwd and ../ paths out of the working directory
 *   write-rootfs      create a file in /, overwrite /binary, write /etc/hosts
 *   connect-loopback  TCP connect to 127.0.0.1:"port" (a host server, unreachable from the
 *                     container's own network namespace)
 *   memory            allocate and touch "mib" MiB (default 64): a limit below that OOM-kills it,
 *                     so it writes output.json only if it survived
 *   pids              fork until fork fails (children wait); "count" says how many; escaped if
 *                     "limit" was given and count reached it
 *   list-processes    the pids in /proc other than its own
 *   read-token        RUNTARA_INSTANCE_TOKEN in another process's /proc/PID/environ
 *   supervisor-files  replace, remove or write the files of the daemon and runtara-shim in its
 *                     run directory (shim.lock, exit.json, stderr.log, input.json): a planted
 *                     shim.lock would make the daemon act on a process of the program's choosing
 *   syscalls          calls the seccomp filter refuses: unshare, clone with a namespace flag,
 *                     a packet socket, ptrace, keyctl; "errno" names what each failed with
 *                     (ENOSYS is the filter's answer; EPERM would be the kernel's)
 *   wait-term         not an escape: with a SIGTERM handler in place it creates the file
 *                     "ready" and waits for the signal, then reports it as "signal"
 *
 * Input values are read with a few lines of string scanning: the program uses nothing but libc,
 * so it links statically without sanitizers into a root file system holding only itself. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static char out[65536];
static size_t out_len;

static void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void emit(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out + out_len, sizeof out - out_len, fmt, ap);
    va_end(ap);
    if (n > 0)
        out_len = out_len + (size_t)n < sizeof out ? out_len + (size_t)n : sizeof out - 1;
}

static void finish(const char *name, bool escaped)
{
    char text[sizeof out + 128];
    int n = snprintf(text, sizeof text, "{\"try\": \"%s\", \"escaped\": %s%s%s}\n", name,
                     escaped ? "true" : "false", out_len ? ", " : "", out);
    int fd = open("output.json", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        if (write(fd, text, (size_t)n) < 0)
            perror("output.json");
        close(fd);
    }
    fputs(text, stdout);
}

/* The value of "key" in a flat JSON object: a string copied to buf, or a number as text. */
static const char *input_value(const char *json, const char *key, char *buf, size_t size)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = json ? strstr(json, pat) : NULL;
    if (!p)
        return NULL;
    p += strlen(pat);
    while (*p == ' ' || *p == ':' || *p == '\t' || *p == '\n')
        p++;
    size_t n = 0;
    if (*p == '"')
        for (p++; *p && *p != '"' && n + 1 < size; p++)
            buf[n++] = *p;
    else
        for (; (*p == '-' || (*p >= '0' && *p <= '9')) && n + 1 < size; p++)
            buf[n++] = *p;
    buf[n] = '\0';
    return n ? buf : NULL;
}

static long input_long(const char *json, const char *key, long dflt)
{
    char buf[32];
    const char *v = input_value(json, key, buf, sizeof buf);
    return v ? strtol(v, NULL, 10) : dflt;
}

static bool try_read_host_file(void)
{
    static const char *const paths[] = {"/etc/shadow",
                                        "/etc/passwd",
                                        "../etc/passwd",
                                        "../../../../../../etc/shadow",
                                        "/data/../../../etc/passwd",
                                        "/proc/1/root/etc/passwd",
                                        "/run/runtara/../../etc/passwd"};
    bool escaped = false;
    emit("\"attempts\": [");
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
        char buf[16];
        bool ok = fd >= 0 && read(fd, buf, sizeof buf) > 0;
        int err = errno;
        escaped |= ok;
        emit("%s{\"path\": \"%s\", \"read\": %s, \"error\": \"%s\"}", i ? ", " : "", paths[i],
             ok ? "true" : "false", ok ? "" : strerror(err));
        if (fd >= 0)
            close(fd);
    }
    emit("]");
    return escaped;
}

static bool try_write_rootfs(void)
{
    static const struct {
        const char *path;
        int flags;
    } attempts[] = {{"/escaped", O_WRONLY | O_CREAT | O_TRUNC},
                    {"/binary", O_WRONLY | O_TRUNC},
                    {"/etc/hosts", O_WRONLY | O_APPEND},
                    {"/run/runtara/escaped", O_WRONLY | O_CREAT | O_TRUNC}};
    bool escaped = false;
    emit("\"attempts\": [");
    for (size_t i = 0; i < sizeof attempts / sizeof attempts[0]; i++) {
        int fd = open(attempts[i].path, attempts[i].flags | O_CLOEXEC, 0644);
        bool ok = fd >= 0 && write(fd, "x", 1) == 1;
        int err = errno;
        escaped |= ok;
        emit("%s{\"path\": \"%s\", \"written\": %s, \"error\": \"%s\"}", i ? ", " : "",
             attempts[i].path, ok ? "true" : "false", ok ? "" : strerror(err));
        if (fd >= 0)
            close(fd);
    }
    emit("]");
    return escaped;
}

static bool try_connect_loopback(const char *input)
{
    long port = input_long(input, "port", 8002);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    int err = errno;
    emit("\"port\": %ld, \"connected\": %s, \"error\": \"%s\"", port, ok ? "true" : "false",
         ok ? "" : strerror(err));
    if (fd >= 0)
        close(fd);
    return ok;
}

static bool try_memory(const char *input)
{
    long mib = input_long(input, "mib", 64);
    size_t n = (size_t)mib << 20;
    char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        emit("\"mib\": %ld, \"error\": \"%s\"", mib, strerror(errno));
        return false;
    }
    for (size_t i = 0; i < n; i += 4096)
        p[i] = (char)i;
    emit("\"mib\": %ld, \"touched\": true", mib);
    return true; /* it should have been killed before this */
}

static bool try_pids(const char *input)
{
    long limit = input_long(input, "limit", 0);
    long cap = input_long(input, "max", 4096);
    pid_t kids[4096];
    long count = 0;
    int err = 0;
    while (count < cap && count < (long)(sizeof kids / sizeof kids[0])) {
        pid_t pid = fork();
        if (pid == 0) {
            pause();
            _exit(0);
        }
        if (pid < 0) {
            err = errno;
            break;
        }
        kids[count++] = pid;
    }
    for (long i = 0; i < count; i++)
        kill(kids[i], SIGKILL);
    for (long i = 0; i < count; i++)
        waitpid(kids[i], NULL, 0);
    emit("\"count\": %ld, \"limit\": %ld, \"error\": \"%s\"", count, limit,
         err ? strerror(err) : "");
    return limit > 0 && count >= limit;
}

/* Calls fn(pid) for every process in /proc but this one; returns how many. */
static int each_other_process(void (*fn)(int pid, void *ud), void *ud)
{
    DIR *d = opendir("/proc");
    if (!d)
        return -errno;
    int n = 0;
    for (struct dirent *de; (de = readdir(d));) {
        char *end;
        long pid = strtol(de->d_name, &end, 10);
        if (*end || pid <= 0 || pid == getpid())
            continue;
        fn((int)pid, ud);
        n++;
    }
    closedir(d);
    return n;
}

static void list_one(int pid, void *ud)
{
    int *count = ud;
    char path[64], cmd[128] = "";
    snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, cmd, sizeof cmd - 1) : 0;
    if (fd >= 0)
        close(fd);
    cmd[n > 0 ? n : 0] = '\0';
    for (char *c = cmd; *c; c++)
        if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20)
            *c = '?';
    emit("%s{\"pid\": %d, \"cmdline\": \"%s\"}", (*count)++ ? ", " : "", pid, cmd);
}

static bool try_list_processes(void)
{
    int count = 0;
    emit("\"self\": %d, \"others\": [", (int)getpid());
    int n = each_other_process(list_one, &count);
    emit("], \"seen\": %d", n);
    return n > 0;
}

static void token_one(int pid, void *ud)
{
    int *found = ud;
    char path[64], env[65536];
    snprintf(path, sizeof path, "/proc/%d/environ", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, env, sizeof env - 1);
    close(fd);
    for (ssize_t i = 0; i < n; i += (ssize_t)strlen(env + i) + 1) {
        env[n] = '\0';
        if (strncmp(env + i, "RUNTARA_INSTANCE_TOKEN=", 23) == 0) {
            emit("%s%d", (*found)++ ? ", " : "", pid);
            return;
        }
    }
}

static bool try_read_token(void)
{
    int found = 0;
    emit("\"found_in\": [");
    int n = each_other_process(token_one, &found);
    emit("], \"processes\": %d", n);
    return found > 0;
}

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
    got_signal = sig;
}

static bool try_wait_term(void)
{
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &old);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    int fd = open("ready", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0)
        close(fd);
    while (!got_signal)
        sigsuspend(&old);
    emit("\"signal\": %d", (int)got_signal);
    return false;
}

static bool try_syscalls(void)
{
    bool escaped = false;
    const char *names[5];
    int errs[5];
    errno = 0;
    names[0] = "unshare";
    escaped |= unshare(CLONE_NEWUSER) == 0;
    errs[0] = errno;
    names[1] = "clone";
    errno = 0;
    long pid = syscall(SYS_clone, (unsigned long)(CLONE_NEWUSER | SIGCHLD), NULL, NULL, NULL, 0);
    if (pid == 0)
        _exit(0);
    escaped |= pid > 0;
    errs[1] = pid > 0 ? 0 : errno;
    if (pid > 0)
        waitpid((pid_t)pid, NULL, 0);
    names[2] = "socket";
    errno = 0;
    int fd = socket(AF_PACKET, SOCK_RAW, 0);
    escaped |= fd >= 0;
    errs[2] = fd >= 0 ? 0 : errno;
    if (fd >= 0)
        close(fd);
    names[3] = "ptrace";
    errno = 0;
    escaped |= ptrace(PTRACE_TRACEME, 0, NULL, NULL) == 0;
    errs[3] = errno;
    names[4] = "keyctl";
    errno = 0;
    escaped |= syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0) >= 0;
    errs[4] = errno;
    emit("\"errno\": {");
    for (size_t i = 0; i < 5; i++)
        emit("%s\"%s\": \"%s\"", i ? ", " : "", names[i],
             errs[i] == ENOSYS  ? "ENOSYS"
             : errs[i] == EPERM ? "EPERM"
             : errs[i]          ? "other"
                                : "none");
    emit("}");
    return escaped;
}

static bool try_supervisor_files(void)
{
    static const char *const files[] = {"shim.lock", "stderr.log", "input.json"};
    bool escaped = false;
    int fd = open("planted", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0)
        close(fd);
    emit("\"attempts\": [");
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        bool replaced = rename("planted", files[i]) == 0;
        int err_rename = errno;
        bool removed = !replaced && unlink(files[i]) == 0;
        int err_unlink = errno;
        int wfd = open(files[i], O_WRONLY | O_APPEND | O_CLOEXEC);
        bool written = wfd >= 0 && write(wfd, "x", 1) == 1;
        if (wfd >= 0)
            close(wfd);
        escaped |= replaced || removed || written;
        emit("%s{\"file\": \"%s\", \"replaced\": %s, \"removed\": %s, \"written\": %s, "
             "\"errors\": \"%s / %s\"}",
             i ? ", " : "", files[i], replaced ? "true" : "false", removed ? "true" : "false",
             written ? "true" : "false", strerror(err_rename), strerror(err_unlink));
    }
    emit("]");
    (void)unlink("planted");
    return escaped;
}

int main(int argc, char **argv)
{
    static char input[65536];
    int fd = open("input.json", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, input, sizeof input - 1);
        input[n > 0 ? n : 0] = '\0';
        close(fd);
    }
    char buf[64];
    const char *name = argc > 1 ? argv[1] : input_value(input, "try", buf, sizeof buf);
    if (!name) {
        fprintf(stderr, "usage: isolation-probe NAME, or input.json {\"try\": NAME}\n");
        return 2;
    }
    bool escaped;
    if (strcmp(name, "read-host-file") == 0)
        escaped = try_read_host_file();
    else if (strcmp(name, "write-rootfs") == 0)
        escaped = try_write_rootfs();
    else if (strcmp(name, "connect-loopback") == 0)
        escaped = try_connect_loopback(input);
    else if (strcmp(name, "memory") == 0)
        escaped = try_memory(input);
    else if (strcmp(name, "pids") == 0)
        escaped = try_pids(input);
    else if (strcmp(name, "list-processes") == 0)
        escaped = try_list_processes();
    else if (strcmp(name, "read-token") == 0)
        escaped = try_read_token();
    else if (strcmp(name, "supervisor-files") == 0)
        escaped = try_supervisor_files();
    else if (strcmp(name, "syscalls") == 0)
        escaped = try_syscalls();
    else if (strcmp(name, "wait-term") == 0)
        escaped = try_wait_term();
    else {
        fprintf(stderr, "isolation-probe: unknown attempt \"%s\"\n", name);
        return 2;
    }
    finish(name, escaped);
    return 0;
}
