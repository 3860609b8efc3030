/* Exits: how an instance's process ended, recorded through instance_apply() with its exit event
 * and output. */
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

/* ---- exits ---------------------------------------------------------------------------------- */

/* output.json of the run directory as JSON text, if it holds valid JSON. */
static char *read_output_file(Supervisor *sv, const InstanceRecord *rec)
{
    _cleanup_free_ char *dir = run_dirs_path(sv->run_dirs, rec->tenant_id, rec->instance_id);
    return run_dirs_read_output(dir);
}

static void describe_exit(const ExitStatus *st, char *buf, size_t n)
{
    if (st->kind == EXIT_KIND_SPAWN_FAILED)
        snprintf(buf, n, "%s", st->error);
    else if (st->oom)
        snprintf(buf, n,
                 "process was killed by the OOM killer: out of memory at its limit of %llu bytes "
                 "peak use (RUNTARA_OCI_MEMORY_BYTES)",
                 (unsigned long long)st->memory_peak_bytes);
    else if (st->kind == EXIT_KIND_SIGNALED)
        snprintf(buf, n, "process was killed by signal %d (%s)", st->code, strsignal(st->code));
    else
        snprintf(buf, n, "process exited with status %d", st->code);
}

/* The payload of the "exited" event (the caller frees it), and its request key: it is recorded
 * once per launch (keyed by its token) even when the end is recorded again after an outage of
 * the store. */
static char *exit_event(const Running *r, const ExitStatus *st, char key[static 80])
{
    key[0] = '\0';
    if (r->launch_token_hash[0])
        snprintf(key, 80, "exited:%.64s", r->launch_token_hash);
    json_t *p =
        json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:b}", "kind", exit_kind_to_string(st->kind),
                  "exit_code", st->exit_code, "log_bytes", (json_int_t)st->log_bytes, "log_dropped",
                  (json_int_t)st->log_dropped, "cpu_usec", (json_int_t)st->cpu_usec,
                  "max_rss_bytes", (json_int_t)st->max_rss_bytes, "memory_peak_bytes",
                  (json_int_t)st->memory_peak_bytes, "oom", st->oom);
    char *text = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    return text;
}

int supervisor__handle_exit(Supervisor *sv, Running *r, const ExitStatus *st)
{
    char why[320];
    InstanceCause cause = r->stop_cause;
    InstanceOutcome out = {
        .set_exit_code = true,
        .exit_code = st->exit_code,
        /* a container's cgroup peak; natively, the process's peak RSS */
        .memory_peak_bytes = st->memory_peak_bytes ? st->memory_peak_bytes : st->max_rss_bytes,
        .cpu_usec = st->cpu_usec,
    };
    _cleanup_free_ char *output = NULL;
    bool succeeded = cause == _INSTANCE_CAUSE_MAX && st->kind == EXIT_KIND_EXITED && st->code == 0;

    /* the row, read once: its owner, and its names for the output file of a success */
    InstanceRecord rec = {0};
    bool have_rec = !r->disowned && (sv->s.daemon_id || succeeded) &&
                    store_instance_get(sv->store, r->id, NULL, &rec, NULL) >= 0;
    /* taken over while this daemon stalled, before the lease timer found out (fence()) */
    if (have_rec && sv->s.daemon_id)
        r->disowned = rec.owner && strcmp(rec.owner, sv->s.daemon_id) != 0;
    if (r->disowned) {
        instance_record_done(&rec);
        log_info("instance \"%s\": a process of this daemon's ended after another daemon took "
                 "the instance over; its end is not recorded",
                 r->id);
        return 0;
    }
    if (r->unrecorded && !r->relaunch)
        supervisor__record_launch(r); /* ended before it was: the order of events stays true */
    describe_exit(st, why, sizeof why);
    if (cause == _INSTANCE_CAUSE_MAX) {
        if (succeeded) {
            cause = CAUSE_REPORTED_DONE;
            if (have_rec)
                output = read_output_file(sv, &rec);
            out.output = output ? output : "null";
        } else {
            cause = st->oom ? CAUSE_OUT_OF_MEMORY : CAUSE_EXITED;
            out.error = why;
        }
    }
    instance_record_done(&rec);
    /* The "exited" event goes in the same commit as the row's end, before the change's event: a
     * reader who saw it finds the exit code on the instance. */
    char key[80];
    _cleanup_free_ char *event = exit_event(r, st, key);
    out.first_event = "exited";
    out.first_payload = event;
    out.first_key = key[0] ? key : NULL;
    Error e = ERROR_INIT;
    int k = instance_apply(sv->store, r->id, cause, &out, NULL, &e);
    /* its end was already recorded (reported, acknowledged, or stopped): keep it and add the exit
     * code, unless the instance was resumed meanwhile (the code belongs to the old launch); then
     * the event, after the code */
    if (k == 0) {
        if (!r->relaunch)
            k = instance_record_exit_code(sv->store, r->id, st->exit_code, out.memory_peak_bytes,
                                          out.cpu_usec, &e);
        if (k >= 0)
            k = store_event_append_keyed(sv->store, r->id, "exited", NULL, event, out.first_key,
                                         NULL, NULL, &e);
    }
    if (k < 0 && store_unavailable(k)) {
        log_warning("could not record the end of instance \"%s\" yet: %s; trying again", r->id,
                    error_message(&e));
        error_done(&e);
        return k;
    }
    if (k < 0)
        log_error("could not record the end of instance \"%s\": %s", r->id, error_message(&e));
    error_done(&e);
    log_info("instance \"%s\" ended: %s", r->id, why);
    supervisor__changed(sv, r->id);
    return 0;
}

/* ---- exits the store could not record yet ---------------------------------------------------- */

/* The longest wait between two attempts to record an exit while the store is unreachable. */
#define EXIT_RETRY_MAX (5 * USEC_PER_SEC)

/* An ended process whose end the store could not record (its database unreachable): kept, out
 * of the running map, and recorded again with a backoff until the store takes it. Nothing is lost
 * if the daemon stops first: the next start collects the end from the exit record (recovery). */
typedef struct PendingExit {
    Running *r;
    ExitStatus st;
    sd_event_source *timer;
    usec_t backoff;
} PendingExit;

static void pending_exit_free(PendingExit *p)
{
    sd_event_source_disable_unref(p->timer);
    supervisor__running_free(p->r);
    free(p);
}

/* The end of a process is recorded (or failed for good): what follows it. */
static void exit_done(Supervisor *sv, Running *r)
{
    if (r->relaunch) /* resumed before the old process was gone: launch now */
        supervisor__do_launch(sv, r->id, NULL);
    supervisor__running_free(r);
    if (sv->draining && hashmap_size(sv->running) == 0)
        supervisor__drain_done(sv);
}

static int on_exit_retry(sd_event_source *src, uint64_t usec, void *userdata)
{
    PendingExit *p = userdata;
    Supervisor *sv = p->r->sv;
    (void)src;
    (void)usec;
    if (store_unavailable(supervisor__handle_exit(sv, p->r, &p->st))) {
        p->backoff = p->backoff * 2 > EXIT_RETRY_MAX ? EXIT_RETRY_MAX : p->backoff * 2;
        (void)sd_event_source_set_time_relative(p->timer, p->backoff);
        (void)sd_event_source_set_enabled(p->timer, SD_EVENT_ONESHOT);
        return 0;
    }
    hashmap_remove(sv->pending_exits, p->r->id);
    Running *r = TAKE_PTR(p->r);
    sd_event_source_disable_unref(p->timer);
    free(p);
    exit_done(sv, r);
    return 0;
}

static void keep_exit(Supervisor *sv, Running *r, const ExitStatus *st)
{
    /* the process is reaped: its exit source has nothing more to say */
    r->exit_src = sd_event_source_disable_unref(r->exit_src);
    PendingExit *p = xcalloc(1, sizeof *p);
    *p = (PendingExit){.r = r, .st = *st, .backoff = 100 * USEC_PER_MSEC};
    if (sd_event_add_time_relative(sv->loop, &p->timer, CLOCK_MONOTONIC, p->backoff, 0,
                                   on_exit_retry, p) < 0) {
        log_error("could not schedule recording the end of instance \"%s\"; the next start "
                  "collects it",
                  r->id);
        pending_exit_free(p);
        return;
    }
    hashmap_put(sv->pending_exits, r->id, p);
}

void supervisor__pending_exits_free(Supervisor *sv)
{
    size_t i = 0;
    PendingExit *p;
    while (hashmap_next(sv->pending_exits, &i, NULL, (void **)&p))
        pending_exit_free(p);
    hashmap_free(sv->pending_exits);
    sv->pending_exits = NULL;
}

int supervisor__on_exit_fd(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
    Running *r = userdata;
    Supervisor *sv = r->sv;
    ExitStatus st;
    Error e = ERROR_INIT;
    (void)src;
    (void)fd;
    (void)revents;

    int k = runner_process_reap(r->proc, &st, &e);
    if (k == -EAGAIN)
        return 0;
    if (k < 0) {
        log_error("instance \"%s\": %s", r->id, error_message(&e));
        st = (ExitStatus){.kind = EXIT_KIND_SIGNALED, .code = SIGKILL, .exit_code = 128 + SIGKILL};
    }
    error_done(&e);
    hashmap_remove(sv->running, r->id);
    atomic_fetch_sub(&sv->n_running, 1);
    if (store_unavailable(supervisor__handle_exit(sv, r, &st)) && sv->pending_exits) {
        keep_exit(sv, r, &st);
        if (sv->draining && hashmap_size(sv->running) == 0)
            supervisor__drain_done(sv);
        return 0;
    }
    exit_done(sv, r);
    return 0;
}
