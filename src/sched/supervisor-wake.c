/* Wakes: the one timer at the earliest deadline of a suspended instance, and the claims that make
 * each wake-up launch exactly once (src/sched/README.md). */
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "../base/alloc.h"
#include "../base/fault.h"
#include "../base/fileio.h"
#include "../base/log.h"
#include "../base/strbuf.h"
#include "supervisor-internal.h"

/* ---- wakes ---------------------------------------------------------------------------------- */

/* The most wake-ups claimed with one commit. */
#define WAKES_PER_TURN 256
/* The wake timer goes before jobs and exits (sd-event: lower is earlier). */
#define WAKE_PRIORITY (SD_EVENT_PRIORITY_NORMAL - 10)

static int on_wake_timer(sd_event_source *src, uint64_t usec, void *userdata);

/* Point the one wake timer at the earliest deadline. */
void supervisor__rearm_wakes(Supervisor *sv)
{
    usec_t next = wake_heap_next(sv->wakes);
    int k = 0;
    if (next != USEC_INFINITY && next < sv->wakes_not_before)
        next = sv->wakes_not_before;
    if (next == USEC_INFINITY) {
        if (sv->wake_timer)
            k = sd_event_source_set_enabled(sv->wake_timer, SD_EVENT_OFF);
    } else if (!sv->wake_timer) {
        /* CLOCK_REALTIME: deadlines are wall-clock instants, and a clock step moves them too;
         * an accuracy of 1 us keeps sd-event from coalescing wakes (its default is 250 ms) */
        k = sd_event_add_time(sv->loop, &sv->wake_timer, CLOCK_REALTIME, next, 1, on_wake_timer,
                              sv);
        if (k >= 0)
            k = sd_event_source_set_priority(sv->wake_timer, WAKE_PRIORITY);
    } else {
        k = sd_event_source_set_time(sv->wake_timer, next);
        if (k >= 0)
            k = sd_event_source_set_enabled(sv->wake_timer, SD_EVENT_ONESHOT);
    }
    if (k < 0)
        log_error("could not arm the wake timer: %s", strerror(-k));
}

/* A deadline passed, or the signal awaited (wait_key) arrived: claim the wake in the store
 * (exactly one claim of it wins, even with a stale heap entry or another daemon) and relaunch the
 * instance. */
void supervisor__wake(Supervisor *sv, const char *id, usec_t deadline, const char *wait_key)
{
    InstanceOutcome out = {.wake_deadline = deadline, .wait_key = wait_key};
    Error e = ERROR_INIT;
    int k = instance_apply(sv->store, id, CAUSE_WOKEN, &out, NULL, &e);
    if (k < 0 && e.code != -ENOENT)
        log_error("could not wake instance \"%s\": %s", id, error_message(&e));
    error_done(&e);
    if (k <= 0)
        return; /* stale: resumed, stopped or asleep again with another deadline */
    usec_t now = now_usec(CLOCK_REALTIME);
    if (wait_key)
        log_info("instance \"%s\" woke: the signal \"%s\" arrived", id, wait_key);
    else
        log_info("instance \"%s\" woke %.1f ms after its deadline", id,
                 now > deadline ? (double)(now - deadline) / 1000.0 : 0.0);
    FAULT_POINT("wake-claimed");
    supervisor__changed(sv, id);
    supervisor__do_launch(sv, id, NULL);
}

/* Deadlines passed: claim every due wake-up with one commit, then queue the relaunches (they
 * run after this, a few per turn of the loop, so the next claims are not held up by them). */
static int on_wake_timer(sd_event_source *src, uint64_t usec, void *userdata)
{
    Supervisor *sv = userdata;
    usec_t now = now_usec(CLOCK_REALTIME), when;
    WakeClaim claims[WAKES_PER_TURN];
    size_t n = 0;
    char *id;
    Error e = ERROR_INIT;
    (void)src;
    (void)usec;
    if (sv->draining)
        return 0; /* the wakes stay in the store for the next start */
    while (n < WAKES_PER_TURN && (id = wake_heap_pop_due(sv->wakes, now, &when)))
        claims[n++] = (WakeClaim){.instance_key = id, .deadline = when};
    if (instance_claim_wakes(sv->store, claims, n, &e) < 0) {
        /* the store failed: keep the wakes (their deadlines are what the claim checks), and
         * try again in a second */
        log_error("could not claim %zu wake-ups, trying again in 1 s: %s", n, error_message(&e));
        for (size_t i = 0; i < n; i++)
            wake_heap_push(sv->wakes, claims[i].instance_key, claims[i].deadline);
        sv->wakes_not_before = now + USEC_PER_SEC;
    } else {
        sv->wakes_not_before = 0;
        FAULT_POINT("wake-claimed");
    }
    error_done(&e);
    usec_t after = now_usec(CLOCK_REALTIME), worst = 0;
    size_t claimed = 0;
    Job *first = NULL, **tail = &first;
    for (size_t i = 0; i < n; i++) {
        if (claims[i].claimed) {
            usec_t late = after > claims[i].deadline ? after - claims[i].deadline : 0;
            worst = late > worst ? late : worst;
            claimed++;
            log_debug("instance \"%s\" woke %.1f ms after its deadline", claims[i].instance_key,
                      (double)late / 1000.0);
            supervisor__changed(sv, claims[i].instance_key);
            Job *j = xcalloc(1, sizeof *j);
            *j = (Job){.kind = JOB_LAUNCH};
            snprintf(j->id, sizeof j->id, "%s", claims[i].instance_key);
            *tail = j;
            tail = &j->next;
        }
        free((char *)claims[i].instance_key);
    }
    if (first)
        supervisor__queue_list(sv, first, tail); /* one hand-over for the burst */
    if (claimed > 0)
        log_info("woke %zu instance%s, at most %.1f ms after the deadline", claimed,
                 claimed == 1 ? "" : "s", (double)worst / 1000.0);
    supervisor__rearm_wakes(sv);
    return 0;
}

/* Fill the heap from the store: every suspended instance with a deadline that this daemon owns. */
void supervisor__load_wakes(Supervisor *sv)
{
    int64_t after = 0;
    for (bool more = true; more;) {
        InstanceWake *w = NULL;
        size_t n = 0;
        Error e = ERROR_INIT;
        if (store_instance_list_wakes(sv->store, sv->s.daemon_id, after, STORE_LIST_MAX, &w, &n,
                                      &more, &e) < 0) {
            log_error("could not load the wake-ups: %s", error_message(&e));
            error_done(&e);
            break;
        }
        for (size_t i = 0; i < n; i++)
            wake_heap_push(sv->wakes, w[i].instance_key, w[i].sleep_until);
        after = n > 0 ? w[n - 1].seq : after;
        instance_wakes_free(w, n);
    }
    supervisor__rearm_wakes(sv);
}
