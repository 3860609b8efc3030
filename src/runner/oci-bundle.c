#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/alloc.h"
#include "../base/fileio.h"
#include "../base/id.h"
#include "oci-bundle.h"

/* the mount points, parents first; etc/resolv.conf and etc/hosts are files, made apart */
static const char *const mount_dirs[] = {"proc", "dev", "tmp", "data", "run", "run/runtara", "etc"};
static const char *const mount_files[] = {"etc/resolv.conf", "etc/hosts"};

bool oci_bundle_id_valid(const char *image_id)
{
    return image_id && id_is_valid(image_id);
}

/* Copy the file at src to a new file dirfd/name of the given mode. */
static int copy_file(const char *src, int dirfd, const char *name, mode_t mode)
{
    _cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return -errno;
    _cleanup_close_ int out =
        openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (out < 0)
        return -errno;
    for (;;) {
        ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
                return -errno;
            char buf[65536];
            while ((n = read(in, buf, sizeof buf)) != 0) {
                if (n < 0 && errno == EINTR)
                    continue;
                int k = n < 0 ? -errno : fileio_write_all(out, buf, (size_t)n);
                if (k < 0)
                    return k;
            }
            break;
        }
    }
    return RET_NERRNO(fchmod(out, mode)); /* the umask took its part at creation */
}

/* Put the image's program in the rootfs: a hard link when it can, a copy when not. */
static int place_binary(const char *binary_path, int rootfd)
{
    if (linkat(AT_FDCWD, binary_path, rootfd, OCI_BUNDLE_BINARY, 0) == 0) {
        /* the image's own inode: stored once, never written again, so it loses nothing */
        return RET_NERRNO(fchmodat(rootfd, OCI_BUNDLE_BINARY, 0555, 0));
    }
    if (errno != EXDEV && errno != EPERM && errno != EMLINK)
        return -errno;
    return copy_file(binary_path, rootfd, OCI_BUNDLE_BINARY, 0555);
}

/* Fill the empty directory dirfd/rootfs. */
static int build_rootfs(int dirfd, const char *binary_path)
{
    if (mkdirat(dirfd, OCI_BUNDLE_ROOTFS, 0755) < 0)
        return -errno;
    _cleanup_close_ int rootfd =
        openat(dirfd, OCI_BUNDLE_ROOTFS, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (rootfd < 0)
        return -errno;
    int r = place_binary(binary_path, rootfd);
    if (r < 0)
        return r;
    for (size_t i = 0; i < ELEMENTSOF(mount_dirs); i++)
        if (mkdirat(rootfd, mount_dirs[i], 0755) < 0)
            return -errno;
    for (size_t i = 0; i < ELEMENTSOF(mount_files); i++) {
        int fd = openat(rootfd, mount_files[i], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
        if (fd < 0)
            return -errno;
        (void)close(fd);
    }
    /* read-only from the leaves up (a 0555 parent would not stop root, but keeps it tidy) */
    for (size_t i = ELEMENTSOF(mount_dirs); i-- > 0;)
        if (fchmodat(rootfd, mount_dirs[i], 0555, 0) < 0)
            return -errno;
    if (fchmod(rootfd, 0555) < 0)
        return -errno;
    (void)fsync(rootfd);
    return 0;
}

/* The absolute path of bundles_dir/id/rootfs if it is there (a complete build), else NULL. */
static char *existing_rootfs(const char *bundles_dir, const char *image_id)
{
    char *rootfs = xasprintf("%s/%s/%s", bundles_dir, image_id, OCI_BUNDLE_ROOTFS);
    char *binary = xasprintf("%s/%s", rootfs, OCI_BUNDLE_BINARY);
    struct stat st;
    bool ok = lstat(binary, &st) == 0 && S_ISREG(st.st_mode);
    free(binary);
    if (!ok)
        rootfs = mfree(rootfs);
    return rootfs;
}

int oci_bundle_ensure(const char *bundles_dir, const char *image_id, const char *binary_path,
                      char **ret_rootfs, Error *e)
{
    if (!oci_bundle_id_valid(image_id))
        return error_set(e, -EINVAL, "invalid image id \"%s\": %s", image_id ? image_id : "",
                         ID_RULE);
    if (!bundles_dir || bundles_dir[0] != '/')
        return error_set(e, -EINVAL, "bundles directory \"%s\" is not an absolute path",
                         bundles_dir ? bundles_dir : "");
    char *rootfs = existing_rootfs(bundles_dir, image_id);
    if (rootfs) {
        *ret_rootfs = rootfs;
        return 0;
    }
    int r = fileio_mkdir_p(bundles_dir, 0755);
    if (r < 0)
        return error_set(e, r, "could not create bundles directory \"%s\": %s", bundles_dir,
                         strerror(-r));
    _cleanup_close_ int dirfd = open(bundles_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return error_set(e, -errno, "could not open bundles directory \"%s\": %m", bundles_dir);

    char hex[17];
    r = id_random_hex(hex, 8);
    if (r < 0)
        return error_set(e, r, "could not make a temporary name: %s", strerror(-r));
    _cleanup_free_ char *tmp = xasprintf(FILEIO_TMP_PREFIX "%s-%s", image_id, hex);
    if (mkdirat(dirfd, tmp, 0755) < 0)
        return error_set(e, -errno, "could not create a directory in \"%s\": %m", bundles_dir);
    _cleanup_close_ int tmpfd = openat(dirfd, tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    r = tmpfd < 0 ? -errno : build_rootfs(tmpfd, binary_path);
    if (r == 0 && fchmod(tmpfd, 0555) < 0)
        r = -errno;
    if (r == 0 && renameat2(dirfd, tmp, dirfd, image_id, RENAME_NOREPLACE) < 0)
        r = errno == EEXIST || errno == ENOTEMPTY ? 1 : -errno; /* 1: another build won */
    if (r != 0)
        (void)fileio_rm_rf_at(dirfd, tmp);
    if (r < 0)
        return error_set(e, r,
                         "could not build the root file system of image \"%s\" from \"%s\": %s",
                         image_id, binary_path, strerror(-r));
    (void)fileio_fsync_dir(dirfd);
    *ret_rootfs = xasprintf("%s/%s/%s", bundles_dir, image_id, OCI_BUNDLE_ROOTFS);
    return 0;
}

int oci_bundle_remove(const char *bundles_dir, const char *image_id, Error *e)
{
    if (!oci_bundle_id_valid(image_id))
        return error_set(e, -EINVAL, "invalid image id \"%s\": %s", image_id ? image_id : "",
                         ID_RULE);
    _cleanup_close_ int dirfd = open(bundles_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return errno == ENOENT ? 0
                               : error_set(e, -errno, "could not open bundles directory \"%s\": %m",
                                           bundles_dir);
    /* out of the way first, in one step: a concurrent ensure then builds a fresh one */
    char hex[17];
    int r = id_random_hex(hex, 8);
    if (r < 0)
        return error_set(e, r, "could not make a temporary name: %s", strerror(-r));
    _cleanup_free_ char *tmp = xasprintf(FILEIO_TMP_PREFIX "%s-%s", image_id, hex);
    if (renameat(dirfd, image_id, dirfd, tmp) < 0)
        return errno == ENOENT
                   ? 0
                   : error_set(e, -errno, "could not remove the bundle of image \"%s\": %m",
                               image_id);
    r = fileio_rm_rf_at(dirfd, tmp);
    if (r < 0)
        return error_set(e, r, "could not remove the bundle of image \"%s\": %s", image_id,
                         strerror(-r));
    return 0;
}

int oci_bundle_sweep(const char *bundles_dir)
{
    _cleanup_close_ int dirfd = open(bundles_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return errno == ENOENT ? 0 : -errno;
    return fileio_sweep_prefix(dirfd, FILEIO_TMP_PREFIX);
}
