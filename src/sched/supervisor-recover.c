/* Recovery at start-up: every unfinished instance, and every finished one whose exit is not
 * recorded, compared with what its runner finds (src/sched/README.md, the table). With several
 * daemons on one database, the same for the instances this daemon takes over from one whose
 * lease ended, and the lease that keeps its own. */
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

/* ---- recovery at start-up ------------------------------------------------------------------- */

typedef struct Recovery {
    unsigned reattached, collected, restarted, held, launched;
} Recovery;

/* Whole seconds left of a running instance's timeout (0 if it has passed). */
static unsigned timeout_left(const InstanceRecord *rec)
{
    usec_t now = now_usec(CLOCK_REALTIME);
    usec_t end = rec->started_at + (usec_t)rec->timeout_secs * USEC_PER_SEC;
    return end > now ? (unsigned)((end - now + USEC_PER_SEC - 1) / USEC_PER_SEC) : 0;
}

static void resume_and_launch(Supervisor *sv, const char *id)
{
    /* the pause of an interrupted drain must not stop the relaunch at once */
    SignalKind type;
    _cleanup_free_ char *payload = NULL;
    if (store_signal_get(sv->store, id, &type, &payload, NULL) > 0 &&
        instance_signal_is_drain(type, payload))
        (void)store_signal_ack(sv->store, id, SIGNAL_PAUSE, NULL);
    if (instance_apply(sv->store, id, CAUSE_RESUMED, NULL, NULL, NULL) > 0) {
        supervisor__changed(sv, id);
        supervisor_launch(sv, id);
    }
}

/* A running instance whose process is gone without a trace: it died with the machine (or its
 * shim was killed). Suspend it and relaunch it from its checkpoints, within the cap. */
static void restart_dead(Supervisor *sv, const InstanceRecord *rec, Recovery *rc)
{
    const char *id = rec->instance_key;
    InstanceOutcome out = {
        .restarts = 1,
        .error = "the process was gone when the daemon started again (machine or daemon crash)"};
    if (instance_apply(sv->store, id, CAUSE_MACHINE_RESTART, &out, NULL, NULL) <= 0)
        return;
    supervisor__changed(sv, id);
    if ((unsigned)rec->auto_restarts + 1 > sv->s.max_auto_restarts) {
        log_warning("instance \"%s\" died with the machine %d times in a row without saving a "
                    "checkpoint; it stays suspended (RUNTARA_MAX_AUTO_RESTARTS=%u). hint: "
                    "resume it with \"runtara-ctl instances resume %s\"",
                    id, rec->auto_restarts + 1, sv->s.max_auto_restarts, id);
        rc->held++;
        return;
    }
    log_notice("instance \"%s\" died with the machine; relaunching it from its checkpoints", id);
    resume_and_launch(sv, id);
    rc->restarted++;
}

/* Record the exit of a process that ended while no daemon watched it. */
static void collect(Supervisor *sv, const char *id, const ExitStatus *st)
{
    Running gone = {.sv = sv, .id = (char *)id, .stop_cause = _INSTANCE_CAUSE_MAX};
    log_info("instance \"%s\" ended while the daemon was down", id);
    supervisor__handle_exit(sv, &gone, st);
}

/* Watch a process found still running. `attempt` is the launch it belongs to. */
static void reattach(Supervisor *sv, const InstanceRecord *rec, InstanceStatus status,
                     RunnerProcess *proc, int attempt, Recovery *rc)
{
    const char *id = rec->instance_key;
    bool launching = status == INSTANCE_PENDING && attempt == rec->attempt + 1;
    bool current = launching || (status == INSTANCE_RUNNING && attempt == rec->attempt);
    Error e = ERROR_INIT;
    Running *r = supervisor__watch(sv, id, proc, &e);
    if (!r) {
        log_error("could not take over instance \"%s\": %s", id, error_message(&e));
        error_done(&e);
        return;
    }
    rc->reattached++;
    if (!current) {
        /* an earlier launch still exiting: its end no longer counts, and it gets the grace */
        log_info("instance \"%s\": an earlier process (pid %d) is still exiting", id,
                 (int)runner_process_pid(proc));
        r->relaunch = status == INSTANCE_PENDING;
        supervisor__arm_timer(r, sv->s.stop_grace_secs, supervisor__on_kill_timer);
        return;
    }
    if (launching) /* launched just before the daemon went */
        supervisor__apply(sv, id, CAUSE_LAUNCHED, NULL);
    supervisor__arm_timer(r, launching ? rec->timeout_secs : timeout_left(rec),
                          supervisor__on_timeout);
    supervisor__arm_heartbeat_check(r, (usec_t)sv->s.heartbeat_timeout_secs * USEC_PER_SEC);
    SignalKind signal;
    if (store_signal_get(sv->store, id, &signal, NULL, NULL) > 0 && signal == SIGNAL_CANCEL)
        supervisor__arm_timer(r, sv->s.cancel_grace_secs, supervisor__on_cancel_overdue);
    log_info("instance \"%s\" is still running (pid %d); watching it again", id,
             (int)runner_process_pid(proc));
}

static void recover_one(Supervisor *sv, const InstanceRecord *rec, Recovery *rc)
{
    const char *id = rec->instance_key;
    InstanceStatus status = rec->status;
    bool live = status == INSTANCE_PENDING || status == INSTANCE_RUNNING;
    /* a launch whose exit is not recorded may still run, or have ended while no daemon watched,
     * whatever the row says: a process that reported its end or fell asleep exits a moment
     * later, or after the stop grace */
    bool unrecorded = !rec->has_exit_code && rec->attempt > 0;
    _cleanup_free_ char *dir = run_dirs_path(sv->run_dirs, rec->tenant_id, rec->instance_id);
    Error e = ERROR_INIT;

    if (hashmap_get(sv->running, id))
        return; /* taken over by the pending pass, which recorded its launch: now it runs */

    Runner *runner = supervisor__runner_of(sv, rec, &e);
    if (!runner && (live || unrecorded)) {
        /* it may still run, but only its runner can tell: acting on it could run it twice */
        log_error("could not tell whether instance \"%s\" still runs; leaving it as it is: %s", id,
                  error_message(&e));
        error_done(&e);
        return;
    }
    error_done(&e);
    if (live || unrecorded) {
        RunnerProcess *proc = NULL;
        int attempt = 0;
        int k = runner_attach(runner, dir, &attempt, &proc, &e);
        if (k < 0) {
            /* unknown whether it runs: acting on it could run it twice */
            log_error("could not tell whether instance \"%s\" still runs; leaving it as it is: "
                      "%s",
                      id, error_message(&e));
            error_done(&e);
            return;
        }
        if (k > 0) {
            reattach(sv, rec, status, proc, attempt, rc);
            return;
        }
    }
    ExitStatus st;
    bool ended = (live || unrecorded) && runner_collect(runner, dir, &st, NULL) == 0;
    if (!live && ended && st.attempt == rec->attempt) {
        /* its launch ended (it reported its end, was stopped or fell asleep), then its process
         * exited while no daemon watched: the exit still counts (event, exit code) */
        collect(sv, id, &st);
        rc->collected++;
    }
    if (status == INSTANCE_RUNNING) {
        if (ended && st.attempt == rec->attempt) {
            collect(sv, id, &st);
            rc->collected++;
        } else
            restart_dead(sv, rec, rc);
    } else if (status == INSTANCE_PENDING) {
        if (ended && st.attempt == rec->attempt + 1) {
            supervisor__apply(sv, id, CAUSE_LAUNCHED,
                              NULL); /* launched and ended while the daemon was gone */
            collect(sv, id, &st);
            rc->collected++;
        } else {
            supervisor_launch(sv, id);
            rc->launched++;
        }
    } else if (status == INSTANCE_SUSPENDED) {
        TerminationReason why = termination_reason_from_string(rec->termination_reason);
        if (why == REASON_SHUTDOWN) {
            resume_and_launch(sv, id);
            rc->launched++;
        } else if (why == REASON_ENVIRONMENT_RESTART &&
                   (unsigned)rec->auto_restarts <= sv->s.max_auto_restarts) {
            resume_and_launch(sv, id); /* suspended for a restart, not yet relaunched */
            rc->restarted++;
        } else if (why == REASON_WAITING_SIGNAL && rec->wait_key &&
                   store_custom_signal_exists(sv->store, id, rec->wait_key, NULL) > 0) {
            supervisor__wake(sv, id, 0, rec->wait_key); /* the signal came as the daemon went */
            rc->launched++;
        }
    }
}

/* Reconcile every instance of one status (exit_unrecorded: only those whose latest launch has no
 * exit recorded, the only ones of a terminal status that can need anything). */
static void recover_status(Supervisor *sv, InstanceStatus status, bool exit_unrecorded,
                           Recovery *rc)
{
    InstanceFilter f = {.has_status = true,
                        .status = status,
                        .exit_unrecorded = exit_unrecorded,
                        .owner = sv->s.daemon_id,
                        .limit = 500};
    for (;;) {
        InstanceRecord *rows = NULL;
        size_t n = 0;
        bool more = false;
        int64_t last = 0;
        Error e = ERROR_INIT;
        if (store_instance_list(sv->store, &f, &rows, &n, &more, NULL, &last, &e) < 0) {
            log_error("could not list %s instances to recover: %s",
                      instance_status_to_string(status), error_message(&e));
            error_done(&e);
            return;
        }
        for (size_t i = 0; i < n; i++)
            recover_one(sv, &rows[i], rc);
        instance_records_free(rows, n);
        if (!more)
            return;
        f.before_seq = last;
    }
}

/* The lease was lost (renewed too late: other daemons took this one's instances). A process
 * whose instance went elsewhere is killed, and its end is not recorded here: the new owner
 * relaunched it with a new token, so it could not have saved anything since. On the loop
 * (JOB_FENCE). */
void supervisor__fence(Supervisor *sv)
{
    size_t i = 0;
    Running *r;
    unsigned killed = 0;
    while (hashmap_next(sv->running, &i, NULL, (void **)&r)) {
        InstanceRecord rec;
        if (store_instance_get(sv->store, r->id, NULL, &rec, NULL) < 0)
            continue;
        if (rec.owner && strcmp(rec.owner, sv->s.daemon_id) != 0) {
            r->disowned = true;
            supervisor__terminate(r, CAUSE_STOPPED, 0);
            killed++;
        }
        instance_record_done(&rec);
    }
    if (killed > 0)
        log_warning("killed %u processes whose instances other daemons took over", killed);
}

/* An instance this daemon took over from one whose lease ended (JOB_ADOPTED): reconciled as at
 * start-up. Its process cannot be seen from here unless this daemon shares the old one's
 * DATA_DIR, so a running one is relaunched from its checkpoints; a sleeper joins the heap. */
void supervisor__adopted(Supervisor *sv, const char *key)
{
    InstanceRecord rec;
    Recovery rc = {0};
    if (store_instance_get(sv->store, key, NULL, &rec, NULL) < 0)
        return;
    recover_one(sv, &rec, &rc);
    if (rec.status == INSTANCE_SUSPENDED && rec.sleep_until) {
        wake_heap_push(sv->wakes, rec.instance_key, rec.sleep_until);
        supervisor__rearm_wakes(sv);
    }
    instance_record_done(&rec);
}

/* ---- the lease, on a thread of its own -------------------------------------------------------
 *
 * Renewing this daemon's lease and claiming the instances of dead daemons are store calls made
 * every quarter of a lease whatever else happens. On the event loop, a database that stalls
 * would stall the loop with them, an idle daemon's too; so a thread makes them, and the loop
 * only acts on what they found, through the job queue: JOB_FENCE when the lease was lost, one
 * JOB_ADOPTED per instance taken over. */

/* Append a job to a list (*tail: the end's next pointer), to hand over with one queueing. */
static void append_job(JobKind kind, const char *id, Job ***tail)
{
    Job *j = xcalloc(1, sizeof *j);
    j->kind = kind;
    if (id)
        snprintf(j->id, sizeof j->id, "%s", id);
    **tail = j;
    *tail = &j->next;
}

/* Take over up to a batch of instances that need a daemon and have none (their owner's lease
 * ended, with expired_too), after *cursor of a pass (store_instance_adopt()); with tail, append a
 * JOB_ADOPTED for each (at start-up, recovery's own passes reconcile them next). Returns how many
 * were taken, or -1. */
static int adopt_batch(Supervisor *sv, bool expired_too, int64_t *cursor, Job ***tail)
{
    char **keys = NULL;
    size_t n = 0;
    Error e = ERROR_INIT;
    if (store_instance_adopt(sv->store, expired_too, 200, cursor, &keys, &n, &e) < 0) {
        log_warning("could not take over instances of other daemons: %s", error_message(&e));
        error_done(&e);
        return -1;
    }
    for (size_t i = 0; tail && i < n; i++)
        append_job(JOB_ADOPTED, keys[i], tail);
    store_keys_free(keys, n);
    return (int)n;
}

/* Take over every instance that needs a daemon and has none, handing each to the loop. */
static void adopt_async(Supervisor *sv, bool expired_too)
{
    int n, total = 0;
    int64_t cursor = 0;
    do {
        Job *first = NULL, **tail = &first;
        n = adopt_batch(sv, expired_too, &cursor, &tail);
        if (first)
            supervisor__queue_list(sv, first, tail);
        total += MAX(n, 0);
    } while (n > 0);
    if (total > 0)
        log_notice("took over %d instances that had no live daemon; reconciling them", total);
}

/* One renewal; returns since when the lease has been renewed without a gap (0: it was not). */
static usec_t lease_renew(Supervisor *sv, usec_t lease, usec_t ok_since)
{
    Error e = ERROR_INIT;
    int r = store_daemon_renew(sv->store, lease, &e);
    if (r == 0) {
        log_warning("this daemon's lease ended before it was renewed, and other daemons may have "
                    "taken over its instances; registering again. hint: RUNTARA_LEASE_SECS=%u "
                    "is shorter than a stall of this daemon or of its database",
                    sv->s.lease_secs);
        Job *first = NULL, **tail = &first;
        append_job(JOB_FENCE, NULL, &tail);
        supervisor__queue_list(sv, first, tail);
        r = store_daemon_register(sv->store, sv->s.host, (int)getpid(), lease, &e);
    }
    if (r < 0) {
        if (ok_since)
            log_warning("could not renew this daemon's lease: %s", error_message(&e));
        error_done(&e);
        return 0;
    }
    usec_t now = now_usec(CLOCK_MONOTONIC);
    if (!ok_since)
        ok_since = now;
    /* Others' leases count as ended only once this one has been renewed for a whole lease:
     * after an outage of the database every daemon renews late, and none takes another's. */
    if (!sv->draining)
        adopt_async(sv, now - ok_since >= lease);
    return ok_since;
}

static void *lease_run(void *userdata)
{
    Supervisor *sv = userdata;
    usec_t lease = (usec_t)sv->s.lease_secs * USEC_PER_SEC;
    usec_t ok_since = now_usec(CLOCK_MONOTONIC); /* registered just before */
    usec_t next = ok_since;
    pthread_mutex_lock(&sv->lease_lock);
    while (!sv->lease_stop) {
        next = MAX(next + lease / 4, now_usec(CLOCK_MONOTONIC)); /* no burst after a stall */
        struct timespec ts = {.tv_sec = (time_t)(next / USEC_PER_SEC),
                              .tv_nsec = (long)(next % USEC_PER_SEC) * 1000};
        while (!sv->lease_stop && now_usec(CLOCK_MONOTONIC) < next)
            (void)pthread_cond_timedwait(&sv->lease_cond, &sv->lease_lock, &ts);
        if (sv->lease_stop)
            break;
        pthread_mutex_unlock(&sv->lease_lock);
        ok_since = lease_renew(sv, lease, ok_since);
        pthread_mutex_lock(&sv->lease_lock);
    }
    pthread_mutex_unlock(&sv->lease_lock);
    return NULL;
}

void supervisor__lease_start(Supervisor *sv)
{
    if (!sv->s.daemon_id || sv->s.lease_secs == 0)
        return;
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&sv->lease_cond, &a);
    pthread_condattr_destroy(&a);
    pthread_mutex_init(&sv->lease_lock, NULL);
    int r = pthread_create(&sv->lease_thread, NULL, lease_run, sv);
    if (r != 0) {
        log_error("could not start the thread that renews this daemon's lease (%s); other "
                  "daemons will take this one's instances over",
                  strerror(r));
        pthread_cond_destroy(&sv->lease_cond);
        pthread_mutex_destroy(&sv->lease_lock);
        return;
    }
    (void)pthread_setname_np(sv->lease_thread, "lease");
    sv->lease_started = true;
}

void supervisor__lease_stop(Supervisor *sv)
{
    if (!sv->lease_started)
        return;
    pthread_mutex_lock(&sv->lease_lock);
    sv->lease_stop = true;
    pthread_cond_signal(&sv->lease_cond);
    pthread_mutex_unlock(&sv->lease_lock);
    pthread_join(sv->lease_thread, NULL);
    pthread_cond_destroy(&sv->lease_cond);
    pthread_mutex_destroy(&sv->lease_lock);
    sv->lease_started = false;
}

void supervisor_recover(Supervisor *sv)
{
    Recovery rc = {0};
    usec_t t0 = now_usec(CLOCK_MONOTONIC);
    /* instances of no daemon (from before owners, or left by one that stopped cleanly) first:
     * from here on they are this daemon's, and recovered below with its own, once */
    int64_t cursor = 0;
    if (sv->s.daemon_id)
        while (adopt_batch(sv, false, &cursor, NULL) > 0)
            ;
    /* pending first: instances this pass moves to pending are launched once, not twice */
    recover_status(sv, INSTANCE_PENDING, false, &rc);
    recover_status(sv, INSTANCE_RUNNING, false, &rc);
    recover_status(sv, INSTANCE_SUSPENDED, false, &rc);
    recover_status(sv, INSTANCE_COMPLETED, true, &rc);
    recover_status(sv, INSTANCE_FAILED, true, &rc);
    recover_status(sv, INSTANCE_CANCELLED, true, &rc);
    supervisor__load_wakes(sv);
    supervisor__lease_start(sv);
    if (rc.reattached + rc.collected + rc.restarted + rc.held + rc.launched > 0)
        log_notice("recovered in %llu ms: %u processes still running, %u exits collected, %u "
                   "instances relaunched after a crash, %u held at the restart limit, %u launched",
                   (unsigned long long)((now_usec(CLOCK_MONOTONIC) - t0) / USEC_PER_MSEC),
                   rc.reattached, rc.collected, rc.restarted, rc.held, rc.launched);
}
