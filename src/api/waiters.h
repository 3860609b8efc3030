/* Parked long-poll requests: a request waits under a key (an instance id) until waiters_wake()
 * for that key or its deadline, whichever comes first; then its resume callback runs on a server
 * thread and replies with whatever the state is by then. A timer thread sleeps until the earliest
 * deadline (no polling). Thread-safe. */
#pragma once

#include "../base/time-util.h"
#include "http.h"

typedef struct Waiters Waiters;

/** A registry holding at most max parked requests. */
int waiters_new(unsigned max, Waiters **ret);
/** Resume every parked request, stop the timer thread, free. NULL-safe. A resumed request still
 *  reports its end here (http_request_on_done), so free only once the servers whose requests park
 *  here have stopped; waiters_close() first. */
Waiters *waiters_free(Waiters *w);
/** Park req under key until a wake or deadline (CLOCK_MONOTONIC). -EBUSY when full, and
 *  -ENAMETOOLONG for a key longer than an instance key with a short prefix (the caller replies
 *  at once instead). After parking, a caller that finds its condition already met calls
 *  waiters_release(). */
int waiters_park(Waiters *w, const char *key, HttpRequest *req, usec_t deadline,
                 HttpResume_cb on_resume);
/** Resume one parked request now; no-op if it is no longer parked. */
void waiters_release(Waiters *w, HttpRequest *req);
/** Resume every request parked under key. */
void waiters_wake(Waiters *w, const char *key);
/** Shutdown: resume every parked request and refuse to park any more (waiters_park() answers
 *  -EBUSY, so the handler replies at once). */
void waiters_close(Waiters *w);
/** How many requests are parked. */
unsigned waiters_count(Waiters *w);
