/* Shared between the files of libruntara; nothing here is installed or exported (libruntara.sym
 * exports only the runtara_ names of runtara.h). The SDK ships on its own, so it carries its own
 * small helpers instead of using src/base. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <pthread.h>

#include "runtara.h"

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _cleanup_free_ _cleanup_(runtara__freep)

/* Hand out ownership of a pointer held by a _cleanup_ variable. */
#define TAKE_PTR(p)                                                                                \
    ({                                                                                             \
        __typeof__(p) *_pp_ = &(p);                                                                \
        __typeof__(p) _p_ = *_pp_;                                                                 \
        *_pp_ = NULL;                                                                              \
        _p_;                                                                                       \
    })

typedef struct RuntaraHeartbeat RuntaraHeartbeat;

struct RuntaraClient {
    char *instance_id;
    char *tenant_id;
    char *checkpoint_id; /* NULL: none yet */
    unsigned attempt;
    char *addr;           /* RUNTARA_SERVER_ADDR as given, for messages */
    char *socket_path;    /* NULL when the daemon is reached over TCP */
    char *tcp_host;       /* TCP only: the host (an IPv6 address without its brackets) */
    char *tcp_port;       /* TCP only */
    char *host_header;    /* the Host header: "localhost" (unix socket) or "host:port" */
    char *path_base;      /* "/api/v1/instances/<id, percent-encoded>" */
    char *auth_header;    /* "Authorization: Bearer <token>"; wiped before it is freed */
    int fd;               /* the connection to the daemon, kept alive between requests; -1: none */
    RuntaraSignal signal; /* pending as of the last reply that said */
    char *last_error;     /* NULL: no call failed yet */
    unsigned reconnect_secs;   /* how long a request retries while the daemon is unreachable */
    unsigned sleep_suspend_ms; /* sleeps at least this long suspend the instance */
    unsigned heartbeat_ms;     /* RUNTARA_HEARTBEAT_INTERVAL_MS; 0: no background heartbeat */
    RuntaraHeartbeat *heartbeat;
    char event_nonce[17]; /* 16 random hex digits, drawn at the first event; "" until then */
    unsigned long events; /* events reported by this client; with the nonce, each one's key */
    /* The daemon said at registration that the instance had no checkpoint ("checkpoint_id":
     * null). Then only keys that a client of this process saved or read since can have one
     * (runtara_step()). */
    bool none_stored;
};

/* A daemon that restarts is back within seconds; a program waits this long for it. */
#define RUNTARA_RECONNECT_SECS_DEFAULT 300

/* One request to the instance API. */
typedef struct RuntaraRequest {
    const char *method;
    const char *path;  /* appended to the client's path_base, e.g. "/checkpoints/step-1" */
    const char *ctype; /* Content-Type of body; NULL: no body */
    const void *body;
    size_t body_n;
    unsigned wait_s;     /* how long the daemon may legitimately stay silent (long poll) */
    bool carries_signal; /* a 2xx reply without Runtara-Signal means "no signal pending" */
    const char *what;    /* what the call does, for messages: "save checkpoint \"k\"" */
} RuntaraRequest;

/* A 2xx reply. body is NUL-terminated after n bytes, and owned. */
typedef struct RuntaraReply {
    long status;
    char *body;
    size_t n;
} RuntaraReply;

/* ---- runtara-util.c ---- */

void *runtara__xmalloc(size_t n);
void *runtara__xrealloc(void *p, size_t n);
char *runtara__xstrdup(const char *s);
char *runtara__xasprintf(const char *fmt, ...) _printf_(1, 2);
void runtara__freep(void *p);

/* A copy of n bytes followed by a NUL byte. */
void *runtara__memdup_nul(const void *data, size_t n);

/* Replace the client's last error with the formatted message; returns `code` (negative). */
int runtara__set_error(RuntaraClient *c, int code, const char *fmt, ...) _printf_(3, 4);

/* Whether `s` is a JSON text jansson accepts (any value, not only objects and arrays). */
bool runtara__json_valid(const char *s);

/* The JSON text of `obj_json` (an object written by jansson) with one more member `name` whose
 * value is the JSON text `value_json`, spliced in verbatim so numbers keep their exact spelling.
 * Caller frees. */
char *runtara__json_splice(const char *obj_json, const char *name, const char *value_json);

/* ---- runtara-http.c ---- */

/* Send one request. On a 2xx answer, fills *ret and returns the status; updates the client's
 * pending signal from the reply. On anything else returns a negative errno and sets the client's
 * last error to "could not <what>: <reason>". */
int runtara__request(RuntaraClient *c, const RuntaraRequest *rq, RuntaraReply *ret);

void runtara__reply_done(RuntaraReply *r);

/* Close the client's connection, if it has one. */
void runtara__disconnect(RuntaraClient *c);

/* ---- runtara-heartbeat.c ---- */

/* Start the background heartbeat thread of `c` (its own connection); < 0 with the last error set
 * if it cannot. */
int runtara__heartbeat_start(RuntaraClient *c, unsigned interval_ms);
/* Stop and join it, if running. */
void runtara__heartbeat_stop(RuntaraClient *c);

/* ---- runtara.c ---- */

/* Free what a client owns (strings, connection) and wipe the token; not the client itself. */
void runtara__client_free_fields(RuntaraClient *c);

/* ---- runtara-env.c ---- */

/* Fill the identity and address fields of `c` from the environment; -EINVAL (with the client's
 * last error set) when a variable is missing or malformed. */
int runtara__env_load(RuntaraClient *c);
