/* Runners start an instance's program isolated and report how it ended (DESIGN §5). One
 * interface, several implementations behind an ops table: native (a process under runtara-shim),
 * and later oci (a container via crun) and mock (tests).
 *
 * A launch yields a RunnerProcess with a file descriptor that becomes readable when the process
 * has ended; the event loop watches it (no polling) and then calls runner_process_reap(). Stop is
 * SIGTERM, a grace period kept by the caller's timer, then SIGKILL, always to the whole process
 * group. Not thread-safe: the event loop thread owns every RunnerProcess. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "../base/error.h"
#include "exit-status.h"

typedef struct Runner Runner;
typedef struct RunnerProcess RunnerProcess;

typedef struct RunnerLimits {
    uint64_t address_space_bytes; /* 0 = unlimited */
    uint64_t cpu_secs;
    uint64_t open_files;
} RunnerLimits;

typedef struct RunnerSpec {
    const char *instance_id;
    const char *executable;  /* absolute path of the program */
    const char *run_dir;     /* absolute; becomes the working directory */
    const char *const *envp; /* the complete environment, NULL-terminated */
    uint64_t log_limit;      /* bytes of output kept in stderr.log per launch */
    RunnerLimits limits;
    int attempt; /* the launch number, recorded with the process and its exit status */
} RunnerSpec;

/** The native runner: runs programs under the runtara-shim at shim_path. With server_socket
 *  (the instance API's unix socket), each program gets a connection to it made ahead of its
 *  launch (RUNTARA_SERVER_FD, shim-launch.h). */
int runner_native_new(const char *shim_path, const char *server_socket, Runner **ret, Error *e);
/** The mock runner for tests: runs nothing; see runner-mock.c for how the environment shapes
 *  the pretended exit. */
int runner_mock_new(Runner **ret);
Runner *runner_free(Runner *r);
const char *runner_name(Runner *r);

/** Start spec's program. Fails synchronously (-ENOENT, -EACCES) when the program or the run
 *  directory cannot be used, with a message naming it. Uses the supervisor runner_prestart()
 *  readied, if there is one; otherwise starts one first (blocks for that process creation). */
int runner_launch(Runner *r, const RunnerSpec *spec, RunnerProcess **ret, Error *e);
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
 *  with *ret and *ret_attempt (RunnerSpec.attempt of that launch) if one still runs, 0 if none
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

/** Locate runtara-shim: $RUNTARA_SHIM_PATH, else next to the running executable. Caller frees. */
char *runner_find_shim(void);
