/* The gate in front of each API's libmicrohttpd daemon: one thread with its own epoll
 * accepts the listening socket and holds each new connection, without a slot of the server, until
 * its request headers are in (seen with MSG_PEEK, nothing is read) or its header deadline passes.
 * Only then is the connection handed to the server with MHD_add_connection(). A client that opens
 * connections and never finishes a request therefore costs a file descriptor and a small entry
 * here, never one of the server's connections, and cannot stop health or metrics from answering.
 *
 * Limits enforced here: connections per client address (held here and in the server together),
 * the absolute header deadline (counted from the accept; bytes dribbled in do not extend it), the
 * number of connections held here (when full, the oldest is dropped), and the server's own limit
 * with a reserve that only requests for public routes may use. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct MHD_Daemon;
typedef struct HttpGate HttpGate;

/* Whether the request line at buf (n bytes, not NUL-terminated) names a public route. */
typedef bool (*HttpGatePublic_cb)(const char *buf, size_t n, void *userdata);

typedef struct HttpGateConfig {
    int listen_fd;                /* taken over: closed by http_gate_free() */
    struct MHD_Daemon *mhd;       /* where complete connections go */
    unsigned header_timeout_secs; /* > 0 */
    unsigned per_address;         /* 0 = no limit */
    unsigned max_connections;     /* the server's normal limit */
    unsigned reserved;            /* beyond it, for public routes only */
    unsigned max_pending;         /* connections held here at most */
    size_t header_limit;          /* bytes peeked for the end of the headers */
    bool tls;                     /* headers cannot be seen: wait for the first bytes only */
    HttpGatePublic_cb is_public;
    void *userdata;
} HttpGateConfig;

/** Make a gate; it takes listen_fd over. Returns 0 or a negative errno; on failure listen_fd
 *  stays the caller's. */
int http_gate_new(const HttpGateConfig *c, HttpGate **ret);
/** Start the gate's thread: connections are accepted from now on, so whoever the server's
 *  callbacks reach the gate through must be set before. Returns 0 or a negative errno. */
int http_gate_start(HttpGate *g);
/** Stop accepting and close every connection still held; joins the thread. The server may still
 *  report closed connections afterwards (http_gate_closed()) until it is stopped too. */
void http_gate_stop(HttpGate *g);
/** Free a stopped gate. NULL-safe. */
HttpGate *http_gate_free(HttpGate *g);
/** The server closed a connection the gate handed over (from any thread). */
void http_gate_closed(HttpGate *g, const struct sockaddr *addr);
/** Whether the server holds more than its normal limit (then replies close their connection, so
 *  the reserve empties again). */
bool http_gate_over_limit(HttpGate *g);
