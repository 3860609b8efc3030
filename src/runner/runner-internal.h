/* The contract between runner.c and each runner implementation (STYLE R5). */
#pragma once

#include "oci-runtime.h"
#include "runner.h"

typedef struct RunnerOps {
    RunnerType type;
    int (*launch)(Runner *r, const RunnerLaunch *l, RunnerProcess **ret, Error *e);
    int (*prestart)(Runner *r, Error *e);             /* NULL: nothing to ready */
    int (*ready_dir)(Runner *r, int dirfd, Error *e); /* NULL: a launch creates nothing */
    int (*attach)(Runner *r, const char *run_dir, int *ret_attempt, RunnerProcess **ret, Error *e);
    int (*collect)(Runner *r, const char *run_dir, ExitStatus *ret, Error *e);
    int (*fd)(RunnerProcess *p);
    pid_t (*pid)(RunnerProcess *p);
    int (*signal)(RunnerProcess *p, int sig);
    int (*reap)(RunnerProcess *p, ExitStatus *ret, Error *e);
    void (*process_free)(RunnerProcess *p);
    void (*free)(Runner *r);
} RunnerOps;

/* runner-oci.c: the OCI runner's part of a launch, for the shim machinery of runner-native.c. */

/* What a prepared launch hands the shim. */
typedef struct RunnerOciLaunch {
    char cid[OCI_ID_MAX]; /* the container's id */
    char *bundle;         /* the per-launch bundle directory */
    char *cgroups_path;   /* its cgroupfs path, or NULL with systemd's cgroups */
} RunnerOciLaunch;

/* The runtime as the settings name it. */
OciRuntime runner__oci_runtime(const RunnerOciSettings *o);
/* Prepare: the image's rootfs, the container id, the per-launch bundle with its config.json, the
 * run directory's mode. *ret is filled (free it with runner__oci_launch_done()), its cid also
 * when a later step fails. */
int runner__oci_prepare(const RunnerOciSettings *o, const char *server_socket,
                        const RunnerLaunch *l, RunnerOciLaunch *ret, Error *e);
void runner__oci_launch_done(RunnerOciLaunch *p);
/* Finish: remove the launch's bundle, killing the container first if kill_it. */
/* Make o->socket_dir/<name> the instance API's socket at server_socket (a hard link). */
int runner__oci_link_socket(const RunnerOciSettings *o, const char *server_socket, Error *e);
void runner__oci_finish(const RunnerOciSettings *o, const char *cid, bool kill_it);

struct Runner {
    const RunnerOps *ops;
};

struct RunnerProcess {
    const RunnerOps *ops;
};
