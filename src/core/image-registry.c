#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/alloc.h"
#include "../base/digest.h"
#include "../base/fileio.h"
#include "../base/id.h"
#include "image-registry.h"

struct ImageRegistry {
    Store *store;
    int dirfd; /* DATA_DIR/images */
    char *dir;
    uint64_t max_size;
};

struct ImageUpload {
    ImageRegistry *reg;
    TmpFile file;
    Sha256 *hash;
    uint64_t bytes;
    int64_t declared;
    char image_id[37];
    char *tenant_id, *name, *description, *runner_type, *labels_json, *expected_sha256;
};

static int sweep_orphans(ImageRegistry *r, unsigned *ret_swept, Error *e)
{
    int n = fileio_sweep_prefix(r->dirfd, FILEIO_TMP_PREFIX);
    if (n < 0)
        return error_set(e, n, "could not clean \"%s\": %s", r->dir, strerror(-n));
    unsigned swept = (unsigned)n;

    int fd = openat(r->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        int k = -errno;
        if (fd >= 0)
            (void)close(fd);
        return error_set(e, k, "could not read \"%s\": %s", r->dir, strerror(-k));
    }
    for (struct dirent *de; (de = readdir(d));) {
        if (de->d_name[0] == '.')
            continue;
        int k = id_is_valid(de->d_name) ? store_image_exists(r->store, de->d_name, e) : 0;
        if (k < 0) {
            closedir(d);
            return k;
        }
        if (k == 0 && fileio_rm_rf_at(r->dirfd, de->d_name) >= 0)
            swept++;
    }
    closedir(d);
    *ret_swept = swept;
    return 0;
}

int image_registry_open(const char *data_dir, Store *store, uint64_t max_size, ImageRegistry **ret,
                        unsigned *ret_swept, Error *e)
{
    _cleanup_free_ char *dir = xasprintf("%s/images", data_dir);
    int r = fileio_mkdir_p(dir, 0755);
    if (r < 0)
        return error_set(e, r, "could not create \"%s\": %s", dir, strerror(-r));
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return error_set(e, -errno, "could not open \"%s\": %m", dir);

    ImageRegistry *reg = xcalloc(1, sizeof *reg);
    *reg = (ImageRegistry){.store = store, .dirfd = fd, .dir = TAKE_PTR(dir), .max_size = max_size};
    unsigned swept = 0;
    r = sweep_orphans(reg, &swept, e);
    if (r < 0) {
        image_registry_free(reg);
        return r;
    }
    if (ret_swept)
        *ret_swept = swept;
    *ret = reg;
    return 0;
}

ImageRegistry *image_registry_free(ImageRegistry *r)
{
    if (!r)
        return NULL;
    (void)close(r->dirfd);
    free(r->dir);
    free(r);
    return NULL;
}

static int too_large(ImageRegistry *r, Error *e)
{
    return error_set(e, -EFBIG,
                     "image exceeds the size limit of %llu bytes (RUNTARA_MAX_IMAGE_SIZE)",
                     (unsigned long long)r->max_size);
}

int image_upload_begin(ImageRegistry *r, const ImageSpec *spec, int64_t declared_size,
                       ImageUpload **ret, Error *e)
{
    int k = image_spec_validate(spec, e);
    if (k < 0)
        return k;
    if (declared_size > 0 && (uint64_t)declared_size > r->max_size)
        return too_large(r, e);

    ImageUpload *u = xcalloc(1, sizeof *u);
    u->reg = r;
    u->file = (TmpFile)TMPFILE_INIT;
    u->declared = declared_size;
    k = id_new_uuid(u->image_id);
    if (k >= 0)
        k = tmpfile_open(r->dirfd, 0755, &u->file);
    if (k < 0) {
        image_upload_abort(u);
        return error_set(e, k, "could not create a file in \"%s\": %s", r->dir, strerror(-k));
    }
    u->hash = sha256_new();
    u->tenant_id = xstrdup(spec->tenant_id);
    u->name = xstrdup(spec->name);
    u->description = xstrdup(spec->description);
    u->runner_type = xstrdup(spec->runner_type ? spec->runner_type : "oci");
    u->labels_json =
        spec->labels ? json_dumps(spec->labels, JSON_COMPACT | JSON_SORT_KEYS) : xstrdup("{}");
    u->expected_sha256 = xstrdup(spec->expected_sha256);
    *ret = u;
    return 0;
}

int image_upload_write(ImageUpload *u, const void *data, size_t n, Error *e)
{
    if (u->bytes + n > u->reg->max_size)
        return too_large(u->reg, e);
    int r = fileio_write_all(u->file.fd, data, n);
    if (r < 0)
        return error_set(e, r, "could not write image \"%s\": %s", u->image_id, strerror(-r));
    sha256_update(u->hash, data, n);
    u->bytes += n;
    return 0;
}

uint64_t image_upload_bytes(const ImageUpload *u)
{
    return u->bytes;
}

/* Link the finished file as images/<id>/binary, durably. */
static int place_file(ImageUpload *u, Error *e)
{
    ImageRegistry *r = u->reg;
    if (mkdirat(r->dirfd, u->image_id, 0755) < 0)
        return error_set(e, -errno, "could not create image directory \"%s/%s\": %m", r->dir,
                         u->image_id);
    _cleanup_close_ int fd =
        openat(r->dirfd, u->image_id, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    int k = fd < 0 ? -errno : tmpfile_link_durable(&u->file, fd, "binary");
    if (k < 0) {
        (void)fileio_rm_rf_at(r->dirfd, u->image_id);
        return error_set(e, k, "could not store image \"%s\": %s", u->image_id, strerror(-k));
    }
    return 0;
}

/* Keep the placed file's bytes in the store too, for daemons that do not share this DATA_DIR
 * (store_image_blob_put(); a store serving one daemon has no use for them). Before the row: a row
 * is only ever seen with its bytes. */
static int share_file(ImageUpload *u, const char *digest, Error *e)
{
    ImageRegistry *r = u->reg;
    _cleanup_free_ char *path = xasprintf("%s/%s/binary", r->dir, u->image_id);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    int k = fd < 0 ? error_set(e, -errno, "could not read back image \"%s\": %m", u->image_id)
                   : store_image_blob_put(r->store, digest, fd, u->bytes, e);
    if (k == -ENOSYS) {
        error_done(e);
        return 0;
    }
    if (k < 0) {
        (void)fileio_rm_rf_at(r->dirfd, u->image_id);
        return error_prefix(e, "could not register image");
    }
    return 0;
}

int image_upload_commit(ImageUpload *u, ImageRecord *ret, Error *e)
{
    char digest[SHA256_HEX_LEN + 1];
    int k = 0;

    sha256_final_hex(u->hash, digest);
    if (u->bytes == 0)
        k = error_set(e, -EINVAL, "image is empty: send the executable as the request body");
    else if (u->declared >= 0 && (uint64_t)u->declared != u->bytes)
        k = error_set(e, -EINVAL, "image is %llu bytes, but %lld were announced",
                      (unsigned long long)u->bytes, (long long)u->declared);
    else if (u->expected_sha256 && strcmp(u->expected_sha256, digest) != 0)
        k = error_set(e, -EINVAL, "checksum mismatch: expected sha256 %s, got %s",
                      u->expected_sha256, digest);
    if (k >= 0)
        k = place_file(u, e);
    if (k >= 0)
        k = share_file(u, digest, e);
    if (k < 0) {
        image_upload_abort(u);
        return k;
    }

    ImageRecord rec = {
        .image_id = xstrdup(u->image_id),
        .tenant_id = TAKE_PTR(u->tenant_id),
        .name = TAKE_PTR(u->name),
        .description = TAKE_PTR(u->description),
        .runner_type = TAKE_PTR(u->runner_type),
        .labels_json = TAKE_PTR(u->labels_json),
        .sha256 = xstrdup(digest),
        .size_bytes = u->bytes,
        .created_at = now_usec(CLOCK_REALTIME),
    };
    k = store_image_insert(u->reg->store, &rec, e);
    if (k < 0) {
        (void)fileio_rm_rf_at(u->reg->dirfd, u->image_id);
        image_record_done(&rec);
        image_upload_abort(u);
        return error_prefix(e, "could not register image");
    }
    image_upload_abort(u); /* frees what is left */
    *ret = rec;
    return 0;
}

void image_upload_abort(ImageUpload *u)
{
    if (!u)
        return;
    tmpfile_done(&u->file);
    sha256_free(u->hash);
    free(u->tenant_id);
    free(u->name);
    free(u->description);
    free(u->runner_type);
    free(u->labels_json);
    free(u->expected_sha256);
    free(u);
}

int image_registry_purge(ImageRegistry *r, usec_t created_before, unsigned limit, size_t *ret_n,
                         Error *e)
{
    StoreRef *refs = NULL;
    size_t n = 0;
    int k = store_image_purge(r->store, created_before, limit, &refs, &n, e);
    if (k < 0)
        return k;
    for (size_t i = 0; i < n; i++)
        (void)fileio_rm_rf_at(r->dirfd, refs[i].id); /* a leftover is swept at the next start */
    store_refs_free(refs, n);
    *ret_n = n;
    return 0;
}

int image_registry_delete(ImageRegistry *r, const char *image_id, const char *tenant_id, Error *e)
{
    int k = store_image_delete(r->store, image_id, tenant_id, e);
    if (k < 0)
        return k;
    /* The row is gone, which is what counts; a directory left by a failure here is swept at the
     * next start. */
    (void)fileio_rm_rf_at(r->dirfd, image_id);
    return 0;
}

/* The SHA-256 of fd's whole contents, read from offset 0. */
static int sha256_fd_hex(int fd, char hex[static SHA256_HEX_LEN + 1])
{
    Sha256 *h = sha256_new();
    char buf[64 * 1024];
    int r = 0;
    for (off_t at = 0;;) {
        ssize_t n = pread(fd, buf, sizeof buf, at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            r = n < 0 ? -errno : 0;
            break;
        }
        sha256_update(h, buf, (size_t)n);
        at += n;
    }
    if (r >= 0)
        sha256_final_hex(h, hex);
    sha256_free(h);
    return r;
}

int image_file_ensure(Store *store, const char *data_dir, const ImageRecord *img, char **ret_path,
                      Error *e)
{
    _cleanup_free_ char *path = xasprintf("%s/images/%s/binary", data_dir, img->image_id);
    if (access(path, F_OK) == 0) {
        *ret_path = TAKE_PTR(path);
        return 0;
    }
    /* Not here: registered through another daemon. Fetch the bytes, check them, and place them
     * as an upload does (a crash leaves nothing, or a directory the next start sweeps). */
    _cleanup_free_ char *dir = xasprintf("%s/images", data_dir);
    _cleanup_close_ int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return error_set(e, -errno, "could not open \"%s\": %m", dir);
    TmpFile t = TMPFILE_INIT;
    int k = tmpfile_open(dirfd, 0755, &t);
    if (k < 0)
        return error_set(e, k, "could not create a file in \"%s\": %s", dir, strerror(-k));
    k = store_image_blob_get(store, img->sha256, t.fd, e);
    if (k >= 0) {
        char digest[SHA256_HEX_LEN + 1];
        k = sha256_fd_hex(t.fd, digest);
        if (k < 0)
            k = error_set(e, k, "could not read back image \"%s\": %s", img->image_id,
                          strerror(-k));
        else if (strcmp(digest, img->sha256) != 0)
            k = error_set(e, -EIO,
                          "the bytes of image \"%s\" in the database do not match its sha256 "
                          "(%s, got %s)",
                          img->image_id, img->sha256, digest);
    }
    if (k >= 0 && mkdirat(dirfd, img->image_id, 0755) < 0 && errno != EEXIST)
        k = error_set(e, -errno, "could not create image directory \"%s/%s\": %m", dir,
                      img->image_id);
    if (k >= 0) {
        _cleanup_close_ int fd =
            openat(dirfd, img->image_id, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        k = fd < 0 ? -errno : tmpfile_link_durable(&t, fd, "binary");
        if (k < 0 && k != -EEXIST)
            k = error_set(e, k, "could not store image \"%s\": %s", img->image_id, strerror(-k));
        else
            k = 0; /* (EEXIST: placed meanwhile, the same bytes) */
    }
    tmpfile_done(&t);
    if (k < 0)
        return error_prefix(e, "could not fetch image \"%s\" from the database", img->image_id);
    *ret_path = TAKE_PTR(path);
    return 0;
}
