/* The supervisor owns every running instance process. It lives on the event loop thread: process
 * exits arrive through pidfds, timeouts and stop grace periods are loop timers, and nothing polls.
 * Other threads (HTTP handlers) hand it work with the supervisor_* calls below, which queue a job
 * and wake the loop through an eventfd; they return at once.
 *
 * Launch: the instance must be pending. The supervisor prepares
 * DATA_DIR/tenants/<tenant>/runs/<id>/ (input.json), issues a fresh launch token (only its hash is
 * stored) unless the caller issued one with the change that made the instance pending, starts the
 * program through the runner with the injected variables, and moves the instance to running. A
 * process that ends is reaped and its end recorded through instance_apply(): a stop, a timeout or a
 * cancel enforcement that the supervisor started wins over the exit status; otherwise exit 0
 * completes the instance (with output.json as output when present) and anything else fails it
 * (crashed). If the program reported its end itself first, that report stands and only the exit
 * code is added. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "../core/instance.h"
#include "../runner/runner.h"
#include "../store/store.h"

typedef struct Supervisor Supervisor;

typedef struct SupervisorSettings {
    const char *data_dir;
    RunnerNetwork network; /* the network policy of every launch */
    uint64_t log_limit;    /* bytes of output kept per launch */
    RunnerLimits limits;
    unsigned stop_grace_secs;   /* SIGTERM → SIGKILL for timeouts and shutdown */
    unsigned cancel_grace_secs; /* a cancel signal not acted on by then is enforced */
    unsigned max_auto_restarts; /* relaunches after a crash without a new checkpoint */
    unsigned sleep_suspend_ms;  /* injected: shorter durable sleeps stay in the process */
    unsigned launch_record_ms;  /* a launch is recorded by its program's first call or this late */
    unsigned heartbeat_timeout_secs; /* a running instance silent this long is killed; 0 = off */
    unsigned launch_retries;         /* retries of a launch that failed for a passing reason */
    bool skip_cert_verification;     /* injected as RUNTARA_SKIP_CERT_VERIFICATION=true if set */
    /* Several daemons on one database (README.md): this daemon's id, registered in the store
     * (store_set_owner(), store_daemon_register()) before supervisor_recover(); NULL: it alone
     * owns every instance (tests). Its lease of lease_secs is renewed every lease_secs / 4, and
     * the instances of daemons whose lease ended are taken over. */
    const char *daemon_id;
    const char *host; /* this machine's name, for a registration made again */
    unsigned lease_secs;
} SupervisorSettings;

typedef enum SupervisorChange {
    SUPERVISOR_CHANGED_STATUS, /* the instance's status (or its row) changed */
    SUPERVISOR_CHANGED_SIGNAL, /* a control signal is now pending for it (a drain's pause) */
} SupervisorChange;

/* Called (on the loop thread) after the supervisor changed an instance, so that whoever waits
 * on it (status or signal long-polls) looks again. */
typedef void (*SupervisorChange_cb)(const char *instance_key, SupervisorChange what,
                                    void *userdata);

/* The runners of a supervisor, by type: a NULL runner is not available, for the reason given. */
typedef struct SupervisorRunners {
    Runner *runners[_RUNNER_TYPE_MAX];         /* borrowed; one runner may serve several types */
    const char *unavailable[_RUNNER_TYPE_MAX]; /* why there is none, for the launch's error */
} SupervisorRunners;

int supervisor_new(sd_event *loop, const SupervisorRunners *runners, Store *store,
                   const SupervisorSettings *s, SupervisorChange_cb on_change, void *userdata,
                   Supervisor **ret, Error *e);
/** Free after supervisor_shutdown(); NULL-safe. Loop thread only. */
Supervisor *supervisor_free(Supervisor *sv);

/* Thread-safe; each queues a job for the loop and returns at once. */
/** Launch a pending instance. The launch issues its token and commits its hash before the
 *  process starts. */
void supervisor_launch(Supervisor *sv, const char *instance_key);
/** Launch a pending instance whose row got the hash of token (instance_new_token()) in the same
 *  commit that made it pending: the process starts without a commit of its own first. If the
 *  row holds another hash by then (it was stopped and resumed meanwhile), the launch issues its
 *  own token, as supervisor_launch() does. */
void supervisor_launch_issued(Supervisor *sv, const char *instance_key, const char *token);
/** Stop an instance: cause is CAUSE_STOPPED (operator stop) or CAUSE_CANCELLED. A running process
 *  gets SIGTERM, then SIGKILL after grace_secs (0 = SIGKILL at once); a pending or suspended
 *  instance ends at once. */
void supervisor_stop(Supervisor *sv, const char *instance_key, InstanceCause cause,
                     unsigned grace_secs);
/** A cancel signal was sent to a running instance: if it still runs after the cancel grace,
 *  stop it as cancelled. */
void supervisor_enforce_cancel(Supervisor *sv, const char *instance_key);
/** The program reported its end (completed, failed, paused, cancelled): if it has not exited after
 *  the stop grace, kill it. */
void supervisor_expect_exit(Supervisor *sv, const char *instance_key);
/** Wake the instance at `when` (CLOCK_REALTIME) if it is then still suspended with that deadline
 *  (a durable sleep, or the timeout of a signal wait): claim the wake and relaunch it. */
void supervisor_schedule_wake(Supervisor *sv, const char *instance_key, usec_t when);
/** A custom signal for wait_key was stored: if the instance is suspended waiting for it, wake and
 *  relaunch it now. */
void supervisor_signal_arrived(Supervisor *sv, const char *instance_key, const char *wait_key);
/** A launched program registered (or made another first call, which recorded its launch): its
 *  start is over, so the runner may ready the next launch now without slowing this one down
 *  (runner_prestart()), and its launch is recorded. */
void supervisor_registered(Supervisor *sv, const char *instance_key);
/** Number of instance processes running now. */
unsigned supervisor_running(Supervisor *sv);
/** The file holding the output of an instance's program (its run directory's stderr.log), for
 *  the logs endpoint. Any thread. Caller frees. */
char *supervisor_log_path(Supervisor *sv, const char *tenant_id, const char *instance_id);

/** Loop thread, once at start-up, before instances are started: take over from the previous
 *  daemon. Every unfinished instance this daemon owns (with daemon_id: those it had and those of
 *  no daemon; the lease timer it starts takes over those of dead daemons later) is reconciled with
 * what its run directory says:
 *  - a process still running (its shim outlived the daemon) is watched again, its timeout timer
 *    re-armed with the time left;
 *  - a process that ended while the daemon was down has its exit collected and recorded;
 *  - a running instance with neither died with the machine: it is suspended with reason
 *    environment_restart and relaunched from its checkpoints, unless it has been so relaunched
 *    max_auto_restarts times without saving a new checkpoint (then it stays suspended for an
 *    operator to resume);
 *  - pending instances are launched; those suspended by a drain (reason shutdown) are resumed.
 *  Processes of recently ended instances that are still exiting are watched too, so none is left
 *  unsupervised. */
void supervisor_recover(Supervisor *sv);

typedef void (*SupervisorDrained_cb)(void *userdata);

/** Loop thread, at SIGTERM: stop launching, ask every running instance to suspend at its next
 *  checkpoint (a pause signal whose acknowledgement suspends it with reason shutdown), and call
 *  done once none runs any more or grace_secs have passed, whichever is first. What is
 *  suspended so is relaunched at the next start (supervisor_recover). */
void supervisor_drain(Supervisor *sv, unsigned grace_secs, SupervisorDrained_cb done,
                      void *userdata);

/** Loop thread, at daemon stop: kill every running instance (SIGKILL via the shim), wait for the
 *  exits (bounded) and suspend them with reason shutdown, so they can be resumed later. */
void supervisor_shutdown(Supervisor *sv);
