/* bench-probe: the smallest workflow program, for measurements.
 *
 *   bench-probe stamp           print CLOCK_REALTIME in microseconds and exit (the baseline:
 *                               "first syscall" of a freshly spawned process)
 *   BENCH_STAMP=1 bench-probe   the same, for a container whose command line is the runner's
 *                               ("/binary", no arguments): the OCI scenario's bare runtime
 *   bench-probe                 as an instance: POST register over the instance API and exit 0
 *                               (its token read from the pipe of RUNTARA_INSTANCE_TOKEN_FD, as
 *                               the runners pass it, or from RUNTARA_INSTANCE_TOKEN)
 *   BENCH_CHECKPOINTS=N bench-probe
 *                               as an instance: register, then save N checkpoints of 100 bytes
 *                               on one keep-alive connection, writing each latency (us) to lat.txt
 *   BENCH_BARRIER=FIFO          with BENCH_CHECKPOINTS: open FIFO before registering, and start
 *                               saving only when it reads end-of-file, i.e. when the benchmark
 *                               closes its end after every instance has registered, so that all
 *                               instances save at once
 *   BENCH_SAY_READY=1           print "ready" on stdout once registered (when no daemon records
 *                               the registration: the HTTP floor of the checkpoint benchmark)
 *
 * It speaks HTTP/1.1 over the unix socket by hand so the client adds as little as possible. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static long long mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The connection the runner made ahead (RUNTARA_SERVER_FD), taken as libruntara takes it: by
 * the process it was given to, if it is connected to the instance API's socket; or -1. */
static int inherited_core(const char *path)
{
    const char *fd = getenv("RUNTARA_SERVER_FD"), *ppid = getenv("RUNTARA_SERVER_FD_PPID");
    struct sockaddr_un peer = {0};
    socklen_t len = sizeof peer - 1;
    if (!fd || !ppid || atoi(ppid) != (int)getppid() ||
        getpeername(atoi(fd), (struct sockaddr *)&peer, &len) < 0 || peer.sun_family != AF_UNIX ||
        strcmp(peer.sun_path, path) != 0)
        return -1;
    return atoi(fd);
}

static int connect_core(void)
{
    const char *addr = getenv("RUNTARA_SERVER_ADDR");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!addr || strncmp(addr, "unix:", 5) != 0 || strlen(addr + 5) >= sizeof sa.sun_path)
        return -1;
    strcpy(sa.sun_path, addr + 5);
    int inherited = inherited_core(sa.sun_path);
    if (inherited >= 0)
        return inherited;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        return -1;
    return fd;
}

/* The launch's token: from the pipe of RUNTARA_INSTANCE_TOKEN_FD, as the runners pass it, else
 * from RUNTARA_INSTANCE_TOKEN (the checkpoint scenario's HTTP floor, where no runner starts it). */
static char token[256];

static int load_token(void)
{
    const char *fd = getenv("RUNTARA_INSTANCE_TOKEN_FD"), *env = getenv("RUNTARA_INSTANCE_TOKEN");
    size_t n = 0;
    if (!fd) {
        if (!env || strlen(env) >= sizeof token)
            return -1;
        strcpy(token, env);
        return 0;
    }
    for (;;) {
        ssize_t k = read(atoi(fd), token + n, sizeof token - 1 - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        if (k == 0 || (n += (size_t)k) == sizeof token - 1)
            break;
    }
    token[n] = '\0';
    close(atoi(fd));
    return n > 0 ? 0 : -1;
}

/* One request on a keep-alive connection; reads the reply (headers + Content-Length body).
 * Returns the status or -1. */
static int call(int fd, const char *method, const char *path, const char *body, size_t n)
{
    char req[1024], buf[8192];
    int len = snprintf(req, sizeof req,
                       "%s /api/v1/instances/%s%s HTTP/1.1\r\nHost: runtara\r\n"
                       "Authorization: Bearer %s\r\nContent-Type: application/octet-stream\r\n"
                       "Content-Length: %zu\r\n\r\n",
                       method, getenv("RUNTARA_INSTANCE_ID"), path, token, n);
    /* one write, as libcurl sends a small body with its headers */
    struct iovec iov[2] = {{req, (size_t)len}, {(void *)body, n}};
    if (writev(fd, iov, n ? 2 : 1) != len + (ssize_t)n)
        return -1;
    size_t got = 0;
    char *end = NULL;
    while (!(end = memmem(buf, got, "\r\n\r\n", 4))) {
        ssize_t k = read(fd, buf + got, sizeof buf - got);
        if (k <= 0)
            return -1;
        got += (size_t)k;
    }
    const char *cl = memmem(buf, got, "Content-Length: ", 16);
    size_t want = cl ? strtoul(cl + 16, NULL, 10) : 0, have = got - (size_t)(end + 4 - buf);
    while (have < want) {
        ssize_t k = read(fd, buf, sizeof buf);
        if (k <= 0)
            return -1;
        have += (size_t)k;
    }
    return atoi(buf + 9);
}

int main(int argc, char **argv)
{
    if ((argc > 1 && strcmp(argv[1], "stamp") == 0) || getenv("BENCH_STAMP")) {
        printf("%lld\n", now_us());
        return 0;
    }
    const char *barrier = getenv("BENCH_BARRIER");
    int bfd = barrier ? open(barrier, O_RDONLY | O_CLOEXEC) : -1;
    if (barrier && bfd < 0)
        return 1;
    int fd = connect_core();
    if (fd < 0 || load_token() < 0 || call(fd, "POST", "/register", NULL, 0) != 200)
        return 1;
    if (getenv("BENCH_SAY_READY")) {
        printf("ready\n");
        fflush(stdout);
    }
    const char *checkpoints = getenv("BENCH_CHECKPOINTS");
    if (bfd >= 0) {
        char c;
        ssize_t k;
        do
            k = read(bfd, &c, 1);
        while (k < 0 && errno == EINTR);
        close(bfd);
    }
    if (checkpoints) {
        int n = atoi(checkpoints);
        char data[100], key[64];
        memset(data, 'x', sizeof data);
        FILE *lat = fopen("lat.txt", "w");
        for (int i = 0; i < n; i++) {
            snprintf(key, sizeof key, "/checkpoints/c%d", i);
            long long t0 = mono_us();
            if (call(fd, "PUT", key, data, sizeof data) != 201)
                return 1;
            fprintf(lat, "%lld\n", mono_us() - t0);
        }
        fclose(lat);
    }
    return 0;
}
