/* Run directories and the spare made ahead of a launch (run-dir.h). */
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dirent.h>
#include <errno.h>
#include <limits.h>

#include "../base/alloc.h"
#include "../base/fileio.h"
#include "../base/id.h"
#include "../base/log.h"
#include "run-dir.h"

#define TENANTS_DIR "tenants"
/* In DATA_DIR/tenants/ once every tenant is there (tenant ids cannot begin with a dot). */
#define LAYOUT_MARK ".layout-2"
/* DATA_DIR/tenants/ while an upgrade fills it. */
#define TENANTS_NEW ".tenants-new"
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
    return xasprintf("%s/" TENANTS_DIR "/%s/runs/%s", d->data_dir, tenant, id);
}

char *run_dirs_tenant_path(const char *data_dir, const char *tenant)
{
    return xasprintf("%s/" TENANTS_DIR "/%s/runs", data_dir, tenant);
}

/* A tenant's directory that is a symlink (to another mount): the link itself moves one level
 * down, a relative target with it. */
static int move_tenant_link(int from_fd, int into_fd, const char *name, Error *e)
{
    char target[PATH_MAX];
    ssize_t n = readlinkat(from_fd, name, target, sizeof target - 1);
    if (n < 0)
        return error_set(e, -errno, "could not read the symlink of tenant \"%s\": %m", name);
    target[n] = '\0';
    if (target[0] == '/') {
        if (renameat2(from_fd, name, into_fd, name, RENAME_NOREPLACE) < 0)
            return error_set(e, -errno, "could not move the symlink of tenant \"%s\": %m", name);
        return 0;
    }
    _cleanup_free_ char *deeper = xasprintf("../%s", target);
    if (symlinkat(deeper, into_fd, name) < 0 && errno != EEXIST)
        return error_set(e, -errno, "could not move the symlink of tenant \"%s\": %m", name);
    if (unlinkat(from_fd, name, 0) < 0)
        return error_set(e, -errno, "could not remove the old symlink of tenant \"%s\": %m", name);
    return 0;
}

/* Move <from>/<name>/runs to <into>/<name>/runs, and remove <from>/<name> if that left it empty
 * (from, into: directory fds below DATA_DIR). */
static int move_tenant(int from_fd, int into_fd, const char *name, Error *e)
{
    struct stat st;
    if (fstatat(from_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
        int k = move_tenant_link(from_fd, into_fd, name, e);
        if (k >= 0 && fsync(into_fd) < 0)
            k = error_set(e, -errno, "could not sync the tenants' directory: %m");
        return k;
    }
    if (mkdirat(into_fd, name, DIR_MODE) < 0 && errno != EEXIST)
        return error_set(e, -errno, "could not create the directory of tenant \"%s\": %m", name);
    _cleanup_free_ char *runs = xasprintf("%s/runs", name);
    if (renameat2(from_fd, runs, into_fd, runs, RENAME_NOREPLACE) < 0)
        return error_set(e, -errno, "could not move the run directories of tenant \"%s\": %m",
                         name);
    /* durable before the upgrade is marked done: both directories the rename changed */
    _cleanup_close_ int dst = openat(into_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dst < 0 || fsync(dst) < 0)
        return error_set(e, -errno, "could not sync the directory of tenant \"%s\": %m", name);
    if (unlinkat(from_fd, name, AT_REMOVEDIR) < 0) { /* images/ keeps its images */
        _cleanup_close_ int src = openat(from_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (src < 0 || fsync(src) < 0)
            return error_set(e, -errno, "could not sync \"%s\": %m", name);
    }
    return 0;
}

/* Mark the directory at fd as holding every tenant, durably. */
static int mark_done(int fd, Error *e)
{
    _cleanup_close_ int mark = openat(fd, LAYOUT_MARK, O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
    if (mark < 0 || fsync(fd) < 0)
        return error_set(e, -errno, "could not mark the tenants' directory as complete: %m");
    return 0;
}

/* Move what an upgrade gathered in DATA_DIR/.tenants-new into an existing DATA_DIR/tenants, and
 * remove .tenants-new. */
static int merge_into_tenants(int data_fd, int new_fd, Error *e)
{
    _cleanup_close_ int tenants_fd =
        openat(data_fd, TENANTS_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (tenants_fd < 0)
        return error_set(e, -errno, "could not open \"%s\": %m", TENANTS_DIR);
    DIR *dir = fdopendir(dup(new_fd));
    if (!dir)
        return error_set(e, -errno, "could not read \"%s\": %m", TENANTS_NEW);
    int k = 0;
    struct dirent *de;
    while (k >= 0 && (de = readdir(dir))) {
        if (!id_is_valid(de->d_name))
            continue;
        if (renameat2(new_fd, de->d_name, tenants_fd, de->d_name, RENAME_NOREPLACE) == 0)
            continue;
        if (errno != EEXIST)
            k = error_set(e, -errno, "could not move tenant \"%s\" into \"%s\": %m", de->d_name,
                          TENANTS_DIR);
        else
            k = move_tenant(new_fd, tenants_fd, de->d_name, e);
        if (k == -EEXIST || k == -ENOTEMPTY)
            k = error_set(e, k,
                          "tenant \"%s\" has run directories both in \"%s/runs\" and in "
                          "\"%s/%s/runs\". hint: move them into one by hand",
                          de->d_name, de->d_name, TENANTS_DIR, de->d_name);
    }
    closedir(dir);
    if (k >= 0)
        k = mark_done(tenants_fd, e);
    if (k >= 0 && unlinkat(new_fd, LAYOUT_MARK, 0) < 0)
        k = error_set(e, -errno, "could not remove \"%s/%s\": %m", TENANTS_NEW, LAYOUT_MARK);
    if (k >= 0 && unlinkat(data_fd, TENANTS_NEW, AT_REMOVEDIR) < 0)
        k = error_set(e, -errno, "could not remove \"%s\": %m", TENANTS_NEW);
    return k;
}

int run_dirs_upgrade_layout(const char *data_dir, unsigned *ret_moved, Error *e)
{
    _cleanup_close_ int data_fd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (data_fd < 0)
        return error_set(e, -errno, "could not open data directory \"%s\": %m", data_dir);
    *ret_moved = 0;
    if (faccessat(data_fd, TENANTS_DIR "/" LAYOUT_MARK, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
        return 0;

    /* Filled under another name, then renamed into place: until the rename, DATA_DIR/tenants may
     * still be the old layout's tenant "tenants", and is moved like any other. */
    if (mkdirat(data_fd, TENANTS_NEW, DIR_MODE) < 0 && errno != EEXIST)
        return error_set(e, -errno, "could not create \"%s/%s\": %m", data_dir, TENANTS_NEW);
    _cleanup_close_ int new_fd =
        openat(data_fd, TENANTS_NEW, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (new_fd < 0)
        return error_set(e, -errno, "could not open \"%s/%s\": %m", data_dir, TENANTS_NEW);
    DIR *dir = fdopendir(dup(data_fd));
    if (!dir)
        return error_set(e, -errno, "could not read data directory \"%s\": %m", data_dir);
    int k = 0;
    struct dirent *de;
    while (k >= 0 && (errno = 0, de = readdir(dir))) {
        struct stat st;
        _cleanup_free_ char *runs = xasprintf("%s/runs", de->d_name);
        if (!id_is_valid(de->d_name) || fstatat(data_fd, runs, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
            !S_ISDIR(st.st_mode))
            continue;
        k = move_tenant(data_fd, new_fd, de->d_name, e);
        if (k >= 0)
            (*ret_moved)++;
    }
    if (k >= 0 && errno != 0)
        k = error_set(e, -errno, "could not read data directory \"%s\": %m", data_dir);
    closedir(dir);
    if (k < 0)
        return k;
    /* marked before it becomes DATA_DIR/tenants, so that no later start takes it for the old
     * layout's tenant "tenants" */
    k = mark_done(new_fd, e);
    if (k < 0)
        return k;
    /* DATA_DIR/tenants is gone by now if it was the old tenant "tenants" (emptied above) */
    if (renameat2(data_fd, TENANTS_NEW, data_fd, TENANTS_DIR, RENAME_NOREPLACE) < 0) {
        if (errno != EEXIST && errno != ENOTEMPTY)
            return error_set(e, -errno, "could not rename \"%s/%s\" to \"%s\": %m", data_dir,
                             TENANTS_NEW, TENANTS_DIR);
        /* made by hand ahead of the first start (a tenant's directory on another mount) */
        k = merge_into_tenants(data_fd, new_fd, e);
        if (k < 0)
            return k;
    }
    k = fileio_fsync_dir(data_fd);
    if (k < 0)
        return error_set(e, k, "could not sync data directory \"%s\": %s", data_dir, strerror(-k));
    return 0;
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

char *run_dirs_read_output(const char *dir)
{
    _cleanup_free_ char *path = xasprintf("%s/output.json", dir);
    _cleanup_free_ char *text = NULL;
    /* written by the program: never followed out of its run directory (a symlink to another
     * tenant's file would make its bytes this instance's output) */
    if (fileio_read_all_flags(path, O_NOFOLLOW, RUN_DIRS_OUTPUT_MAX, &text, NULL) < 0)
        return NULL;
    json_error_t jerr;
    json_t *doc = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!doc)
        return NULL;
    char *out = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(doc);
    return out;
}
