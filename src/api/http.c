#include <assert.h>
#include <arpa/inet.h>
#include <ctype.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "../base/alloc.h"
#include "../base/id.h"
#include "../base/log.h"
#include "../base/parse-util.h"
#include "../base/strbuf.h"
#include "../base/time-util.h"
#include "../base/utf8.h"
#include "api-error.h"
#include "http-gate.h"
#include "http.h"
#include "metrics.h"

#define MAX_PARAMS 4
#define MAX_LOG_FIELDS 6
#define MAX_EXTRA_HEADERS 6
/* An error message and its detail in a reply, in bytes: enough for any message of ours with the
 * parts of the request it names (those are cut to UTF8_ECHO_MAX where they are formatted). */
#define HTTP_ERROR_MESSAGE_MAX 1024
/* What the access log keeps of a request's path, in bytes. */
#define HTTP_LOG_PATH_MAX 1024
/* GnuTLS priorities of the HTTPS server: its defaults without TLS 1.0 and 1.1 */
#define HTTP_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

struct HttpServer {
    struct MHD_Daemon *mhd;
    HttpGate *gate; /* NULL: the server accepts its listening socket itself */
    HttpServerSettings s;
    uint16_t port;
    char id_prefix[9];
    atomic_uint_fast64_t next_id;
};

struct HttpRequest {
    HttpServer *server;
    struct MHD_Connection *conn;
    const HttpRoute *route;
    char id[40];
    char method[16];
    char *path;
    char *params[MAX_PARAMS];
    usec_t start;
    int64_t content_length;
    bool has_body;

    StrBuf body;
    json_t *json;
    uint64_t bytes_in;

    void *data;
    void *auth;
    void (*auth_free)(void *auth); /* NULL: free() */

    /* long-poll: guarded by lock, since resume comes from other threads */
    pthread_mutex_t lock;
    HttpResume_cb on_resume;
    bool suspended, resume_pending;
    void (*on_done)(HttpRequest *r, void *userdata);
    void *on_done_userdata;
    bool stream_begun, stream_done;

    /* the response: built by http_reply_*, queued by the access handler */
    struct MHD_Response *response;
    unsigned status;
    bool close_early; /* refuse before reading the body; the connection closes */
    bool failed;      /* no response could be made: the connection closes */
    bool queued;
    uint64_t discarded; /* body bytes read after a refusal that could not be sent at once */

    const char *log_keys[MAX_LOG_FIELDS];
    char *log_values[MAX_LOG_FIELDS];
    size_t n_log;
    char *hdr_names[MAX_EXTRA_HEADERS], *hdr_values[MAX_EXTRA_HEADERS];
    size_t n_hdr;
};

/* ---- request accessors ---------------------------------------------------------------------- */

const char *http_request_method(HttpRequest *r)
{
    return r->method;
}

const char *http_request_path(HttpRequest *r)
{
    return r->path;
}

const char *http_request_id(HttpRequest *r)
{
    return r->id;
}

usec_t http_request_start(HttpRequest *r)
{
    return r->start;
}

const char *http_request_route(HttpRequest *r)
{
    return r->route ? r->route->name : "unmatched";
}

const char *http_request_param(HttpRequest *r, unsigned n)
{
    return n < MAX_PARAMS ? r->params[n] : NULL;
}

const char *http_request_query(HttpRequest *r, const char *key)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

typedef struct QueryIter {
    void (*fn)(const char *k, const char *v, void *u);
    void *u;
} QueryIter;

static enum MHD_Result query_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    QueryIter *it = cls;
    (void)kind;
    it->fn(key, value, it->u);
    return MHD_YES;
}

void http_request_query_each(HttpRequest *r, void (*fn)(const char *k, const char *v, void *u),
                             void *u)
{
    QueryIter it = {fn, u};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, query_iter, &it);
}

const char *http_request_header(HttpRequest *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

int64_t http_request_content_length(HttpRequest *r)
{
    return r->content_length;
}

json_t *http_request_json(HttpRequest *r)
{
    return r->json;
}

const char *http_request_body(HttpRequest *r, size_t *ret_n)
{
    *ret_n = r->body.len;
    return r->body.buf ? r->body.buf : "";
}

char *http_request_take_body(HttpRequest *r, size_t *ret_n)
{
    *ret_n = r->body.len;
    return strbuf_steal(&r->body);
}

static size_t body_limit(const HttpRequest *r)
{
    return r->route->max_body ? r->route->max_body : r->server->s.max_json_body;
}

void *http_request_userdata(HttpRequest *r)
{
    return r->server->s.userdata;
}

void *http_request_get_data(HttpRequest *r)
{
    return r->data;
}

void http_request_set_data(HttpRequest *r, void *data)
{
    r->data = data;
}

static void auth_done(HttpRequest *r)
{
    if (r->auth_free)
        r->auth_free(r->auth);
    else
        free(r->auth);
    r->auth = NULL;
    r->auth_free = NULL;
}

void http_request_set_auth_full(HttpRequest *r, void *auth, void (*free_fn)(void *auth))
{
    auth_done(r);
    r->auth = auth;
    r->auth_free = free_fn;
}

void http_request_set_auth(HttpRequest *r, void *auth)
{
    http_request_set_auth_full(r, auth, NULL);
}

void *http_request_get_auth(HttpRequest *r)
{
    return r->auth;
}

void http_request_log_field(HttpRequest *r, const char *key, const char *value)
{
    if (!value)
        return;
    for (size_t i = 0; i < r->n_log; i++)
        if (strcmp(r->log_keys[i], key) == 0) { /* a resumed handler runs again */
            free(r->log_values[i]);
            r->log_values[i] = xstrdup(value);
            return;
        }
    if (r->n_log >= MAX_LOG_FIELDS)
        return;
    r->log_keys[r->n_log] = key;
    r->log_values[r->n_log++] = xstrdup(value);
}

/* ---- long-poll ------------------------------------------------------------------------------ */

void http_request_suspend(HttpRequest *r, HttpResume_cb on_resume)
{
    pthread_mutex_lock(&r->lock);
    r->on_resume = on_resume;
    pthread_mutex_unlock(&r->lock);
}

void http_request_resume(HttpRequest *r)
{
    pthread_mutex_lock(&r->lock);
    if (r->suspended) {
        r->suspended = false;
        MHD_resume_connection(r->conn);
    } else
        r->resume_pending = true; /* the handler has not suspended yet: do not */
    pthread_mutex_unlock(&r->lock);
}

void http_request_on_done(HttpRequest *r, void (*fn)(HttpRequest *r, void *userdata),
                          void *userdata)
{
    r->on_done = fn;
    r->on_done_userdata = userdata;
}

/* After a handler ran without replying: suspend, or run the resume callback at once if a resume
 * already came in. Returns true if the request is now suspended. */
static bool settle_suspend(HttpRequest *r)
{
    for (;;) {
        pthread_mutex_lock(&r->lock);
        HttpResume_cb cb = r->on_resume;
        if (!cb || r->response || r->failed) {
            pthread_mutex_unlock(&r->lock);
            return false;
        }
        if (!r->resume_pending) {
            r->suspended = true;
            MHD_suspend_connection(r->conn);
            pthread_mutex_unlock(&r->lock);
            return true;
        }
        r->resume_pending = false;
        r->on_resume = NULL;
        pthread_mutex_unlock(&r->lock);
        cb(r);
    }
}

/* ---- responses ------------------------------------------------------------------------------ */

void http_reply_header(HttpRequest *r, const char *name, const char *value)
{
    if (r->n_hdr >= MAX_EXTRA_HEADERS)
        return;
    r->hdr_names[r->n_hdr] = xstrdup(name);
    r->hdr_values[r->n_hdr++] = xstrdup(value);
}

/* Give the request response, with the headers every reply carries. */
static void reply_with(HttpRequest *r, unsigned status, const char *content_type,
                       struct MHD_Response *response)
{
    if (!response) { /* out of memory, or a file larger than MHD can send: the connection closes */
        log_warning("request %s (%s): could not create its response", r->id, http_request_route(r));
        r->failed = true;
        return;
    }
    r->response = response;
    r->status = status;
    if (content_type)
        MHD_add_response_header(r->response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(r->response, "X-Request-Id", r->id);
    for (size_t i = 0; i < r->n_hdr; i++)
        MHD_add_response_header(r->response, r->hdr_names[i], r->hdr_values[i]);
}

/* Give the request its response of n bytes at data, which is copied, or taken over (and later
 * freed with free()) when take is set. */
static void reply_buffer(HttpRequest *r, unsigned status, const char *content_type, void *data,
                         size_t n, bool take)
{
    if (r->response) {
        log_warning("second response for request %s ignored", r->id);
        if (take)
            free(data);
        return;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        n, data, take ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
    if (!resp && take)
        free(data);
    reply_with(r, status, content_type, resp);
}

void http_reply_fd(HttpRequest *r, unsigned status, const char *content_type, int fd, uint64_t n)
{
    if (r->response) {
        log_warning("second response for request %s ignored", r->id);
        (void)close(fd);
        return;
    }
    struct MHD_Response *resp = MHD_create_response_from_fd64(n, fd);
    if (!resp)
        (void)close(fd);
    reply_with(r, status, content_type, resp);
}

void http_reply_data(HttpRequest *r, unsigned status, const char *content_type, const void *data,
                     size_t n)
{
    reply_buffer(r, status, content_type, (void *)data, n, false);
}

void http_reply_data_owned(HttpRequest *r, unsigned status, const char *content_type, void *data,
                           size_t n)
{
    reply_buffer(r, status, content_type, data, n, true);
}

static int dump_to_strbuf(const char *buffer, size_t size, void *data)
{
    strbuf_put(data, buffer, size);
    return 0;
}

char *http_json_body(json_t *body, size_t *ret_n)
{
    StrBuf b = STRBUF_INIT;
    /* body is NULL when json_pack() refused an argument (a string that is not UTF-8): a defect of
     * the caller, which must never cost more than this one reply. */
    int r =
        body ? json_dump_callback(body, dump_to_strbuf, &b, JSON_COMPACT | JSON_REAL_PRECISION(17))
             : -1;
    json_decref(body);
    if (r < 0) {
        strbuf_done(&b);
        return NULL;
    }
    strbuf_putc(&b, '\n');
    *ret_n = b.len;
    return strbuf_steal(&b);
}

void http_reply_json(HttpRequest *r, unsigned status, json_t *body)
{
    /* Serialised straight into the buffer the response takes over: no copy on the way. */
    size_t n;
    char *s = http_json_body(body, &n);
    if (!s) {
        static const char failed[] = "{\"error\":{\"code\":\"internal\",\"message\":\"the reply "
                                     "could not be encoded as JSON\"}}\n";
        log_warning("request %s (%s): the reply could not be encoded as JSON", r->id,
                    http_request_route(r));
        reply_buffer(r, 500, "application/json", (void *)failed, sizeof failed - 1, false);
        return;
    }
    reply_buffer(r, status, "application/json", s, n, true);
}

void http_reply_error_status(HttpRequest *r, unsigned status, const char *code, const char *message,
                             const char *detail)
{
    /* Messages echo what the client sent (a path, a query value, a header): made valid UTF-8 and
     * cut to a bounded size before they reach JSON or the log. */
    json_t *err = json_object();
    json_object_set_new(err, "code", json_string(code));
    json_t *m = utf8_json_string(message, HTTP_ERROR_MESSAGE_MAX);
    json_object_set_new(err, "message", m);
    if (detail)
        json_object_set_new(err, "detail", utf8_json_string(detail, HTTP_ERROR_MESSAGE_MAX));
    http_request_log_field(r, "error", json_string_value(m));
    json_t *doc = json_object();
    json_object_set_new(doc, "error", err);
    http_reply_json(r, status, doc);
}

void http_reply_error(HttpRequest *r, int errno_code, const char *message, const char *detail)
{
    ApiErrorKind k = api_error_kind(errno_code);
    if (k.status == 401)
        http_reply_header(r, "WWW-Authenticate", "Bearer realm=\"runtara\"");
    http_reply_error_status(r, k.status, k.code, message, detail);
}

/* Refuse a request from an Error; before the body when `early`. */
static void refuse(HttpRequest *r, Error *e, bool early)
{
    http_reply_error(r, e->code, error_message(e), NULL);
    r->close_early = early && r->has_body;
}

/* ---- routing -------------------------------------------------------------------------------- */

/* Match path against pattern; on success store the captures in r->params. */
static bool route_match(const char *pattern, const char *path, HttpRequest *r)
{
    unsigned n = 0;
    const char *p = pattern, *q = path;

    while (*p && *q) {
        if (p[0] == '{' && p[1] == '}') {
            const char *end = strchrnul(q, '/');
            if (end == q || n >= MAX_PARAMS)
                return false;
            if (r) {
                free(r->params[n]);
                r->params[n] = xstrndup(q, (size_t)(end - q));
            }
            n++;
            p += 2;
            q = end;
            continue;
        }
        if (*p++ != *q++)
            return false;
    }
    return *p == '\0' && *q == '\0';
}

/* Find the route; on a path known under other methods, -EOPNOTSUPP and an Allow header. */
static const HttpRoute *route_find(HttpRequest *r, int *ret_error)
{
    const HttpServerSettings *s = &r->server->s;
    const char *method = strcmp(r->method, "HEAD") == 0 ? "GET" : r->method;
    StrBuf allow = STRBUF_INIT;

    for (size_t i = 0; i < s->n_routes; i++) {
        if (!route_match(s->routes[i].pattern, r->path, NULL))
            continue;
        if (strcmp(s->routes[i].method, method) == 0) {
            strbuf_done(&allow);
            route_match(s->routes[i].pattern, r->path, r);
            return &s->routes[i];
        }
        strbuf_printf(&allow, "%s%s", allow.len ? ", " : "", s->routes[i].method);
    }
    *ret_error = allow.len ? -EOPNOTSUPP : -ENOENT;
    if (allow.len)
        http_reply_header(r, "Allow", allow.buf);
    strbuf_done(&allow);
    return NULL;
}

/* ---- the access handler --------------------------------------------------------------------- */

static void request_id(HttpServer *srv, struct MHD_Connection *conn, char *buf, size_t n)
{
    const char *given = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    if (given && strlen(given) < 40 && id_is_valid(given)) {
        snprintf(buf, n, "%s", given);
        return;
    }
    static const char hex[] = "0123456789abcdef";
    uint32_t seq = (uint32_t)atomic_fetch_add(&srv->next_id, 1);
    size_t l = strlen(srv->id_prefix); /* 8 hex digits, set at start */
    assert(l + 9 <= n);
    memcpy(buf, srv->id_prefix, l);
    for (int i = 7; i >= 0; i--, seq >>= 4)
        buf[l + (size_t)i] = hex[seq & 15];
    buf[l + 8] = '\0';
}

static HttpRequest *request_new(HttpServer *srv, struct MHD_Connection *conn, const char *url,
                                const char *method)
{
    HttpRequest *r = xcalloc(1, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    r->server = srv;
    r->conn = conn;
    r->start = now_usec(CLOCK_MONOTONIC);
    r->path = xstrdup(url);
    snprintf(r->method, sizeof r->method, "%s", method);
    request_id(srv, conn, r->id, sizeof r->id);

    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    const char *te = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Transfer-Encoding");
    r->content_length = cl ? strtoll(cl, NULL, 10) : -1;
    r->has_body = (cl && r->content_length > 0) || te;
    return r;
}

static bool content_type_is_json(HttpRequest *r)
{
    const char *ct = http_request_header(r, "Content-Type");
    if (!ct)
        return false;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 && (ct[n] == '\0' || ct[n] == ';');
}

/* Everything decided once the headers are in: route, admission, body checks, stream begin. */
static void request_begin(HttpRequest *r)
{
    HttpServer *srv = r->server;
    Error e = ERROR_INIT;
    int err = 0;

    /* RFC 9112 section 6.1: a request with both is a smuggling attempt or a broken proxy; refuse
     * it and close the connection, whatever its body. */
    if (http_request_header(r, "Transfer-Encoding") && http_request_header(r, "Content-Length")) {
        error_set(&e, -EINVAL,
                  "request has both Transfer-Encoding and Content-Length; send only one of them");
        http_reply_error(r, e.code, error_message(&e), NULL);
        r->close_early = true;
        goto out;
    }
    r->route = route_find(r, &err);
    if (!r->route) {
        error_set(&e, err, err == -ENOENT ? "no endpoint %s %s" : "method %s is not allowed on %s",
                  r->method, r->path);
        refuse(r, &e, false);
        goto out;
    }
    if (!r->route->public && srv->s.admit && srv->s.admit(r, srv->s.userdata, &e) < 0) {
        refuse(r, &e, r->route->body == HTTP_BODY_STREAM);
        goto out;
    }
    if (r->route->body == HTTP_BODY_JSON || r->route->body == HTTP_BODY_BYTES) {
        if (r->content_length > (int64_t)body_limit(r)) {
            error_set(&e, -EFBIG, "request body of %lld bytes exceeds the limit of %zu bytes",
                      (long long)r->content_length, body_limit(r));
            refuse(r, &e, true);
        } else if (r->route->body == HTTP_BODY_JSON && r->has_body && !content_type_is_json(r)) {
            error_set(&e, -EPROTONOSUPPORT, "request body must be application/json, not \"%s\"",
                      http_request_header(r, "Content-Type") ?: "(none)");
            refuse(r, &e, false);
        } else if (r->content_length > 0)
            strbuf_reserve(&r->body, (size_t)r->content_length); /* checked against the limit */
    } else if (r->route->body == HTTP_BODY_STREAM) {
        r->stream_begun = true;
        if (r->route->stream->begin(r, &e) < 0)
            refuse(r, &e, true);
    }
out:
    error_done(&e);
}

static void request_consume(HttpRequest *r, const char *data, size_t n)
{
    Error e = ERROR_INIT;

    r->bytes_in += n;
    if (r->response)
        return; /* refused already: discard */
    if (!r->route || r->route->body == HTTP_BODY_NONE)
        return;
    if (r->route->body == HTTP_BODY_JSON || r->route->body == HTTP_BODY_BYTES) {
        if (r->body.len + n > body_limit(r)) {
            error_set(&e, -EFBIG, "request body exceeds the limit of %zu bytes", body_limit(r));
            refuse(r, &e, true);
        } else
            strbuf_put(&r->body, data, n);
    } else if (r->route->stream->chunk(r, data, n, &e) < 0)
        refuse(r, &e, true);
    error_done(&e);
}

static void request_dispatch(HttpRequest *r)
{
    if (r->route->body == HTTP_BODY_STREAM) {
        r->stream_done = true;
        r->route->stream->finish(r);
        return;
    }
    if (r->route->body == HTTP_BODY_JSON) {
        json_error_t jerr;
        if (r->body.len == 0 && r->route->body_optional) {
            r->json = json_object();
            r->route->handler(r);
            return;
        }
        if (r->body.len == 0) {
            http_reply_error(r, -EBADMSG, "request body is empty; expected a JSON object", NULL);
            return;
        }
        r->json = json_loadb(r->body.buf, r->body.len, JSON_REJECT_DUPLICATES, &jerr);
        if (!r->json) {
            char detail[256];
            snprintf(detail, sizeof detail, "line %d, column %d: %s", jerr.line, jerr.column,
                     jerr.text);
            http_reply_error(r, -EBADMSG, "could not parse the request body as JSON", detail);
            return;
        }
        if (!json_is_object(r->json)) {
            http_reply_error(r, -EBADMSG, "request body must be a JSON object", NULL);
            return;
        }
    }
    r->route->handler(r);
}

/* Past this many discarded bytes after a refusal the connection is simply closed. */
#define DISCARD_MAX (64ULL << 20)

static enum MHD_Result queue(HttpRequest *r)
{
    /* Above its normal limit the server runs on its reserve: those connections are not kept. */
    bool close = r->close_early || (r->server->gate && http_gate_over_limit(r->server->gate));
    if (close && !MHD_get_response_header(r->response, MHD_HTTP_HEADER_CONNECTION))
        MHD_add_response_header(r->response, MHD_HTTP_HEADER_CONNECTION, "close");
    if (MHD_queue_response(r->conn, r->status, r->response) != MHD_YES)
        return MHD_NO;
    r->queued = true;
    return MHD_YES;
}

/* A refusal decided while the body arrives. libmicrohttpd 0.9 cannot send a response before the
 * whole request is read, so, like a lingering close, the rest of the body is read and dropped
 * (bounded by DISCARD_MAX) and the response goes out at the end, then the connection closes. */
static enum MHD_Result refuse_mid_body(HttpRequest *r, size_t n)
{
    r->discarded += n;
    return r->discarded > DISCARD_MAX ? MHD_NO : MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    HttpServer *srv = cls;
    HttpRequest *r = *con_cls;
    (void)version;

    if (!r) {
        r = request_new(srv, conn, url, method);
        *con_cls = r;
        request_begin(r);
        if (r->failed)
            return MHD_NO;
        return r->close_early ? queue(r) : MHD_YES;
    }
    if (r->failed)
        return MHD_NO;
    if (r->queued) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->response) {
            r->bytes_in += n;
            return r->close_early ? refuse_mid_body(r, n) : MHD_YES;
        }
        request_consume(r, upload_data, n);
        return r->failed ? MHD_NO : MHD_YES;
    }
    if (!r->response) {
        HttpResume_cb cb = NULL;
        pthread_mutex_lock(&r->lock);
        if (r->on_resume && !r->suspended) { /* called again after a resume */
            cb = r->on_resume;
            r->on_resume = NULL;
        }
        pthread_mutex_unlock(&r->lock);
        if (cb)
            cb(r);
        else
            request_dispatch(r);
        if (settle_suspend(r))
            return MHD_YES;
    }
    if (!r->response && !r->failed)
        http_reply_error(r, -EIO, "the request produced no response", NULL);
    return r->failed ? MHD_NO : queue(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    HttpRequest *r = *con_cls;
    (void)cls;
    (void)conn;
    if (!r)
        return;

    if (r->on_done)
        r->on_done(r, r->on_done_userdata);
    if (r->stream_begun && !r->stream_done)
        r->route->stream->abort(r);

    usec_t dur = now_usec(CLOCK_MONOTONIC) - r->start;
    unsigned status = r->queued ? r->status : 499; /* client went away */
    char st[21], ms[32], bytes[21];
    format_uint64(st, status);
    format_uint64(ms, dur / 1000);
    size_t l = strlen(ms);
    unsigned frac = (unsigned)(dur % 1000);
    ms[l] = '.';
    ms[l + 1] = (char)('0' + frac / 100);
    ms[l + 2] = (char)('0' + frac / 10 % 10);
    ms[l + 3] = (char)('0' + frac % 10);
    ms[l + 4] = '\0';
    format_uint64(bytes, r->bytes_in);
    /* a path may be as long as the header limit: the log keeps its start */
    _cleanup_free_ char *path =
        strlen(r->path) > HTTP_LOG_PATH_MAX ? utf8_make_valid(r->path, HTTP_LOG_PATH_MAX) : NULL;
    const char *fields[2 * (8 + MAX_LOG_FIELDS) + 1] = {
        "req",      r->id,
        "method",   r->method,
        "path",     path ? path : r->path,
        "route",    http_request_route(r),
        "status",   st,
        "ms",       ms,
        "bytes_in", bytes,
        "aborted",  toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? NULL : "true",
    };
    size_t k = 16;
    for (size_t i = 0; i < r->n_log; i++) {
        fields[k++] = r->log_keys[i];
        fields[k++] = r->log_values[i];
    }
    fields[k] = NULL;
    log_full_errno_fields(status >= 500 ? LOG_WARNING : LOG_INFO, 0, fields, "request");
    metrics_observe_request(http_request_route(r), status, dur, r->bytes_in);

    if (r->response)
        MHD_destroy_response(r->response);
    json_decref(r->json);
    strbuf_done(&r->body);
    for (size_t i = 0; i < MAX_PARAMS; i++)
        free(r->params[i]);
    for (size_t i = 0; i < r->n_log; i++)
        free(r->log_values[i]);
    for (size_t i = 0; i < r->n_hdr; i++) {
        free(r->hdr_names[i]);
        free(r->hdr_values[i]);
    }
    auth_done(r);
    free(r->path);
    pthread_mutex_destroy(&r->lock);
    free(r);
    *con_cls = NULL;
}

/* Percent-decoding as MHD does it, except that %00 becomes 0x01: a NUL must not silently cut an
 * id short ("abc%00def" → "abc"); 0x01 fails every id check instead. */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s)
{
    char *w = s;
    (void)cls;
    (void)c;
    for (const char *p = s; *p; p++) {
        unsigned v;
        if (*p == '%' && p[1] && p[2] && sscanf(p + 1, "%2x", &v) == 1 &&
            strchr("0123456789abcdefABCDEF", p[2])) {
            *w++ = v == 0 ? 0x01 : (char)v;
            p += 2;
        } else
            *w++ = *p;
    }
    *w = '\0';
    return (size_t)(w - s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '.'))
        msg[--n] = '\0';
    if (n > 0)
        msg[0] = (char)tolower((unsigned char)msg[0]);
    log_debug("http: %s", msg);
}

/* ---- the connection gate -------------------------------------------------------------------- */

/* The server closed a connection: the gate counts it off its address and the server's total. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    HttpServer *srv = cls;
    (void)socket_context;
    if (!srv->gate || toe != MHD_CONNECTION_NOTIFY_CLOSED)
        return;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    http_gate_closed(srv->gate, ci ? ci->client_addr : NULL);
}

/* Whether a request line (as the gate peeked it) names a public route: those may use the
 * connections held in reserve. The path is matched as sent, before percent-decoding. */
static bool request_line_is_public(const char *buf, size_t n, void *userdata)
{
    const HttpServerSettings *s = userdata;
    char method[16], path[256];
    size_t i = 0, m = 0, p = 0;

    while (i < n && (buf[i] == '\r' || buf[i] == '\n'))
        i++;
    while (i < n && buf[i] != ' ' && m + 1 < sizeof method)
        method[m++] = buf[i++];
    if (i >= n || buf[i++] != ' ')
        return false;
    while (i < n && buf[i] != ' ' && buf[i] != '?' && p + 1 < sizeof path)
        path[p++] = buf[i++];
    if (i >= n || (buf[i] != ' ' && buf[i] != '?'))
        return false;
    method[m] = path[p] = '\0';
    const char *want = strcmp(method, "HEAD") == 0 ? "GET" : method;
    for (size_t k = 0; k < s->n_routes; k++)
        if (s->routes[k].public && strcmp(s->routes[k].method, want) == 0 &&
            route_match(s->routes[k].pattern, path, NULL))
            return true;
    return false;
}

/* Start the gate on the listening socket fd, which it takes over (closed also on failure). */
static int gate_start(HttpServer *srv, int fd)
{
    const HttpServerSettings *s = &srv->s;
    HttpGateConfig gc = {
        .listen_fd = fd,
        .mhd = srv->mhd,
        .header_timeout_secs = s->header_timeout_secs,
        .per_address = s->per_address_limit,
        .max_connections = s->max_connections,
        .reserved = s->reserved_connections,
        .max_pending = s->max_pending,
        .header_limit = s->header_limit,
        .tls = s->tls_cert != NULL,
        .is_public = request_line_is_public,
        .userdata = &srv->s,
    };
    int r = http_gate_new(&gc, &srv->gate);
    if (r < 0) {
        (void)close(fd);
        return r;
    }
    /* srv->gate is set before the first connection can reach the server's callbacks */
    r = http_gate_start(srv->gate);
    if (r < 0)
        srv->gate = http_gate_free(srv->gate); /* with the listening socket */
    return r;
}

static int listen_tcp(const char *bind_addr, uint16_t port, Error *e)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char portstr[8];

    snprintf(portstr, sizeof portstr, "%u", port);
    int r = getaddrinfo(bind_addr, portstr, &hints, &res);
    if (r != 0)
        return error_set(e, -EADDRNOTAVAIL, "could not resolve listen address \"%s\": %s",
                         bind_addr, gai_strerror(r));
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        r = -errno;
        freeaddrinfo(res);
        return error_set(e, r, "could not create a socket: %s", strerror(-r));
    }
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 512) < 0) {
        r = -errno;
        freeaddrinfo(res);
        (void)close(fd);
        return error_set(e, r, "could not listen on %s:%u: %s", bind_addr, port, strerror(-r));
    }
    freeaddrinfo(res);
    return fd;
}

static uint16_t bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

int http_server_start(const HttpServerSettings *s, HttpServer **ret, Error *e)
{
    int fd = s->listen_fd;
    if (s->tls_cert && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
        return error_set(e, -EOPNOTSUPP,
                         "cannot serve HTTPS: this libmicrohttpd was built without TLS support. "
                         "hint: install a libmicrohttpd built with GnuTLS (Debian's is)");
    if (fd < 0) {
        fd = listen_tcp(s->bind, s->port, e);
        if (fd < 0)
            return fd;
    }

    HttpServer *srv = xcalloc(1, sizeof *srv);
    srv->s = *s;
    srv->port = bound_port(fd);
    int r = id_random_hex(srv->id_prefix, 4);
    if (r < 0)
        snprintf(srv->id_prefix, sizeof srv->id_prefix, "00000000");

    /* TLS 1.2 and 1.3 only; MHD reads the key and certificate at start */
    struct MHD_OptionItem tls[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)s->tls_cert},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)s->tls_key},
        {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)HTTP_TLS_PRIORITIES},
        {MHD_OPTION_END, 0, NULL},
    };
    if (!s->tls_cert)
        tls[0].option = MHD_OPTION_END;
    /* With the gate, the server has no listening socket (connections come from the gate), and
     * the gate alone enforces the limit and the reserve, counting exactly. libmicrohttpd shares
     * its own limit out among its worker threads and checks a worker's share when that worker
     * takes a queued connection, after MHD_add_connection() returned: a refusal there is never
     * reported closed, and the gate's count would leak. So its limit is one no worker reaches:
     * the gate's whole total for each worker, and slack for connections still counted while
     * reported closed. */
    bool gated = s->header_timeout_secs > 0;
    struct MHD_OptionItem listen_opts[] = {
        {gated ? MHD_OPTION_END : MHD_OPTION_LISTEN_SOCKET, fd, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    unsigned limit =
        gated ? s->threads * (s->max_connections + s->reserved_connections + 2 * s->threads)
              : s->max_connections;
    srv->mhd = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
            (gated ? MHD_USE_NO_LISTEN_SOCKET : 0) | (s->tls_cert ? MHD_USE_TLS : 0),
        0, NULL, NULL, on_request, srv, MHD_OPTION_ARRAY, listen_opts, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned int)s->threads, MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)s->idle_timeout_secs, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)s->header_limit, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv, MHD_OPTION_UNESCAPE_CALLBACK, unescape,
        NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
    if (!srv->mhd) {
        (void)close(fd);
        free(srv);
        return error_set(e, -EIO, "could not start the HTTP server on port %u", s->port);
    }
    if (gated && (r = gate_start(srv, fd)) < 0) {
        MHD_stop_daemon(srv->mhd);
        free(srv);
        return error_set(e, r, "could not start the connection gate on port %u: %s", s->port,
                         strerror(-r));
    }
    *ret = srv;
    return 0;
}

uint16_t http_server_port(HttpServer *s)
{
    return s->port;
}

HttpServer *http_server_stop(HttpServer *s)
{
    if (!s)
        return NULL;
    /* The gate stops handing over first; the server reports its connections closed to it while
     * it stops, so the gate is freed last. */
    http_gate_stop(s->gate);
    /* (no MHD_quiesce_daemon() first: with a worker pool on epoll it can race a worker that is
     * taking the listening socket out of its epoll set, and then aborts the process, "Failed to
     * remove listen FD from epoll set"; MHD_stop_daemon() closes the socket itself) */
    MHD_stop_daemon(s->mhd);
    s->gate = http_gate_free(s->gate);
    free(s);
    return NULL;
}
