/* The per-image root file systems of the OCI runner: layout and modes, the hard link or the copy,
 * id validation, concurrent builders, removal and the sweep of interrupted builds. */
#include "../../src/runner/oci-bundle.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/base/alloc.h"
#include "../../src/base/fileio.h"
#include "../lib/tests.h"

/* A fake image binary in dir; returns its path. */
static char *make_binary(const char *dir)
{
    char *path = xasprintf("%s/binary", dir);
    FILE *f = fopen(path, "we");
    fputs("#!/bin/sh\nexit 0\n", f);
    fclose(f);
    chmod(path, 0755);
    return path;
}

/* How many entries of dir start with prefix. */
static int count_prefixed(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *de; (de = readdir(d));)
        n += strncmp(de->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

static mode_t mode_of(const char *root, const char *rel)
{
    _cleanup_free_ char *p = xasprintf("%s/%s", root, rel);
    struct stat st;
    return lstat(p, &st) == 0 ? st.st_mode : 0;
}

TEST(layout_and_modes)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    _cleanup_free_ char *bin = make_binary(dir);
    _cleanup_free_ char *bundles = xasprintf("%s/bundles", dir);
    _cleanup_free_ char *rootfs = NULL;
    Error e = ERROR_INIT;
    ASSERT_OK(oci_bundle_ensure(bundles, "img-1", bin, &rootfs, &e));
    _cleanup_free_ char *want = xasprintf("%s/img-1/rootfs", bundles);
    ASSERT_STREQ(rootfs, want);

    ASSERT_EQ(mode_of(rootfs, "binary"), S_IFREG | 0555);
    const char *dirs[] = {"proc", "dev", "tmp", "data", "run", "run/runtara", "etc"};
    for (size_t i = 0; i < ELEMENTSOF(dirs); i++)
        ASSERT_EQ(mode_of(rootfs, dirs[i]), S_IFDIR | 0555);
    ASSERT_EQ(mode_of(rootfs, "."), S_IFDIR | 0555);
    ASSERT_EQ(mode_of(rootfs, "etc/resolv.conf"), S_IFREG | 0444);
    ASSERT_EQ(mode_of(rootfs, "etc/hosts"), S_IFREG | 0444);

    /* on one file system: the image's own inode */
    struct stat a, b;
    _cleanup_free_ char *in_root = xasprintf("%s/binary", rootfs);
    ASSERT_OK(stat(bin, &a));
    ASSERT_OK(stat(in_root, &b));
    ASSERT_EQ(a.st_ino, b.st_ino);
    ASSERT_EQ(count_prefixed(bundles, FILEIO_TMP_PREFIX), 0);
}

TEST(second_ensure_reuses_the_rootfs)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    _cleanup_free_ char *bin = make_binary(dir);
    _cleanup_free_ char *bundles = xasprintf("%s/bundles", dir);
    _cleanup_free_ char *r1 = NULL, *r2 = NULL;
    Error e = ERROR_INIT;
    ASSERT_OK(oci_bundle_ensure(bundles, "img", bin, &r1, &e));
    struct stat a, b;
    ASSERT_OK(stat(r1, &a));
    ASSERT_OK(oci_bundle_ensure(bundles, "img", bin, &r2, &e));
    ASSERT_OK(stat(r2, &b));
    ASSERT_STREQ(r1, r2);
    ASSERT_EQ(a.st_ino, b.st_ino);
}

TEST(copy_across_file_systems)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    _cleanup_free_ char *bundles = xasprintf("%s/bundles", dir);
    struct stat shm, tmp;
    if (stat("/dev/shm", &shm) < 0 || stat(dir, &tmp) < 0 || shm.st_dev == tmp.st_dev)
        TEST_SKIP("no second file system at /dev/shm");
    char shmdir[] = "/dev/shm/runtara-test-XXXXXX";
    ASSERT_NOT_NULL(mkdtemp(shmdir));
    _cleanup_free_ char *bin = make_binary(shmdir);
    _cleanup_free_ char *rootfs = NULL;
    Error e = ERROR_INIT;
    int r = oci_bundle_ensure(bundles, "img", bin, &rootfs, &e);
    _cleanup_free_ char *copy = xasprintf("%s/binary", rootfs ? rootfs : "");
    _cleanup_free_ char *text = NULL;
    struct stat st;
    int k = stat(copy, &st);
    (void)fileio_read_all(copy, 4096, &text, NULL);
    (void)fileio_rm_rf_at(AT_FDCWD, shmdir);
    ASSERT_OK(r);
    ASSERT_OK(k);
    ASSERT_EQ(st.st_nlink, 1);
    ASSERT_EQ(st.st_mode, S_IFREG | 0555);
    ASSERT_STREQ(text, "#!/bin/sh\nexit 0\n");
}

TEST(invalid_ids_and_paths)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    _cleanup_free_ char *bin = make_binary(dir);
    _cleanup_free_ char *bundles = xasprintf("%s/bundles", dir);
    const char *bad[] = {"", "..", "../x", "a/b", ".hidden", "-x", "a..b", "/abs"};
    char *rootfs = NULL;
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        Error e = ERROR_INIT;
        ASSERT_EQ(oci_bundle_ensure(bundles, bad[i], bin, &rootfs, &e), -EINVAL);
        ASSERT_EQ(oci_bundle_remove(bundles, bad[i], &e), -EINVAL);
        error_done(&e);
    }
    Error e = ERROR_INIT;
    ASSERT_EQ(oci_bundle_ensure(NULL, "img", bin, &rootfs, &e), -EINVAL);
    ASSERT_EQ(oci_bundle_ensure("relative/bundles", "img", bin, &rootfs, &e), -EINVAL);
    error_done(&e);
    ASSERT_NULL(rootfs);
    ASSERT_FALSE(oci_bundle_id_valid(NULL));
    ASSERT_TRUE(oci_bundle_id_valid("img_1.2-3"));
}

TEST(missing_binary_leaves_nothing)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    _cleanup_free_ char *bundles = xasprintf("%s/bundles", dir);
    _cleanup_free_ char *missing = xasprintf("%s/nope", dir);
    char *rootfs = NULL;
    Error e = ERROR_INIT;
    ASSERT_EQ(oci_bundle_ensure(bundles, "img", missing, &rootfs, &e), -ENOENT);
    ASSERT_NOT_NULL(strstr(error_message(&e), "img"));
    error_done(&e);
    ASSERT_NULL(rootfs);
    ASSERT_EQ(count_prefixed(bundles, ""), 2); /* . and .. */
}

TEST(concurrent_builders_agree)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    _cleanup_free_ char *bin = make_binary(dir);
    _cleanup_free_ char *bundles = xasprintf("%s/bundles", dir);
    pid_t kids[8];
    for (size_t i = 0; i < ELEMENTSOF(kids); i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            char *rootfs = NULL;
            int r = oci_bundle_ensure(bundles, "shared", bin, &rootfs, NULL);
            _exit(r < 0 ? 1 : 0);
        }
        ASSERT_TRUE(kids[i] > 0);
    }
    int failed = 0;
    for (size_t i = 0; i < ELEMENTSOF(kids); i++) {
        int status;
        ASSERT_EQ(waitpid(kids[i], &status, 0), kids[i]);
        failed += !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    ASSERT_EQ(failed, 0);
    ASSERT_EQ(count_prefixed(bundles, FILEIO_TMP_PREFIX), 0);
    _cleanup_free_ char *rootfs = xasprintf("%s/shared/rootfs", bundles);
    ASSERT_EQ(mode_of(rootfs, "binary"), S_IFREG | 0555);
}

TEST(remove_and_sweep)
{
    _cleanup_free_ char *dir = tests_tmpdir();
    _cleanup_free_ char *bin = make_binary(dir);
    _cleanup_free_ char *bundles = xasprintf("%s/bundles", dir);
    _cleanup_free_ char *rootfs = NULL;
    Error e = ERROR_INIT;
    ASSERT_OK(oci_bundle_ensure(bundles, "img", bin, &rootfs, &e));
    ASSERT_OK(oci_bundle_remove(bundles, "img", &e));
    ASSERT_EQ(mode_of(bundles, "img"), 0);
    ASSERT_OK(oci_bundle_remove(bundles, "img", &e)); /* missing: fine */
    ASSERT_EQ(count_prefixed(bundles, FILEIO_TMP_PREFIX), 0);
    /* the image's binary stays: only the link went */
    ASSERT_EQ(access(bin, F_OK), 0);

    _cleanup_free_ char *left = xasprintf("%s/" FILEIO_TMP_PREFIX "img-0123", bundles);
    ASSERT_OK(mkdir(left, 0555));
    ASSERT_EQ(oci_bundle_sweep(bundles), 1);
    ASSERT_EQ(count_prefixed(bundles, FILEIO_TMP_PREFIX), 0);
    _cleanup_free_ char *none = xasprintf("%s/none", dir);
    ASSERT_EQ(oci_bundle_sweep(none), 0);
}

TESTS_MAIN(T(layout_and_modes), T(second_ensure_reuses_the_rootfs), T(copy_across_file_systems),
           T(invalid_ids_and_paths), T(missing_binary_leaves_nothing), T(concurrent_builders_agree),
           T(remove_and_sweep))
