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
/** Resume every parked request, stop the timer thread, free. NULL-safe. */
Waiters *waiters_free(Waiters *w);
/** Park req under key until a wake or deadline (CLOCK_MONOTONIC). -EBUSY when full (the caller
 *  replies at once instead). After parking, a caller that finds its condition already met calls
 *  waiters_release(). */
int waiters_park(Waiters *w, const char *key, HttpRequest *req, usec_t deadline,
                 HttpResume_cb on_resume);
/** Resume one parked request now; no-op if it is no longer parked. */
void waiters_release(Waiters *w, HttpRequest *req);
/** Resume every request parked under key. */
void waiters_wake(Waiters *w, const char *key);
/** Resume everything (shutdown). */
void waiters_wake_all(Waiters *w);
/** How many requests are parked. */
unsigned waiters_count(Waiters *w);
