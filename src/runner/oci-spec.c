#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "../base/fileio.h"
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
