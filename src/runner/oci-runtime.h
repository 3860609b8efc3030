/* Talking to the OCI runtime (crun, or runc) outside of a launch: container ids, the start-up
 * check that containers really run on this host, leftovers after a crash, and killing a
 * container whose runtara-shim is gone.
 *
 * The daemon keeps its containers in a state directory of its own (--root, e.g.
 * DATA_DIR/oci/state), never the runtime's default: every container listed there is ours, and
 * no container of another tool is ever listed, killed or deleted.
 *
 * Every function here runs the runtime as a child process and waits for it: they block (crun
 * answers in milliseconds, runc in tens), so they belong at start-up, in a janitor, or off the
 * event loop. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../base/error.h"
#include "../base/time-util.h"

/* "rt-" + up to 12 + "_" + up to 20 characters of the key, "-" + the attempt (at most 10
 * digits), "-" + 24 hex digits of hash, and the NUL */
#define OCI_ID_MAX 76
#define OCI_ID_PREFIX "rt-"
#define OCI_CHECK_PROGRAM "runtara-oci-check"

typedef struct OciRuntime {
    const char *path;    /* "crun", "runc" or a path; a bare name is looked up in PATH */
    const char *root;    /* the runtime's state directory (--root); NULL: its default */
    bool systemd_cgroup; /* --systemd-cgroup: cgroups through systemd, not cgroupfs */
    /* crun only: its containers' seccomp filter compiled once (oci-seccomp.h), base64; NULL: the
     * runtime compiles the config's linux.seccomp at each start */
    const char *seccomp_bpf;
} OciRuntime;

/** Whether path names crun (its base name), which takes a precompiled seccomp filter. */
bool oci_runtime_is_crun(const char *path);

/** The container id of launch `attempt` of the instance "<tenant>/<id>": "rt-", a readable
 *  part of the key (the characters of an id are [A-Za-z0-9._-]; '/' becomes '_'), the attempt,
 *  and 96 bits of SHA-256 over the whole key and attempt, which makes it unique. Only
 *  [A-Za-z0-9_.-], at most OCI_ID_MAX - 1 characters: valid for crun and runc. Returns buf.
 *  Does not block. */
char *oci_container_id(const char *instance_key, int attempt, char buf[static OCI_ID_MAX]);

/** The cgroups path of a container: "/runtara/<tag>/<id>" for cgroupfs (absolute: runc puts a
 *  relative path under its caller's cgroup, crun does not), "runtara.slice:runtara-<tag>:<id>"
 *  with systemd, where <tag> is 8 hex digits of SHA-256 over rt->root: two daemons' containers
 *  of one instance key never share a cgroup. Owned by the caller. */
char *oci_cgroups_path(const OciRuntime *rt, const char *container_id);

/** Remove the parent cgroup of rt's containers ("/runtara/<tag>", and "/runtara" if that is left
 *  empty) in every hierarchy, if it holds no container: a daemon that stops leaves nothing in the
 *  host's cgroup tree. Every cgroup costs the kernel in cgroup operations that walk the tree (a
 *  cpuset's removal rebuilds the scheduler's domains over all of them), and test runs start
 *  thousands of daemons. Nothing to do with systemd cgroups: systemd collects empty slices. */
void oci_cgroups_release(const OciRuntime *rt);

/** Run check_binary (a static program that exits 0, OCI_CHECK_PROGRAM) in a container with the
 *  launch's isolation (oci-spec.h: network none, uid 65534, limits), built in a temporary
 *  directory under bundles_dir and removed after, waiting at most `timeout` (0: 30 s). 0 if it
 *  exited 0, and *ret_elapsed (may be NULL) is the run-to-exit time. Otherwise an error whose
 *  message says what failed, the runtime's own words and a hint: -ENOENT if the runtime cannot be
 *  executed, -ETIMEDOUT, -EIO for any other failure. */
int oci_runtime_check(const OciRuntime *rt, const char *bundles_dir, const char *check_binary,
                      usec_t timeout, usec_t *ret_elapsed, Error *e);

/** The ids of the containers in rt's state directory whose id starts with prefix (NULL or "":
 *  all) and, unless status is NULL, whose status is status ("stopped": its init has ended, or the
 *  machine with it), from `<runtime> list --format json`. *ret_ids is a NULL-terminated array the
 * caller frees with oci_ids_free(); *ret_n (may be NULL) its length. */
int oci_runtime_list_ours(const OciRuntime *rt, const char *prefix, const char *status,
                          char ***ret_ids, size_t *ret_n, Error *e);
void oci_ids_free(char **ids);

/** Kill and remove container id (`<runtime> delete --force`): for a container whose shim is gone
 *  without an exit record, or a leftover found at start-up. The whole container dies with its init
 *  (its own pid namespace). A container that does not exist is not an error. */
int oci_container_kill(const OciRuntime *rt, const char *id, Error *e);

/** Where the check program is: $RUNTARA_OCI_CHECK_PATH, else next to the running executable
 *  (a build directory, or bindir), else ../libexec from it (an installation). Owned by the
 *  caller; NULL if /proc/self/exe cannot be read. The same lookup as runner_find_shim(). */
char *oci_find_check_program(void);
