#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stdint.h>
#include <stdlib.h>

#include "alloc.h"
#include "fileio.h"
#include "id.h"
#include "macro.h"

int tmpfile_open(int dirfd, mode_t mode, TmpFile *ret)
{
    int fd = openat(dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, mode);
    if (fd >= 0) {
        *ret = (TmpFile){.fd = fd, .dirfd = dirfd, .tmpname = NULL};
        return 0;
    }
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
        return -errno;

    char hex[17];
    int r = id_random_hex(hex, 8);
    if (r < 0)
        return r;
    char *name = xasprintf(FILEIO_TMP_PREFIX "%s", hex);
    fd = openat(dirfd, name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) {
        r = -errno;
        free(name);
        return r;
    }
    *ret = (TmpFile){.fd = fd, .dirfd = dirfd, .tmpname = name};
    return 0;
}

int tmpfile_link_durable(TmpFile *t, int target_dirfd, const char *name)
{
    int r = 0;

    if (fsync(t->fd) < 0) {
        r = -errno;
        goto out;
    }
    if (t->tmpname) {
        if (renameat2(t->dirfd, t->tmpname, target_dirfd, name, RENAME_NOREPLACE) < 0) {
            r = -errno;
            goto out;
        }
        free(t->tmpname);
        t->tmpname = NULL;
    } else {
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", t->fd);
        if (linkat(AT_FDCWD, proc, target_dirfd, name, AT_SYMLINK_FOLLOW) < 0) {
            r = -errno;
            goto out;
        }
    }
    r = fileio_fsync_dir(target_dirfd);
    if (r >= 0 && target_dirfd != t->dirfd)
        r = fileio_fsync_dir(t->dirfd);
out:
    tmpfile_done(t);
    return r;
}

void tmpfile_done(TmpFile *t)
{
    if (t->fd >= 0)
        (void)close(t->fd);
    t->fd = -EBADF;
    if (t->tmpname) {
        (void)unlinkat(t->dirfd, t->tmpname, 0);
        free(t->tmpname);
        t->tmpname = NULL;
    }
}

int fileio_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int write_via_temp(int dirfd, const char *name, const void *data, size_t n, mode_t mode,
                          bool durable)
{
    char hex[17];
    int r = id_random_hex(hex, 8);
    if (r < 0)
        return r;

    _cleanup_free_ char *tmp = xasprintf(FILEIO_TMP_PREFIX "%s", hex);
    _cleanup_close_ int fd =
        openat(dirfd, tmp, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return -errno;

    r = fileio_write_all(fd, data, n);
    if (r >= 0 && durable)
        r = RET_NERRNO(fsync(fd));
    if (r >= 0)
        r = RET_NERRNO(renameat(dirfd, tmp, dirfd, name));
    if (r < 0) {
        (void)unlinkat(dirfd, tmp, 0);
        return r;
    }
    return durable ? fileio_fsync_dir(dirfd) : 0;
}

int fileio_write_atomic(int dirfd, const char *name, const void *data, size_t n, mode_t mode)
{
    return write_via_temp(dirfd, name, data, n, mode, true);
}

int fileio_write_replace(int dirfd, const char *name, const void *data, size_t n, mode_t mode)
{
    return write_via_temp(dirfd, name, data, n, mode, false);
}

int fileio_read_all(const char *path, size_t max, char **ret, size_t *ret_len)
{
    return fileio_read_all_flags(path, 0, max, ret, ret_len);
}

int fileio_read_all_flags(const char *path, int flags, size_t max, char **ret, size_t *ret_len)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | flags);
    if (fd < 0)
        return -errno;
    return fileio_read_fd(fd, max, ret, ret_len);
}

int fileio_read_fd(int fd, size_t max, char **ret, size_t *ret_len)
{
    struct stat st;

    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -EBADFD;
    if ((uint64_t)st.st_size > max)
        return -EFBIG;

    size_t cap = (size_t)st.st_size + 1, len = 0;
    _cleanup_free_ char *buf = xmalloc(cap);
    for (;;) {
        ssize_t k = read(fd, buf + len, cap - len - 1);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (k == 0)
            break;
        len += (size_t)k;
        if (len == cap - 1) {
            if (len >= max)
                return -EFBIG;
            cap = MIN(cap * 2, max + 2);
            buf = xrealloc(buf, cap);
        }
    }
    buf[len] = '\0';
    *ret = TAKE_PTR(buf);
    if (ret_len)
        *ret_len = len;
    return 0;
}

int fileio_mkdir_p(const char *path, mode_t mode)
{
    /* the usual case, a new directory in an existing one (a run directory): one call */
    if (mkdir(path, mode) == 0 || errno == EEXIST)
        return 0;
    if (errno != ENOENT)
        return -errno;

    _cleanup_free_ char *p = xstrdup(path);

    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, mode) < 0 && errno != EEXIST)
            return -errno;
        *s = '/';
    }
    if (mkdir(p, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int fileio_fsync_dir(int dirfd)
{
    return RET_NERRNO(fsync(dirfd));
}

int fileio_rm_rf_at(int dfd, const char *name)
{
    if (unlinkat(dfd, name, 0) == 0 || errno == ENOENT)
        return 0;
    if (errno != EISDIR && errno != EPERM)
        return -errno;

    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int r = -errno;
        (void)close(fd);
        return r;
    }
    int r = 0;
    for (struct dirent *de; (de = readdir(d));) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        int k = fileio_rm_rf_at(dirfd(d), de->d_name);
        if (k < 0 && r == 0)
            r = k;
    }
    closedir(d);
    if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT && r == 0)
        r = -errno;
    return r;
}

int fileio_sweep_prefix(int dirfd, const char *prefix)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int r = -errno;
        (void)close(fd);
        return r;
    }
    int n = 0;
    for (struct dirent *de; (de = readdir(d));)
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0 &&
            fileio_rm_rf_at(dirfd, de->d_name) >= 0)
            n++;
    closedir(d);
    return n;
}
