/* The supervisor (supervisor.h): the job queue other threads feed, stops and their timers,
 * heartbeat checks, drain at SIGTERM and shutdown. Launches, exits, wakes and recovery live in
 * the files beside it (supervisor-internal.h). */
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

/* ---- jobs from other threads ---------------------------------------------------------------- */

/* Append the jobs first ... (*last == NULL) and wake the loop once. */
void supervisor__queue_list(Supervisor *sv, Job *first, Job **last)
{
    pthread_mutex_lock(&sv->lock);
    *sv->tail = first;
    sv->tail = last;
    pthread_mutex_unlock(&sv->lock);
    uint64_t one = 1;
    (void)!write(sv->efd, &one, sizeof one);
}

static void queue(Supervisor *sv, Job *j)
{
    pthread_mutex_lock(&sv->lock);
    *sv->tail = j;
    sv->tail = &j->next;
    pthread_mutex_unlock(&sv->lock);
    uint64_t one = 1;
    (void)!write(sv->efd, &one, sizeof one);
}

static void post(Supervisor *sv, JobKind kind, const char *id, InstanceCause cause, unsigned grace,
                 usec_t when)
{
    Job *j = xcalloc(1, sizeof *j);
    *j = (Job){.kind = kind, .cause = cause, .grace = grace, .when = when};
    snprintf(j->id, sizeof j->id, "%s", id);
    queue(sv, j);
}

void supervisor_launch(Supervisor *sv, const char *instance_key)
{
    post(sv, JOB_LAUNCH, instance_key, _INSTANCE_CAUSE_MAX, 0, 0);
}

void supervisor_launch_issued(Supervisor *sv, const char *instance_key, const char *token)
{
    Job *j = xcalloc(1, sizeof *j);
    *j = (Job){.kind = JOB_LAUNCH};
    snprintf(j->id, sizeof j->id, "%s", instance_key);
    snprintf(j->token, sizeof j->token, "%s", token);
    queue(sv, j);
}

void supervisor_stop(Supervisor *sv, const char *instance_key, InstanceCause cause,
                     unsigned grace_secs)
{
    post(sv, JOB_STOP, instance_key, cause, grace_secs, 0);
}

void supervisor_enforce_cancel(Supervisor *sv, const char *instance_key)
{
    post(sv, JOB_ENFORCE_CANCEL, instance_key, CAUSE_CANCELLED, sv->s.cancel_grace_secs, 0);
}

void supervisor_expect_exit(Supervisor *sv, const char *instance_key)
{
    post(sv, JOB_EXPECT_EXIT, instance_key, _INSTANCE_CAUSE_MAX, sv->s.stop_grace_secs, 0);
}

void supervisor_schedule_wake(Supervisor *sv, const char *instance_key, usec_t when)
{
    post(sv, JOB_WAKE, instance_key, _INSTANCE_CAUSE_MAX, 0, when);
}

void supervisor_signal_arrived(Supervisor *sv, const char *instance_key, const char *wait_key)
{
    Job *j = xcalloc(1, sizeof *j);
    *j = (Job){.kind = JOB_SIGNAL_ARRIVED};
    snprintf(j->id, sizeof j->id, "%s", instance_key);
    snprintf(j->key, sizeof j->key, "%s", wait_key);
    queue(sv, j);
}

void supervisor_registered(Supervisor *sv, const char *instance_key)
{
    post(sv, JOB_REGISTERED, instance_key, _INSTANCE_CAUSE_MAX, 0, 0);
}

char *supervisor_log_path(Supervisor *sv, const char *tenant_id, const char *instance_id)
{
    _cleanup_free_ char *dir = run_dirs_path(sv->run_dirs, tenant_id, instance_id);
    return xasprintf("%s/%s", dir, SHIM_LOG_FILE);
}

unsigned supervisor_running(Supervisor *sv)
{
    return atomic_load(&sv->n_running);
}
/* ---- helpers -------------------------------------------------------------------------------- */

void supervisor__changed(Supervisor *sv, const char *id)
{
    if (sv->on_change)
        sv->on_change(id, SUPERVISOR_CHANGED_STATUS, sv->userdata);
}

void supervisor__apply(Supervisor *sv, const char *id, InstanceCause cause,
                       const InstanceOutcome *out)
{
    Error e = ERROR_INIT;
    if (instance_apply(sv->store, id, cause, out, NULL, &e) < 0)
        log_error("could not record the state of instance \"%s\": %s", id, error_message(&e));
    error_done(&e);
    supervisor__changed(sv, id);
}

void supervisor__arm_timer(Running *r, unsigned secs, sd_event_time_handler_t cb)
{
    r->timer = sd_event_source_disable_unref(r->timer);
    if (sd_event_add_time_relative(r->sv->loop, &r->timer, CLOCK_MONOTONIC,
                                   (uint64_t)secs * USEC_PER_SEC, 10 * USEC_PER_MSEC, cb, r) < 0)
        log_error("could not arm a timer for instance \"%s\"", r->id);
}

int supervisor__on_kill_timer(sd_event_source *src, uint64_t usec, void *userdata)
{
    Running *r = userdata;
    (void)src;
    (void)usec;
    if (!r->killing) {
        log_notice("instance \"%s\" did not end within its grace period, killing it", r->id);
        r->killing = true;
        (void)runner_process_signal(r->proc, SIGKILL);
    }
    return 0;
}

/* Ask the process to end for `cause`: SIGTERM now, SIGKILL after grace (at once if 0). */
void supervisor__terminate(Running *r, InstanceCause cause, unsigned grace)
{
    if (r->stop_cause == _INSTANCE_CAUSE_MAX)
        r->stop_cause = cause;
    if (grace == 0) {
        r->killing = true;
        (void)runner_process_signal(r->proc, SIGKILL);
        return;
    }
    (void)runner_process_signal(r->proc, SIGTERM);
    supervisor__arm_timer(r, grace, supervisor__on_kill_timer);
}

int supervisor__on_timeout(sd_event_source *src, uint64_t usec, void *userdata)
{
    Running *r = userdata;
    (void)src;
    (void)usec;
    log_notice("instance \"%s\" reached its timeout, stopping it", r->id);
    supervisor__terminate(r, CAUSE_TIMED_OUT, r->sv->s.stop_grace_secs);
    return 0;
}

int supervisor__on_cancel_overdue(sd_event_source *src, uint64_t usec, void *userdata)
{
    Running *r = userdata;
    (void)src;
    (void)usec;
    log_notice("instance \"%s\" did not act on its cancel signal, stopping it", r->id);
    supervisor__terminate(r, CAUSE_CANCELLED, r->sv->s.stop_grace_secs);
    return 0;
}

/* The heartbeat timeout: at the latest possible expiry, look at the last sign of life (a
 * heartbeat or a checkpoint save, both recorded in the store, or the launch); no polling, one
 * store read per timeout period. */
static int on_heartbeat_check(sd_event_source *src, uint64_t usec, void *userdata)
{
    Running *r = userdata;
    Supervisor *sv = r->sv;
    InstanceRecord rec;
    (void)src;
    (void)usec;
    if (r->unrecorded) /* silent so far (RUNTARA_LAUNCH_RECORD_MS may exceed the timeout) */
        supervisor__record_launch(r);
    if (r->stop_cause != _INSTANCE_CAUSE_MAX ||
        store_instance_get(sv->store, r->id, NULL, &rec, NULL) < 0)
        return 0;
    usec_t limit = (usec_t)sv->s.heartbeat_timeout_secs * USEC_PER_SEC;
    usec_t last = rec.heartbeat_at > rec.started_at ? rec.heartbeat_at : rec.started_at;
    usec_t now = now_usec(CLOCK_REALTIME);
    bool running = rec.status == INSTANCE_RUNNING;
    instance_record_done(&rec);
    if (!running)
        return 0; /* it reported its end or fell asleep: the exit is expected anyway */
    if (now < last + limit) {
        supervisor__arm_heartbeat_check(r, last + limit - now);
        return 0;
    }
    log_notice("instance \"%s\" sent no heartbeat for %u s (RUNTARA_HEARTBEAT_TIMEOUT_SECS); "
               "killing it",
               r->id, sv->s.heartbeat_timeout_secs);
    supervisor__terminate(r, CAUSE_HEARTBEAT_LOST, 0); /* presumed hung: SIGTERM would go unheard */
    return 0;
}

void supervisor__arm_heartbeat_check(Running *r, usec_t in)
{
    if (r->sv->s.heartbeat_timeout_secs == 0)
        return;
    r->hb_timer = sd_event_source_disable_unref(r->hb_timer);
    if (sd_event_add_time_relative(r->sv->loop, &r->hb_timer, CLOCK_MONOTONIC, in,
                                   10 * USEC_PER_MSEC, on_heartbeat_check, r) < 0)
        log_error("could not arm the heartbeat check of instance \"%s\"", r->id);
}

Running *supervisor__running_free(Running *r)
{
    if (!r)
        return NULL;
    sd_event_source_disable_unref(r->exit_src);
    sd_event_source_disable_unref(r->timer);
    sd_event_source_disable_unref(r->hb_timer);
    sd_event_source_disable_unref(r->record_timer);
    runner_process_free(r->proc);
    free(r->id);
    free(r);
    return NULL;
}
/* ---- the other jobs ------------------------------------------------------------------------- */

static void do_stop(Supervisor *sv, const Job *j)
{
    Running *r = hashmap_get(sv->running, j->id);
    if (r) {
        supervisor__terminate(r, j->cause, j->grace);
        return;
    }
    supervisor__apply(sv, j->id, j->cause, NULL); /* pending or suspended: nothing to kill */
}

static void run_job(Supervisor *sv, const Job *j)
{
    Running *r = hashmap_get(sv->running, j->id);
    switch (j->kind) {
    case JOB_LAUNCH:
        supervisor__do_launch(sv, j->id, j->token[0] ? j->token : NULL);
        break;
    case JOB_STOP:
        do_stop(sv, j);
        break;
    case JOB_ENFORCE_CANCEL:
        if (r && r->stop_cause == _INSTANCE_CAUSE_MAX)
            supervisor__arm_timer(r, j->grace, supervisor__on_cancel_overdue);
        break;
    case JOB_EXPECT_EXIT:
        if (r && r->stop_cause == _INSTANCE_CAUSE_MAX)
            supervisor__arm_timer(r, j->grace, supervisor__on_kill_timer);
        break;
    case JOB_WAKE:
        log_debug("wake of instance \"%s\" scheduled in %lld ms", j->id,
                  (long long)((int64_t)j->when - (int64_t)now_usec(CLOCK_REALTIME)) / 1000);
        wake_heap_push(sv->wakes, j->id, j->when);
        supervisor__rearm_wakes(sv);
        break;
    case JOB_SIGNAL_ARRIVED:
        supervisor__wake(sv, j->id, 0, j->key);
        break;
    case JOB_REGISTERED:
        if (r && r->unrecorded) { /* the register recorded the launch, or found it recorded */
            r->unrecorded = false;
            r->record_timer = sd_event_source_disable_unref(r->record_timer);
        }
        (void)sd_event_source_set_enabled(sv->prestart, SD_EVENT_ONESHOT);
        break;
    case JOB_FENCE:
        supervisor__fence(sv);
        break;
    case JOB_ADOPTED:
        supervisor__adopted(sv, j->id);
        break;
    }
}

static int on_jobs(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
    Supervisor *sv = userdata;
    uint64_t n;
    (void)src;
    (void)revents;
    (void)!read(fd, &n, sizeof n);

    for (unsigned done = 0;; done++) {
        pthread_mutex_lock(&sv->lock);
        Job *j = sv->head;
        if (j && done < JOBS_PER_TURN) {
            sv->head = j->next;
            if (!sv->head)
                sv->tail = &sv->head;
        }
        pthread_mutex_unlock(&sv->lock);
        if (!j)
            break;
        if (done == JOBS_PER_TURN) {
            /* more next turn, after timers and exits that are due */
            uint64_t one = 1;
            (void)!write(sv->efd, &one, sizeof one);
            break;
        }
        run_job(sv, j);
        explicit_bzero(j->token, sizeof j->token);
        free(j);
    }
    return 0;
}
/* ---- life ----------------------------------------------------------------------------------- */

/* The loop has nothing else to do: ready the runner for the next launch (the native runner
 * starts a shim ahead), so that a launch costs only the program's own start. Armed at start-up,
 * when a launched program has registered, and PRESTART_AFTER_LAUNCH after a launch. */
static int on_prestart(sd_event_source *src, void *userdata)
{
    Supervisor *sv = userdata;
    Error e = ERROR_INIT;
    (void)src;
    if (sv->draining)
        return 0;
    for (RunnerType t = 0; t < _RUNNER_TYPE_MAX; t++) {
        Runner *r = sv->runners[t];
        if (!r || runner_type(r) != t) /* (a runner serving several types readies once) */
            continue;
        if (runner_prestart(r, &e) < 0)
            log_warning("could not ready the %s runner for the next launch, ignoring: %s",
                        runner_type_to_string(t), error_message(&e));
        error_done(&e);
    }
    /* a full disk fails this after every launch: said once, until it works again */
    bool failed = run_dirs_ready(sv->run_dirs, &e) < 0;
    if (failed)
        log_full(sv->spare_failing ? LOG_DEBUG : LOG_WARNING,
                 "%s; new run directories are created at their launch until one can be made",
                 error_message(&e));
    sv->spare_failing = failed;
    error_done(&e);
    return 0;
}

static int on_prestart_timer(sd_event_source *src, uint64_t usec, void *userdata)
{
    Supervisor *sv = userdata;
    (void)src;
    (void)usec;
    return sd_event_source_set_enabled(sv->prestart, SD_EVENT_ONESHOT);
}

Runner *supervisor__runner_of(Supervisor *sv, const InstanceRecord *rec, Error *e)
{
    RunnerType t = runner_type_from_string(rec->runner);
    if (t < 0) {
        error_set(e, -EINVAL, "instance \"%s\" names an unknown runner \"%s\"", rec->instance_key,
                  rec->runner ? rec->runner : "");
        return NULL;
    }
    if (!sv->runners[t])
        error_set(e, -ENXIO, "the %s runner is not available on this host: %s",
                  runner_type_to_string(t), sv->unavailable[t] ? sv->unavailable[t] : "not set up");
    return sv->runners[t];
}

int supervisor_new(sd_event *loop, const SupervisorRunners *runners, Store *store,
                   const SupervisorSettings *s, SupervisorChange_cb on_change, void *userdata,
                   Supervisor **ret, Error *e)
{
    Supervisor *sv = xcalloc(1, sizeof *sv);
    Runner *dirs_runner = NULL;
    *sv = (Supervisor){.loop = sd_event_ref(loop),
                       .store = store,
                       .s = *s,
                       .on_change = on_change,
                       .userdata = userdata};
    sv->s.data_dir = xstrdup(s->data_dir);
    sv->s.daemon_id = s->daemon_id ? xstrdup(s->daemon_id) : NULL;
    sv->s.host = s->host ? xstrdup(s->host) : NULL;
    for (RunnerType t = 0; t < _RUNNER_TYPE_MAX; t++) {
        sv->runners[t] = runners->runners[t];
        sv->unavailable[t] = runners->unavailable[t] ? xstrdup(runners->unavailable[t]) : NULL;
        if (!dirs_runner)
            dirs_runner = sv->runners[t];
    }
    sv->run_dirs = run_dirs_new(s->data_dir, dirs_runner);
    sv->running = hashmap_new();
    sv->retries = hashmap_new();
    sv->pending_exits = hashmap_new();
    sv->wakes = wake_heap_new();
    sv->tail = &sv->head;
    pthread_mutex_init(&sv->lock, NULL);
    sv->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int k =
        sv->efd < 0 ? -errno : sd_event_add_io(loop, &sv->efd_src, sv->efd, EPOLLIN, on_jobs, sv);
    /* after everything else that is due: it blocks the loop for a process creation */
    if (k >= 0)
        k = sd_event_add_defer(loop, &sv->prestart, on_prestart, sv);
    if (k >= 0)
        k = sd_event_source_set_priority(sv->prestart, SD_EVENT_PRIORITY_IDLE);
    if (k >= 0)
        k = sd_event_add_time_relative(loop, &sv->prestart_timer, CLOCK_MONOTONIC,
                                       PRESTART_AFTER_LAUNCH, 10 * USEC_PER_MSEC, on_prestart_timer,
                                       sv);
    if (k >= 0)
        k = sd_event_source_set_enabled(sv->prestart_timer, SD_EVENT_OFF);
    if (k < 0) {
        supervisor_free(sv);
        return error_set(e, k, "could not set up the supervisor: %s", strerror(-k));
    }
    *ret = sv;
    return 0;
}

void supervisor__drain_done(Supervisor *sv)
{
    SupervisorDrained_cb done = sv->drained;
    sv->drained = NULL;
    sv->drain_timer = sd_event_source_disable_unref(sv->drain_timer);
    if (done)
        done(sv->drained_userdata);
}

static int on_drain_timer(sd_event_source *src, uint64_t usec, void *userdata)
{
    Supervisor *sv = userdata;
    (void)src;
    (void)usec;
    log_notice("%zu instances did not suspend within the shutdown grace "
               "(RUNTARA_SHUTDOWN_GRACE_SECS); stopping them",
               hashmap_size(sv->running));
    supervisor__drain_done(sv);
    return 0;
}

void supervisor_drain(Supervisor *sv, unsigned grace_secs, SupervisorDrained_cb done,
                      void *userdata)
{
    size_t i = 0;
    Running *r;
    unsigned asked = 0;

    sv->draining = true;
    sv->drained = done;
    sv->drained_userdata = userdata;
    while (hashmap_next(sv->running, &i, NULL, (void **)&r)) {
        SignalKind type = _SIGNAL_KIND_INVALID;
        int k = r->stop_cause != _INSTANCE_CAUSE_MAX
                    ? 1
                    : store_signal_get(sv->store, r->id, &type, NULL, NULL);
        if (k < 0 || (k > 0 && type != SIGNAL_RESUME))
            continue; /* ending already, or a cancel or pause is on its way */
        if (store_signal_send(sv->store, r->id, SIGNAL_PAUSE, INSTANCE_DRAIN_PAYLOAD, NULL) > 0) {
            asked++;
            if (sv->on_change) /* a program parked in GET /signals hears it now */
                sv->on_change(r->id, SUPERVISOR_CHANGED_SIGNAL, sv->userdata);
        }
    }
    log_notice("draining: %u of %zu running instances asked to suspend at their next checkpoint",
               asked, hashmap_size(sv->running));
    if (hashmap_size(sv->running) == 0 || grace_secs == 0) {
        supervisor__drain_done(sv);
        return;
    }
    if (sd_event_add_time_relative(sv->loop, &sv->drain_timer, CLOCK_MONOTONIC,
                                   (uint64_t)grace_secs * USEC_PER_SEC, 10 * USEC_PER_MSEC,
                                   on_drain_timer, sv) < 0)
        supervisor__drain_done(sv);
}

void supervisor_shutdown(Supervisor *sv)
{
    supervisor__lease_stop(sv); /* before the daemon unregisters */
    size_t i = 0;
    Running *r;
    while (hashmap_next(sv->running, &i, NULL, (void **)&r))
        supervisor__terminate(r, CAUSE_SHUTDOWN, 0);

    usec_t deadline = now_usec(CLOCK_MONOTONIC) + 5 * USEC_PER_SEC;
    while (hashmap_size(sv->running) > 0 && now_usec(CLOCK_MONOTONIC) < deadline) {
        i = 0;
        hashmap_next(sv->running, &i, NULL, (void **)&r);
        struct pollfd p = {runner_process_fd(r->proc), POLLIN, 0};
        if (poll(&p, 1, 100) == 1)
            supervisor__on_exit_fd(NULL, p.fd, POLLIN, r);
    }
    if (hashmap_size(sv->running) > 0)
        log_warning("%zu instance processes did not end at shutdown", hashmap_size(sv->running));
}

Supervisor *supervisor_free(Supervisor *sv)
{
    if (!sv)
        return NULL;
    size_t i = 0;
    Running *r;
    while (hashmap_next(sv->running, &i, NULL, (void **)&r))
        supervisor__running_free(r);
    hashmap_free(sv->running);
    hashmap_free(sv->retries);
    supervisor__pending_exits_free(sv);
    sd_event_source_disable_unref(sv->wake_timer);
    sd_event_source_disable_unref(sv->drain_timer);
    supervisor__lease_stop(sv);
    wake_heap_free(sv->wakes);
    for (Job *j = sv->head, *next; j; j = next) {
        next = j->next;
        free(j);
    }
    sd_event_source_disable_unref(sv->efd_src);
    sd_event_source_disable_unref(sv->prestart);
    sd_event_source_disable_unref(sv->prestart_timer);
    if (sv->efd >= 0)
        (void)close(sv->efd);
    pthread_mutex_destroy(&sv->lock);
    sd_event_unref(sv->loop);
    run_dirs_free(sv->run_dirs);
    free((char *)sv->s.data_dir);
    free((char *)sv->s.daemon_id);
    free((char *)sv->s.host);
    for (RunnerType t = 0; t < _RUNNER_TYPE_MAX; t++)
        free(sv->unavailable[t]);
    free(sv);
    return NULL;
}
