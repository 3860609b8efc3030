#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/alloc.h"
#include "../base/fileio.h"
#include "../base/macro.h"
#include "oci-seccomp.h"
#include "oci-spec.h"

static const char *const network_names[_OCI_NETWORK_MAX] = {
    [OCI_NETWORK_NONE] = "none",
    [OCI_NETWORK_HOST] = "host",
};

const char *oci_network_to_string(OciNetwork n)
{
    return n >= 0 && n < _OCI_NETWORK_MAX ? network_names[n] : NULL;
}

OciNetwork oci_network_from_string(const char *s)
{
    if (!s)
        return _OCI_NETWORK_INVALID;
    if (strcmp(s, "isolated") == 0)
        return OCI_NETWORK_NONE;
    for (int i = 0; i < _OCI_NETWORK_MAX; i++)
        if (strcmp(s, network_names[i]) == 0)
            return (OciNetwork)i;
    return _OCI_NETWORK_INVALID;
}

static json_t *string_array(const char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; n == SIZE_MAX ? v[i] != NULL : i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static json_t *process(const OciSpec *s)
{
    static const char *const cap_sets[] = {"bounding", "effective", "inheritable", "permitted",
                                           "ambient"};
    json_t *caps = json_object();
    for (size_t i = 0; i < ELEMENTSOF(cap_sets); i++)
        json_object_set_new(caps, cap_sets[i], json_array());

    const struct {
        const char *type;
        uint64_t value;
    } limits[] = {{"RLIMIT_NOFILE", s->rlimit_nofile},
                  {"RLIMIT_CPU", s->rlimit_cpu_secs},
                  {"RLIMIT_AS", s->rlimit_as_bytes}};
    json_t *rlimits = json_array();
    for (size_t i = 0; i < ELEMENTSOF(limits); i++)
        if (limits[i].value > 0)
            json_array_append_new(rlimits, json_pack("{s:s, s:I, s:I}", "type", limits[i].type,
                                                     "hard", (json_int_t)limits[i].value, "soft",
                                                     (json_int_t)limits[i].value));

    static const char *const no_env[] = {NULL};
    json_t *p = json_pack("{s:b, s:{s:I, s:I}, s:o, s:o, s:s, s:o, s:b}", "terminal", 0, "user",
                          "uid", (json_int_t)s->uid, "gid", (json_int_t)s->gid, "args",
                          string_array(s->args, SIZE_MAX), "env",
                          string_array(s->envp ? s->envp : no_env, SIZE_MAX), "cwd",
                          OCI_SPEC_DATA_DIR, "capabilities", caps, "noNewPrivileges", 1);
    if (json_array_size(rlimits) > 0)
        json_object_set(p, "rlimits", rlimits);
    json_decref(rlimits);
    return p;
}

static void add_mount(json_t *mounts, const char *dest, const char *type, const char *source,
                      const char *const *options)
{
    json_array_append_new(mounts,
                          json_pack("{s:s, s:s, s:s, s:o}", "destination", dest, "type", type,
                                    "source", source, "options", string_array(options, SIZE_MAX)));
}

static json_t *mounts(const OciSpec *s)
{
    json_t *m = json_array();
    add_mount(m, "/proc", "proc", "proc", (const char *const[]){"nosuid", "noexec", "nodev", NULL});
    add_mount(
        m, "/dev", "tmpfs", "tmpfs",
        (const char *const[]){"nosuid", "noexec", "strictatime", "mode=755", "size=65536k", NULL});
    add_mount(m, "/dev/shm", "tmpfs", "shm",
              (const char *const[]){"nosuid", "noexec", "nodev", "mode=1777", "size=65536k", NULL});
    add_mount(m, "/tmp", "tmpfs", "tmpfs",
              (const char *const[]){"nosuid", "noexec", "nodev", "mode=1777", "size=65536k", NULL});
    add_mount(m, OCI_SPEC_DATA_DIR, "bind", s->run_dir,
              (const char *const[]){"rbind", "rw", "nosuid", "nodev", "noexec", NULL});
    if (s->socket_dir)
        add_mount(m, OCI_SPEC_SOCKET_DIR, "bind", s->socket_dir,
                  (const char *const[]){"rbind", "ro", "nosuid", "nodev", "noexec", NULL});
    if (s->network == OCI_NETWORK_HOST) {
        const char *const ro[] = {"bind", "ro", "nosuid", "nodev", "noexec", NULL};
        add_mount(m, "/etc/resolv.conf", "bind", "/etc/resolv.conf", ro);
        add_mount(m, "/etc/hosts", "bind", "/etc/hosts", ro);
    }
    for (size_t i = 0; i < s->n_mounts; i++)
        add_mount(m, s->mounts[i].destination, "bind", s->mounts[i].source,
                  s->mounts[i].writable
                      ? (const char *const[]){"rbind", "rw", "nosuid", "nodev", "noexec", NULL}
                      : (const char *const[]){"rbind", "ro", "nosuid", "nodev", NULL});
    return m;
}

static json_t *resources(const OciSpec *s)
{
    /* devices: nothing but what every runtime adds itself (null, zero, full, tty, random,
     * urandom); the deny-all rule comes first, and the runtimes' own allow rules after it */
    json_t *r = json_pack("{s:[{s:b, s:s}]}", "devices", "allow", 0, "access", "rwm");
    if (s->memory_bytes > 0)
        json_object_set_new(r, "memory",
                            json_pack("{s:I, s:I}", "limit", (json_int_t)s->memory_bytes, "swap",
                                      (json_int_t)s->memory_bytes));
    if (s->cpu_quota_us > 0 && s->cpu_period_us > 0)
        json_object_set_new(r, "cpu",
                            json_pack("{s:I, s:I}", "quota", (json_int_t)s->cpu_quota_us, "period",
                                      (json_int_t)s->cpu_period_us));
    if (s->pids_limit > 0)
        json_object_set_new(r, "pids", json_pack("{s:I}", "limit", (json_int_t)s->pids_limit));
    return r;
}

static json_t *linux_section(const OciSpec *s)
{
    static const char *const masked[] = {"/proc/acpi",
                                         "/proc/asound",
                                         "/proc/kcore",
                                         "/proc/keys",
                                         "/proc/latency_stats",
                                         "/proc/timer_list",
                                         "/proc/timer_stats",
                                         "/proc/sched_debug",
                                         "/proc/scsi",
                                         "/sys/firmware",
                                         "/sys/devices/virtual/powercap",
                                         NULL};
    static const char *const readonly[] = {
        "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger", NULL};
    json_t *ns = json_array();
    const char *const types[] = {"pid", "ipc", "uts", "mount", "cgroup", "network"};
    size_t n = s->network == OCI_NETWORK_HOST ? ELEMENTSOF(types) - 1 : ELEMENTSOF(types);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(ns, json_pack("{s:s}", "type", types[i]));
    json_t *l = json_pack("{s:o, s:o, s:o, s:o, s:o}", "namespaces", ns, "resources", resources(s),
                          "maskedPaths", string_array(masked, SIZE_MAX), "readonlyPaths",
                          string_array(readonly, SIZE_MAX), "seccomp", oci_seccomp_json());
    if (s->cgroups_path)
        json_object_set_new(l, "cgroupsPath", json_string(s->cgroups_path));
    return l;
}

/* Absolute, no empty, "." or ".." component, no trailing slash. */
static bool path_normalized(const char *p)
{
    if (p[0] != '/' || p[1] == '\0' || strlen(p) >= PATH_MAX)
        return false;
    for (const char *c = p; *c; c++) {
        if (*c != '/')
            continue;
        const char *next = c + 1;
        size_t len = strcspn(next, "/");
        if (len == 0 || (len == 1 && next[0] == '.') ||
            (len == 2 && next[0] == '.' && next[1] == '.'))
            return false;
    }
    return true;
}

/* Whether a is b or lies under it. */
static bool path_within(const char *a, const char *b)
{
    size_t n = strlen(b);
    return strncmp(a, b, n) == 0 && (a[n] == '\0' || a[n] == '/' || (n == 1 && b[0] == '/'));
}

static int mount_parse(char *entry, const char *const *private_paths, OciMount *m, Error *e)
{
    /* (under /tmp is allowed: mounted after the spec's tmpfs, on it) */
    static const char *const reserved[] = {
        "/proc",           "/dev", "/sys", "/data", OCI_SPEC_SOCKET_DIR, "/binary", "/etc/hosts",
        "/etc/resolv.conf"};
    char *parts[4];
    size_t n = 0;
    for (char *save = NULL, *p = strtok_r(entry, ":", &save); p && n < ELEMENTSOF(parts);
         p = strtok_r(NULL, ":", &save))
        parts[n++] = p;
    if (n > 1 && (strcmp(parts[n - 1], "ro") == 0 || strcmp(parts[n - 1], "rw") == 0))
        m->writable = strcmp(parts[--n], "rw") == 0;
    if (n < 1 || n > 2)
        return error_set(e, -EINVAL, "expected SOURCE[:DESTINATION][:ro|rw]");
    const char *src = parts[0], *dest = n == 2 ? parts[1] : parts[0];
    if (!path_normalized(src) || !path_normalized(dest))
        return error_set(e, -EINVAL, "paths must be absolute and normalized, and not /");
    if (strcmp(dest, "/tmp") == 0)
        return error_set(e, -EINVAL, "\"/tmp\" is the container's own (/tmp)");
    for (size_t i = 0; i < ELEMENTSOF(reserved); i++)
        if (path_within(dest, reserved[i]))
            return error_set(e, -EINVAL, "\"%s\" is the container's own (%s)", dest, reserved[i]);
    _cleanup_free_ char *real = realpath(src, NULL);
    if (!real)
        return error_set(e, -errno, "\"%s\": %m", src);
    for (size_t i = 0; private_paths && private_paths[i]; i++) {
        _cleanup_free_ char *priv = realpath(private_paths[i], NULL);
        const char *p = priv ? priv : private_paths[i];
        if (path_within(real, p) || path_within(p, real))
            return error_set(e, -EPERM, "\"%s\" would show the daemon's \"%s\" to containers", src,
                             private_paths[i]);
    }
    m->source = xstrdup(src);
    m->destination = xstrdup(dest);
    return 0;
}

int oci_mounts_parse(const char *text, const char *const *private_paths, OciMount **ret,
                     size_t *ret_n, Error *e)
{
    *ret = NULL;
    *ret_n = 0;
    if (!text)
        return 0;
    _cleanup_free_ char *copy = xstrdup(text);
    OciMount *m = xcalloc(OCI_MOUNTS_MAX, sizeof *m);
    size_t n = 0;
    int k = 0;
    for (char *save = NULL, *entry = strtok_r(copy, ",", &save); entry && k >= 0;
         entry = strtok_r(NULL, ",", &save)) {
        entry += strspn(entry, " \t");
        entry[strcspn(entry, " \t")] = '\0';
        if (!*entry)
            continue;
        _cleanup_free_ char *shown = xstrdup(entry);
        if (n == OCI_MOUNTS_MAX)
            k = error_set(e, -E2BIG, "more than %d entries", OCI_MOUNTS_MAX);
        else if ((k = mount_parse(entry, private_paths, &m[n], e)) >= 0)
            n++;
        if (k < 0)
            k = error_prefix(e, "invalid RUNTARA_OCI_MOUNTS entry \"%s\"", shown);
    }
    if (k < 0 || n == 0) {
        oci_mounts_free(m, n);
        return k < 0 ? k : 0;
    }
    *ret = m;
    *ret_n = n;
    return 0;
}

OciMount *oci_mounts_copy(const OciMount *m, size_t n)
{
    if (n == 0)
        return NULL;
    OciMount *c = xcalloc(n, sizeof *c);
    for (size_t i = 0; i < n; i++)
        c[i] = (OciMount){xstrdup(m[i].source), xstrdup(m[i].destination), m[i].writable};
    return c;
}

void oci_mounts_free(OciMount *m, size_t n)
{
    for (size_t i = 0; m && i < n; i++) {
        free(m[i].source);
        free(m[i].destination);
    }
    free(m);
}

json_t *oci_spec_build(const OciSpec *s)
{
    if (!s->rootfs || s->rootfs[0] != '/' || !s->args || !s->args[0] || !s->run_dir ||
        s->run_dir[0] != '/' || (s->socket_dir && s->socket_dir[0] != '/') ||
        !oci_network_to_string(s->network))
        return NULL;
    json_t *spec = json_pack("{s:s, s:o, s:{s:s, s:b}, s:o, s:o}", "ociVersion", OCI_SPEC_VERSION,
                             "process", process(s), "root", "path", s->rootfs, "readonly", 1,
                             "mounts", mounts(s), "linux", linux_section(s));
    if (spec && s->hostname)
        json_object_set_new(spec, "hostname", json_string(s->hostname));
    if (spec && s->seccomp_bpf)
        json_object_set_new(spec, "annotations",
                            json_pack("{s:s}", OCI_SECCOMP_BPF_ANNOTATION, s->seccomp_bpf));
    return spec;
}

int oci_spec_write(int dirfd, const char *name, const OciSpec *s, Error *e)
{
    json_t *spec = oci_spec_build(s);
    if (!spec)
        return error_set(e, -EINVAL, "cannot build the container's configuration: incomplete");
    char *text = json_dumps(spec, JSON_INDENT(1));
    json_decref(spec);
    if (!text)
        return error_set(e, -ENOMEM, "could not format the container's configuration");
    int r = fileio_write_replace(dirfd, name, text, strlen(text), 0644);
    free(text);
    if (r < 0)
        return error_set(e, r, "could not write \"%s\": %s", name, strerror(-r));
    return 0;
}
