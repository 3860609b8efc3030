/* Durable file writes (STYLE R16): everything relative to a directory fd, written to an anonymous
 * or temporary file, fsynced, then linked or renamed into place and the directory fsynced. A crash
 * at any point leaves either the old state or the new one. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* A file being written that has no name yet. With O_TMPFILE (ext4, xfs, btrfs, tmpfs) the inode
 * has no name at all until tmpfile_link_durable(), so a crash leaves nothing behind; elsewhere it
 * falls back to a ".tmp-<random>" name in the same directory, which the owner must sweep at
 * start-up (fileio_sweep_prefix). */
typedef struct TmpFile {
    int fd;        /* writable, O_CLOEXEC */
    int dirfd;     /* borrowed */
    char *tmpname; /* NULL with O_TMPFILE; owned */
} TmpFile;

#define TMPFILE_INIT                                                                               \
    {                                                                                              \
        -EBADF, -EBADF, NULL                                                                       \
    }
#define FILEIO_TMP_PREFIX ".tmp-"

/** Start a file in dirfd with the given mode, open for reading and writing. Returns 0 or a
 *  negative errno. */
int tmpfile_open(int dirfd, mode_t mode, TmpFile *ret);
/** fsync the data, give it the name `name` in target_dirfd (same filesystem), fsync both
 *  directories. Fails with -EEXIST if the name exists. The TmpFile is closed either way. */
int tmpfile_link_durable(TmpFile *t, int target_dirfd, const char *name);
/** Close and discard; NULL-safe, idempotent. */
void tmpfile_done(TmpFile *t);

/** write(2) all of buf, retrying on EINTR and short writes. */
int fileio_write_all(int fd, const void *buf, size_t n);
/** Atomically and durably replace dirfd/name with the given bytes (temp file, fsync, rename,
 *  fsync directory). */
int fileio_write_atomic(int dirfd, const char *name, const void *data, size_t n, mode_t mode);
/** Like fileio_write_atomic(), without the fsyncs: readers see the old or the new content, never
 *  a mix, but a crash may lose the change. For run-time state whose durable copy lives elsewhere
 *  (STYLE R16). */
int fileio_write_replace(int dirfd, const char *name, const void *data, size_t n, mode_t mode);
/** Read a whole regular file of at most max bytes; -EFBIG if larger. *ret is NUL-terminated. */
int fileio_read_all(const char *path, size_t max, char **ret, size_t *ret_len);
/** The same with extra open(2) flags (O_NOFOLLOW: a symlink fails with -ELOOP). */
int fileio_read_all_flags(const char *path, int flags, size_t max, char **ret, size_t *ret_len);
/** As fileio_read_all(), from the open file fd (a regular file, read from its current
 *  offset): one read for a small file, where jansson's json_loadfd() reads a byte at a time. */
int fileio_read_fd(int fd, size_t max, char **ret, size_t *ret_len);
/** mkdir -p with the given mode; existing directories are fine. */
int fileio_mkdir_p(const char *path, mode_t mode);
/** fsync a directory fd. */
int fileio_fsync_dir(int dirfd);
/** Remove dirfd/name recursively (a file or a directory tree); missing is not an error. Does not
 *  follow symlinks. */
int fileio_rm_rf_at(int dirfd, const char *name);
/** Remove every entry of dirfd whose name starts with prefix (FILEIO_TMP_PREFIX: what an
 *  interrupted writer left). Returns the number removed or a negative errno. */
int fileio_sweep_prefix(int dirfd, const char *prefix);
