/* Run directories and the spare made ahead of a launch (run-dir.h). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/alloc.h"
#include "../base/fileio.h"
#include "../base/log.h"
#include "run-dir.h"

#define SPARE_NAME ".spare-run"
#define INPUT_FILE "input.json"
#define DIR_MODE 0750
#define FILE_MODE 0640

struct RunDirs {
    char *data_dir;
    char *spare; /* its path */
    Runner *runner;
    int spare_fd;   /* the spare, complete; -1 while there is none */
    bool no_spares; /* a spare cannot be renamed into place here */
};

RunDirs *run_dirs_new(const char *data_dir, Runner *runner)
{
    RunDirs *d = xcalloc(1, sizeof *d);
    *d = (RunDirs){.data_dir = xstrdup(data_dir),
                   .spare = xasprintf("%s/" SPARE_NAME, data_dir),
                   .runner = runner,
                   .spare_fd = -1};
    /* an earlier daemon's, possibly half made */
    (void)fileio_rm_rf_at(AT_FDCWD, d->spare);
    return d;
}

static void spare_discard(RunDirs *d)
{
    if (d->spare_fd >= 0)
        (void)close(d->spare_fd);
    d->spare_fd = -1;
    (void)fileio_rm_rf_at(AT_FDCWD, d->spare);
}

RunDirs *run_dirs_free(RunDirs *d)
{
    if (!d)
        return NULL;
    spare_discard(d);
    free(d->data_dir);
    free(d->spare);
    free(d);
    return NULL;
}

int run_dirs_ready(RunDirs *d, Error *e)
{
    if (d->spare_fd >= 0 || d->no_spares)
        return 0;
    (void)fileio_rm_rf_at(AT_FDCWD, d->spare); /* what a failed try left */
    int k = RET_NERRNO(mkdir(d->spare, DIR_MODE));
    _cleanup_close_ int fd =
        k < 0 ? -1 : open(d->spare, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (k >= 0 && fd < 0)
        k = -errno;
    if (k < 0)
        return error_set(e, k, "could not create the spare run directory \"%s\": %s", d->spare,
                         strerror(-k));
    int in =
        openat(fd, INPUT_FILE, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, FILE_MODE);
    if (in < 0)
        k = error_set(e, -errno, "could not create %s: %m", INPUT_FILE);
    else
        (void)close(in);
    if (k >= 0)
        k = runner_ready_dir(d->runner, fd, e);
    if (k < 0) {
        (void)fileio_rm_rf_at(AT_FDCWD, d->spare);
        return error_prefix(e, "could not ready the spare run directory \"%s\"", d->spare);
    }
    d->spare_fd = TAKE_FD(fd);
    return 0;
}

/* Rename the spare to dir, making dir's parent (the tenant's runs/) if it is missing. */
static int rename_spare(RunDirs *d, const char *dir)
{
    if (renameat2(AT_FDCWD, d->spare, AT_FDCWD, dir, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != ENOENT)
        return -errno;
    _cleanup_free_ char *parent = xstrdup(dir);
    *strrchr(parent, '/') = '\0';
    int k = fileio_mkdir_p(parent, DIR_MODE);
    if (k < 0)
        return k;
    return RET_NERRNO(renameat2(AT_FDCWD, d->spare, AT_FDCWD, dir, RENAME_NOREPLACE));
}

/* Make dir from the spare: 1 done, 0 not (dir exists, or the rename failed and the spare is
 * gone), < 0 the input could not be written. */
static int take_spare(RunDirs *d, const char *dir, const char *input, Error *e)
{
    int k = rename_spare(d, dir);
    if (k == -EEXIST)
        return 0; /* a relaunch: the spare waits for a new instance */
    if (k < 0) {
        /* another file system below DATA_DIR, or one without RENAME_NOREPLACE (NFS, FUSE):
         * it would fail for every instance */
        if (k == -EXDEV || k == -EINVAL || k == -ENOSYS || k == -EOPNOTSUPP)
            d->no_spares = true;
        log_warning("could not rename the spare run directory to \"%s\", creating it instead%s: %s",
                    dir, d->no_spares ? " (and from now on)" : "", strerror(-k));
        spare_discard(d);
        return 0;
    }
    _cleanup_close_ int fd = TAKE_FD(d->spare_fd);
    d->spare_fd = -1;
    /* made empty by run_dirs_ready(), and nothing runs in the directory yet: written in place */
    _cleanup_close_ int in = openat(fd, INPUT_FILE, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    k = in < 0 ? -errno : fileio_write_all(in, input, strlen(input));
    if (k < 0)
        return error_set(e, k, "could not write %s in \"%s\": %s", INPUT_FILE, dir, strerror(-k));
    return 1;
}

char *run_dirs_path(const RunDirs *d, const char *tenant, const char *id)
{
    return xasprintf("%s/%s/runs/%s", d->data_dir, tenant, id);
}

int run_dirs_prepare(RunDirs *d, const char *tenant, const char *id, const char *input,
                     char **ret_path, Error *e)
{
    _cleanup_free_ char *dir = run_dirs_path(d, tenant, id);
    int k = d->spare_fd >= 0 ? take_spare(d, dir, input, e) : 0;
    if (k < 0)
        return k;
    if (k == 0) {
        k = fileio_mkdir_p(dir, DIR_MODE);
        if (k < 0)
            return error_set(e, k, "could not create run directory \"%s\": %s", dir, strerror(-k));
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            return error_set(e, -errno, "could not open run directory \"%s\": %m", dir);
        k = fileio_write_replace(fd, INPUT_FILE, input, strlen(input), FILE_MODE);
        if (k < 0)
            return error_set(e, k, "could not write %s in \"%s\": %s", INPUT_FILE, dir,
                             strerror(-k));
    }
    *ret_path = TAKE_PTR(dir);
    return 0;
}
