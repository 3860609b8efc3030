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
 * Started with `--connect PATH` as well, the idle shim connects to the instance API's unix socket
 * at PATH while it waits, and gives the program that connection as fd SHIM_SERVER_FD, named by
 * RUNTARA_SERVER_FD and RUNTARA_SERVER_FD_PPID (the shim's pid: only the shim's child takes it).
 * A program's first request then needs no connect(), whose cost on the launch's path is the
 * daemon's HTTP threads woken by it (docs/benchmarks.md). A connection the daemon closed while
 * the shim waited (its idle timeout) is not passed: the program connects as without one. */
#pragma once

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

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
