/* The OCI runtime outside of launches: container ids, the start-up check (with crun and runc for
 * real, and its messages when the runtime is missing or refuses), listing leftovers in a state
 * directory of our own, and killing a container. The real runs need root (containers do); without
 * it they are skipped. */
#include "../../src/runner/oci-runtime.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../src/base/alloc.h"
#include "../../src/runner/oci-bundle.h"
#include "../../src/runner/oci-spec.h"
#include "../lib/tests.h"

static const char *const runtimes[] = {"crun", "runc"};

static bool id_ok(const char *id)
{
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '-' || *p == '_'))
            return false;
    return strlen(id) > 0 && strlen(id) < OCI_ID_MAX;
}

TEST(container_ids_are_distinct_and_valid)
{
    char longa[300], longb[300];
    memset(longa, 'a', 128);
    memcpy(longa + 128, "/", 1);
    memset(longa + 129, 'x', 128);
    longa[257] = '\0';
    memcpy(longb, longa, sizeof longa);
    longb[256] = 'y'; /* differs in the last character only */
    const char *keys[] = {"acme/inst-1", "acme/inst-2", "acme/inst_1", "acm/einst-1",
                          "a_b/c",       "a/b_c",       "a.b/c",       "a/b.c",
                          longa,         longb,         "acme/x",      "acme_/x"};
    char ids[ELEMENTSOF(keys) * 3][OCI_ID_MAX];
    size_t n = 0;
    for (size_t i = 0; i < ELEMENTSOF(keys); i++)
        for (int attempt = 1; attempt <= 3; attempt++) {
            oci_container_id(keys[i], attempt, ids[n]);
            if (!id_ok(ids[n]))
                TEST_FAIL("invalid id \"%s\" for \"%s\"", ids[n], keys[i]);
            if (strncmp(ids[n], OCI_ID_PREFIX, strlen(OCI_ID_PREFIX)) != 0)
                TEST_FAIL("id \"%s\" lacks the prefix", ids[n]);
            n++;
        }
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(ids[i], ids[j]) == 0)
                TEST_FAIL("ids %zu and %zu are both \"%s\"", i, j, ids[i]);
    /* the same key and attempt: the same id, so a daemon started again finds the container */
    char again[OCI_ID_MAX];
    ASSERT_STREQ(oci_container_id("acme/inst-1", 2, again), ids[1]);
    ASSERT_NOT_NULL(strstr(ids[0], "acme_inst-1-1-"));
}

TEST(cgroups_paths)
{
    OciRuntime fs = {.path = "crun", .root = "/a/oci/state"},
               sd = {.path = "crun", .root = "/a/oci/state", .systemd_cgroup = true},
               other = {.path = "crun", .root = "/b/oci/state"};
    _cleanup_free_ char *a = oci_cgroups_path(&fs, "rt-x");
    _cleanup_free_ char *b = oci_cgroups_path(&sd, "rt-x");
    _cleanup_free_ char *c = oci_cgroups_path(&other, "rt-x");
    ASSERT_TRUE(strncmp(a, "/runtara/", 9) == 0 && strlen(a) == 9 + 8 + 1 + 4);
    ASSERT_STREQ(a + 17, "/rt-x");
    ASSERT_TRUE(strncmp(b, "runtara.slice:runtara-", 22) == 0);
    ASSERT_STREQ(b + 30, ":rt-x");
    ASSERT_TRUE(memcmp(a + 9, b + 22, 8) == 0); /* one daemon: one tag */
    /* another daemon's state directory: another cgroup for the same container id */
    ASSERT_TRUE(strcmp(a, c) != 0);
}

static const char *check_program(void)
{
    const char *p = getenv("RUNTARA_OCI_CHECK_PATH");
    return p ? p : "build/runtara-oci-check";
}

static bool can_run_containers(const char *runtime)
{
    if (geteuid() != 0)
        return false;
    _cleanup_free_ char *cmd = xasprintf("command -v %s >/dev/null", runtime);
    return system(cmd) == 0;
}

TEST(check_runs_a_container)
{
    for (size_t i = 0; i < ELEMENTSOF(runtimes); i++) {
        if (!can_run_containers(runtimes[i]))
            TEST_SKIP("needs root and crun and runc");
        _cleanup_free_ char *dir = tests_tmpdir();
        _cleanup_free_ char *root = xasprintf("%s/state", dir);
        _cleanup_free_ char *bundles = xasprintf("%s/bundles", dir);
        OciRuntime rt = {.path = runtimes[i], .root = root};
        usec_t elapsed = 0;
        Error e = ERROR_INIT;
        int r = oci_runtime_check(&rt, bundles, check_program(), 0, &elapsed, &e);
        if (r < 0)
            TEST_FAIL("%s: %s", runtimes[i], error_message(&e));
        printf("# %s: the check container ran to its end in %.1f ms\n", runtimes[i],
               (double)elapsed / 1000.0);
        ASSERT_TRUE(elapsed > 0);
        /* nothing left: no container, no temporary bundle */
        char **ids = NULL;
        size_t n = 99;
        ASSERT_OK(oci_runtime_list_ours(&rt, NULL, NULL, &ids, &n, &e));
        oci_ids_free(ids);
        ASSERT_EQ(n, 0);
        ASSERT_EQ(oci_bundle_sweep(bundles), 0);
        /* the containers' parent cgroup stays until released, then goes */
        _cleanup_free_ char *cg = oci_cgroups_path(&rt, "");
        _cleanup_free_ char *parent = xasprintf(
            "/sys/fs/cgroup/%s%.*s", access("/sys/fs/cgroup/memory", F_OK) == 0 ? "memory" : "",
            (int)strlen(cg) - 1, cg);
        ASSERT_EQ(access(parent, F_OK), 0);
        oci_cgroups_release(&rt);
        ASSERT_TRUE(access(parent, F_OK) < 0 && errno == ENOENT);
    }
}

TEST(check_says_what_failed)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    _cleanup_free_ char *bundles = xasprintf("%s/bundles", dir);
    Error e = ERROR_INIT;
    OciRuntime missing = {.path = "/nonexistent/crun"};
    ASSERT_EQ(oci_runtime_check(&missing, bundles, check_program(), 0, NULL, &e), -ENOENT);
    ASSERT_NOT_NULL(strstr(error_message(&e), "hint:"));
    ASSERT_NOT_NULL(strstr(error_message(&e), "RUNTARA_RUNNER=native"));
    error_done(&e);

    /* a runtime that refuses as crun 1.8 does on a hybrid-cgroup host */
    _cleanup_free_ char *fake = xasprintf("%s/fake-crun", dir);
    FILE *f = fopen(fake, "we");
    fputs("#!/bin/sh\necho 'cgroups in hybrid mode not supported, drop all controllers from "
          "cgroupv2' >&2\nexit 1\n",
          f);
    fclose(f);
    chmod(fake, 0755);
    OciRuntime refusing = {.path = fake};
    ASSERT_EQ(oci_runtime_check(&refusing, bundles, check_program(), 0, NULL, &e), -EIO);
    const char *msg = error_message(&e);
    printf("# %s\n", msg);
    ASSERT_NOT_NULL(strstr(msg, "could not run a test container"));
    ASSERT_NOT_NULL(strstr(msg, "cgroups in hybrid mode not supported"));
    ASSERT_NOT_NULL(strstr(msg, "hint: run scripts/setup-host.sh"));
    error_done(&e);
    ASSERT_EQ(oci_bundle_sweep(bundles), 0);
}

/* Create (not start) a container named id in rt's state directory, from a bundle under dir. */
static int create_container(const OciRuntime *rt, const char *dir, const char *id)
{
    _cleanup_free_ char *bundles = xasprintf("%s/bundles", dir);
    _cleanup_free_ char *bundle = xasprintf("%s/bundle-%s", dir, id);
    _cleanup_free_ char *run = xasprintf("%s/run", dir);
    _cleanup_free_ char *rootfs = NULL, *cg = oci_cgroups_path(rt, id);
    if (oci_bundle_ensure(bundles, "check", check_program(), &rootfs, NULL) < 0)
        return -EIO;
    (void)mkdir(run, 0755);
    if (mkdir(bundle, 0755) < 0)
        return -errno;
    static const char *const args[] = {"/binary", NULL};
    OciSpec s = {.rootfs = rootfs,
                 .args = args,
                 .uid = OCI_SPEC_NOBODY,
                 .gid = OCI_SPEC_NOBODY,
                 .run_dir = run,
                 .memory_bytes = 32 << 20,
                 .cgroups_path = cg};
    int fd = open(bundle, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int r = oci_spec_write(fd, "config.json", &s, NULL);
    close(fd);
    if (r < 0)
        return r;
    _cleanup_free_ char *cmd = xasprintf("%s --root %s create --bundle %s %s </dev/null "
                                         ">/dev/null 2>&1",
                                         rt->path, rt->root, bundle, id);
    return system(cmd) == 0 ? 0 : -EIO;
}

TEST(list_and_kill_leftovers)
{
    for (size_t i = 0; i < ELEMENTSOF(runtimes); i++) {
        if (!can_run_containers(runtimes[i]))
            TEST_SKIP("needs root and crun and runc");
        _cleanup_free_ char *dir = tests_tmpdir();
        _cleanup_free_ char *root = xasprintf("%s/state", dir);
        OciRuntime rt = {.path = runtimes[i], .root = root};
        Error e = ERROR_INIT;
        char **ids = NULL;
        size_t n = 99;
        ASSERT_OK(
            oci_runtime_list_ours(&rt, NULL, NULL, &ids, &n, &e)); /* no state directory yet */
        oci_ids_free(ids);
        ASSERT_EQ(n, 0);

        ASSERT_OK(create_container(&rt, dir, "rt-left-1"));
        ASSERT_OK(create_container(&rt, dir, "other-1"));
        ASSERT_OK(oci_runtime_list_ours(&rt, OCI_ID_PREFIX, NULL, &ids, &n, &e));
        ASSERT_EQ(n, 1);
        ASSERT_STREQ(ids[0], "rt-left-1");
        ASSERT_NULL(ids[1]);
        oci_ids_free(ids);
        ASSERT_OK(oci_runtime_list_ours(&rt, OCI_ID_PREFIX, "stopped", &ids, &n, &e));
        oci_ids_free(ids);
        ASSERT_EQ(n, 0); /* created: its init waits to start */
        ASSERT_OK(oci_runtime_list_ours(&rt, OCI_ID_PREFIX, "created", &ids, &n, &e));
        oci_ids_free(ids);
        ASSERT_EQ(n, 1);

        if (oci_container_kill(&rt, "rt-left-1", &e) < 0 || oci_container_kill(&rt, "other-1", &e))
            TEST_FAIL("%s: %s", runtimes[i], error_message(&e));
        ASSERT_OK(oci_container_kill(&rt, "rt-never-was", &e)); /* gone already: fine */
        ASSERT_OK(oci_runtime_list_ours(&rt, "", NULL, &ids, &n, &e));
        oci_ids_free(ids);
        ASSERT_EQ(n, 0);
    }
}

TEST(find_check_program)
{
    _cleanup_free_ char *saved = xstrdup(getenv("RUNTARA_OCI_CHECK_PATH"));
    setenv("RUNTARA_OCI_CHECK_PATH", "/opt/x/runtara-oci-check", 1);
    _cleanup_free_ char *a = oci_find_check_program();
    unsetenv("RUNTARA_OCI_CHECK_PATH");
    _cleanup_free_ char *b = oci_find_check_program();
    if (saved)
        setenv("RUNTARA_OCI_CHECK_PATH", saved, 1);
    ASSERT_STREQ(a, "/opt/x/runtara-oci-check");
    ASSERT_NOT_NULL(b);
    ASSERT_NOT_NULL(strstr(b, OCI_CHECK_PROGRAM));
}

TESTS_MAIN(T(container_ids_are_distinct_and_valid), T(cgroups_paths), T(check_runs_a_container),
           T(check_says_what_failed), T(list_and_kill_leftovers), T(find_check_program))
