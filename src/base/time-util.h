/* Time has one internal type (STYLE R19): usec_t, microseconds. CLOCK_MONOTONIC for timeouts,
 * CLOCK_REALTIME for anything persisted. Convert to epoch milliseconds or RFC 3339 only at the
 * API and store boundaries. */
#pragma once

#include <stdint.h>
#include <time.h>

typedef uint64_t usec_t;

#define USEC_PER_SEC ((usec_t)1000000)
#define USEC_PER_MSEC ((usec_t)1000)
#define USEC_INFINITY ((usec_t)UINT64_MAX)

/** Now on the given clock, in microseconds. */
usec_t now_usec(clockid_t clock);
/** Format a CLOCK_REALTIME instant as RFC 3339 UTC with milliseconds ("2026-11-23T10:00:00.123Z")
 *  into buf (at least 32 bytes). Returns buf. */
char *format_rfc3339(char *buf, size_t n, usec_t t);
/** Parse an RFC 3339 UTC instant as written by format_rfc3339 (the fraction and "Z" are required
 *  forms; "+00:00" is accepted too). Returns 0 or -EINVAL. */
int parse_rfc3339(const char *s, usec_t *ret);
