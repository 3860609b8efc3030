/* bare-server: a libmicrohttpd server started with the same flags and limits as src/api/http.c
 * (epoll, internal thread pool, suspend/resume, the daemon's defaults for threads, connections,
 * idle timeout and per-connection memory) that answers every request with one fixed body: 201
 * to a PUT (as a stored checkpoint), 200 to anything else. What it costs is what libmicrohttpd
 * and the kernel cost; what the daemon costs above it is routing, auth, the store, JSON and the
 * access log. The baseline of the status API benchmark (on TCP) and the HTTP floor of the
 * checkpoint benchmark (on a unix socket, as the instance API).
 *
 *   bare-server PORT|unix:PATH THREADS BODY_FILE
 *
 * It listens on 127.0.0.1:PORT or on the unix socket PATH (sockets made as the daemon makes its
 * own) and runs until SIGTERM or SIGINT. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <microhttpd.h>

#define BODY_MAX (1 << 20)

typedef struct Body {
    char *data;
    size_t n;
} Body;

static int read_body(const char *path, Body *ret)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;

    char *data = malloc(BODY_MAX);
    size_t n = data ? fread(data, 1, BODY_MAX, f) : 0;
    int r = ferror(f) || !data ? -EIO : 0;
    (void)fclose(f);
    if (r < 0) {
        free(data);
        return r;
    }
    *ret = (Body){.data = data, .n = n};
    return 0;
}

/* A listening socket as src/api/http.c's listen_tcp() makes it. Returns the fd or -errno. */
static int listen_loopback(uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    int one = 1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;

    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 512) < 0) {
        int r = -errno;
        (void)close(fd);
        return r;
    }
    return fd;
}

/* A listening unix socket as src/daemon/main.c's listen_unix() makes it. Returns the fd or
 * -errno. */
static int listen_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    (void)unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 512) < 0) {
        int r = -errno;
        (void)close(fd);
        return r;
    }
    return fd;
}

/* The same two-call pattern as the daemon: the first call sees the headers, the second (with no
 * body left) answers. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    static int seen;
    const Body *body = cls;
    (void)url;
    (void)version;
    (void)upload_data;

    if (!*con_cls) {
        *con_cls = &seen;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(body->n, body->data, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result r =
        MHD_queue_response(conn, strcmp(method, "PUT") == 0 ? MHD_HTTP_CREATED : MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return r;
}

int main(int argc, char **argv)
{
    Body body;
    sigset_t stop;
    int sig;

    if (argc != 4) {
        fprintf(stderr, "usage: bare-server PORT|unix:PATH THREADS BODY_FILE\n");
        return 2;
    }
    int r = read_body(argv[3], &body);
    if (r < 0) {
        fprintf(stderr, "bare-server: could not read %s: %s\n", argv[3], strerror(-r));
        return 1;
    }

    bool unix_socket = strncmp(argv[1], "unix:", 5) == 0;
    int fd = unix_socket ? listen_unix(argv[1] + 5) : listen_loopback((uint16_t)atoi(argv[1]));
    if (fd < 0) {
        fprintf(stderr, "bare-server: could not listen on %s: %s\n", argv[1], strerror(-fd));
        free(body.data);
        return 1;
    }

    /* Block the stop signals before the pool starts so that only sigwait() below sees them. */
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    struct MHD_Daemon *mhd = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG,
        0, NULL, NULL, on_request, &body, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned int)atoi(argv[2]), MHD_OPTION_CONNECTION_LIMIT, 1024U,
        MHD_OPTION_CONNECTION_TIMEOUT, 60U, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)32 * 1024,
        MHD_OPTION_END);
    if (!mhd) {
        fprintf(stderr, "bare-server: could not start libmicrohttpd\n");
        (void)close(fd);
        free(body.data);
        return 1;
    }
    (void)sigwait(&stop, &sig);
    MHD_stop_daemon(mhd);
    free(body.data);
    return 0;
}
