#include <errno.h>
#include <arpa/inet.h>
#include <limits.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../base/alloc.h"
#include "../base/hashmap.h"
#include "../base/log.h"
#include "../base/macro.h"
#include "../base/time-util.h"
#include "http-gate.h"
#include "metrics.h"

/* Connections accepted per wake-up before the held ones get their turn again. */
#define ACCEPT_BATCH 256
/* Out of file descriptors with nothing held to drop: stop accepting this long. */
#define ACCEPT_PAUSE_USEC (100 * USEC_PER_MSEC)
/* A refusal of each kind is logged at most this often; the metrics count every one. */
#define WARN_INTERVAL_USEC (10 * USEC_PER_SEC)

typedef struct GateConn {
    struct GateConn *prev, *next; /* in accept order, which is also deadline order */
    int fd;
    usec_t deadline;
    size_t scanned; /* bytes already searched for the end of the headers */
    socklen_t addrlen;
    struct sockaddr_storage addr;
    char key[INET6_ADDRSTRLEN];
} GateConn;

struct HttpGate {
    HttpGateConfig c;
    int epoll_fd, stop_fd;
    pthread_t thread;
    bool running;

    /* the gate thread's own */
    GateConn *head, *tail;
    size_t n_pending;
    char *buf; /* header_limit bytes of peeked request */
    usec_t accept_paused_until;
    usec_t warned[_METRICS_REFUSAL_MAX];

    /* shared with the server's threads, which report closed connections */
    pthread_mutex_t lock;
    Hashmap *per_addr;     /* address -> connections (as uintptr_t), held here or served */
    atomic_uint in_server; /* handed over and not yet closed */
};

/* epoll data of the two descriptors that are not connections */
static char listen_tag, stop_tag;

static void addr_key(const struct sockaddr *sa, char key[static INET6_ADDRSTRLEN])
{
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, key, INET6_ADDRSTRLEN);
    else if (sa->sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
        inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], key, INET6_ADDRSTRLEN);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &s6->sin6_addr, key, INET6_ADDRSTRLEN);
    else
        snprintf(key, INET6_ADDRSTRLEN, "local");
}

/* Count one more connection of the address, unless it holds its limit already. */
static bool addr_acquire(HttpGate *g, const char *key)
{
    if (g->c.per_address == 0)
        return true;
    pthread_mutex_lock(&g->lock);
    uintptr_t n = (uintptr_t)hashmap_get(g->per_addr, key);
    bool ok = n < g->c.per_address;
    if (ok)
        hashmap_put(g->per_addr, key, (void *)(n + 1));
    pthread_mutex_unlock(&g->lock);
    return ok;
}

static void addr_release(HttpGate *g, const char *key)
{
    if (g->c.per_address == 0)
        return;
    pthread_mutex_lock(&g->lock);
    uintptr_t n = (uintptr_t)hashmap_get(g->per_addr, key);
    if (n > 1)
        hashmap_put(g->per_addr, key, (void *)(n - 1));
    else
        (void)hashmap_remove(g->per_addr, key);
    pthread_mutex_unlock(&g->lock);
}

static const char *refusal_text(MetricsRefusal why)
{
    switch (why) {
    case METRICS_REFUSED_PER_ADDRESS:
        return "the address holds its limit of connections (RUNTARA_HTTP_MAX_CONNECTIONS_PER_"
               "ADDRESS)";
    case METRICS_REFUSED_HEADER_TIMEOUT:
        return "its request headers did not arrive in time (RUNTARA_HTTP_HEADER_TIMEOUT_SECS)";
    case METRICS_REFUSED_GATE_FULL:
        return "too many connections wait for their headers (RUNTARA_HTTP_MAX_PENDING_"
               "CONNECTIONS), the oldest is dropped";
    case METRICS_REFUSED_SERVER_FULL:
        return "the server is at its connection limit (RUNTARA_HTTP_MAX_CONNECTIONS)";
    case METRICS_REFUSED_NOT_HTTP:
        return "its first bytes cannot begin an HTTP request (TLS to the plain port?)";
    default:
        return "unknown";
    }
}

/* Count a refusal; log it at debug level, and as a warning once per WARN_INTERVAL_USEC. */
static void refused(HttpGate *g, MetricsRefusal why, const char *key)
{
    metrics_connection_refused(why);
    usec_t now = now_usec(CLOCK_MONOTONIC);
    if (g->warned[why] == 0 || now - g->warned[why] >= WARN_INTERVAL_USEC) {
        g->warned[why] = now;
        log_warning("http: closed a connection from %s: %s; more such closings are counted in "
                    "runtara_http_connections_refused_total and logged at most every %u s",
                    key, refusal_text(why), (unsigned)(WARN_INTERVAL_USEC / USEC_PER_SEC));
    } else
        log_debug("http: closed a connection from %s: %s", key, refusal_text(why));
}

static void pending_unlink(HttpGate *g, GateConn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        g->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        g->tail = c->prev;
    c->prev = c->next = NULL;
    g->n_pending--;
    metrics_connections_waiting_add(-1);
}

/* Forget a held connection; its descriptor is closed unless it went elsewhere (fd < 0). */
static void pending_drop(HttpGate *g, GateConn *c)
{
    pending_unlink(g, c);
    if (c->fd >= 0) {
        (void)epoll_ctl(g->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
        (void)close(c->fd);
    }
    addr_release(g, c->key);
    free(c);
}

/* Whether buf holds the end of a request's headers: an empty line after the request line. Empty
 * lines before the request line do not count (the server skips them). */
static bool headers_complete(const char *buf, size_t n, size_t from)
{
    size_t start = 0;
    while (start < n && (buf[start] == '\r' || buf[start] == '\n'))
        start++;
    size_t i = MAX(start, from >= 2 ? from - 2 : 0);
    for (; i < n; i++) {
        const char *nl = memchr(buf + i, '\n', n - i);
        if (!nl)
            return false;
        i = (size_t)(nl - buf);
        if (i + 1 < n && buf[i + 1] == '\n')
            return true;
        if (i + 2 < n && buf[i + 1] == '\r' && buf[i + 2] == '\n')
            return true;
    }
    return false;
}

/* Whether the n bytes peeked cannot begin an HTTP/1.1 request: the method is a token (RFC 9110
 * section 5.6.2) up to the first space. A TLS handshake sent to a plain port (its first byte is
 * 0x16) or any other binary protocol is answered here at once (refuse_not_http()), rather than
 * held until its header deadline; never handed to the server, where it would hold a connection
 * until the idle timeout, which each byte renews. */
static bool not_http(const char *buf, size_t n)
{
    static const char tchar[] = "!#$%&'*+-.^_`|~0123456789"
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    size_t i = 0;
    while (i < n && (buf[i] == '\r' || buf[i] == '\n'))
        i++;
    for (; i < n && buf[i] != ' '; i++)
        if (buf[i] == '\0' || !strchr(tchar, buf[i]))
            return true;
    return false;
}

/* Answer c with status (a status line's code and text), extra headers and a JSON body, then
 * close it and count the refusal. The n bytes peeked are read first, so that closing does not
 * reset the connection under the reply. With TLS nothing can be said in clear: it only closes. */
static void refuse_with(HttpGate *g, GateConn *c, size_t n, const char *status, const char *headers,
                        const char *body, MetricsRefusal why)
{
    if (!g->c.tls) {
        char reply[512];
        int len = snprintf(reply, sizeof reply,
                           "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: "
                           "%zu\r\n%sConnection: close\r\n\r\n%s",
                           status, strlen(body), headers, body);
        (void)recv(c->fd, g->buf, n, MSG_DONTWAIT);
        (void)send(c->fd, reply, (size_t)MIN(len, (int)sizeof reply - 1),
                   MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)shutdown(c->fd, SHUT_WR);
    }
    refused(g, why, c->key);
    pending_drop(g, c);
}

/* A connection whose first bytes are not HTTP gets 400 from the gate itself. */
static void refuse_not_http(HttpGate *g, GateConn *c, size_t n)
{
    refuse_with(g, c, n, "400 Bad Request", "",
                "{\"error\":{\"code\":\"invalid_argument\",\"message\":\"this is not an HTTP/1.1 "
                "request\"}}\n",
                METRICS_REFUSED_NOT_HTTP);
}

/* Refuse a connection whose request is in (n bytes peeked) with 503. */
static void refuse_busy(HttpGate *g, GateConn *c, size_t n)
{
    refuse_with(g, c, n, "503 Service Unavailable", "Retry-After: 1\r\n",
                "{\"error\":{\"code\":\"unavailable\",\"message\":\"the server is at its "
                "connection limit; try again later\"}}\n",
                METRICS_REFUSED_SERVER_FULL);
}

/* The request's headers are in (or as much as the server would take): give the connection to the
 * server, within its limit or, for a public route, its reserve. */
static void hand_over(HttpGate *g, GateConn *c, size_t n)
{
    bool public = !g->c.tls && g->c.is_public && g->c.is_public(g->buf, n, g->c.userdata);
    unsigned cap = g->c.max_connections + (public ? g->c.reserved : 0);
    if (atomic_load(&g->in_server) >= cap) {
        refuse_busy(g, c, n);
        return;
    }
    (void)epoll_ctl(g->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
    pending_unlink(g, c);
    atomic_fetch_add(&g->in_server, 1);
    /* The server owns the descriptor from here, and closes it also when it fails. It reports
     * every connection it started as closed (http_gate_closed()); one it refused at once is
     * accounted for here. */
    if (MHD_add_connection(g->c.mhd, c->fd, (const struct sockaddr *)&c->addr, c->addrlen) !=
        MHD_YES) {
        atomic_fetch_sub(&g->in_server, 1);
        refused(g, METRICS_REFUSED_SERVER_FULL, c->key);
        addr_release(g, c->key);
    }
    free(c);
}

static void on_readable(HttpGate *g, GateConn *c, uint32_t events)
{
    size_t want = g->c.tls ? 1 : g->c.header_limit;
    ssize_t n = recv(c->fd, g->buf, want, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR) && !(events & (EPOLLERR | EPOLLHUP)))
        return;
    if (n <= 0) { /* the client went away, or gave up on its side */
        pending_drop(g, c);
        return;
    }
    if (!g->c.tls && not_http(g->buf, (size_t)n)) {
        refuse_not_http(g, c, (size_t)n);
        return;
    }
    if (g->c.tls || (size_t)n >= want || headers_complete(g->buf, (size_t)n, c->scanned)) {
        hand_over(g, c, (size_t)n);
        return;
    }
    c->scanned = (size_t)n;
    if (events & EPOLLRDHUP) /* half-closed before the headers ended: nothing more will come */
        pending_drop(g, c);
}

static void accept_pause(HttpGate *g, usec_t now)
{
    struct epoll_event ev = {.events = 0, .data.ptr = &listen_tag};
    g->accept_paused_until = now + ACCEPT_PAUSE_USEC;
    (void)epoll_ctl(g->epoll_fd, EPOLL_CTL_MOD, g->c.listen_fd, &ev);
}

static void accept_resume(HttpGate *g)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listen_tag};
    g->accept_paused_until = 0;
    (void)epoll_ctl(g->epoll_fd, EPOLL_CTL_MOD, g->c.listen_fd, &ev);
}

/* Hold one accepted connection until its headers are in. */
static void hold(HttpGate *g, int fd, const struct sockaddr_storage *ss, socklen_t len, usec_t now)
{
    GateConn *c = xcalloc(1, sizeof *c);
    c->fd = fd;
    c->addr = *ss;
    c->addrlen = len;
    addr_key((const struct sockaddr *)ss, c->key);
    if (!addr_acquire(g, c->key)) {
        refused(g, METRICS_REFUSED_PER_ADDRESS, c->key);
        (void)close(fd);
        free(c);
        return;
    }
    if (g->n_pending >= g->c.max_pending && g->head) {
        refused(g, METRICS_REFUSED_GATE_FULL, g->head->key);
        pending_drop(g, g->head);
    }
    c->deadline = now + (usec_t)g->c.header_timeout_secs * USEC_PER_SEC;
    c->prev = g->tail;
    if (g->tail)
        g->tail->next = c;
    else
        g->head = c;
    g->tail = c;
    g->n_pending++;
    metrics_connections_waiting_add(1);
    /* Edge-triggered: the bytes stay in the socket (peeked), so only new ones should wake us. */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(g->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        log_warning_errno(-errno, "http: could not watch a new connection, closing it: %m");
        pending_drop(g, c);
    }
}

static void accept_some(HttpGate *g)
{
    usec_t now = now_usec(CLOCK_MONOTONIC);
    for (unsigned i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd =
            accept4(g->c.listen_fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            hold(g, fd, &ss, len, now);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* Out of descriptors: the oldest held connection makes room, else wait a little. */
            if (g->head) {
                refused(g, METRICS_REFUSED_GATE_FULL, g->head->key);
                pending_drop(g, g->head);
                continue;
            }
            log_warning_errno(-errno, "http: could not accept a connection, pausing: %m");
            accept_pause(g, now);
        } else if (errno != EAGAIN)
            log_warning_errno(-errno, "http: could not accept a connection: %m");
        return;
    }
}

/* Close held connections past their header deadline; returns the epoll timeout until the next. */
static int expire(HttpGate *g)
{
    usec_t now = now_usec(CLOCK_MONOTONIC);
    while (g->head && g->head->deadline <= now) {
        refused(g, METRICS_REFUSED_HEADER_TIMEOUT, g->head->key);
        pending_drop(g, g->head);
    }
    if (g->accept_paused_until && g->accept_paused_until <= now)
        accept_resume(g);
    usec_t next = g->head ? g->head->deadline : USEC_INFINITY;
    if (g->accept_paused_until)
        next = MIN(next, g->accept_paused_until);
    if (next == USEC_INFINITY)
        return -1;
    usec_t ms = (next - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

static void *gate_main(void *userdata)
{
    HttpGate *g = userdata;
    struct epoll_event evs[64];

    for (;;) {
        int n = epoll_wait(g->epoll_fd, evs, (int)ELEMENTSOF(evs), expire(g));
        if (n < 0 && errno != EINTR) {
            log_error_errno(-errno, "http: could not wait for connections: %m");
            break;
        }
        bool accept_ready = false;
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &stop_tag)
                return NULL;
            if (p == &listen_tag)
                accept_ready = true; /* after the held ones: accepting may drop some of them */
            else
                on_readable(g, p, evs[i].events);
        }
        if (accept_ready)
            accept_some(g);
    }
    return NULL;
}

int http_gate_new(const HttpGateConfig *c, HttpGate **ret)
{
    HttpGate *g = xcalloc(1, sizeof *g);
    g->c = *c;
    g->c.max_pending = MAX(g->c.max_pending, 1u);
    g->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    g->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    g->buf = xmalloc(MAX(g->c.header_limit, (size_t)1));
    g->per_addr = hashmap_new();
    pthread_mutex_init(&g->lock, NULL);
    int r = g->epoll_fd < 0 || g->stop_fd < 0 ? -errno : 0;
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &listen_tag};
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &stop_tag};
    if (r == 0 && (epoll_ctl(g->epoll_fd, EPOLL_CTL_ADD, c->listen_fd, &lev) < 0 ||
                   epoll_ctl(g->epoll_fd, EPOLL_CTL_ADD, g->stop_fd, &sev) < 0))
        r = -errno;
    if (r < 0) {
        g->c.listen_fd = -1; /* stays the caller's */
        (void)http_gate_free(g);
        return r;
    }
    *ret = g;
    return 0;
}

int http_gate_start(HttpGate *g)
{
    int r = -pthread_create(&g->thread, NULL, gate_main, g);
    if (r < 0)
        return r;
    (void)pthread_setname_np(g->thread, "http-gate");
    g->running = true;
    return 0;
}

void http_gate_stop(HttpGate *g)
{
    if (!g || !g->running)
        return;
    uint64_t one = 1;
    if (write(g->stop_fd, &one, sizeof one) < 0)
        log_warning_errno(-errno, "http: could not stop the connection gate: %m");
    pthread_join(g->thread, NULL);
    g->running = false;
    while (g->head)
        pending_drop(g, g->head);
}

HttpGate *http_gate_free(HttpGate *g)
{
    if (!g)
        return NULL;
    http_gate_stop(g);
    if (g->c.listen_fd >= 0)
        (void)close(g->c.listen_fd);
    if (g->epoll_fd >= 0)
        (void)close(g->epoll_fd);
    if (g->stop_fd >= 0)
        (void)close(g->stop_fd);
    hashmap_free(g->per_addr);
    pthread_mutex_destroy(&g->lock);
    free(g->buf);
    free(g);
    return NULL;
}

void http_gate_closed(HttpGate *g, const struct sockaddr *addr)
{
    char key[INET6_ADDRSTRLEN];
    atomic_fetch_sub(&g->in_server, 1);
    if (!addr)
        return;
    addr_key(addr, key);
    addr_release(g, key);
}

bool http_gate_over_limit(HttpGate *g)
{
    return atomic_load_explicit(&g->in_server, memory_order_relaxed) > g->c.max_connections;
}
