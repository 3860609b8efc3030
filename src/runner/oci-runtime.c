#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../base/alloc.h"
#include "../base/digest.h"
#include "../base/fileio.h"
#include "../base/id.h"
#include "oci-bundle.h"
#include "oci-runtime.h"
#include "runner.h"
#include "oci-spec.h"

#define OUTPUT_MAX (64u << 10) /* of each stream of the runtime kept; list output is small */
#define DEFAULT_TIMEOUT (30 * USEC_PER_SEC)

extern char **environ;

static bool id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

/* Append up to max characters of s to buf at *n, as id characters. */
static void append_readable(char *buf, size_t *n, const char *s, size_t len, size_t max)
{
    for (size_t i = 0; i < len && i < max; i++)
        buf[(*n)++] = id_char(s[i]) ? s[i] : '_';
}

char *oci_container_id(const char *instance_key, int attempt, char buf[static OCI_ID_MAX])
{
    /* the hash covers exactly the key and the attempt: what the readable part cuts or folds
     * (two keys alike in their first characters, '/' against '_') it still tells apart */
    char material[2 * 128 + 32];
    int m = snprintf(material, sizeof material, "%s\n%d", instance_key, attempt);
    unsigned char digest[32];
    sha256_raw(material, m < (int)sizeof material ? (size_t)m : sizeof material - 1, digest);

    const char *slash = strchr(instance_key, '/');
    size_t tlen = slash ? (size_t)(slash - instance_key) : 0;
    const char *id = slash ? slash + 1 : instance_key;
    size_t n = 0;
    memcpy(buf, OCI_ID_PREFIX, strlen(OCI_ID_PREFIX));
    n += strlen(OCI_ID_PREFIX);
    if (slash) {
        append_readable(buf, &n, instance_key, tlen, 12);
        buf[n++] = '_';
    }
    append_readable(buf, &n, id, strlen(id), 20);
    n += (size_t)snprintf(buf + n, OCI_ID_MAX - n, "-%u-", (unsigned)attempt);
    for (size_t i = 0; i < 12; i++)
        n += (size_t)snprintf(buf + n, OCI_ID_MAX - n, "%02x", digest[i]);
    return buf;
}

bool oci_runtime_is_crun(const char *path)
{
    const char *slash = path ? strrchr(path, '/') : NULL;
    return path && strcmp(slash ? slash + 1 : path, "crun") == 0;
}

char *oci_cgroups_path(const OciRuntime *rt, const char *container_id)
{
    /* Container ids are unique within a state directory only; cgroups are the host's. Two
     * daemons (two data directories) may run the same instance key, so the path names the state
     * directory too: a delete of one daemon's container never takes the other's cgroup. */
    unsigned char h[32];
    const char *root = rt->root ? rt->root : "";
    sha256_raw(root, strlen(root), h);
    char tag[9];
    snprintf(tag, sizeof tag, "%02x%02x%02x%02x", h[0], h[1], h[2], h[3]);
    return rt->systemd_cgroup ? xasprintf("runtara.slice:runtara-%s:%s", tag, container_id)
                              : xasprintf("/runtara/%s/%s", tag, container_id);
}

/* rmdir <hierarchy><path>, then its parent if that is left empty */
static void release_in(const char *hierarchy, const char *path)
{
    _cleanup_free_ char *mine = xasprintf("%s%s", hierarchy, path);
    if (rmdir(mine) == 0)
        (void)rmdir(dirname(mine)); /* "/runtara", if no other daemon's is there */
}

void oci_cgroups_release(const OciRuntime *rt)
{
    if (rt->systemd_cgroup)
        return;
    _cleanup_free_ char *path = oci_cgroups_path(rt, "");
    path[strlen(path) - 1] = '\0'; /* "/runtara/<tag>" */
    /* cgroup v2: /sys/fs/cgroup itself; v1 and hybrid: a hierarchy in each of its directories */
    release_in("/sys/fs/cgroup", path);
    DIR *d = opendir("/sys/fs/cgroup");
    for (struct dirent *de; d && (de = readdir(d));)
        if (de->d_name[0] != '.' && de->d_type == DT_DIR) {
            _cleanup_free_ char *h = xasprintf("/sys/fs/cgroup/%s", de->d_name);
            release_in(h, path);
        }
    if (d)
        closedir(d);
}

/* Read what is ready on fd into out (up to OUTPUT_MAX; the rest is read and dropped); closes fd
 * and sets it to -1 at the end of the stream. */
static void drain(int *fd, char **out, size_t *len)
{
    char buf[4096];
    ssize_t n = read(*fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        (void)close(*fd);
        *fd = -1;
        return;
    }
    size_t keep = MIN((size_t)n, OUTPUT_MAX - *len);
    *out = xrealloc(*out, *len + keep + 1);
    memcpy(*out + *len, buf, keep);
    *len += keep;
    (*out)[*len] = '\0';
}

/* Run `<runtime> [--root R] [--systemd-cgroup] args...` with stdin from /dev/null, collecting its
 * stdout and stderr (NUL-terminated, never NULL), and wait at most timeout for it to end. Returns
 * the wait status, -ENOENT (or another -errno) if it could not be executed, -ETIMEDOUT after
 * killing it when it took too long. */
static int run_runtime(const OciRuntime *rt, const char *const *args, usec_t timeout,
                       char **ret_out, char **ret_err)
{
    const char *argv[24];
    size_t n = 0;
    argv[n++] = rt->path;
    if (rt->root) {
        argv[n++] = "--root";
        argv[n++] = rt->root;
    }
    if (rt->systemd_cgroup)
        argv[n++] = "--systemd-cgroup";
    for (size_t i = 0; args[i] && n < ELEMENTSOF(argv) - 1; i++)
        argv[n++] = args[i];
    argv[n] = NULL;

    int out[2] = {-1, -1}, err[2] = {-1, -1};
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
        int r = -errno;
        for (int i = 0; i < 2; i++) {
            if (out[i] >= 0)
                (void)close(out[i]);
            if (err[i] >= 0)
                (void)close(err[i]);
        }
        return r;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, err[1], STDERR_FILENO);
    pid_t pid;
    int r = posix_spawnp(&pid, rt->path, &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    (void)close(out[1]);
    (void)close(err[1]);
    if (r != 0) {
        (void)close(out[0]);
        (void)close(err[0]);
        return -r;
    }

    char *bufs[2] = {xstrdup(""), xstrdup("")};
    size_t lens[2] = {0, 0};
    int fds[2] = {out[0], err[0]};
    usec_t deadline = now_usec(CLOCK_MONOTONIC) + (timeout ? timeout : DEFAULT_TIMEOUT);
    bool timed_out = false;
    while (fds[0] >= 0 || fds[1] >= 0) {
        usec_t now = now_usec(CLOCK_MONOTONIC);
        if (now >= deadline) {
            timed_out = true;
            break;
        }
        struct pollfd p[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
        int k = poll(p, 2, (int)MIN((deadline - now) / 1000 + 1, (usec_t)INT_MAX));
        if (k < 0 && errno != EINTR)
            break;
        for (int i = 0; i < 2; i++)
            if (fds[i] >= 0 && p[i].revents)
                drain(&fds[i], &bufs[i], &lens[i]);
    }
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0)
            (void)close(fds[i]);
    if (timed_out)
        (void)kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    *ret_out = bufs[0];
    *ret_err = bufs[1];
    return timed_out ? -ETIMEDOUT : status;
}

/* The runtime's message, trimmed: its last non-empty line (crun and runc end with the cause). */
static char *last_line(const char *text)
{
    size_t n = strlen(text);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' ' || text[n - 1] == '\r'))
        n--;
    size_t start = n;
    while (start > 0 && text[start - 1] != '\n')
        start--;
    return xstrndup(text + start, MIN(n - start, (size_t)400));
}

static const char *check_hint(const char *why)
{
    if (strstr(why, "hybrid"))
        return "run scripts/setup-host.sh as root, or bind hugetlb to a cgroup v1 hierarchy "
               "(mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb); or set "
               "RUNTARA_RUNNER=native";
    if (strstr(why, "systemd") || strstr(why, "dbus") || strstr(why, "DBus"))
        return "unset USE_SYSTEMD_CGROUP unless systemd manages this host's cgroups; or set "
               "RUNTARA_RUNNER=native";
    return "check that the runtime runs containers here as this user (root is needed), or set "
           "RUNTARA_RUNNER=native";
}

/* Write the check container's bundle into dir: rootfs, run/ and bundle/config.json. */
static int check_prepare(const OciRuntime *rt, const char *dir, const char *check_binary,
                         const char *id, Error *e)
{
    _cleanup_free_ char *rootfs = NULL;
    int r = oci_bundle_ensure(dir, "check", check_binary, &rootfs, e);
    if (r < 0)
        return r;
    _cleanup_free_ char *run_dir = xasprintf("%s/run", dir);
    _cleanup_free_ char *bundle = xasprintf("%s/bundle", dir);
    if (mkdir(run_dir, 0755) < 0 || mkdir(bundle, 0755) < 0)
        return error_set(e, -errno, "could not create a directory in \"%s\": %m", dir);
    _cleanup_close_ int bundlefd = open(bundle, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (bundlefd < 0)
        return error_set(e, -errno, "could not open \"%s\": %m", bundle);
    _cleanup_free_ char *cgroups = oci_cgroups_path(rt, id);
    static const char *const args[] = {"/" OCI_BUNDLE_BINARY, NULL};
    static const char *const envp[] = {"PATH=/", NULL};
    OciSpec spec = {
        .rootfs = rootfs,
        .args = args,
        .envp = envp,
        .uid = OCI_SPEC_NOBODY,
        .gid = OCI_SPEC_NOBODY,
        .run_dir = run_dir,
        .network = OCI_NETWORK_NONE,
        .memory_bytes = 64 << 20,
        .cpu_quota_us = 50000,
        .cpu_period_us = 100000,
        .pids_limit = 16,
        .rlimit_nofile = 64,
        .cgroups_path = cgroups,
        .seccomp_bpf = rt->seccomp_bpf,
    };
    return oci_spec_write(bundlefd, "config.json", &spec, e);
}

int oci_runtime_check(const OciRuntime *rt, const char *bundles_dir, const char *check_binary,
                      usec_t timeout, usec_t *ret_elapsed, Error *e)
{
    int r = fileio_mkdir_p(bundles_dir, 0755);
    if (r < 0)
        return error_set(e, r, "could not create bundles directory \"%s\": %s", bundles_dir,
                         strerror(-r));
    _cleanup_free_ char *dir = xasprintf("%s/" FILEIO_TMP_PREFIX "check-XXXXXX", bundles_dir);
    if (!mkdtemp(dir))
        return error_set(e, -errno, "could not create a directory in \"%s\": %m", bundles_dir);
    char id[OCI_ID_MAX], hex[9];
    if (id_random_hex(hex, 4) < 0)
        snprintf(hex, sizeof hex, "%08x", (unsigned)getpid());
    snprintf(id, sizeof id, OCI_ID_PREFIX "check-%d-%s", (int)getpid(), hex);

    r = check_prepare(rt, dir, check_binary, id, e);
    if (r >= 0) {
        _cleanup_free_ char *bundle = xasprintf("%s/bundle", dir);
        _cleanup_free_ char *out = NULL, *err = NULL;
        const char *const args[] = {"run", "--bundle", bundle, id, NULL};
        usec_t t0 = now_usec(CLOCK_MONOTONIC);
        int status = run_runtime(rt, args, timeout, &out, &err);
        usec_t elapsed = now_usec(CLOCK_MONOTONIC) - t0;
        if (status == -ENOENT)
            r = error_set(e, -ENOENT,
                          "could not execute OCI runtime \"%s\": not found; hint: "
                          "install crun (or set RUNTARA_OCI_RUNTIME), or set "
                          "RUNTARA_RUNNER=native",
                          rt->path);
        else if (status < 0 && status != -ETIMEDOUT)
            r = error_set(e, status, "could not execute OCI runtime \"%s\": %s", rt->path,
                          strerror(-status));
        else if (status == -ETIMEDOUT)
            r = error_set(e, -ETIMEDOUT,
                          "OCI runtime \"%s\" did not run a test container to its "
                          "end within %llu ms",
                          rt->path,
                          (unsigned long long)((timeout ? timeout : DEFAULT_TIMEOUT) / 1000));
        else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            _cleanup_free_ char *why = last_line(*err ? err : out);
            r = error_set(e, -EIO,
                          "OCI runtime \"%s\" could not run a test container (%s %d): %s; "
                          "hint: %s",
                          rt->path, WIFEXITED(status) ? "exit status" : "signal",
                          WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
                          *why ? why : "no message", check_hint(why));
        } else if (ret_elapsed)
            *ret_elapsed = elapsed;
        if (r < 0 && status != -ENOENT)
            (void)oci_container_kill(rt, id, NULL);
    }
    (void)fileio_rm_rf_at(AT_FDCWD, dir);
    return r < 0 ? r : 0;
}

int oci_runtime_list_ours(const OciRuntime *rt, const char *prefix, const char *want,
                          char ***ret_ids, size_t *ret_n, Error *e)
{
    _cleanup_free_ char *out = NULL, *err = NULL;
    static const char *const args[] = {"list", "--format", "json", NULL};
    int status = run_runtime(rt, args, 0, &out, &err);
    if (status < 0)
        return error_set(e, status, "could not execute OCI runtime \"%s\": %s", rt->path,
                         strerror(-status));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        _cleanup_free_ char *why = last_line(err);
        return error_set(e, -EIO, "OCI runtime \"%s\" could not list containers: %s", rt->path,
                         why);
    }
    json_error_t jerr;
    json_t *list = json_loads(out, JSON_DECODE_ANY, &jerr);
    if (!list || (!json_is_array(list) && !json_is_null(list))) { /* runc says null for none */
        json_decref(list);
        return error_set(e, -EBADMSG, "could not parse the container list of \"%s\"", rt->path);
    }
    size_t n = 0, plen = prefix ? strlen(prefix) : 0;
    char **ids = xcalloc(json_array_size(list) + 1, sizeof *ids);
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c)
    {
        const char *id = json_string_value(json_object_get(c, "id"));
        const char *st = json_string_value(json_object_get(c, "status"));
        if (id && strncmp(id, prefix ? prefix : "", plen) == 0 &&
            (!want || (st && strcmp(st, want) == 0)))
            ids[n++] = xstrdup(id);
    }
    json_decref(list);
    *ret_ids = ids;
    if (ret_n)
        *ret_n = n;
    return 0;
}

void oci_ids_free(char **ids)
{
    for (size_t i = 0; ids && ids[i]; i++)
        free(ids[i]);
    free(ids);
}

int oci_container_kill(const OciRuntime *rt, const char *id, Error *e)
{
    _cleanup_free_ char *out = NULL, *err = NULL;
    const char *const args[] = {"delete", "--force", id, NULL};
    int status = run_runtime(rt, args, 0, &out, &err);
    if (status < 0)
        return error_set(e, status, "could not execute OCI runtime \"%s\": %s", rt->path,
                         strerror(-status));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    /* gone already? `state` fails for a container that does not exist */
    _cleanup_free_ char *sout = NULL, *serr = NULL;
    const char *const state[] = {"state", id, NULL};
    int k = run_runtime(rt, state, 0, &sout, &serr);
    if (k >= 0 && !(WIFEXITED(k) && WEXITSTATUS(k) == 0))
        return 0;
    _cleanup_free_ char *why = last_line(err);
    return error_set(e, -EIO, "could not delete container \"%s\" with \"%s\": %s", id, rt->path,
                     why);
}

char *oci_find_check_program(void)
{
    return runner_find_program("RUNTARA_OCI_CHECK_PATH", OCI_CHECK_PROGRAM);
}
