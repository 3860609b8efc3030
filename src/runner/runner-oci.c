/* The OCI runner's part of a launch (runner-internal.h). The OCI runner is the native runner's
 * machinery (runner-native.c: an idle runtara-shim per launch, watched through a pidfd, found
 * again through its lock, its end read from its exit record) with the shim in its OCI mode
 * (shim-oci.h): what differs is prepared here. For each launch:
 *
 * - the image's read-only rootfs, built once (oci-bundle.h);
 * - the container id, from the instance key and the launch number (oci_container_id());
 * - a per-launch bundle, LAUNCHES_DIR/<container id>/config.json (oci-spec.h), outside the run
 *   directory, which the container can write;
 * - the run directory, mounted at /data: sticky and writable by the daemon's group, which the
 *   container's user is in, so it may add files but never remove or replace the daemon's;
 * - the instance API's socket, reached through a directory of its own (SOCKET_DIR, a hard link
 *   to the daemon's socket, made when the daemon listens) mounted at /run/runtara: never the
 *   directory the daemon's socket sits in, which is the data directory by default;
 * - the program's variables as it sees them: HOME=/data, RUNTARA_SERVER_ADDR under
 *   /run/runtara, and RUNTARA_INSTANCE_TOKEN_FD=3: the token is in a pipe the shim passes to
 *   the container, never in an environment, which the host's root (and a native program of a
 *   root daemon) could read. */
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/alloc.h"
#include "../base/fileio.h"
#include "oci-bundle.h"
#include "oci-spec.h"
#include "runner-internal.h"

/* Make SOCKET_DIR/<name> the daemon's socket (a hard link: the same inode), replacing a link to a
 * socket of an earlier daemon. */
static int link_socket(const RunnerOciSettings *o, const char *server_socket, const char *at,
                       Error *e)
{
    struct stat want, have;
    if (stat(server_socket, &want) < 0)
        return error_set(e, -errno, "could not find the instance API's socket \"%s\": %m",
                         server_socket);
    if (stat(at, &have) == 0 && have.st_ino == want.st_ino && have.st_dev == want.st_dev)
        return 0;
    int k = fileio_mkdir_p(o->socket_dir, 0755);
    if (k < 0)
        return error_set(e, k, "could not create \"%s\": %s", o->socket_dir, strerror(-k));
    _cleanup_free_ char *tmp = xasprintf("%s.new", at);
    (void)unlink(tmp);
    if (link(server_socket, tmp) < 0 || rename(tmp, at) < 0) {
        k = -errno;
        (void)unlink(tmp);
        return error_set(e, k,
                         "could not link the instance API's socket \"%s\" into \"%s\": %s. hint: "
                         "RUNTARA_CORE_SOCKET must be on the data directory's file system for "
                         "the OCI runner",
                         server_socket, o->socket_dir, strerror(-k));
    }
    return 0;
}

/* The program's variables as it sees them in its container. */
static char **container_env(const RunnerLaunch *l, const char *socket_name)
{
    size_t n = 0, i = 0;
    while (l->envp[n])
        n++;
    char **envp = xcalloc(n + 5, sizeof *envp);
    envp[i++] = xstrdup("PATH=/usr/local/bin:/usr/bin:/bin"); /* for RUNTARA_OCI_MOUNTS */
    envp[i++] = xstrdup("HOME=" OCI_SPEC_DATA_DIR);
    envp[i++] = xasprintf("RUNTARA_SERVER_ADDR=unix:" OCI_SPEC_SOCKET_DIR "/%s", socket_name);
    if (l->token) /* the shim passes it in a pipe, as the container's fd 3 */
        envp[i++] = xstrdup("RUNTARA_INSTANCE_TOKEN_FD=3");
    for (size_t j = 0; j < n; j++)
        envp[i++] = xstrdup(l->envp[j]);
    envp[i] = NULL;
    return envp;
}

static void env_free(char **envp)
{
    for (size_t i = 0; envp && envp[i]; i++)
        free(envp[i]);
    free(envp);
}

int runner__oci_link_socket(const RunnerOciSettings *o, const char *server_socket, Error *e)
{
    _cleanup_free_ char *copy = xstrdup(server_socket);
    _cleanup_free_ char *at = xasprintf("%s/%s", o->socket_dir, basename(copy));
    return link_socket(o, server_socket, at, e);
}

OciRuntime runner__oci_runtime(const RunnerOciSettings *o)
{
    return (OciRuntime){.path = o->runtime,
                        .root = o->state_dir,
                        .systemd_cgroup = o->systemd_cgroup,
                        .seccomp_bpf = o->seccomp_bpf};
}

void runner__oci_launch_done(RunnerOciLaunch *p)
{
    p->bundle = mfree(p->bundle);
    p->cgroups_path = mfree(p->cgroups_path);
}

int runner__oci_prepare(const RunnerOciSettings *o, const char *server_socket,
                        const RunnerLaunch *l, RunnerOciLaunch *ret, Error *e)
{
    _cleanup_free_ char *rootfs = NULL, *sock_copy = xstrdup(server_socket);
    /* (the socket's link is made when the daemon listens: runner_oci_server_ready()) */
    const char *socket_name = basename(sock_copy);
    OciRuntime rt = runner__oci_runtime(o);

    *ret = (RunnerOciLaunch){0};
    int k = oci_bundle_ensure(o->bundles_dir, l->image_id, l->executable, &rootfs, e);
    if (k < 0)
        return error_prefix(e, "could not prepare the image's root file system");

    /* The container's user (in the daemon's group) may create files in its run directory
     * (output.json, its own), but, sticky, never remove or replace the daemon's and the shim's
     * (input.json, shim.lock, stderr.log: the daemon's user's, group read-only): a
     * program that planted its own shim.lock could make the daemon act on a process of its
     * choosing. */
    if (chown(l->run_dir, (uid_t)-1, o->gid) < 0 || chmod(l->run_dir, 01770) < 0)
        return error_set(e, -errno, "could not open run directory \"%s\" to the container: %m",
                         l->run_dir);

    oci_container_id(l->instance_key, l->attempt, ret->cid);
    _cleanup_free_ char *bundle = xasprintf("%s/%s", o->launches_dir, ret->cid);
    k = fileio_mkdir_p(o->launches_dir, 0700);
    if (k >= 0) {
        (void)fileio_rm_rf_at(AT_FDCWD, bundle); /* of a launch that died with the machine */
        k = RET_NERRNO(mkdir(bundle, 0700));
    }
    if (k < 0)
        return error_set(e, k, "could not create the launch's bundle \"%s\": %s", bundle,
                         strerror(-k));
    _cleanup_free_ char *cgroups = oci_cgroups_path(&rt, ret->cid);
    char **envp = container_env(l, socket_name);
    static const char *const args[] = {"/" OCI_BUNDLE_BINARY, NULL};
    OciSpec spec = {
        .rootfs = rootfs,
        .args = args,
        .envp = (const char *const *)envp,
        .hostname = "runtara",
        .uid = o->uid,
        .gid = o->gid,
        .run_dir = l->run_dir,
        .socket_dir = o->socket_dir,
        .network = l->network == RUNNER_NETWORK_HOST ? OCI_NETWORK_HOST : OCI_NETWORK_NONE,
        .memory_bytes = l->limits.memory_bytes,
        .cpu_quota_us = l->limits.cpu_millis * 100,
        .cpu_period_us = l->limits.cpu_millis ? 100000 : 0,
        .pids_limit = (int64_t)l->limits.pids,
        .rlimit_nofile = l->limits.open_files,
        .rlimit_cpu_secs = l->limits.cpu_secs,
        .rlimit_as_bytes = l->limits.address_space_bytes,
        .cgroups_path = cgroups,
        .seccomp_bpf = o->seccomp_bpf,
        .mounts = o->mounts,
        .n_mounts = o->n_mounts,
    };
    _cleanup_close_ int dirfd = open(bundle, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    k = dirfd < 0 ? error_set(e, -errno, "could not open \"%s\": %m", bundle)
                  : oci_spec_write(dirfd, "config.json", &spec, e);
    env_free(envp);
    if (k < 0) {
        (void)fileio_rm_rf_at(AT_FDCWD, bundle);
        return k;
    }
    ret->bundle = TAKE_PTR(bundle);
    ret->cgroups_path = o->systemd_cgroup ? NULL : TAKE_PTR(cgroups);
    return 0;
}

void runner__oci_finish(const RunnerOciSettings *o, const char *cid, bool kill_it)
{
    OciRuntime rt = runner__oci_runtime(o);
    if (kill_it) /* its shim is gone without an exit: the container must not outlive it */
        (void)oci_container_kill(&rt, cid, NULL);
    _cleanup_free_ char *bundle = xasprintf("%s/%s", o->launches_dir, cid);
    (void)fileio_rm_rf_at(AT_FDCWD, bundle);
}
