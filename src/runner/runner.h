/* Runners start an instance's program isolated and report how it ended (DESIGN §5). One
 * interface, several implementations behind an ops table: native (a process under runtara-shim),
 * and later oci (a container via crun) and mock (tests).
 *
 * A launch yields a RunnerProcess with a file descriptor that becomes readable when the process
 * has ended; the event loop watches it (no polling) and then calls runner_process_reap(). Stop is
 * SIGTERM, a grace period kept by the caller's timer, then SIGKILL, always to the whole process
 * group. Not thread-safe: the event loop thread owns every RunnerProcess. */
#pragma once

#include <errno.h>
#include <stdint.h>
#include <sys/types.h>

#include "../base/error.h"
#include "exit-status.h"

typedef struct Runner Runner;
typedef struct RunnerProcess RunnerProcess;

/* The runners there are; an image's runner_type names one (parsed once, at the boundary). */
typedef enum RunnerType {
    RUNNER_OCI,    /* a container via an OCI runtime (crun) */
    RUNNER_NATIVE, /* a plain process under runtara-shim: trusted code only */
    RUNNER_MOCK,   /* runs nothing; tests */
    _RUNNER_TYPE_MAX,
    _RUNNER_TYPE_INVALID = -EINVAL,
} RunnerType;

const char *runner_type_to_string(RunnerType t);
RunnerType runner_type_from_string(const char *s);

typedef enum RunnerNetwork {
    RUNNER_NETWORK_NONE, /* loopback only: the instance API is reached through its socket */
    RUNNER_NETWORK_HOST, /* the host's network (a container shares the host's namespace) */
} RunnerNetwork;

typedef struct RunnerLimits {
    uint64_t memory_bytes;        /* oci: the container's memory (cgroup); 0 = unlimited */
    uint64_t cpu_millis;          /* oci: thousandths of a CPU per period; 0 = unlimited */
    uint64_t pids;                /* oci: processes and threads; 0 = unlimited */
    uint64_t address_space_bytes; /* rlimit; 0 = unlimited */
    uint64_t cpu_secs;            /* rlimit */
    uint64_t open_files;          /* rlimit */
} RunnerLimits;

/* A launch in logical terms: what to run, for which instance, with what. The runner decides what
 * its program sees: where the run directory and the instance API's socket are, its PATH and HOME,
 * and how the token reaches it (docs/operations.md#isolation). */
typedef struct RunnerLaunch {
    const char *instance_key; /* "<tenant>/<id>": names the launch (a container's id) */
    const char *tenant_id;
    const char *instance_id;
    const char *image_id;
    const char *executable;  /* the image's program, on the host (absolute) */
    const char *run_dir;     /* the run directory on the host (absolute), with input.json */
    int attempt;             /* the launch number, recorded with the process and its exit */
    const char *const *envp; /* the launch's variables, NULL-terminated: none names a path */
    const char *token;       /* the launch's token for the instance API */
    uint64_t log_limit;      /* bytes of output kept in stderr.log per launch */
    RunnerLimits limits;
    RunnerNetwork network;
} RunnerLaunch;

/* What every runner that runs programs needs to know of the daemon. */
typedef struct RunnerSettings {
    const char *shim_path;     /* runtara-shim */
    const char *server_socket; /* the instance API's unix socket */
} RunnerSettings;

/** The native runner: runs programs under the runtara-shim at s->shim_path. Each program gets a
 *  connection to the instance API's socket made ahead of its launch (RUNTARA_SERVER_FD,
 *  shim-launch.h), and its token through a pipe (RUNTARA_INSTANCE_TOKEN_FD), never in its
 *  environment, where another process of the same user could read it. */
int runner_native_new(const RunnerSettings *s, Runner **ret, Error *e);
/* The OCI runner's own settings. */
typedef struct OciMount OciMount; /* oci-spec.h */

typedef struct RunnerOciSettings {
    const char *runtime;      /* "crun" (default), "runc", or a path */
    const char *state_dir;    /* the runtime's --root: only the daemon's containers are there */
    const char *bundles_dir;  /* the images' read-only root file systems (BUNDLES_DIR) */
    const char *launches_dir; /* per-launch bundles (config.json), removed after each launch */
    const char *socket_dir;   /* the instance API's socket as containers reach it */
    bool systemd_cgroup;      /* USE_SYSTEMD_CGROUP */
    uint32_t uid, gid;        /* the containers' user: non-root; gid the daemon's, for its socket */
    const char *seccomp_bpf;  /* crun: the precompiled seccomp filter (OciRuntime), or NULL */
    const OciMount *mounts;   /* RUNTARA_OCI_MOUNTS (oci-spec.h) */
    size_t n_mounts;
} RunnerOciSettings;

/** The OCI runner: each program runs in a container of an OCI runtime (crun, runc), supervised by
 *  runtara-shim as a native program is (docs/operations.md#isolation). Does not check that the
 *  runtime works here: oci_runtime_check() (oci-runtime.h) does, at start-up. */
int runner_oci_new(const RunnerSettings *s, const RunnerOciSettings *o, Runner **ret, Error *e);
/** The instance API's socket is listening (again, after a restart): make it the one containers
 *  reach, running ones included (they see the directory it is linked into). */
int runner_oci_server_ready(Runner *r, Error *e);
/** Remove the containers a crash left behind: those of the daemon's state directory whose init has
 *  ended (the machine went down with them, or a shim died before it recorded them). Call after
 *  recovery, which kills the containers of shims it finds dead. Returns the number removed.
 *  Blocks: runs the runtime. */
int runner_oci_sweep(Runner *r, Error *e);
/** The mock runner for tests: runs nothing; see runner-mock.c for how the environment shapes
 *  the pretended exit. */
int runner_mock_new(Runner **ret);
Runner *runner_free(Runner *r);
RunnerType runner_type(Runner *r);

/** Start the launch's program. Fails synchronously (-ENOENT, -EACCES) when the program or the run
 *  directory cannot be used, with a message naming it. Uses the supervisor runner_prestart()
 *  readied, if there is one; otherwise starts one first (blocks for that process creation). */
int runner_launch(Runner *r, const RunnerLaunch *l, RunnerProcess **ret, Error *e);
/** Ready what the next launch needs in advance, so that only the program's own start is left on
 *  the launch's path: the native runner starts an idle runtara-shim that waits for its launch.
 *  0 when one is ready (now or already) or the runner readies nothing. Blocks for a process
 *  creation (milliseconds): call it when nothing more urgent waits. An idle shim exits by itself
 *  when the runner is freed or its process ends, so none is left behind. */
int runner_prestart(Runner *r, Error *e);
/** Create in dirfd, a new and empty run directory, the files a launch into it would create, so
 *  that the launch only opens them: on ext4 a file's creation costs several times its opening
 *  (docs/benchmarks.md). For the supervisor's spare run directory (src/sched/run-dir.h). 0 when
 *  done or when the runner creates nothing; on failure some of the files may exist. */
int runner_ready_dir(Runner *r, int dirfd, Error *e);
/** Find the process a launch into run_dir left running, typically by a daemon that is gone: 1
 *  with *ret and *ret_attempt (RunnerLaunch.attempt of that launch) if one still runs, 0 if none
 *  does (it ended: see runner_collect(); or it died with the machine). The process is watched
 *  and signalled like a launched one. */
int runner_attach(Runner *r, const char *run_dir, int *ret_attempt, RunnerProcess **ret, Error *e);
/** The exit status the last launch into run_dir left, without a process: 0 with *ret, -ENOENT
 *  if there is none (the process still runs, or never recorded one). */
int runner_collect(Runner *r, const char *run_dir, ExitStatus *ret, Error *e);
/** Readable once the process has ended. Owned by the RunnerProcess. */
int runner_process_fd(RunnerProcess *p);
pid_t runner_process_pid(RunnerProcess *p);
/** Ask the process group to stop: SIGTERM (graceful) or SIGKILL (forced). */
int runner_process_signal(RunnerProcess *p, int sig);
/** Collect the exit once the fd is readable: -EAGAIN while it still runs. */
int runner_process_reap(RunnerProcess *p, ExitStatus *ret, Error *e);
RunnerProcess *runner_process_free(RunnerProcess *p);

/** Locate a helper program: $env_name, else next to the running executable (a build directory,
 *  or bindir), else ../libexec from it (an installation). Caller frees; NULL if /proc/self/exe
 *  cannot be read. */
char *runner_find_program(const char *env_name, const char *name);
/** Locate runtara-shim: runner_find_program("RUNTARA_SHIM_PATH", "runtara-shim"). */
char *runner_find_shim(void);
