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

static void record_exit_event(Supervisor *sv, const char *id, const ExitStatus *st)
{
    json_t *p =
        json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:b}", "kind", exit_kind_to_string(st->kind),
                  "exit_code", st->exit_code, "log_bytes", (json_int_t)st->log_bytes, "log_dropped",
                  (json_int_t)st->log_dropped, "cpu_usec", (json_int_t)st->cpu_usec,
                  "max_rss_bytes", (json_int_t)st->max_rss_bytes, "memory_peak_bytes",
                  (json_int_t)st->memory_peak_bytes, "oom", st->oom);
    char *text = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    (void)store_event_append(sv->store, id, "exited", NULL, text, NULL, NULL);
    free(text);
}
void supervisor__handle_exit(Supervisor *sv, Running *r, const ExitStatus *st)
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

    if (r->unrecorded && !r->relaunch)
        supervisor__record_launch(r); /* ended before it was: the order of events stays true */
    describe_exit(st, why, sizeof why);
    if (cause == _INSTANCE_CAUSE_MAX) {
        if (st->kind == EXIT_KIND_EXITED && st->code == 0) {
            InstanceRecord rec;
            cause = CAUSE_REPORTED_DONE;
            if (store_instance_get(sv->store, r->id, NULL, &rec, NULL) >= 0) {
                output = read_output_file(sv, &rec);
                instance_record_done(&rec);
            }
            out.output = output ? output : "null";
        } else {
            cause = st->oom ? CAUSE_OUT_OF_MEMORY : CAUSE_EXITED;
            out.error = why;
        }
    }
    record_exit_event(sv, r->id, st);
    Error e = ERROR_INIT;
    int k = instance_apply(sv->store, r->id, cause, &out, NULL, &e);
    /* its end was already recorded (reported, acknowledged, or stopped): keep it and add the exit
     * code, unless the instance was resumed meanwhile (the code belongs to the old launch) */
    if (k == 0 && !r->relaunch)
        k = instance_record_exit_code(sv->store, r->id, st->exit_code, out.memory_peak_bytes,
                                      out.cpu_usec, &e);
    if (k < 0)
        log_error("could not record the end of instance \"%s\": %s", r->id, error_message(&e));
    error_done(&e);
    log_info("instance \"%s\" ended: %s", r->id, why);
    supervisor__changed(sv, r->id);
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
    supervisor__handle_exit(sv, r, &st);
    if (r->relaunch) /* resumed before the old process was gone: launch now */
        supervisor__do_launch(sv, r->id, NULL);
    supervisor__running_free(r);
    if (sv->draining && hashmap_size(sv->running) == 0)
        supervisor__drain_done(sv);
    return 0;
}
