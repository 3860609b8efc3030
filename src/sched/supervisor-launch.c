/* Launches: a pending instance's run directory, token, environment and process, the retries of a
 * launch that failed for a passing reason, and the record of a launch (src/sched/README.md). */
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
#include "../core/image-registry.h"
#include "supervisor-internal.h"

/* Record r's launch (running, event "started") unless its program has already, by its first call.
 * Nothing else moves the row while a launch is unrecorded: a stop or cancel reaches the process
 * (do_stop()), and its exit records the launch before the stop. So a row found no longer pending
 * is the program's own doing (it called, then reported an end or went to sleep), and the process
 * is left to exit. If the store fails, the exit, a heartbeat check or the first call tries again.
 */
void supervisor__record_launch(Running *r)
{
    Supervisor *sv = r->sv;
    InstanceOutcome out = {.launch_token_hash = r->launch_token_hash};
    Error e = ERROR_INIT;
    r->record_timer = sd_event_source_disable_unref(r->record_timer);
    int k = instance_apply(sv->store, r->id, CAUSE_LAUNCHED, &out, NULL, &e);
    if (k < 0) {
        log_error("could not record the launch of instance \"%s\": %s", r->id, error_message(&e));
        error_done(&e);
        return;
    }
    r->unrecorded = false;
    if (k > 0)
        supervisor__changed(sv, r->id);
}

static int on_record_timer(sd_event_source *src, uint64_t usec, void *userdata)
{
    Running *r = userdata;
    (void)src;
    (void)usec;
    supervisor__record_launch(r);
    return 0;
}

/* ---- launch --------------------------------------------------------------------------------- */

/* The variables of a launch: the user's env, then the injected ones, which win. None names a path
 * or carries the token: the runner adds those as its program sees them (RunnerLaunch). */
static char **build_env(Supervisor *sv, const InstanceRecord *rec)
{
    size_t n = 0;
    char **envp = xcalloc(64 + 16, sizeof *envp);

    json_error_t jerr;
    json_t *user = json_loads(rec->env, 0, &jerr);
    const char *k;
    json_t *v;
    json_object_foreach(user, k, v)
    {
        if (n >= 64 || !json_is_string(v) || strncmp(k, "RUNTARA_", 8) == 0)
            continue;
        envp[n++] = xasprintf("%s=%s", k, json_string_value(v));
    }
    json_decref(user);
    envp[n++] = xasprintf("RUNTARA_INSTANCE_ID=%s", rec->instance_id);
    envp[n++] = xasprintf("RUNTARA_TENANT_ID=%s", rec->tenant_id);
    envp[n++] = xasprintf("RUNTARA_ATTEMPT=%d", rec->attempt + 1);
    if (rec->checkpoint_id)
        envp[n++] = xasprintf("RUNTARA_CHECKPOINT_ID=%s", rec->checkpoint_id);
    envp[n++] = xasprintf("RUNTARA_SLEEP_SUSPEND_MS=%u", sv->s.sleep_suspend_ms);
    if (sv->s.skip_cert_verification) /* as the original: present only when the daemon has it */
        envp[n++] = xstrdup("RUNTARA_SKIP_CERT_VERIFICATION=true");
    if (sv->s.heartbeat_timeout_secs > 0) /* three beats per timeout: one lost is no harm */
        envp[n++] =
            xasprintf("RUNTARA_HEARTBEAT_INTERVAL_MS=%u", sv->s.heartbeat_timeout_secs * 1000 / 3);
    envp[n] = NULL;
    return envp;
}

static void strv_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* Take charge of an instance's process: watch for its exit and count it as running. On failure
 * the process is killed. */
Running *supervisor__watch(Supervisor *sv, const char *id, RunnerProcess *proc, Error *e)
{
    Running *r = xcalloc(1, sizeof *r);
    *r = (Running){.sv = sv, .id = xstrdup(id), .proc = proc, .stop_cause = _INSTANCE_CAUSE_MAX};
    int k = sd_event_add_io(sv->loop, &r->exit_src, runner_process_fd(proc), EPOLLIN,
                            supervisor__on_exit_fd, r);
    if (k < 0) {
        (void)runner_process_signal(proc, SIGKILL);
        supervisor__running_free(r);
        error_set(e, k, "could not watch the process: %s", strerror(-k));
        return NULL;
    }
    hashmap_put(sv->running, r->id, r);
    atomic_fetch_add(&sv->n_running, 1);
    return r;
}

/* Start the process of a pending instance; on success *ret is the new Running. issued: the
 * token whose hash the row got with the change that made it pending, or NULL. */
static int start_process(Supervisor *sv, const InstanceRecord *rec, const char *issued,
                         Running **ret, Error *e)
{
    _cleanup_free_ char *dir = NULL, *exe = NULL;
    char token[65], hash[65];

    Runner *runner = supervisor__runner_of(sv, rec, e);
    if (!runner)
        return e->code;
    ImageRecord img;
    int k = store_image_get(sv->store, rec->image_id, rec->tenant_id, &img, e);
    if (k < 0)
        return error_prefix(e, "could not launch");
    k = image_file_ensure(sv->store, sv->s.data_dir, &img, &exe, e);
    image_record_done(&img);
    if (k < 0)
        return error_prefix(e, "could not launch");

    k = run_dirs_prepare(sv->run_dirs, rec->tenant_id, rec->instance_id, rec->input, &dir, e);
    if (k < 0)
        return k;
    if (issued && instance_token_is(rec->token_hash, issued)) {
        /* durable already, with the row: no commit before the process starts (README.md) */
        snprintf(token, sizeof token, "%s", issued);
        snprintf(hash, sizeof hash, "%s", rec->token_hash);
    } else {
        k = instance_new_token(token, hash);
        if (k < 0)
            return error_set(e, k, "could not create a launch token: %s", strerror(-k));
        InstanceUpdate u = {.to_status = INSTANCE_PENDING, .token_hash = hash};
        k = store_instance_transition(sv->store, rec->instance_key, INSTANCE_PENDING, &u, e);
        if (k <= 0)
            return k < 0 ? k : error_set(e, -ESTALE, "instance is no longer pending");
    }

    char **envp = build_env(sv, rec);
    RunnerLaunch launch = {
        .instance_key = rec->instance_key,
        .tenant_id = rec->tenant_id,
        .instance_id = rec->instance_id,
        .image_id = rec->image_id,
        .executable = exe,
        .run_dir = dir,
        .attempt = rec->attempt + 1,
        .envp = (const char *const *)envp,
        .token = token,
        .log_limit = sv->s.log_limit,
        .limits = sv->s.limits,
        .network = sv->s.network,
    };
    RunnerProcess *proc = NULL;
    k = runner_launch(runner, &launch, &proc, e);
    strv_free(envp);
    explicit_bzero(token, sizeof token);
    if (k < 0)
        return k;

    Running *r = supervisor__watch(sv, rec->instance_key, proc, e);
    if (!r)
        return e->code;
    memcpy(r->launch_token_hash, hash, sizeof hash);
    *ret = r;
    return 0;
}

/* Failures that another try may not meet: the program or its image is missing or unusable. */
static bool launch_error_is_permanent(int k)
{
    return k == -ENOENT || k == -EACCES || k == -EINVAL || k == -ENOEXEC || k == -EPERM ||
           k == -ENXIO; /* (its runner is not available here) */
}

static void forget_retries(Supervisor *sv, const char *id)
{
    (void)hashmap_remove(sv->retries, id);
}

typedef struct Retry {
    Supervisor *sv;
    char *id;
} Retry;

static void retry_free(void *userdata)
{
    Retry *t = userdata;
    free(t->id);
    free(t);
}

static int on_retry(sd_event_source *src, uint64_t usec, void *userdata)
{
    Retry *t = userdata;
    (void)src;
    (void)usec;
    supervisor__do_launch(t->sv, t->id, NULL);
    return 0;
}

/* A launch failed with k: unless the failure is permanent or the retries are used up, leave the
 * instance pending and launch it again after a backoff (250 ms doubling, at most 30 s). Returns
 * whether a retry was scheduled. */
static bool retry_later(Supervisor *sv, const char *id, int k, const char *why)
{
    uintptr_t n = (uintptr_t)hashmap_get(sv->retries, id);
    if (launch_error_is_permanent(k) || n >= sv->s.launch_retries) {
        forget_retries(sv, id);
        return false;
    }
    usec_t backoff = 250 * USEC_PER_MSEC << (n < 7 ? n : 7);
    if (backoff > 30 * USEC_PER_SEC)
        backoff = 30 * USEC_PER_SEC;
    Retry *t = xcalloc(1, sizeof *t);
    *t = (Retry){.sv = sv, .id = xstrdup(id)};
    sd_event_source *src = NULL;
    if (sd_event_add_time_relative(sv->loop, &src, CLOCK_MONOTONIC, backoff, 10 * USEC_PER_MSEC,
                                   on_retry, t) < 0) {
        retry_free(t);
        return false;
    }
    (void)sd_event_source_set_destroy_callback(src, retry_free);
    (void)sd_event_source_set_floating(src, true);
    sd_event_source_unref(src);
    hashmap_put(sv->retries, id, (void *)(n + 1));
    log_warning("could not launch instance \"%s\" (try %u of %u): %s; trying again in %llu ms", id,
                (unsigned)n + 1, sv->s.launch_retries + 1, why,
                (unsigned long long)(backoff / USEC_PER_MSEC));
    return true;
}

void supervisor__do_launch(Supervisor *sv, const char *id, const char *token)
{
    InstanceRecord rec;
    Error e = ERROR_INIT;
    Running *old = hashmap_get(sv->running, id);

    if (old) {
        /* the previous launch has reported its end but not exited yet: one process per instance,
         * so the new launch waits for the old exit */
        old->relaunch = true;
        return;
    }
    if (sv->draining)
        return; /* stays pending: the next start launches it */
    if (store_instance_get(sv->store, id, NULL, &rec, NULL) < 0)
        return;
    if (rec.status != INSTANCE_PENDING) {
        instance_record_done(&rec);
        return;
    }
    Running *r = NULL;
    int k = FAULT_FAIL("launch") ? error_set(&e, -EAGAIN, "could not launch (fault injection)")
                                 : start_process(sv, &rec, token, &r, &e);
    if (k == -ESTALE)
        goto out;
    if (k < 0) {
        if (!retry_later(sv, id, k, error_message(&e))) {
            log_warning("could not launch instance \"%s\": %s", id, error_message(&e));
            InstanceOutcome out = {.error = error_message(&e)};
            supervisor__apply(sv, id, CAUSE_LAUNCH_FAILED, &out);
        }
        goto out;
    }
    forget_retries(sv, id);
    supervisor__arm_timer(r, rec.timeout_secs, supervisor__on_timeout);
    supervisor__arm_heartbeat_check(r, (usec_t)sv->s.heartbeat_timeout_secs * USEC_PER_SEC);
    log_info("instance \"%s\" launched (attempt %d, pid %d)", id, rec.attempt + 1,
             (int)runner_process_pid(r->proc));
    /* The launch is recorded (running, event "started") by the program's first call to the
     * instance API, by this timer, or at the exit, whichever comes first: not at once, where the
     * commit would compete with the program's start (README.md). */
    r->unrecorded = true;
    if (sv->s.launch_record_ms == 0 ||
        sd_event_add_time_relative(sv->loop, &r->record_timer, CLOCK_MONOTONIC,
                                   (uint64_t)sv->s.launch_record_ms * USEC_PER_MSEC, USEC_PER_MSEC,
                                   on_record_timer, r) < 0)
        (void)on_record_timer(NULL, 0, r);
    /* the next shim is started once this program has registered (JOB_REGISTERED), not now: two
     * process starts at once would slow this one down on a small machine */
    (void)sd_event_source_set_time_relative(sv->prestart_timer, PRESTART_AFTER_LAUNCH);
    (void)sd_event_source_set_enabled(sv->prestart_timer, SD_EVENT_ONESHOT);
out:
    instance_record_done(&rec);
    error_done(&e);
}
