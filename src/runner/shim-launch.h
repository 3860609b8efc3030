/* The hand-over of a launch to an idle runtara-shim (runner-native.c → shim.c).
 *
 * The native runner starts `runtara-shim --launch-fd 3` ahead of time with one end of a stream
 * socket pair as fd 3. The shim waits on it; the runner sends one launch: a ShimLaunchHeader
 * carrying the run directory's fd (SCM_RIGHTS), then `len` bytes of NUL-terminated strings (in
 * the same message as far as the socket takes them):
 * the shim's argv as for a start by hand (argv[0], the options, "--", the program), an empty
 * string, then the program's environment. The shim acts only on a complete launch; if the
 * socket closes first (the daemon stopped or died), it exits without touching anything.
 *
 * Started with `--connect PATH` as well, the shim connects to the instance API's unix socket at
 * PATH when its launch comes, and gives the program that connection as fd SHIM_SERVER_FD, named
 * by RUNTARA_SERVER_FD and RUNTARA_SERVER_FD_PPID (the shim's pid: only the shim's child takes
 * it). The daemon accepts it while the program starts, and the program's first request needs no
 * connect(). Not while the shim is idle: the daemon's connection gate closes a connection whose
 * request has not come within its header deadline. A connection the daemon closed already is not
 * passed: the program connects as without one. */
/*
 * The zygote: a process start costs ~2 ms of CPU on the reference machine, half of what a
 * workflow's processes cost (docs/benchmarks.md), and every launch needs a new shim. So the
 * runner starts one `runtara-shim --zygote 3 [--connect PATH]` (the socket pair's other end as
 * fd 3), which makes the idle shims by fork(): a copy of a small process that is set up already,
 * where a new process image has to be loaded and started. A request is one byte on its socket;
 * the answer is a ShimZygoteReply with two fds attached (SCM_RIGHTS): a pidfd of the new shim and
 * the runner's end of its launch socket, on which it waits as if started with --launch-fd. Each
 * shim is a session of its own; the zygote reaps them (they are its children, not the daemon's:
 * the runner watches them through their pidfd, and their exit record tells how they ended). The
 * zygote exits when its socket closes (the runner freed, the daemon gone); shims running then
 * go on, as they do when the daemon goes. */
#pragma once

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SHIM_LAUNCH_FD 3
/* the program's fd of the connection made ahead (the shim's SHIM_LAUNCH_FD is closed by then) */
#define SHIM_SERVER_FD 3
/* the program's fd of the pipe that holds its token (RUNTARA_INSTANCE_TOKEN_FD) */
#define SHIM_TOKEN_FD 4
#define SHIM_LAUNCH_MAGIC 0x31534c52u /* "RLS1" */
/* bounds what a shim accepts: the API caps the environment far below this */
#define SHIM_LAUNCH_MAX (4u << 20)

typedef struct ShimLaunchHeader {
    uint32_t magic;
    uint32_t len; /* bytes of strings that follow */
} ShimLaunchHeader;

/* Send the header of a launch of len bytes of strings, with dirfd attached, and the first n of
 * those bytes (n <= len) in the same message, so the shim wakes once to a whole launch. Returns
 * the bytes sent, header included (the rest, if fewer, goes with plain writes), or -errno. */
static inline ssize_t shim_launch_send(int sock, int dirfd, uint32_t len, const char *strings,
                                       size_t n)
{
    ShimLaunchHeader h = {.magic = SHIM_LAUNCH_MAGIC, .len = len};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } control = {0};
    struct iovec iov[2] = {{&h, sizeof h}, {(void *)strings, n}};
    struct msghdr m = {.msg_iov = iov,
                       .msg_iovlen = n > 0 ? 2 : 1,
                       .msg_control = &control,
                       .msg_controllen = sizeof control};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &dirfd, sizeof dirfd);
    ssize_t k;
    do
        k = sendmsg(sock, &m, MSG_NOSIGNAL);
    while (k < 0 && errno == EINTR);
    return k < 0 ? -errno : k;
}

#define SHIM_ZYGOTE_FD 3
#define SHIM_ZYGOTE_MAGIC 0x31475a52u /* "RZG1" */

typedef struct ShimZygoteReply {
    uint32_t magic;
    int32_t pid; /* the new idle shim; the fds: its pidfd, then the launch socket's runner end */
} ShimZygoteReply;

/* Send n bytes of data with the nfds (at most 2) fds of fds attached, in one message; 0 or
 * -errno. */
static inline int shim_send_fds(int sock, const void *data, size_t n, const int *fds, size_t nfds)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(2 * sizeof(int))];
    } control = {0};
    struct iovec iov = {(void *)data, n};
    struct msghdr m = {.msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = &control,
                       .msg_controllen = CMSG_SPACE(nfds * sizeof(int))};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
    ssize_t k;
    do
        k = sendmsg(sock, &m, MSG_NOSIGNAL);
    while (k < 0 && errno == EINTR);
    return k < 0 ? -errno : (size_t)k == n ? 0 : -EIO;
}

/* Receive a message of exactly n bytes with exactly nfds (at most 2) fds, into data and fds
 * (close-on-exec); 0, -EPIPE if the stream ended before n bytes came, -EBADMSG if the fds are not
 * that (any fd that came is closed either way), or -errno. */
static inline int shim_recv_fds(int sock, void *data, size_t n, int *fds, size_t nfds)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(2 * sizeof(int))];
    } control;
    struct iovec iov = {data, n};
    struct msghdr m = {.msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = &control,
                       .msg_controllen = sizeof control};
    ssize_t k;
    do
        k = recvmsg(sock, &m, MSG_WAITALL | MSG_CMSG_CLOEXEC);
    while (k < 0 && errno == EINTR);
    if (k < 0)
        return -errno;
    size_t got = 0;
    int in[2] = {-1, -1};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len >= CMSG_LEN(0) && c->cmsg_len <= CMSG_LEN(sizeof in)) {
        got = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        memcpy(in, CMSG_DATA(c), got * sizeof(int));
    }
    if ((size_t)k != n || got != nfds || (m.msg_flags & MSG_CTRUNC)) {
        for (size_t i = 0; i < got; i++)
            (void)close(in[i]);
        return (size_t)k < n ? -EPIPE : -EBADMSG; /* (MSG_WAITALL: short only at the end) */
    }
    memcpy(fds, in, nfds * sizeof(int));
    return 0;
}
