/* The OCI config.json of a launch: every variant validates against the runtime-spec schema
 * (tests/unit/validate-oci-spec.py; a missing schema fails), and carries the isolation the
 * header promises. */
#include "../../src/runner/oci-spec.h"

#include <gnutls/gnutls.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/stat.h>

#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/base/alloc.h"
#include "../../src/base/strbuf.h"
#include "../../src/runner/oci-seccomp.h"
#include "../lib/tests.h"

extern char **environ;

static const char *const args[] = {"/binary", NULL};
static const char *const envp[] = {"PATH=/usr/bin", "RUNTARA_INSTANCE_ID=i-1", NULL};

static OciSpec base_spec(void)
{
    return (OciSpec){
        .rootfs = "/var/lib/runtara/bundles/img/rootfs",
        .args = args,
        .envp = envp,
        .hostname = "i-1",
        .uid = OCI_SPEC_NOBODY,
        .gid = OCI_SPEC_NOBODY,
        .run_dir = "/var/lib/runtara/acme/runs/i-1",
        .socket_dir = "/run/runtara-env",
        .network = OCI_NETWORK_NONE,
        .memory_bytes = 512 << 20,
        .cpu_quota_us = 50000,
        .cpu_period_us = 100000,
        .pids_limit = 64,
        .rlimit_nofile = 1024,
        .rlimit_cpu_secs = 300,
        .rlimit_as_bytes = 1ull << 30,
        .cgroups_path = "/runtara/rt-acme_i-1-1-0123456789abcdef01234567",
    };
}

/* Run the schema validator over the files; its exit status (0: all valid). */
static int validate(char **files, size_t n)
{
    const char *python = getenv("RUNTARA_PYTHON");
    const char *script = getenv("RUNTARA_OCI_VALIDATOR");
    if (!python)
        python = "/usr/bin/python3";
    if (!script)
        script = "tests/unit/validate-oci-spec.py";
    const char **argv = xcalloc(n + 3, sizeof *argv);
    argv[0] = python;
    argv[1] = script;
    for (size_t i = 0; i < n; i++)
        argv[i + 2] = files[i];
    pid_t pid;
    int r = posix_spawn(&pid, python, NULL, NULL, (char *const *)argv, environ);
    free(argv);
    if (r != 0)
        return -r;
    int status;
    if (waitpid(pid, &status, 0) < 0)
        return -errno;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(variants_validate_against_schema)
{
    OciSpec v[7];
    for (size_t i = 0; i < ELEMENTSOF(v); i++)
        v[i] = base_spec();
    v[1].network = OCI_NETWORK_HOST;
    v[2] = (OciSpec){.rootfs = "/r", .args = args, .run_dir = "/d"}; /* the bare minimum */
    v[3].cgroups_path = "runtara.slice:runtara:rt-x-1-00";
    v[3].socket_dir = NULL;
    v[4].memory_bytes = 0, v[4].cpu_quota_us = 0, v[4].pids_limit = 0;
    v[4].rlimit_nofile = v[4].rlimit_cpu_secs = v[4].rlimit_as_bytes = 0;
    v[5].envp = NULL, v[5].hostname = NULL, v[5].uid = 1000, v[5].gid = 1000;
    v[6].seccomp_bpf = "IAAAAAQAAAA="; /* crun's annotation */
    OciMount extra[] = {{"/usr", "/usr", false}, {"/srv/out", "/out", true}};
    v[6].mounts = extra, v[6].n_mounts = ELEMENTSOF(extra);

    _cleanup_free_ char *dir = tests_tmpdir();
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_TRUE(dirfd >= 0);
    char *files[ELEMENTSOF(v)];
    for (size_t i = 0; i < ELEMENTSOF(v); i++) {
        char name[32];
        snprintf(name, sizeof name, "config-%zu.json", i);
        Error e = ERROR_INIT;
        ASSERT_OK(oci_spec_write(dirfd, name, &v[i], &e));
        files[i] = xasprintf("%s/%s", dir, name);
    }
    close(dirfd);
    int r = validate(files, ELEMENTSOF(v));
    for (size_t i = 0; i < ELEMENTSOF(v); i++)
        free(files[i]);
    ASSERT_EQ(r, 0);
}

/* The namespaces of a spec, as a string of their types separated by spaces. */
static void namespaces(json_t *spec, char *buf, size_t size)
{
    size_t i, n = 0;
    json_t *ns;
    buf[0] = '\0';
    json_array_foreach(json_object_get(json_object_get(spec, "linux"), "namespaces"), i, ns) n +=
        (size_t)snprintf(buf + n, size - n, "%s ", json_string_value(json_object_get(ns, "type")));
}

static bool has_mount(json_t *spec, const char *dest)
{
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(spec, "mounts"), i,
                       m) if (strcmp(json_string_value(json_object_get(m, "destination")), dest) ==
                              0) return true;
    return false;
}

TEST(network_none_has_its_own_namespace_and_no_host_files)
{
    OciSpec s = base_spec();
    json_t *spec = oci_spec_build(&s);
    ASSERT_NOT_NULL(spec);
    char ns[128];
    namespaces(spec, ns, sizeof ns);
    json_decref(spec);
    ASSERT_STREQ(ns, "pid ipc uts mount cgroup network ");

    s.network = OCI_NETWORK_HOST;
    spec = oci_spec_build(&s);
    namespaces(spec, ns, sizeof ns);
    bool resolv = has_mount(spec, "/etc/resolv.conf"), hosts = has_mount(spec, "/etc/hosts");
    json_decref(spec);
    ASSERT_STREQ(ns, "pid ipc uts mount cgroup ");
    ASSERT_TRUE(resolv && hosts);

    s.network = OCI_NETWORK_NONE;
    spec = oci_spec_build(&s);
    resolv = has_mount(spec, "/etc/resolv.conf");
    json_decref(spec);
    ASSERT_FALSE(resolv);
}

/* Whether a seccomp rule of the spec names the system call. */
static bool allows(json_t *spec, const char *syscall)
{
    json_t *rules =
        json_object_get(json_object_get(json_object_get(spec, "linux"), "seccomp"), "syscalls");
    size_t i, k;
    json_t *rule, *name;
    json_array_foreach(rules, i, rule) json_array_foreach(json_object_get(rule, "names"), k, name)
    {
        if (strcmp(json_string_value(name), syscall) == 0)
            return true;
    }
    return false;
}

TEST(seccomp_allow_list)
{
    OciSpec s = base_spec();
    json_t *spec = oci_spec_build(&s);
    ASSERT_NOT_NULL(spec);
    const char *never[] = {
        "ptrace", "unshare",     "setns",           "clone3",         "mount",      "bpf",
        "keyctl", "userfaultfd", "perf_event_open", "io_uring_setup", "init_module"};
    const char *needed[] = {
        "rseq",       "statx", "close_range", "restart_syscall", "clock_nanosleep", "getrandom",
        "exit_group", "pipe2", "futex",       "clone",           "socket",          "vfork"};
    for (size_t i = 0; i < ELEMENTSOF(never); i++)
        if (allows(spec, never[i])) {
            json_decref(spec);
            TEST_FAIL("\"%s\" is allowed", never[i]);
        }
    for (size_t i = 0; i < ELEMENTSOF(needed); i++)
        if (!allows(spec, needed[i])) {
            json_decref(spec);
            TEST_FAIL("\"%s\" is not allowed", needed[i]);
        }
    json_decref(spec);
}

/* The filter compiled once for crun: a BPF program as libseccomp makes it (it starts by loading the
 * architecture), in one line of base64, in the annotation crun reads, and only when given. */
TEST(compiled_filter_goes_in_crun_annotation)
{
    _cleanup_free_ char *bpf = NULL;
    Error e = ERROR_INIT;
    ASSERT_OK(oci_seccomp_compile(&bpf, &e));
    ASSERT_TRUE(strchr(bpf, '\n') == NULL);
    gnutls_datum_t in = {(unsigned char *)bpf, (unsigned)strlen(bpf)}, out = {0};
    ASSERT_EQ(gnutls_base64_decode2(&in, &out), 0);
    size_t n = out.size / sizeof(struct sock_filter);
    struct sock_filter first;
    memcpy(&first, out.data, sizeof first);
    gnutls_free(out.data);
    ASSERT_EQ(out.size % sizeof(struct sock_filter), 0);
    ASSERT_TRUE(n > 100); /* a jump per allowed call, at least */
    ASSERT_EQ(first.code, BPF_LD | BPF_W | BPF_ABS);
    ASSERT_EQ(first.k, offsetof(struct seccomp_data, arch));

    OciSpec s = base_spec();
    json_t *plain = oci_spec_build(&s);
    s.seccomp_bpf = bpf;
    json_t *with = oci_spec_build(&s);
    bool none = json_object_get(plain, "annotations") == NULL;
    const char *got = json_string_value(
        json_object_get(json_object_get(with, "annotations"), OCI_SECCOMP_BPF_ANNOTATION));
    bool same = got && strcmp(got, bpf) == 0;
    /* the JSON profile stays, for runc and for readers */
    bool json_too = json_object_get(json_object_get(with, "linux"), "seccomp") != NULL;
    json_decref(plain);
    json_decref(with);
    ASSERT_TRUE(none);
    ASSERT_TRUE(same);
    ASSERT_TRUE(json_too);
}

/* The options of the mount at dest, joined by commas, or NULL. */
static char *mount_options(json_t *spec, const char *dest)
{
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(spec, "mounts"), i, m)
    {
        if (strcmp(json_string_value(json_object_get(m, "destination")), dest) != 0)
            continue;
        StrBuf b = STRBUF_INIT;
        size_t j;
        json_t *o;
        json_array_foreach(json_object_get(m, "options"), j, o)
            strbuf_printf(&b, "%s%s", j ? "," : "", json_string_value(o));
        return strbuf_steal(&b);
    }
    return NULL;
}

TEST(operator_mounts)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    _cleanup_free_ char *data = xasprintf("%s/data", dir), *shared = xasprintf("%s/shared", dir);
    ASSERT_OK(mkdir(data, 0755));
    ASSERT_OK(mkdir(shared, 0755));
    const char *const priv[] = {data, NULL};
    OciMount *m = NULL;
    size_t n = 9;
    Error e = ERROR_INIT;
    ASSERT_OK(oci_mounts_parse(NULL, priv, &m, &n, &e));
    ASSERT_TRUE(m == NULL && n == 0);
    ASSERT_OK(oci_mounts_parse(" , ", priv, &m, &n, &e));
    ASSERT_TRUE(m == NULL && n == 0);

    _cleanup_free_ char *text = xasprintf("/usr, /lib64:ro,%s:/out:rw", shared);
    ASSERT_OK(oci_mounts_parse(text, priv, &m, &n, &e));
    ASSERT_EQ(n, 3);
    ASSERT_STREQ(m[0].source, "/usr");
    ASSERT_STREQ(m[0].destination, "/usr");
    ASSERT_FALSE(m[0].writable);
    ASSERT_STREQ(m[1].destination, "/lib64");
    ASSERT_STREQ(m[2].source, shared);
    ASSERT_STREQ(m[2].destination, "/out");
    ASSERT_TRUE(m[2].writable);

    /* in the spec: nosuid and nodev always; a writable one is never executable */
    OciSpec s = base_spec();
    s.mounts = m, s.n_mounts = n;
    json_t *spec = oci_spec_build(&s);
    _cleanup_free_ char *usr = mount_options(spec, "/usr"), *out = mount_options(spec, "/out");
    json_decref(spec);
    oci_mounts_free(m, n);
    ASSERT_STREQ(usr, "rbind,ro,nosuid,nodev");
    ASSERT_STREQ(out, "rbind,rw,nosuid,nodev,noexec");

    _cleanup_free_ char *above = xasprintf("%s:/d", dir), *inside = xasprintf("%s/x:/d", data);
    _cleanup_free_ char *inside_dir = xasprintf("%s/x", data);
    ASSERT_OK(mkdir(inside_dir, 0755));
    const struct {
        const char *text;
        int err;
        const char *says;
    } bad[] = {
        {"usr", -EINVAL, "absolute"},
        {"/usr/../etc", -EINVAL, "normalized"},
        {"/usr/", -EINVAL, "normalized"},
        {"/", -EINVAL, "not /"},
        {"/usr:/proc/x", -EINVAL, "the container's own (/proc)"},
        {"/usr:/data", -EINVAL, "the container's own (/data)"},
        {"/usr:/tmp", -EINVAL, "the container's own (/tmp)"},
        {"/usr:/run/runtara/y", -EINVAL, "the container's own"},
        {"/usr:/usr:rw:x", -EINVAL, "SOURCE[:DESTINATION][:ro|rw]"},
        {"/no/such/dir", -ENOENT, "No such file"},
        {above, -EPERM, "would show the daemon's"},
        {inside, -EPERM, "would show the daemon's"},
    };
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        Error be = ERROR_INIT;
        int r = oci_mounts_parse(bad[i].text, priv, &m, &n, &be);
        bool says = strstr(error_message(&be), bad[i].says) != NULL &&
                    strstr(error_message(&be), "invalid RUNTARA_OCI_MOUNTS entry") != NULL;
        if (r != bad[i].err || !says || m || n)
            TEST_FAIL("\"%s\": %d, \"%s\"", bad[i].text, r, error_message(&be));
        error_done(&be);
    }
    StrBuf many = STRBUF_INIT;
    for (int i = 0; i <= OCI_MOUNTS_MAX; i++)
        strbuf_printf(&many, "%s/usr:/m%d", i ? "," : "", i);
    _cleanup_free_ char *many_text = strbuf_steal(&many);
    ASSERT_EQ(oci_mounts_parse(many_text, priv, &m, &n, &e), -E2BIG);
    error_done(&e);
}

TEST(isolation_settings)
{
    OciSpec s = base_spec();
    json_t *spec = oci_spec_build(&s);
    ASSERT_NOT_NULL(spec);
    json_t *p = json_object_get(spec, "process");
    json_t *l = json_object_get(spec, "linux");
    json_t *mem = json_object_get(json_object_get(l, "resources"), "memory");
    json_t *seccomp = json_object_get(l, "seccomp");
    json_t *caps = json_object_get(p, "capabilities");
    const char *sets[] = {"bounding", "effective", "inheritable", "permitted", "ambient"};
    bool caps_empty = true;
    for (size_t i = 0; i < ELEMENTSOF(sets); i++)
        caps_empty &= json_array_size(json_object_get(caps, sets[i])) == 0 &&
                      json_object_get(caps, sets[i]) != NULL;
    bool root_ro = json_is_true(json_object_get(json_object_get(spec, "root"), "readonly"));
    bool nnp = json_is_true(json_object_get(p, "noNewPrivileges"));
    json_int_t uid = json_integer_value(json_object_get(json_object_get(p, "user"), "uid"));
    json_int_t limit = json_integer_value(json_object_get(mem, "limit"));
    json_int_t swap = json_integer_value(json_object_get(mem, "swap"));
    json_int_t errno_ret = json_integer_value(json_object_get(seccomp, "defaultErrnoRet"));
    _cleanup_free_ char *cwd = xstrdup(json_string_value(json_object_get(p, "cwd")));
    bool data = has_mount(spec, "/data"), sock = has_mount(spec, "/run/runtara");
    size_t rlimits = json_array_size(json_object_get(p, "rlimits"));
    char *text = json_dumps(spec, JSON_COMPACT);
    json_decref(spec);

    ASSERT_TRUE(caps_empty);
    ASSERT_TRUE(root_ro);
    ASSERT_TRUE(nnp);
    ASSERT_EQ(uid, 65534);
    ASSERT_EQ(limit, 512 << 20);
    ASSERT_EQ(swap, limit); /* no swap beyond the memory limit */
    ASSERT_EQ(errno_ret, ENOSYS);
    ASSERT_STREQ(cwd, "/data");
    ASSERT_TRUE(data && sock);
    ASSERT_EQ(rlimits, 3);
    ASSERT_NOT_NULL(strstr(text, "\"/run/runtara-env\""));
    free(text);
}

TEST(socket_dir_is_read_only)
{
    OciSpec s = base_spec();
    json_t *spec = oci_spec_build(&s);
    size_t i;
    json_t *m;
    bool ro = false;
    json_array_foreach(
        json_object_get(spec, "mounts"), i,
        m) if (strcmp(json_string_value(json_object_get(m, "destination")), "/run/runtara") == 0)
    {
        size_t k;
        json_t *o;
        json_array_foreach(json_object_get(m, "options"), k, o) ro |=
            strcmp(json_string_value(o), "ro") == 0;
    }
    json_decref(spec);
    ASSERT_TRUE(ro);
}

TEST(incomplete_specs_are_refused)
{
    OciSpec s = base_spec();
    s.rootfs = "relative/rootfs";
    ASSERT_NULL(oci_spec_build(&s));
    s = base_spec();
    s.args = NULL;
    ASSERT_NULL(oci_spec_build(&s));
    s = base_spec();
    s.run_dir = NULL;
    ASSERT_NULL(oci_spec_build(&s));
    s = base_spec();
    s.socket_dir = "sock";
    ASSERT_NULL(oci_spec_build(&s));
    s = base_spec();
    s.network = (OciNetwork)7;
    ASSERT_NULL(oci_spec_build(&s));

    Error e = ERROR_INIT;
    s.network = OCI_NETWORK_NONE;
    s.rootfs = NULL;
    ASSERT_EQ(oci_spec_write(AT_FDCWD, "never.json", &s, &e), -EINVAL);
    ASSERT_EQ(access("never.json", F_OK), -1);
    error_done(&e);
}

TEST(network_names)
{
    ASSERT_EQ(oci_network_from_string("none"), OCI_NETWORK_NONE);
    ASSERT_EQ(oci_network_from_string("isolated"), OCI_NETWORK_NONE);
    ASSERT_EQ(oci_network_from_string("host"), OCI_NETWORK_HOST);
    ASSERT_EQ(oci_network_from_string("pasta"), _OCI_NETWORK_INVALID);
    ASSERT_EQ(oci_network_from_string(NULL), _OCI_NETWORK_INVALID);
    ASSERT_STREQ(oci_network_to_string(OCI_NETWORK_HOST), "host");
}

TESTS_MAIN(T(variants_validate_against_schema),
           T(network_none_has_its_own_namespace_and_no_host_files), T(seccomp_allow_list),
           T(compiled_filter_goes_in_crun_annotation), T(operator_mounts), T(isolation_settings),
           T(socket_dir_is_read_only), T(incomplete_specs_are_refused), T(network_names))
