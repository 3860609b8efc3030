/* The HTTP/1.1 server under both APIs: libmicrohttpd with its epoll thread pool (handlers may block
 * on the store), a route table, per-request context with a request id, JSON request bodies with a
 * size limit, streamed request bodies for uploads, JSON error bodies, and an access log line per
 * request. Responses are queued only after the whole request arrived, except early refusals of a
 * body the server will not read (then the connection closes), which keeps keep-alive intact. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../base/error.h"
#include "../base/time-util.h"

typedef struct HttpServer HttpServer;
typedef struct HttpRequest HttpRequest;

typedef enum HttpBodyMode {
    HTTP_BODY_NONE,   /* a body is read and discarded */
    HTTP_BODY_JSON,   /* buffered up to the JSON limit, parsed before the handler runs */
    HTTP_BODY_STREAM, /* handed to stream callbacks chunk by chunk */
    HTTP_BODY_BYTES,  /* buffered up to the route's limit, any content type */
} HttpBodyMode;

/* A streamed body: begin runs once the headers are in (it may refuse with a negative errno and an
 * Error, which becomes the response), chunk per piece of data, finish after the last byte (it
 * queues the response), abort if the client went away or an earlier step failed. */
typedef struct HttpStreamOps {
    int (*begin)(HttpRequest *req, Error *e);
    int (*chunk)(HttpRequest *req, const char *data, size_t n, Error *e);
    void (*finish)(HttpRequest *req);
    void (*abort)(HttpRequest *req);
} HttpStreamOps;

typedef void (*HttpHandler_cb)(HttpRequest *req);

/* A route table entry with designated initializers; extra fields (.public, .stream, .max_body,
 * .body_optional) go in the variadic part. */
#define HTTP_ROUTE(m, p, n, b, h, ...)                                                             \
    {                                                                                              \
        .method = (m), .pattern = (p), .name = (n), .body = (b), .handler = (h), __VA_ARGS__       \
    }
/* Runs once the headers are in, before any body is read: authentication. May refuse. */
typedef int (*HttpAdmit_cb)(HttpRequest *req, void *userdata, Error *e);

typedef struct HttpRoute {
    const char *method;
    const char *pattern; /* "/api/v1/images/{}": {} captures one path segment */
    const char *name;    /* stable label for metrics and logs, e.g. "images.get" */
    HttpBodyMode body;
    HttpHandler_cb handler;      /* for NONE and JSON */
    const HttpStreamOps *stream; /* for STREAM */
    bool public;                 /* skips the admit callback (health, metrics) */
    bool body_optional;          /* JSON: an empty body reads as {} */
    size_t max_body;             /* JSON and BYTES: 0 = the server's max_json_body */
} HttpRoute;

typedef struct HttpServerSettings {
    const char *bind; /* address or NULL for a pre-bound fd */
    uint16_t port;
    int listen_fd; /* >= 0: use this listening socket instead (e.g. a unix socket) */
    unsigned threads;
    unsigned max_connections;
    unsigned idle_timeout_secs;
    size_t header_limit;
    size_t max_json_body;
    const HttpRoute *routes;
    size_t n_routes;
    HttpAdmit_cb admit;
    void *userdata; /* handed to handlers via http_request_userdata() */
    /* HTTPS: the certificate chain and the private key in PEM, NUL-terminated, borrowed for the
     * server's life (api/tls.h loads them); both NULL = plain HTTP */
    const char *tls_cert, *tls_key;
    /* The connection gate (http-gate.h) for a listener open to untrusted clients: on when
     * header_timeout_secs > 0. Connections wait there, holding no connection of the server, until
     * their request headers are in, at most header_timeout_secs from the accept. */
    unsigned header_timeout_secs;
    unsigned per_address_limit;    /* connections per client address; 0 = no limit */
    unsigned reserved_connections; /* beyond max_connections, for public routes only */
    unsigned max_pending;          /* connections waiting for their headers; the oldest go first */
} HttpServerSettings;

/** Start serving on its own threads. Returns 0 or a negative errno with a message (-EOPNOTSUPP:
 *  TLS asked of a libmicrohttpd built without it). */
int http_server_start(const HttpServerSettings *s, HttpServer **ret, Error *e);
/** The port actually bound (useful with port 0). */
uint16_t http_server_port(HttpServer *s);
/** Stop accepting, finish in-flight requests, free. NULL-safe. */
HttpServer *http_server_stop(HttpServer *s);

/* Request accessors: valid for the request's lifetime, from its handler and stream callbacks. */
const char *http_request_method(HttpRequest *r);
const char *http_request_path(HttpRequest *r);
const char *http_request_id(HttpRequest *r);
/** When the request arrived (CLOCK_MONOTONIC). */
usec_t http_request_start(HttpRequest *r);
const char *http_request_route(HttpRequest *r);
/** The n-th {} capture of the route pattern. */
const char *http_request_param(HttpRequest *r, unsigned n);
/** A query argument, or NULL. With repeated keys, the first. */
const char *http_request_query(HttpRequest *r, const char *key);
/** Call fn for every query argument in order. */
void http_request_query_each(HttpRequest *r, void (*fn)(const char *k, const char *v, void *u),
                             void *u);
const char *http_request_header(HttpRequest *r, const char *name);
/** The Content-Length the client declared, or -1 (chunked / none). */
int64_t http_request_content_length(HttpRequest *r);
/** The parsed JSON body for HTTP_BODY_JSON routes (borrowed). */
json_t *http_request_json(HttpRequest *r);
/** The body of HTTP_BODY_BYTES routes (borrowed; NUL-terminated for convenience). */
const char *http_request_body(HttpRequest *r, size_t *ret_n);
/** The same body handed over to the caller (free()); the request keeps an empty one. Large
 *  bodies (checkpoints) move instead of being copied. */
char *http_request_take_body(HttpRequest *r, size_t *ret_n);
void *http_request_userdata(HttpRequest *r);
/** Per-request slot for the handler or stream callbacks (owned by them). */
void *http_request_get_data(HttpRequest *r);
void http_request_set_data(HttpRequest *r, void *data);
/** The caller's identity, set by the admit callback (freed with free() at the end). */
void http_request_set_auth(HttpRequest *r, void *auth);
/** The same, freed with free_fn(auth) instead. */
void http_request_set_auth_full(HttpRequest *r, void *auth, void (*free_fn)(void *auth));
void *http_request_get_auth(HttpRequest *r);
/** A field recorded in the access log line (key must be static; value is copied). */
void http_request_log_field(HttpRequest *r, const char *key, const char *value);

/* Long-poll: a handler may, instead of replying, suspend the request and reply later. The
 * request holds no thread while suspended. http_request_resume() may be called from any thread,
 * also before the handler has returned; on_resume then runs on a server thread and must reply
 * (or suspend again). Every suspended request must be resumed before http_server_stop(). */
typedef void (*HttpResume_cb)(HttpRequest *r);
void http_request_suspend(HttpRequest *r, HttpResume_cb on_resume);
void http_request_resume(HttpRequest *r);
/** Run fn just before the request is freed, however it ended (also when the client went away
 *  while it was suspended), so whoever holds a pointer to it can let go. One hook per request. */
void http_request_on_done(HttpRequest *r, void (*fn)(HttpRequest *r, void *userdata),
                          void *userdata);

/* Responses: exactly one per request. */
/** Send a JSON document (reference stolen) with the given status. */
void http_reply_json(HttpRequest *r, unsigned status, json_t *body);
/** The bytes http_reply_json() would send for body (reference stolen): compact JSON and a
 *  newline, in a new allocation of *ret_n bytes (NUL-terminated past them). */
char *http_json_body(json_t *body, size_t *ret_n);
/** Send an error body {"error":{"code","message","detail"}}; status and code from the errno
 *  (api-error.c) unless given explicitly. */
void http_reply_error(HttpRequest *r, int errno_code, const char *message, const char *detail);
/** Send an error with an explicit status and code. */
void http_reply_error_status(HttpRequest *r, unsigned status, const char *code, const char *message,
                             const char *detail);
/** Send a body (copied) with a content type. */
void http_reply_data(HttpRequest *r, unsigned status, const char *content_type, const void *data,
                     size_t n);
/** The same with a malloc'd body the response takes over (freed when it was sent). */
void http_reply_data_owned(HttpRequest *r, unsigned status, const char *content_type, void *data,
                           size_t n);
/** Reply with the n bytes of the open file fd from its start, sent as the client reads them; the
 *  response takes fd over (closes it when done, also on failure). */
void http_reply_fd(HttpRequest *r, unsigned status, const char *content_type, int fd, uint64_t n);
/** Add a response header to the response about to be sent (call before http_reply_*). */
void http_reply_header(HttpRequest *r, const char *name, const char *value);
