/* The image registry: image executables on disk under DATA_DIR/images/<image_id>/binary and their
 * rows in the store. An upload streams into a nameless file (O_TMPFILE) while its SHA-256 is
 * computed; commit fsyncs it, links it into place, fsyncs the directories and only then inserts
 * the row, which is the commit point. A crash before the row leaves at most a directory without a
 * row, which image_registry_open() removes; a crash mid-upload leaves nothing at all.
 *
 * Functions may block on disk I/O and the store; an ImageUpload is used by one thread at a time. */
#pragma once

#include <stdint.h>

#include "../base/error.h"
#include "../store/store.h"
#include "image.h"

typedef struct ImageRegistry ImageRegistry;
typedef struct ImageUpload ImageUpload;

/** Open DATA_DIR/images (created if needed) and remove what interrupted uploads and deletes left:
 *  temp files and image directories without a row. *ret_swept counts removed entries. */
int image_registry_open(const char *data_dir, Store *store, uint64_t max_size, ImageRegistry **ret,
                        unsigned *ret_swept, Error *e);
ImageRegistry *image_registry_free(ImageRegistry *r);

/** Start an upload. declared_size is the announced byte count or -1; more than the limit is -EFBIG
 *  before any byte is read. */
int image_upload_begin(ImageRegistry *r, const ImageSpec *spec, int64_t declared_size,
                       ImageUpload **ret, Error *e);
/** Append bytes; -EFBIG past the limit, -ENOSPC when the disk is full. */
int image_upload_write(ImageUpload *u, const void *data, size_t n, Error *e);
/** Finish: check size and checksum, make the file durable, insert the row. On success *ret holds
 *  the new record (owned by the caller). The upload is consumed either way. */
int image_upload_commit(ImageUpload *u, ImageRecord *ret, Error *e);
/** Discard an unfinished upload; NULL-safe. */
void image_upload_abort(ImageUpload *u);
/** Bytes received so far. */
uint64_t image_upload_bytes(const ImageUpload *u);

/** Retention: delete up to limit image versions created before created_before that no instance
 *  uses and a newer version of the same name supersedes (store_image_purge), rows first, then
 *  their files. *ret_n is how many went. */
int image_registry_purge(ImageRegistry *r, usec_t created_before, unsigned limit, size_t *ret_n,
                         Error *e);
/** Delete an image row, then its files. -ENOENT (also for another tenant's image), -EBUSY while
 *  an unfinished instance uses it. */
int image_registry_delete(ImageRegistry *r, const char *image_id, const char *tenant_id, Error *e);

/** The path of an image's executable in data_dir (DATA_DIR/images/<id>/binary, caller frees),
 *  fetched first from the store if this daemon does not have it (registered through another
 *  daemon on the same database): written as an upload is, and checked against img->sha256.
 *  Blocks on the store and the disk. */
int image_file_ensure(Store *store, const char *data_dir, const ImageRecord *img, char **ret_path,
                      Error *e);
