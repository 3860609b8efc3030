/* The contract between the files of the supervisor (STYLE R2): supervisor.c (jobs from other
 * threads, stops and timers, drain and shutdown), supervisor-launch.c (starting a pending
 * instance's process and recording its launch), supervisor-exit.c (recording how a process
 * ended), supervisor-wake.c (the wake timer and its claims) and supervisor-recover.c (start-up
 * reconciliation). Everything here runs on the event loop thread, but the job queue. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>

#include "../base/hashmap.h"
#include "../base/id.h"
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
    JOB_FENCE,   /* the lease was lost (supervisor__fence()) */
    JOB_ADOPTED, /* an instance taken over from a dead daemon (supervisor__adopted()) */
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
    bool disowned; /* its instance went to another daemon: its end is not this one's to record */
} Running;

struct Supervisor {
    sd_event *loop;
    /* the runner of each type, or NULL if it is not available here (unavailable says why) */
    Runner *runners[_RUNNER_TYPE_MAX];
    char *unavailable[_RUNNER_TYPE_MAX];
    RunDirs *run_dirs;
    Store *store;
    SupervisorSettings s;
    SupervisorChange_cb on_change;
    void *userdata;

    Hashmap *running; /* id → Running; loop thread only */
    Hashmap *retries; /* id → failed launches so far (as a pointer-sized count); loop thread */
    Hashmap *pending_exits; /* id → ends the store could not record yet (supervisor-exit.c) */
    atomic_uint n_running;

    WakeHeap *wakes;      /* deadlines of suspended instances; loop thread only */
    atomic_bool draining; /* at SIGTERM: nothing is launched any more (read by the lease) */
    SupervisorDrained_cb drained;
    void *drained_userdata;
    sd_event_source *drain_timer;
    sd_event_source *wake_timer;
    usec_t wakes_not_before;   /* after a failed claim: retry no sooner (CLOCK_REALTIME) */
    sd_event_source *prestart; /* readies the runner for the next launch when the loop is idle */
    sd_event_source *prestart_timer; /* ... or this long after a launch whose program is silent */
    bool spare_failing;              /* the last try to make the spare run directory failed */
    /* the thread that renews this daemon's lease and takes over others' (supervisor-recover.c) */
    pthread_t lease_thread;
    pthread_mutex_t lease_lock;
    pthread_cond_t lease_cond; /* lease_stop was set */
    bool lease_stop, lease_started;

    pthread_mutex_t lock; /* guards the job queue */
    Job *head, **tail;
    int efd;
    sd_event_source *efd_src;
};

/* The most queued jobs (launches, mostly) run in one go before the loop looks at other work, the
 * wake timer first: claims stay on time while a burst of relaunches drains. */
#define JOBS_PER_TURN 1

/* supervisor.c */
void supervisor__queue_list(Supervisor *sv, Job *first, Job **last);
void supervisor__changed(Supervisor *sv, const char *id);
void supervisor__apply(Supervisor *sv, const char *id, InstanceCause cause,
                       const InstanceOutcome *out);
void supervisor__arm_timer(Running *r, unsigned secs, sd_event_time_handler_t cb);
int supervisor__on_kill_timer(sd_event_source *src, uint64_t usec, void *userdata);
int supervisor__on_timeout(sd_event_source *src, uint64_t usec, void *userdata);
int supervisor__on_cancel_overdue(sd_event_source *src, uint64_t usec, void *userdata);
/** Ask the process to end for `cause`: SIGTERM now, SIGKILL after grace (at once if 0). */
void supervisor__terminate(Running *r, InstanceCause cause, unsigned grace);
void supervisor__arm_heartbeat_check(Running *r, usec_t in);
Running *supervisor__running_free(Running *r);
void supervisor__drain_done(Supervisor *sv);

/** The runner of rec's launches, or NULL with e set if it is not available on this host. */
Runner *supervisor__runner_of(Supervisor *sv, const InstanceRecord *rec, Error *e);

/* supervisor-launch.c */
/** Launch the pending instance id (token: the one issued with its row, or NULL). */
void supervisor__do_launch(Supervisor *sv, const char *id, const char *token);
/** Take charge of an instance's process: watch for its exit and count it as running. On failure
 *  the process is killed. */
Running *supervisor__watch(Supervisor *sv, const char *id, RunnerProcess *proc, Error *e);
void supervisor__record_launch(Running *r);

/* supervisor-exit.c */
/** Record how r's process ended. 0, or what store_unavailable() says may pass (nothing was
 *  recorded then, but maybe its exit event: recorded once per launch). */
int supervisor__handle_exit(Supervisor *sv, Running *r, const ExitStatus *st);
void supervisor__pending_exits_free(Supervisor *sv);
int supervisor__on_exit_fd(sd_event_source *src, int fd, uint32_t revents, void *userdata);

/* supervisor-wake.c */
/** Point the one wake timer at the earliest deadline. */
void supervisor__rearm_wakes(Supervisor *sv);
void supervisor__wake(Supervisor *sv, const char *id, usec_t deadline, const char *wait_key);
/** Fill the heap from the store: every suspended instance with a deadline (of this daemon's). */
void supervisor__load_wakes(Supervisor *sv);

/* supervisor-recover.c */
/** Start renewing this daemon's lease (with s.daemon_id), on a thread of its own. */
void supervisor__lease_start(Supervisor *sv);
/** Stop renewing it (the lease then ends unless the daemon unregisters); idempotent. */
void supervisor__lease_stop(Supervisor *sv);
/** On the loop: kill the processes of instances that other daemons took over (the lease was
 *  lost). */
void supervisor__fence(Supervisor *sv);
/** On the loop: reconcile the instance key, just taken over from a dead daemon. */
void supervisor__adopted(Supervisor *sv, const char *key);
