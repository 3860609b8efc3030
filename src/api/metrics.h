/* Process metrics in the Prometheus text format (GET /metrics). Counters are updated from any
 * thread; the label sets are bounded (route names come from the route table, statuses from the
 * server), so the exposition stays small. */
#pragma once

#include <stdint.h>

#include "../base/strbuf.h"
#include "../base/time-util.h"

/** Count one finished HTTP request. */
void metrics_observe_request(const char *route, unsigned status, usec_t duration,
                             uint64_t bytes_in);
typedef enum MetricsRefusal {
    METRICS_REFUSED_PER_ADDRESS,    /* the client address holds its limit of connections */
    METRICS_REFUSED_HEADER_TIMEOUT, /* the request headers did not arrive in time */
    METRICS_REFUSED_GATE_FULL,      /* dropped, the oldest, to make room for a new connection */
    METRICS_REFUSED_SERVER_FULL,    /* the server is at its limit (and its reserve) */
    METRICS_REFUSED_NOT_HTTP,       /* its first bytes cannot begin an HTTP request */
    _METRICS_REFUSAL_MAX,
} MetricsRefusal;

/** Count one connection closed before it was served. */
void metrics_connection_refused(MetricsRefusal why);
/** Connections waiting at the gate for their request headers went up or down by delta. */
void metrics_connections_waiting_add(int delta);
/** Count one registered image of n bytes. */
void metrics_image_registered(uint64_t bytes);
/** Append every metric to b. images is the current image count and waiting the requests parked
 *  in a long poll, each -1 if unknown. */
void metrics_render(StrBuf *b, usec_t uptime, int64_t images, int64_t waiting);
