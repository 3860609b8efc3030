/* The wake heap: the deadlines of suspended instances (durable sleeps and signal waits with a
 * timeout), earliest first, so the supervisor needs one timer for all of them (DESIGN §6). It
 * mirrors the store, which stays the truth: an entry is only a reminder to try the wake claim
 * (instance_apply with CAUSE_WOKEN and the entry's deadline), and a stale entry (the instance
 * was resumed or slept again meanwhile) simply loses that claim. So entries are never removed
 * early, and the heap is rebuilt from the store at start-up.
 *
 * An entry costs 16 bytes in the array plus its id string. Not thread-safe: the event loop thread
 * owns it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "../base/time-util.h"

typedef struct WakeHeap WakeHeap;

WakeHeap *wake_heap_new(void);
/** Free the heap and its entries; NULL-safe. Returns NULL. */
WakeHeap *wake_heap_free(WakeHeap *h);
/** Add a deadline (CLOCK_REALTIME) for instance id (copied). */
void wake_heap_push(WakeHeap *h, const char *id, usec_t when);
/** The earliest deadline, or USEC_INFINITY when empty. */
usec_t wake_heap_next(const WakeHeap *h);
/** Remove the earliest entry if it is due (deadline <= now): returns its id (the caller frees
 *  it) and sets *ret_when; NULL when nothing is due. */
char *wake_heap_pop_due(WakeHeap *h, usec_t now, usec_t *ret_when);
size_t wake_heap_size(const WakeHeap *h);
