/* The transport of libruntara: HTTP/1.1 to the daemon's instance API, on a unix socket or TCP,
 * over one connection per client that is kept alive between requests. A request goes out in one
 * sendmsg() (head and body); the reply is read by http-parser (libhttp-parser), which handles
 * what a reply may be (Content-Length, chunked or close-delimited bodies, interim 1xx replies,
 * keep-alive rules) and refuses what is not HTTP.
 *
 * libcurl did this before. Linking it cost every program ~13 ms of CPU at start (about thirty
 * shared libraries, their relocations and constructors: TLS, Kerberos, LDAP, ...), against
 * ~0.5 ms for this file's two libraries; every launch and every relaunch of an instance paid it,
 * and the SDK needs none of what those libraries are for: the daemon speaks plain HTTP/1.1 on a
 * local socket (docs/benchmarks.md, end_to_end). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>
#include <jansson.h>

#include "runtara-internal.h"

#define CONNECT_TIMEOUT_MS 10000
#define STALL_TIMEOUT_S 60 /* the daemon sent nothing for this long: give up */
#define READ_CHUNK 16384

/* How one attempt at a request ended. */
typedef enum Outcome {
    OUTCOME_OK,         /* a whole reply */
    OUTCOME_NO_CONNECT, /* no connection: t->oserr, or t->why (name resolution) */
    OUTCOME_NO_ADDRESS, /* the host name or port does not resolve: t->why; not retried */
    OUTCOME_GONE,       /* the connection broke before the reply was whole */
    OUTCOME_TIMEOUT,    /* the daemon stayed silent */
    OUTCOME_TOO_BIG,    /* the reply's body exceeds RUNTARA_REPLY_MAX */
    OUTCOME_BAD_REPLY,  /* not HTTP as http-parser reads it: t->why */
} Outcome;

/* One attempt: the reply as it is read, and how the attempt failed. */
typedef struct Transfer {
    http_parser parser;
    unsigned status;
    char *body;
    size_t n, cap;
    bool complete;   /* the final (non-1xx) reply was read whole */
    bool has_signal; /* the reply carried Runtara-Signal */
    RuntaraSignal signal;
    /* The header being read. http-parser may hand a name or a value over in pieces (as the
     * bytes arrive); only short ones can be of interest, longer ones are marked and skipped. */
    char field[32], value[32];
    size_t field_n, value_n;
    bool in_value;
    bool headers_done; /* later "headers" are a chunked body's trailers: ignored */
    bool too_big;      /* the body is, or is announced as, larger than RUNTARA_REPLY_MAX */
    bool sending;      /* a timeout came while the request was being written */
    unsigned limit_s;  /* the silence that timed out, in seconds */
    size_t received;   /* bytes of the reply read so far */
    int oserr;         /* errno of a failed connect, send or receive */
    const char *why;   /* a static reason, when there is no errno */
} Transfer;

static Transfer *transfer_of(http_parser *p)
{
    return p->data;
}

/* Append up to the buffer's size; a longer piece makes the text too long to be of interest,
 * marked by a length past the buffer. */
static void piece_append(char *buf, size_t size, size_t *n, const char *at, size_t len)
{
    if (*n + len >= size) {
        *n = size;
        return;
    }
    memcpy(buf + *n, at, len);
    *n += len;
    buf[*n] = '\0';
}

/* A whole header was read: note the one we act on. An unknown signal from a newer daemon is
 * ignored, as if none were pending. */
static void header_done(Transfer *t)
{
    if (t->field_n < sizeof t->field && t->value_n < sizeof t->value &&
        strcasecmp(t->field, "Runtara-Signal") == 0) {
        char *v = t->value + t->value_n;
        while (v > t->value && (v[-1] == ' ' || v[-1] == '\t'))
            *--v = '\0';
        RuntaraSignal s = runtara_signal_from_string(t->value);
        t->has_signal = true;
        t->signal = s < 0 ? RUNTARA_SIGNAL_NONE : s;
    }
    t->field_n = t->value_n = 0;
    t->field[0] = t->value[0] = '\0';
    t->in_value = false;
}

static int on_message_begin(http_parser *p)
{
    Transfer *t = transfer_of(p);
    /* a new reply, e.g. after an interim "100 Continue": nothing of the earlier one counts */
    t->n = 0;
    t->has_signal = false;
    t->field_n = t->value_n = 0;
    t->in_value = t->headers_done = false;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    Transfer *t = transfer_of(p);
    if (t->headers_done)
        return 0;
    if (t->in_value)
        header_done(t);
    piece_append(t->field, sizeof t->field, &t->field_n, at, len);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    Transfer *t = transfer_of(p);
    if (t->headers_done)
        return 0;
    t->in_value = true;
    piece_append(t->value, sizeof t->value, &t->value_n, at, len);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    Transfer *t = transfer_of(p);
    if (t->in_value)
        header_done(t);
    t->headers_done = true;
    t->status = p->status_code;
    /* refused by its announced length, before a byte of it is read */
    if (p->content_length != ULLONG_MAX && p->content_length > RUNTARA_REPLY_MAX) {
        t->too_big = true;
        return -1; /* stops the parser: HPE_CB_headers_complete */
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    Transfer *t = transfer_of(p);
    if (len > RUNTARA_REPLY_MAX - t->n) {
        t->too_big = true;
        return 1; /* stops the parser: HPE_CB_body */
    }
    if (t->n + len + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->n + len + 1)
            cap *= 2;
        t->body = runtara__xrealloc(t->body, cap);
        t->cap = cap;
    }
    memcpy(t->body + t->n, at, len);
    t->n += len;
    t->body[t->n] = '\0';
    return 0;
}

static int on_message_complete(http_parser *p)
{
    Transfer *t = transfer_of(p);
    if (p->status_code / 100 == 1)
        return 0; /* an interim reply: the real one follows */
    t->complete = true;
    http_parser_pause(p, 1); /* nothing after it belongs to this request */
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Wait until fd is ready for events, at most timeout_ms: 1 ready (what it is ready for in
 * *ret_revents, if wanted), 0 timed out, < 0 -errno. */
static int wait_fd(int fd, short events, uint64_t timeout_ms, short *ret_revents)
{
    uint64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = events};
        uint64_t now = now_ms(), left = now >= deadline ? 0 : deadline - now;
        /* in steps of at most INT_MAX ms: a long poll's wait is the caller's number */
        int r = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (r > 0) {
            if (ret_revents)
                *ret_revents = pfd.revents;
            return 1;
        }
        if (r == 0 && left <= INT_MAX)
            return 0;
        if (r < 0 && errno != EINTR)
            return -errno;
    }
}

void runtara__disconnect(RuntaraClient *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* A non-blocking socket connected to sa; -errno on failure. */
static int connect_to(const struct sockaddr *sa, socklen_t len)
{
    bool local = sa->sa_family == AF_UNIX;
    /* A unix socket connects at once, or waits in the kernel while the daemon's listen backlog
     * is full (for SO_SNDTIMEO at most); a TCP handshake is waited for with poll(). */
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | (local ? 0 : SOCK_NONBLOCK), 0);
    if (fd < 0)
        return -errno;
    int r = 0;
    if (local) {
        /* (non-blocking afterwards, so the timeout bounds nothing else) */
        struct timeval tv = {.tv_sec = CONNECT_TIMEOUT_MS / 1000};
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        while ((r = connect(fd, sa, len) < 0 ? -errno : 0) == -EINTR)
            ;
        if (r == -EAGAIN)
            r = -ETIMEDOUT; /* the backlog stayed full */
        if (r == 0 && fcntl(fd, F_SETFL, O_NONBLOCK) < 0)
            r = -errno;
    } else {
        r = connect(fd, sa, len) < 0 ? -errno : 0;
        if (r == -EINPROGRESS) {
            int ready = wait_fd(fd, POLLOUT, CONNECT_TIMEOUT_MS, NULL);
            socklen_t n = sizeof r;
            if (ready <= 0)
                r = ready == 0 ? -ETIMEDOUT : ready;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &r, &n) < 0)
                r = -errno;
            else
                r = -r;
        }
        int one = 1; /* the request leaves in one write; do not hold its last segment back */
        if (r == 0)
            (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (r < 0) {
        close(fd);
        return r;
    }
    return fd;
}

static Outcome open_connection(RuntaraClient *c, Transfer *t)
{
    int fd = -ENOENT;
    if (c->socket_path) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        /* the length was checked when the address was read (runtara-env.c) */
        strncpy(sun.sun_path, c->socket_path, sizeof sun.sun_path - 1);
        fd = connect_to((struct sockaddr *)&sun, sizeof sun);
    } else {
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
        int g = getaddrinfo(c->tcp_host, c->tcp_port, &hints, &res);
        if (g != 0) {
            if (g == EAI_SYSTEM)
                t->oserr = errno;
            else
                t->why = gai_strerror(g);
            /* a name that does not exist will not come to exist while the daemon restarts */
            return g == EAI_AGAIN || g == EAI_SYSTEM || g == EAI_MEMORY ? OUTCOME_NO_CONNECT
                                                                        : OUTCOME_NO_ADDRESS;
        }
        for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next)
            fd = connect_to(a->ai_addr, a->ai_addrlen);
        freeaddrinfo(res);
    }
    if (fd < 0) {
        t->oserr = -fd;
        return OUTCOME_NO_CONNECT;
    }
    c->fd = fd;
    return OUTCOME_OK;
}

/* The request's head: request line and headers. It holds the token: wiped before it is freed. */
static char *request_head(const RuntaraClient *c, const RuntaraRequest *rq, const char *path)
{
    bool body = strcmp(rq->method, "GET") != 0;
    char length[48] = "";

    if (body)
        (void)snprintf(length, sizeof length, "Content-Length: %zu\r\n", rq->body_n);
    return runtara__xasprintf("%s %s%s HTTP/1.1\r\n"
                              "Host: %s\r\n"
                              "User-Agent: libruntara/" RUNTARA_SDK_VERSION "\r\n"
                              "%s\r\n"
                              "Accept: application/json, application/octet-stream\r\n"
                              "%s%s%s"
                              "%s"
                              "\r\n",
                              rq->method, c->path_base, path, c->host_header, c->auth_header,
                              rq->ctype ? "Content-Type: " : "", rq->ctype ? rq->ctype : "",
                              rq->ctype ? "\r\n" : "", length);
}

static void head_free(char *head)
{
    explicit_bzero(head, strlen(head));
    free(head);
}

/* Write the whole request; the socket is non-blocking, so a stall is a timeout. The daemon may
 * answer before it has read a large body (a 413, a 401) and close the connection: then sending
 * stops, *ret_early is set and the reply is read as usual (the connection is not reused). */
static Outcome send_request(RuntaraClient *c, const char *head, const RuntaraRequest *rq,
                            Transfer *t, bool *ret_early)
{
    struct iovec iov[2] = {
        {.iov_base = (void *)head, .iov_len = strlen(head)},
        {.iov_base = (void *)(rq->body ? rq->body : ""), .iov_len = rq->body ? rq->body_n : 0},
    };
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};

    while (msg.msg_iovlen > 0) {
        ssize_t k = sendmsg(c->fd, &msg, MSG_NOSIGNAL); /* no SIGPIPE if the daemon went away */
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN) {
                /* what the daemon sent before it closed is still there to read */
                t->oserr = errno;
                *ret_early = true;
                return OUTCOME_OK;
            }
            short revents = 0;
            int r = wait_fd(c->fd, POLLOUT | POLLIN, (uint64_t)STALL_TIMEOUT_S * 1000, &revents);
            if (r <= 0) {
                t->oserr = r < 0 ? -r : 0;
                t->sending = true;
                t->limit_s = STALL_TIMEOUT_S;
                return r == 0 ? OUTCOME_TIMEOUT : OUTCOME_GONE;
            }
            /* A reply (the daemon does not send an interim 100: the request asks for none), or
             * the end of the connection; room to write as well means the reply can wait. */
            if (!(revents & POLLOUT)) {
                *ret_early = true;
                return OUTCOME_OK;
            }
            continue;
        }
        size_t left = (size_t)k;
        while (msg.msg_iovlen > 0 && left >= msg.msg_iov->iov_len) {
            left -= msg.msg_iov->iov_len;
            msg.msg_iov++;
            msg.msg_iovlen--;
        }
        if (msg.msg_iovlen > 0) {
            msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + left;
            msg.msg_iov->iov_len -= left;
        }
    }
    return OUTCOME_OK;
}

/* Read and parse until the reply is whole. wait_s: how long the daemon may stay silent besides
 * the usual stall limit (a long poll). */
static Outcome read_reply(RuntaraClient *c, unsigned wait_s, Transfer *t, bool *ret_keep)
{
    char buf[READ_CHUNK];

    http_parser_init(&t->parser, HTTP_RESPONSE);
    t->parser.data = t;
    for (;;) {
        int r = wait_fd(c->fd, POLLIN, ((uint64_t)STALL_TIMEOUT_S + wait_s) * 1000, NULL);
        if (r <= 0) {
            t->oserr = r < 0 ? -r : 0;
            t->limit_s = STALL_TIMEOUT_S + wait_s;
            return r == 0 ? OUTCOME_TIMEOUT : OUTCOME_GONE;
        }
        ssize_t k = recv(c->fd, buf, sizeof buf, 0);
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            t->oserr = errno;
            return OUTCOME_GONE;
        }
        t->received += (size_t)k;
        /* k == 0 is the end of the stream: http-parser ends a close-delimited body there and
         * calls anything else incomplete */
        size_t used = http_parser_execute(&t->parser, &parser_settings, buf, (size_t)k);
        enum http_errno he = HTTP_PARSER_ERRNO(&t->parser);
        if (t->complete) {
            /* anything after the reply was not asked for: do not reuse the connection */
            *ret_keep = k > 0 && used == (size_t)k && http_should_keep_alive(&t->parser);
            return OUTCOME_OK;
        }
        if (t->too_big)
            return OUTCOME_TOO_BIG;
        if (k == 0 || he == HPE_INVALID_EOF_STATE)
            return OUTCOME_GONE; /* the daemon closed the connection before the reply was whole */
        if (he != HPE_OK) {
            t->why = http_errno_description(he);
            return OUTCOME_BAD_REPLY;
        }
    }
}

/* One attempt at the request, on the kept connection or a new one. */
static Outcome perform(RuntaraClient *c, const RuntaraRequest *rq, const char *head, Transfer *t)
{
    bool reused = c->fd >= 0;

    for (;;) {
        Outcome o = OUTCOME_OK;
        bool early = false, keep = false;
        if (c->fd < 0)
            o = open_connection(c, t);
        if (o == OUTCOME_OK)
            o = send_request(c, head, rq, t, &early);
        if (o == OUTCOME_OK)
            o = read_reply(c, rq->wait_s, t, &keep);
        if (o != OUTCOME_OK || !keep || early)
            runtara__disconnect(c);
        /* A kept connection the daemon closed while it was idle (its idle timeout) fails
         * before any reply: that is no sign of trouble, so try once more on a new one. */
        if (o == OUTCOME_GONE && reused && t->received == 0) {
            reused = false;
            *t = (Transfer){0};
            continue;
        }
        return o;
    }
}

/* Turn a failed attempt into the client's last error. */
static int transport_error(RuntaraClient *c, Outcome o, const Transfer *t, const char *what)
{
    const char *why = t->why ? t->why : t->oserr ? strerror(t->oserr) : NULL;

    switch (o) {
    case OUTCOME_NO_CONNECT:
    case OUTCOME_NO_ADDRESS:
        return runtara__set_error(c, -ECONNREFUSED, "could not %s: cannot connect to \"%s\": %s",
                                  what, c->addr, why ? why : "unknown error");
    case OUTCOME_TIMEOUT:
        if (t->sending)
            return runtara__set_error(c, -ETIMEDOUT,
                                      "could not %s: the daemon stopped reading the request: "
                                      "nothing taken for %u s",
                                      what, t->limit_s);
        return runtara__set_error(c, -ETIMEDOUT,
                                  "could not %s: the daemon did not answer: nothing received for "
                                  "%u s",
                                  what, t->limit_s);
    case OUTCOME_TOO_BIG:
        return runtara__set_error(c, -EFBIG, "could not %s: the reply is larger than %zu MiB", what,
                                  RUNTARA_REPLY_MAX >> 20);
    case OUTCOME_BAD_REPLY:
        return runtara__set_error(c, -EIO, "could not %s: the daemon's reply is not valid HTTP: %s",
                                  what, why);
    case OUTCOME_GONE:
        return runtara__set_error(
            c, -EIO, "could not %s: the connection to \"%s\" was lost before the reply: %s", what,
            c->addr, why ? why : "closed by the daemon");
    case OUTCOME_OK:
        break;
    }
    abort();
}

static int status_to_errno(unsigned status)
{
    switch (status) {
    case 400:
        return -EINVAL;
    case 401:
    case 403:
        return -EACCES;
    case 404:
        return -ENOENT;
    case 409:
        return -EALREADY;
    case 413:
        return -EFBIG;
    default:
        return -EIO;
    }
}

/* Turn a non-2xx reply into the client's last error, with the daemon's message if it sent
 * {"error": {"message": ...}}. */
static int reply_error(RuntaraClient *c, const Transfer *t, const char *what)
{
    json_t *doc = t->n > 0 ? json_loadb(t->body, t->n, 0, NULL) : NULL;
    const char *msg = NULL;
    int r;

    (void)json_unpack(doc, "{s:{s:s}}", "error", "message", &msg);
    if (msg)
        r = runtara__set_error(c, status_to_errno(t->status), "could not %s: %s", what, msg);
    else
        r = runtara__set_error(c, status_to_errno(t->status),
                               "could not %s: the daemon answered HTTP %u", what, t->status);
    json_decref(doc);
    return r;
}

/* The daemon is unreachable or went away mid-request: it is restarting (its instances keep
 * running), so the request is worth sending again. Every instance API call may be repeated:
 * checkpoints keep the first write, reads and heartbeats change nothing, a repeated signal wait
 * finds its delivery in its checkpoint (409, runtara_wait_signal reads it), an event report
 * carries its key (recorded once), and a repeated end report finds the instance already ended
 * (409). */
static bool daemon_gone(Outcome o)
{
    return o == OUTCOME_NO_CONNECT || o == OUTCOME_GONE;
}

/* Worth sending again: the daemon is gone, or it answered 503 (its database is unreachable, or
 * it is shutting down): both pass, and every call may be repeated (above). */
static bool worth_again(Outcome o, const Transfer *t)
{
    return daemon_gone(o) || (o == OUTCOME_OK && t->status == 503);
}

int runtara__request(RuntaraClient *c, const RuntaraRequest *rq, RuntaraReply *ret)
{
    char *head = request_head(c, rq, rq->path);
    uint64_t deadline = now_ms() + (uint64_t)c->reconnect_secs * 1000, backoff = 20;
    Transfer t = {0};
    int r;

    Outcome o = perform(c, rq, head, &t);
    while (worth_again(o, &t) && now_ms() + backoff <= deadline) {
        struct timespec ts = {(time_t)(backoff / 1000), (long)(backoff % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
        free(t.body);
        t = (Transfer){0};
        o = perform(c, rq, head, &t);
    }
    head_free(head);

    if (o != OUTCOME_OK)
        r = transport_error(c, o, &t, rq->what);
    else if (t.status / 100 != 2)
        r = reply_error(c, &t, rq->what);
    else {
        if (t.has_signal || rq->carries_signal)
            c->signal = t.has_signal ? t.signal : RUNTARA_SIGNAL_NONE;
        *ret = (RuntaraReply){
            .status = t.status,
            .body = t.body ? TAKE_PTR(t.body) : runtara__memdup_nul("", 0),
            .n = t.n,
        };
        return (int)t.status;
    }
    free(t.body);
    return r;
}

void runtara__reply_done(RuntaraReply *r)
{
    free(r->body);
    *r = (RuntaraReply){0};
}
