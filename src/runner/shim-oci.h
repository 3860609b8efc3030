/* runtara-shim's OCI mode: the instance's program runs in a container of an OCI runtime (crun or
 * runc) instead of as the shim's own child.
 *
 *   runtara-shim [--attempt N] [--log-limit BYTES] --oci-runtime PATH --oci-id ID
 *                --oci-bundle DIR [--oci-root DIR] [--oci-systemd-cgroup]
 *
 * DIR is a per-launch bundle directory that the runner made outside the run directory: it holds
 * config.json (oci-spec.h) whose root.path is the image's shared rootfs (oci-bundle.h). Both
 * runtimes take such a bundle as it is: runc has no --config option, so the config cannot live
 * elsewhere than in the bundle, and a per-launch bundle pointing at a shared rootfs by absolute
 * path works the same under crun. The runtime also writes its pid file (init.pid) and its log
 * (runtime.log, JSON lines) there: both are written by the runtime as root, so they must never be
 * in the run directory, which the container can write (a symlink planted there would be
 * followed).
 *
 * The shim makes itself a child subreaper, then runs `<runtime> run --detach`: one call, where
 * `create` and `start` were two (1.6 ms more of a start with crun). It reads the init's pid; the
 * container's cgroups are its cgroupfs path (--oci-cgroups-path) in each of the shim's own
 * hierarchies, known whether the init still lives or has ended already (with systemd's cgroups
 * they are read from /proc/PID/cgroup, which a short program may have left). The init,
 * reparented to the shim when the runtime exits, is waited for like a child. SIGTERM, SIGINT and
 * SIGHUP are forwarded to it as SIGTERM, SIGQUIT as SIGKILL, which ends the whole container. As pid
 * 1 of its namespace the init would ignore a SIGTERM it has no handler for; the shim sends SIGKILL
 * instead then, and records SIGTERM, so that a program ends as it would natively. When it has ended
 * the shim reads from its cgroups the peak memory, the CPU time and whether the OOM killer fired,
 * runs `<runtime> delete --force`, and returns what the exit record holds.
 *
 * If the shim itself is killed, the container outlives it: the init cannot be bound to the shim's
 * life (PR_SET_PDEATHSIG does not survive the runtime's clone). The runner then finds the shim
 * gone without an exit record and kills the container with oci_container_kill() (oci-runtime.h). */
#pragma once

#include <stdbool.h>

#include "exit-status.h"

#define SHIM_OCI_PID_FILE "init.pid"    /* in the bundle */
#define SHIM_OCI_LOG_FILE "runtime.log" /* in the bundle */

typedef struct ShimOci {
    const char *runtime; /* NULL: not in OCI mode */
    const char *root;    /* the runtime's --root, or NULL */
    const char *id;      /* the container id (oci_container_id()) */
    const char *bundle;  /* absolute path of the per-launch bundle directory */
    bool systemd_cgroup;
    int token_fd; /* a pipe holding the launch's token, for the container as fd 3, or -1 */
    /* the container's cgroupfs path (config.json's linux.cgroupsPath, absolute), or NULL (with
     * systemd): its cgroups are then read from its init, while it may still live */
    const char *cgroups_path;
} ShimOci;

/* What the shim's own loop owns: the signalfd of the signals it handles, and the program's output
 * pipe with the function that copies what it holds to stderr.log (and sets *pipefd to -1 at its
 * end). */
typedef struct ShimOciIo {
    int sigfd;
    int *pipefd;
    void (*pump)(void *userdata);
    void *userdata;
} ShimOciIo;

/** Run the container of o to its end, as the header says, with pipe_w (the output pipe's write
 *  end, which this takes and closes) as its stdout and stderr. Fills st's kind, code,
 *  exit_code, pid, cpu_usec, max_rss_bytes, memory_peak_bytes and oom, and returns 0; or, if the
 *  container could not be started, sets st->kind = EXIT_KIND_SPAWN_FAILED with st->error saying
 *  why (the runtime's own message) and returns -errno. Blocks until the container ends. */
int shim_oci_run(const ShimOci *o, int pipe_w, const ShimOciIo *io, ExitStatus *st);
