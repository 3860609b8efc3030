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
/** Count one registered image of n bytes. */
void metrics_image_registered(uint64_t bytes);
/** Append every metric to b. images is the current image count and waiting the requests parked
 *  in a long poll, each -1 if unknown. */
void metrics_render(StrBuf *b, usec_t uptime, int64_t images, int64_t waiting);
