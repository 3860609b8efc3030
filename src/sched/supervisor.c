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
#include "../base/hashmap.h"
#include "../base/id.h"
#include "../base/log.h"
#include "../base/strbuf.h"
#include "run-dir.h"
#include "supervisor.h"
#include "wake-heap.h"

/* The runner readies the next launch once a launched program has registered, or this long after
 * the launch of one that does not (it does not use the instance API). */
#define PRESTART_AFTER_LAUNCH (50 * USEC_PER_MSEC)

typedef enum JobKind {
    JOB_LAUNCH,
    JOB_STOP,
    JOB_ENFORCE_CANCEL,
    JOB_EXPECT_EXIT,
    JOB_WAKE,
    JOB_SIGNAL_ARRIVED,
    JOB_REGISTERED,
} JobKind;

typedef struct Job {
    JobKind kind;
    char id[STORE_INSTANCE_KEY_MAX + 1]; /* the instance's key */
    InstanceCause cause;
    unsigned grace;
    usec_t when;              /* JOB_WAKE */
    char key[ID_MAX_LEN + 1]; /* JOB_SIGNAL_ARRIVED: the wait key */
    char token[65];           /* JOB_LAUNCH: the token issued with the row, or "" */
    struct Job *next;
} Job;

/* One running instance process. */
typedef struct Running {
    Supervisor *sv;
    char *id;
    RunnerProcess *proc;
    sd_event_source *exit_src;
    sd_event_source *timer;        /* timeout, cancel enforcement or stop grace: one at a time */
    sd_event_source *hb_timer;     /* the next heartbeat check */
    sd_event_source *record_timer; /* records the launch unless its program has (unrecorded) */
    char launch_token_hash[65];    /* the launch's token, as stored */
    bool unrecorded;               /* the launch may not be recorded yet */
    InstanceCause stop_cause;      /* what the supervisor is ending it for; _MAX = nothing */
    bool killing;                  /* SIGKILL sent */
    bool relaunch;                 /* a launch came while this process was still ending */
} Running;

struct Supervisor {
    sd_event *loop;
    Runner *runner;
    RunDirs *run_dirs;
    Store *store;
    SupervisorSettings s;
    SupervisorChange_cb on_change;
    void *userdata;

    Hashmap *running; /* id → Running; loop thread only */
    Hashmap *retries; /* id → failed launches so far (as a pointer-sized count); loop thread */
    atomic_uint n_running;

    WakeHeap *wakes; /* deadlines of suspended instances; loop thread only */
    bool draining;   /* at SIGTERM: nothing is launched any more */
    SupervisorDrained_cb drained;
    void *drained_userdata;
    sd_event_source *drain_timer;
    sd_event_source *wake_timer;
    usec_t wakes_not_before;   /* after a failed claim: retry no sooner (CLOCK_REALTIME) */
    sd_event_source *prestart; /* readies the runner for the next launch when the loop is idle */
    sd_event_source *prestart_timer; /* ... or this long after a launch whose program is silent */
    bool spare_failing;              /* the last try to make the spare run directory failed */

    pthread_mutex_t lock; /* guards the job queue */
    Job *head, **tail;
    int efd;
    sd_event_source *efd_src;
};

/* ---- jobs from other threads ---------------------------------------------------------------- */

/* Append the jobs first ... (*last == NULL) and wake the loop once. */
static void queue_list(Supervisor *sv, Job *first, Job **last)
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

static void changed(Supervisor *sv, const char *id)
{
    if (sv->on_change)
        sv->on_change(id, SUPERVISOR_CHANGED_STATUS, sv->userdata);
}

static void apply(Supervisor *sv, const char *id, InstanceCause cause, const InstanceOutcome *out)
{
    Error e = ERROR_INIT;
    if (instance_apply(sv->store, id, cause, out, NULL, &e) < 0)
        log_error("could not record the state of instance \"%s\": %s", id, error_message(&e));
    error_done(&e);
    changed(sv, id);
}

static void arm_timer(Running *r, unsigned secs, sd_event_time_handler_t cb)
{
    r->timer = sd_event_source_disable_unref(r->timer);
    if (sd_event_add_time_relative(r->sv->loop, &r->timer, CLOCK_MONOTONIC,
                                   (uint64_t)secs * USEC_PER_SEC, 10 * USEC_PER_MSEC, cb, r) < 0)
        log_error("could not arm a timer for instance \"%s\"", r->id);
}

static int on_kill_timer(sd_event_source *src, uint64_t usec, void *userdata)
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
static void terminate(Running *r, InstanceCause cause, unsigned grace)
{
    if (r->stop_cause == _INSTANCE_CAUSE_MAX)
        r->stop_cause = cause;
    if (grace == 0) {
        r->killing = true;
        (void)runner_process_signal(r->proc, SIGKILL);
        return;
    }
    (void)runner_process_signal(r->proc, SIGTERM);
    arm_timer(r, grace, on_kill_timer);
}

static int on_timeout(sd_event_source *src, uint64_t usec, void *userdata)
{
    Running *r = userdata;
    (void)src;
    (void)usec;
    log_notice("instance \"%s\" reached its timeout, stopping it", r->id);
    terminate(r, CAUSE_TIMED_OUT, r->sv->s.stop_grace_secs);
    return 0;
}

static int on_cancel_overdue(sd_event_source *src, uint64_t usec, void *userdata)
{
    Running *r = userdata;
    (void)src;
    (void)usec;
    log_notice("instance \"%s\" did not act on its cancel signal, stopping it", r->id);
    terminate(r, CAUSE_CANCELLED, r->sv->s.stop_grace_secs);
    return 0;
}

static void arm_heartbeat_check(Running *r, usec_t in);

static void record_launch(Running *r);

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
        record_launch(r);
    if (r->stop_cause != _INSTANCE_CAUSE_MAX ||
        store_instance_get(sv->store, r->id, NULL, &rec, NULL) < 0)
        return 0;
    usec_t limit = (usec_t)sv->s.heartbeat_timeout_secs * USEC_PER_SEC;
    usec_t last = rec.heartbeat_at > rec.started_at ? rec.heartbeat_at : rec.started_at;
    usec_t now = now_usec(CLOCK_REALTIME);
    bool running = strcmp(rec.status, "running") == 0;
    instance_record_done(&rec);
    if (!running)
        return 0; /* it reported its end or fell asleep: the exit is expected anyway */
    if (now < last + limit) {
        arm_heartbeat_check(r, last + limit - now);
        return 0;
    }
    log_notice("instance \"%s\" sent no heartbeat for %u s (RUNTARA_HEARTBEAT_TIMEOUT_SECS); "
               "killing it",
               r->id, sv->s.heartbeat_timeout_secs);
    terminate(r, CAUSE_HEARTBEAT_LOST, 0); /* presumed hung: SIGTERM would go unheard */
    return 0;
}

static void arm_heartbeat_check(Running *r, usec_t in)
{
    if (r->sv->s.heartbeat_timeout_secs == 0)
        return;
    r->hb_timer = sd_event_source_disable_unref(r->hb_timer);
    if (sd_event_add_time_relative(r->sv->loop, &r->hb_timer, CLOCK_MONOTONIC, in,
                                   10 * USEC_PER_MSEC, on_heartbeat_check, r) < 0)
        log_error("could not arm the heartbeat check of instance \"%s\"", r->id);
}

static Running *running_free(Running *r)
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

static void do_launch(Supervisor *sv, const char *id, const char *token);
static void drain_done(Supervisor *sv);

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
    else if (st->kind == EXIT_KIND_SIGNALED)
        snprintf(buf, n, "process was killed by signal %d (%s)", st->code, strsignal(st->code));
    else
        snprintf(buf, n, "process exited with status %d", st->code);
}

static void record_exit_event(Supervisor *sv, const char *id, const ExitStatus *st)
{
    json_t *p = json_pack("{s:s, s:i, s:I, s:I, s:I, s:I}", "kind", exit_kind_to_string(st->kind),
                          "exit_code", st->exit_code, "log_bytes", (json_int_t)st->log_bytes,
                          "log_dropped", (json_int_t)st->log_dropped, "cpu_usec",
                          (json_int_t)st->cpu_usec, "max_rss_bytes", (json_int_t)st->max_rss_bytes);
    char *text = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    (void)store_event_append(sv->store, id, "exited", NULL, text, NULL, NULL);
    free(text);
}

/* Record r's launch (running, event "started") unless its program has already, by its first call.
 * Nothing else moves the row while a launch is unrecorded: a stop or cancel reaches the process
 * (do_stop()), and its exit records the launch before the stop. So a row found no longer pending
 * is the program's own doing (it called, then reported an end or went to sleep), and the process
 * is left to exit. If the store fails, the exit, a heartbeat check or the first call tries again.
 */
static void record_launch(Running *r)
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
        changed(sv, r->id);
}

static int on_record_timer(sd_event_source *src, uint64_t usec, void *userdata)
{
    Running *r = userdata;
    (void)src;
    (void)usec;
    record_launch(r);
    return 0;
}

static void handle_exit(Supervisor *sv, Running *r, const ExitStatus *st)
{
    char why[320];
    InstanceCause cause = r->stop_cause;
    InstanceOutcome out = {.set_exit_code = true, .exit_code = st->exit_code};
    _cleanup_free_ char *output = NULL;

    if (r->unrecorded && !r->relaunch)
        record_launch(r); /* ended before it was: the order of events stays true */
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
            cause = CAUSE_EXITED;
            out.error = why;
        }
    }
    record_exit_event(sv, r->id, st);
    Error e = ERROR_INIT;
    int k = instance_apply(sv->store, r->id, cause, &out, NULL, &e);
    /* its end was already recorded (reported, acknowledged, or stopped): keep it and add the exit
     * code, unless the instance was resumed meanwhile (the code belongs to the old launch) */
    if (k == 0 && !r->relaunch)
        k = instance_record_exit_code(sv->store, r->id, st->exit_code, &e);
    if (k < 0)
        log_error("could not record the end of instance \"%s\": %s", r->id, error_message(&e));
    error_done(&e);
    log_info("instance \"%s\" ended: %s", r->id, why);
    changed(sv, r->id);
}

static int on_exit_fd(sd_event_source *src, int fd, uint32_t revents, void *userdata)
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
    handle_exit(sv, r, &st);
    if (r->relaunch) /* resumed before the old process was gone: launch now */
        do_launch(sv, r->id, NULL);
    running_free(r);
    if (sv->draining && hashmap_size(sv->running) == 0)
        drain_done(sv);
    return 0;
}

/* ---- launch --------------------------------------------------------------------------------- */

/* The environment of a launch: a base, the user's env, then the injected variables, which win. */
static char **build_env(Supervisor *sv, const InstanceRecord *rec, const char *run_dir,
                        const char *token)
{
    StrBuf b = STRBUF_INIT;
    size_t n = 0;
    char **envp = xcalloc(64 + 16, sizeof *envp);

    envp[n++] = xstrdup("PATH=/usr/local/bin:/usr/bin:/bin");
    envp[n++] = xasprintf("HOME=%s", run_dir);
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
    envp[n++] = xasprintf("RUNTARA_SERVER_ADDR=%s", sv->s.server_addr);
    envp[n++] = xasprintf("RUNTARA_INSTANCE_TOKEN=%s", token);
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
    strbuf_done(&b);
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
static Running *watch(Supervisor *sv, const char *id, RunnerProcess *proc, Error *e)
{
    Running *r = xcalloc(1, sizeof *r);
    *r = (Running){.sv = sv, .id = xstrdup(id), .proc = proc, .stop_cause = _INSTANCE_CAUSE_MAX};
    int k =
        sd_event_add_io(sv->loop, &r->exit_src, runner_process_fd(proc), EPOLLIN, on_exit_fd, r);
    if (k < 0) {
        (void)runner_process_signal(proc, SIGKILL);
        running_free(r);
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

    ImageRecord img;
    int k = store_image_get(sv->store, rec->image_id, rec->tenant_id, &img, e);
    if (k < 0)
        return error_prefix(e, "could not launch");
    exe = xasprintf("%s/images/%s/binary", sv->s.data_dir, img.image_id);
    image_record_done(&img);

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
        InstanceUpdate u = {.to_status = "pending", .token_hash = hash};
        k = store_instance_transition(sv->store, rec->instance_key, "pending", &u, e);
        if (k <= 0)
            return k < 0 ? k : error_set(e, -ESTALE, "instance is no longer pending");
    }

    char **envp = build_env(sv, rec, dir, token);
    RunnerSpec spec = {
        .instance_id = rec->instance_id,
        .executable = exe,
        .run_dir = dir,
        .envp = (const char *const *)envp,
        .log_limit = sv->s.log_limit,
        .limits = sv->s.limits,
        .attempt = rec->attempt + 1,
    };
    RunnerProcess *proc = NULL;
    k = runner_launch(sv->runner, &spec, &proc, e);
    strv_free(envp);
    if (k < 0)
        return k;

    Running *r = watch(sv, rec->instance_key, proc, e);
    if (!r)
        return e->code;
    memcpy(r->launch_token_hash, hash, sizeof hash);
    *ret = r;
    return 0;
}

/* Failures that another try may not meet: the program or its image is missing or unusable. */
static bool launch_error_is_permanent(int k)
{
    return k == -ENOENT || k == -EACCES || k == -EINVAL || k == -ENOEXEC || k == -EPERM;
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
    do_launch(t->sv, t->id, NULL);
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

static void do_launch(Supervisor *sv, const char *id, const char *token)
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
    if (strcmp(rec.status, "pending") != 0) {
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
            apply(sv, id, CAUSE_LAUNCH_FAILED, &out);
        }
        goto out;
    }
    forget_retries(sv, id);
    arm_timer(r, rec.timeout_secs, on_timeout);
    arm_heartbeat_check(r, (usec_t)sv->s.heartbeat_timeout_secs * USEC_PER_SEC);
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

/* ---- wakes ---------------------------------------------------------------------------------- */

/* The most wake-ups claimed with one commit. */
#define WAKES_PER_TURN 256
/* The most queued jobs (launches, mostly) run in one go before the loop looks at other work, the
 * wake timer first: claims stay on time while a burst of relaunches drains. */
#define JOBS_PER_TURN 1
/* The wake timer goes before jobs and exits (sd-event: lower is earlier). */
#define WAKE_PRIORITY (SD_EVENT_PRIORITY_NORMAL - 10)

static int on_wake_timer(sd_event_source *src, uint64_t usec, void *userdata);

/* Point the one wake timer at the earliest deadline. */
static void rearm_wakes(Supervisor *sv)
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
static void wake(Supervisor *sv, const char *id, usec_t deadline, const char *wait_key)
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
    changed(sv, id);
    do_launch(sv, id, NULL);
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
            changed(sv, claims[i].instance_key);
            Job *j = xcalloc(1, sizeof *j);
            *j = (Job){.kind = JOB_LAUNCH};
            snprintf(j->id, sizeof j->id, "%s", claims[i].instance_key);
            *tail = j;
            tail = &j->next;
        }
        free((char *)claims[i].instance_key);
    }
    if (first)
        queue_list(sv, first, tail); /* one hand-over for the burst */
    if (claimed > 0)
        log_info("woke %zu instance%s, at most %.1f ms after the deadline", claimed,
                 claimed == 1 ? "" : "s", (double)worst / 1000.0);
    rearm_wakes(sv);
    return 0;
}

/* Fill the heap from the store: every suspended instance with a deadline. */
static void load_wakes(Supervisor *sv)
{
    int64_t after = 0;
    for (bool more = true; more;) {
        InstanceWake *w = NULL;
        size_t n = 0;
        Error e = ERROR_INIT;
        if (store_instance_list_wakes(sv->store, after, STORE_LIST_MAX, &w, &n, &more, &e) < 0) {
            log_error("could not load the wake-ups: %s", error_message(&e));
            error_done(&e);
            break;
        }
        for (size_t i = 0; i < n; i++)
            wake_heap_push(sv->wakes, w[i].instance_key, w[i].sleep_until);
        after = n > 0 ? w[n - 1].seq : after;
        instance_wakes_free(w, n);
    }
    rearm_wakes(sv);
}

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
    _cleanup_free_ char *type = NULL, *payload = NULL;
    if (store_signal_get(sv->store, id, &type, &payload, NULL) > 0 &&
        instance_signal_is_drain(type, payload))
        (void)store_signal_ack(sv->store, id, "pause", NULL);
    if (instance_apply(sv->store, id, CAUSE_RESUMED, NULL, NULL, NULL) > 0) {
        changed(sv, id);
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
    changed(sv, id);
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
    handle_exit(sv, &gone, st);
}

/* Watch a process found still running. `attempt` is the launch it belongs to. */
static void reattach(Supervisor *sv, const InstanceRecord *rec, InstanceStatus status,
                     RunnerProcess *proc, int attempt, Recovery *rc)
{
    const char *id = rec->instance_key;
    bool launching = status == INSTANCE_PENDING && attempt == rec->attempt + 1;
    bool current = launching || (status == INSTANCE_RUNNING && attempt == rec->attempt);
    Error e = ERROR_INIT;
    Running *r = watch(sv, id, proc, &e);
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
        arm_timer(r, sv->s.stop_grace_secs, on_kill_timer);
        return;
    }
    if (launching) /* launched just before the daemon went */
        apply(sv, id, CAUSE_LAUNCHED, NULL);
    arm_timer(r, launching ? rec->timeout_secs : timeout_left(rec), on_timeout);
    arm_heartbeat_check(r, (usec_t)sv->s.heartbeat_timeout_secs * USEC_PER_SEC);
    _cleanup_free_ char *signal = NULL;
    if (store_signal_get(sv->store, id, &signal, NULL, NULL) > 0 && strcmp(signal, "cancel") == 0)
        arm_timer(r, sv->s.cancel_grace_secs, on_cancel_overdue);
    log_info("instance \"%s\" is still running (pid %d); watching it again", id,
             (int)runner_process_pid(proc));
}

static void recover_one(Supervisor *sv, const InstanceRecord *rec, Recovery *rc)
{
    const char *id = rec->instance_key;
    InstanceStatus status = instance_status_from_string(rec->status);
    bool live = status == INSTANCE_PENDING || status == INSTANCE_RUNNING;
    /* a launch whose exit is not recorded may still run, or have ended while no daemon watched,
     * whatever the row says: a process that reported its end or fell asleep exits a moment
     * later, or after the stop grace */
    bool unrecorded = !rec->has_exit_code && rec->attempt > 0;
    _cleanup_free_ char *dir = run_dirs_path(sv->run_dirs, rec->tenant_id, rec->instance_id);
    Error e = ERROR_INIT;

    if (hashmap_get(sv->running, id))
        return; /* taken over by the pending pass, which recorded its launch: now it runs */

    if (live || unrecorded) {
        RunnerProcess *proc = NULL;
        int attempt = 0;
        int k = runner_attach(sv->runner, dir, &attempt, &proc, &e);
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
    bool ended = (live || unrecorded) && runner_collect(sv->runner, dir, &st, NULL) == 0;
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
            apply(sv, id, CAUSE_LAUNCHED, NULL); /* launched and ended while the daemon was gone */
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
            wake(sv, id, 0, rec->wait_key); /* the signal came as the daemon went */
            rc->launched++;
        }
    }
}

/* Reconcile every instance of one status (exit_unrecorded: only those whose latest launch has no
 * exit recorded, the only ones of a terminal status that can need anything). */
static void recover_status(Supervisor *sv, const char *status, bool exit_unrecorded, Recovery *rc)
{
    InstanceFilter f = {.status = status, .exit_unrecorded = exit_unrecorded, .limit = 500};
    for (;;) {
        InstanceRecord *rows = NULL;
        size_t n = 0;
        bool more = false;
        int64_t last = 0;
        Error e = ERROR_INIT;
        if (store_instance_list(sv->store, &f, &rows, &n, &more, NULL, &last, &e) < 0) {
            log_error("could not list %s instances to recover: %s", status, error_message(&e));
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

void supervisor_recover(Supervisor *sv)
{
    Recovery rc = {0};
    usec_t t0 = now_usec(CLOCK_MONOTONIC);
    /* pending first: instances this pass moves to pending are launched once, not twice */
    recover_status(sv, "pending", false, &rc);
    recover_status(sv, "running", false, &rc);
    recover_status(sv, "suspended", false, &rc);
    recover_status(sv, "completed", true, &rc);
    recover_status(sv, "failed", true, &rc);
    recover_status(sv, "cancelled", true, &rc);
    load_wakes(sv);
    if (rc.reattached + rc.collected + rc.restarted + rc.held + rc.launched > 0)
        log_notice("recovered in %llu ms: %u processes still running, %u exits collected, %u "
                   "instances relaunched after a crash, %u held at the restart limit, %u launched",
                   (unsigned long long)((now_usec(CLOCK_MONOTONIC) - t0) / USEC_PER_MSEC),
                   rc.reattached, rc.collected, rc.restarted, rc.held, rc.launched);
}

/* ---- the other jobs ------------------------------------------------------------------------- */

static void do_stop(Supervisor *sv, const Job *j)
{
    Running *r = hashmap_get(sv->running, j->id);
    if (r) {
        terminate(r, j->cause, j->grace);
        return;
    }
    apply(sv, j->id, j->cause, NULL); /* pending or suspended: nothing to kill */
}

static void run_job(Supervisor *sv, const Job *j)
{
    Running *r = hashmap_get(sv->running, j->id);
    switch (j->kind) {
    case JOB_LAUNCH:
        do_launch(sv, j->id, j->token[0] ? j->token : NULL);
        break;
    case JOB_STOP:
        do_stop(sv, j);
        break;
    case JOB_ENFORCE_CANCEL:
        if (r && r->stop_cause == _INSTANCE_CAUSE_MAX)
            arm_timer(r, j->grace, on_cancel_overdue);
        break;
    case JOB_EXPECT_EXIT:
        if (r && r->stop_cause == _INSTANCE_CAUSE_MAX)
            arm_timer(r, j->grace, on_kill_timer);
        break;
    case JOB_WAKE:
        log_debug("wake of instance \"%s\" scheduled in %lld ms", j->id,
                  (long long)((int64_t)j->when - (int64_t)now_usec(CLOCK_REALTIME)) / 1000);
        wake_heap_push(sv->wakes, j->id, j->when);
        rearm_wakes(sv);
        break;
    case JOB_SIGNAL_ARRIVED:
        wake(sv, j->id, 0, j->key);
        break;
    case JOB_REGISTERED:
        if (r && r->unrecorded) { /* the register recorded the launch, or found it recorded */
            r->unrecorded = false;
            r->record_timer = sd_event_source_disable_unref(r->record_timer);
        }
        (void)sd_event_source_set_enabled(sv->prestart, SD_EVENT_ONESHOT);
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
    if (runner_prestart(sv->runner, &e) < 0)
        log_warning("could not ready the runner for the next launch, ignoring: %s",
                    error_message(&e));
    error_done(&e);
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

int supervisor_new(sd_event *loop, Runner *runner, Store *store, const SupervisorSettings *s,
                   SupervisorChange_cb on_change, void *userdata, Supervisor **ret, Error *e)
{
    Supervisor *sv = xcalloc(1, sizeof *sv);
    *sv = (Supervisor){.loop = sd_event_ref(loop),
                       .runner = runner,
                       .store = store,
                       .s = *s,
                       .on_change = on_change,
                       .userdata = userdata};
    sv->s.data_dir = xstrdup(s->data_dir);
    sv->s.server_addr = xstrdup(s->server_addr);
    sv->run_dirs = run_dirs_new(s->data_dir, runner);
    sv->running = hashmap_new();
    sv->retries = hashmap_new();
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

static void drain_done(Supervisor *sv)
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
    drain_done(sv);
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
        _cleanup_free_ char *type = NULL;
        int k = r->stop_cause != _INSTANCE_CAUSE_MAX
                    ? 1
                    : store_signal_get(sv->store, r->id, &type, NULL, NULL);
        if (k < 0 || (k > 0 && (!type || strcmp(type, "resume") != 0)))
            continue; /* ending already, or a cancel or pause is on its way */
        if (store_signal_send(sv->store, r->id, "pause", INSTANCE_DRAIN_PAYLOAD, NULL) > 0) {
            asked++;
            if (sv->on_change) /* a program parked in GET /signals hears it now */
                sv->on_change(r->id, SUPERVISOR_CHANGED_SIGNAL, sv->userdata);
        }
    }
    log_notice("draining: %u of %zu running instances asked to suspend at their next checkpoint",
               asked, hashmap_size(sv->running));
    if (hashmap_size(sv->running) == 0 || grace_secs == 0) {
        drain_done(sv);
        return;
    }
    if (sd_event_add_time_relative(sv->loop, &sv->drain_timer, CLOCK_MONOTONIC,
                                   (uint64_t)grace_secs * USEC_PER_SEC, 10 * USEC_PER_MSEC,
                                   on_drain_timer, sv) < 0)
        drain_done(sv);
}

void supervisor_shutdown(Supervisor *sv)
{
    size_t i = 0;
    Running *r;
    while (hashmap_next(sv->running, &i, NULL, (void **)&r))
        terminate(r, CAUSE_SHUTDOWN, 0);

    usec_t deadline = now_usec(CLOCK_MONOTONIC) + 5 * USEC_PER_SEC;
    while (hashmap_size(sv->running) > 0 && now_usec(CLOCK_MONOTONIC) < deadline) {
        i = 0;
        hashmap_next(sv->running, &i, NULL, (void **)&r);
        struct pollfd p = {runner_process_fd(r->proc), POLLIN, 0};
        if (poll(&p, 1, 100) == 1)
            on_exit_fd(NULL, p.fd, POLLIN, r);
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
        running_free(r);
    hashmap_free(sv->running);
    hashmap_free(sv->retries);
    sd_event_source_disable_unref(sv->wake_timer);
    sd_event_source_disable_unref(sv->drain_timer);
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
    free((char *)sv->s.server_addr);
    free(sv);
    return NULL;
}
