#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "../base/alloc.h"
#include "../base/macro.h"
#include "oci-seccomp.h"

/* The system calls a container may make; everything else fails with ENOSYS (oci_seccomp_json()).
 * The upstream allow-list (upstream-behaviour §6.3) plus what static glibc 2.36 and libruntara
 * were seen to need under crun and runc: statx (fstat falls back to it in new glibc),
 * close_range, restart_syscall (a signal interrupting a sleep), sched_getparam and friends
 * (pthread_create reads the scheduling policy), the timer and itimer family, rt_sig* waits,
 * futex_waitv, and readlink-style calls the loader of a static-pie program makes.
 * Not here on purpose: clone3 (its flags cannot be filtered: glibc falls back to clone on ENOSYS),
 * unshare, setns, mount, ptrace, bpf, keyctl, userfaultfd, perf_event_open, io_uring, module and
 * kexec calls, personality, and socket families other than unix, inet, inet6 and netlink. */
static const char *const allowed_syscalls[] = {
    /* file I/O */
    "read",
    "write",
    "open",
    "openat",
    "close",
    "close_range",
    "stat",
    "fstat",
    "lstat",
    "newfstatat",
    "statx",
    "lseek",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "getcwd",
    "chdir",
    "fchdir",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "flock",
    "fsync",
    "fdatasync",
    "ftruncate",
    "truncate",
    "getdents",
    "getdents64",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "statfs",
    "fstatfs",
    "umask",
    "mkdir",
    "mkdirat",
    "rmdir",
    "unlink",
    "unlinkat",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "chmod",
    "fchmod",
    "fchmodat",
    "chown",
    "fchown",
    "fchownat",
    "lchown",
    "utimensat",
    "fadvise64",
    "fallocate",
    "sendfile",
    "copy_file_range",
    "memfd_create",
    /* memory */
    "mmap",
    "mprotect",
    "munmap",
    "brk",
    "mremap",
    "madvise",
    "membarrier",
    "msync",
    "mincore",
    /* process; fork and vfork make a process as clone without flags does (dash runs commands
     * through vfork) */
    "fork",
    "vfork",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "wait4",
    "waitid",
    "getpid",
    "getppid",
    "gettid",
    "getuid",
    "getgid",
    "geteuid",
    "getegid",
    "getgroups",
    "getresuid",
    "getresgid",
    "setuid",
    "setgid",
    "setresuid",
    "setresgid",
    "setgroups",
    "getpgrp",
    "getpgid",
    "setpgid",
    "getsid",
    "setsid",
    "set_tid_address",
    "set_robust_list",
    "get_robust_list",
    "prctl",
    "arch_prctl",
    "capget",
    "capset",
    "sched_yield",
    "sched_getaffinity",
    "sched_setaffinity",
    "sched_getparam",
    "sched_getscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "getpriority",
    "rseq",
    "restart_syscall",
    "getrusage",
    "times",
    /* signals */
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigpending",
    "rt_sigtimedwait",
    "rt_sigsuspend",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "sigaltstack",
    "kill",
    "tkill",
    "tgkill",
    "pause",
    "alarm",
    "signalfd",
    "signalfd4",
    /* network (socket() itself is filtered by family below) */
    "connect",
    "accept",
    "accept4",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "shutdown",
    "bind",
    "listen",
    "getsockname",
    "getpeername",
    "setsockopt",
    "getsockopt",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    /* time */
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "nanosleep",
    "gettimeofday",
    "time",
    "getitimer",
    "setitimer",
    "timer_create",
    "timer_settime",
    "timer_gettime",
    "timer_getoverrun",
    "timer_delete",
    /* misc */
    "getrandom",
    "uname",
    "sysinfo",
    "prlimit64",
    "getrlimit",
    "futex",
    "futex_waitv",
    "pipe",
    "pipe2",
    "eventfd",
    "eventfd2",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    "ioctl",
};

/* clone() creating a namespace: a user namespace needs no capability, and with it a program
 * would reach kernel code a container should not (what Docker's default profile filters too) */
#define CLONE_NAMESPACE_FLAGS                                                                      \
    (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |  \
     CLONE_NEWNET)

/* The calls allowed for one value of their first argument only. */
static const struct {
    const char *name;
    bool masked; /* SCMP_CMP_MASKED_EQ: (arg & value) == value2; else arg == value */
    uint64_t value, value2;
} arg_rules[] = {
    {"clone", true, CLONE_NAMESPACE_FLAGS, 0}, /* no namespace flag */
    {"socket", false, AF_UNIX, 0},
    {"socket", false, AF_INET, 0},
    {"socket", false, AF_INET6, 0},
    {"socket", false, AF_NETLINK, 0},
    {"socketpair", false, AF_UNIX, 0},
};

/* Architectures: the native ones of our hosts. Not x86 (32-bit): our programs are static 64-bit
 * builds, and a syscall made through an architecture the filter does not list kills the process,
 * which keeps the compat syscall paths out of reach. */
static const struct {
    const char *name;
    uint32_t token;
} arches[] = {
    {"SCMP_ARCH_X86_64", SCMP_ARCH_X86_64},
    {"SCMP_ARCH_AARCH64", SCMP_ARCH_AARCH64},
};

/* Unknown system calls fail with ENOSYS rather than EPERM: ENOSYS is what a kernel too old for
 * the call answers, so glibc and language runtimes take their fallback (clone3 → clone,
 * faccessat2 → faccessat, openat2 → openat) where EPERM is a hard failure. Measured with static
 * glibc 2.36 under crun and runc: pthread_create() tries clone3 first, and with EPERM it fails
 * ("Operation not permitted"); with ENOSYS it falls back to clone and works. A call a program
 * cannot do without fails either way. */
json_t *oci_seccomp_json(void)
{
    json_t *names = json_array();
    for (size_t i = 0; i < ELEMENTSOF(allowed_syscalls); i++)
        json_array_append_new(names, json_string(allowed_syscalls[i]));
    json_t *syscalls = json_array();
    json_array_append_new(syscalls,
                          json_pack("{s:o, s:s}", "names", names, "action", "SCMP_ACT_ALLOW"));
    for (size_t i = 0; i < ELEMENTSOF(arg_rules); i++) {
        json_t *arg =
            json_pack("{s:i, s:I, s:s}", "index", 0, "value", (json_int_t)arg_rules[i].value, "op",
                      arg_rules[i].masked ? "SCMP_CMP_MASKED_EQ" : "SCMP_CMP_EQ");
        if (arg_rules[i].masked)
            json_object_set_new(arg, "valueTwo", json_integer((json_int_t)arg_rules[i].value2));
        json_array_append_new(syscalls, json_pack("{s:[s], s:s, s:[o]}", "names", arg_rules[i].name,
                                                  "action", "SCMP_ACT_ALLOW", "args", arg));
    }
    json_t *archs = json_array();
    for (size_t i = 0; i < ELEMENTSOF(arches); i++)
        json_array_append_new(archs, json_string(arches[i].name));
    return json_pack("{s:s, s:i, s:o, s:o}", "defaultAction", "SCMP_ACT_ERRNO", "defaultErrnoRet",
                     ENOSYS, "architectures", archs, "syscalls", syscalls);
}

/* The rules of oci_seccomp_json() in ctx, as crun adds them from it: a name this libseccomp does
 * not know is left out, as the runtimes leave it out. */
static int add_rules(scmp_filter_ctx ctx)
{
    for (size_t i = 0; i < ELEMENTSOF(arches); i++) {
        int k = seccomp_arch_add(ctx, arches[i].token);
        if (k < 0 && k != -EEXIST)
            return k;
    }
    for (size_t i = 0; i < ELEMENTSOF(allowed_syscalls); i++) {
        int nr = seccomp_syscall_resolve_name(allowed_syscalls[i]);
        if (nr == __NR_SCMP_ERROR)
            continue;
        int k = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
        if (k < 0)
            return k;
    }
    for (size_t i = 0; i < ELEMENTSOF(arg_rules); i++) {
        int nr = seccomp_syscall_resolve_name(arg_rules[i].name);
        if (nr == __NR_SCMP_ERROR)
            continue;
        /* MASKED_EQ: datum_a is the mask, datum_b the value; EQ: datum_a the value */
        struct scmp_arg_cmp cmp = {.arg = 0,
                                   .op = arg_rules[i].masked ? SCMP_CMP_MASKED_EQ : SCMP_CMP_EQ,
                                   .datum_a = arg_rules[i].value,
                                   .datum_b = arg_rules[i].value2};
        int k = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, 1, &cmp);
        if (k < 0)
            return k;
    }
    return 0;
}

int oci_seccomp_compile(char **ret, Error *e)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(ENOSYS));
    if (!ctx)
        return error_set(e, -ENOMEM,
                         "could not compile the containers' seccomp filter: "
                         "seccomp_init failed");
    /* libseccomp 2.5 exports to a file descriptor only */
    int fd = memfd_create("seccomp-bpf", MFD_CLOEXEC);
    int k = fd < 0 ? -errno : add_rules(ctx);
    if (k >= 0)
        k = seccomp_export_bpf(ctx, fd);
    seccomp_release(ctx);
    off_t size = k >= 0 ? lseek(fd, 0, SEEK_END) : -1;
    _cleanup_free_ unsigned char *bpf = NULL;
    if (k >= 0 && (size <= 0 || size > 1 << 20))
        k = size < 0 ? -errno : -EIO;
    if (k >= 0) {
        bpf = xmalloc((size_t)size);
        if (pread(fd, bpf, (size_t)size, 0) != size)
            k = -EIO;
    }
    if (fd >= 0)
        close(fd);
    if (k < 0)
        return error_set(e, k, "could not compile the containers' seccomp filter: %s",
                         strerror(-k));
    gnutls_datum_t in = {bpf, (unsigned)size}, out = {0};
    if (gnutls_base64_encode2(&in, &out) < 0)
        return error_set(e, -ENOMEM, "could not encode the containers' seccomp filter");
    /* one line: the annotation's value */
    char *text = xmalloc(out.size + 1), *p = text;
    for (unsigned i = 0; i < out.size; i++)
        if (out.data[i] != '\n' && out.data[i] != '\r' && out.data[i] != '\0')
            *p++ = (char)out.data[i];
    *p = '\0';
    gnutls_free(out.data);
    *ret = text;
    return 0;
}
