/* The root file systems of the OCI runner: one per image, shared read-only by all its containers.
 *
 *   BUNDLES_DIR/<image_id>/rootfs/binary            the image's static program, mode 0555
 *   BUNDLES_DIR/<image_id>/rootfs/{proc,dev,tmp,data,run/runtara}   empty mount points
 *   BUNDLES_DIR/<image_id>/rootfs/etc/{resolv.conf,hosts}           empty, for host networking
 *
 * (The mount points of RUNTARA_OCI_MOUNTS are made by the runtime at a container's start: empty
 * directories, the same for every container of the image.)
 *
 * binary is a hard link to DATA_DIR/images/<id>/binary when both are on one file system (images
 * never change once stored, so the shared inode is made 0555), a copy otherwise. A rootfs is
 * built whole in a temporary directory and renamed into place, so a reader sees none or all of
 * it; when several build one at once, the first rename wins and the others throw theirs away.
 * Directories are 0555: nothing in a rootfs is written after it is built. */
#pragma once

#include <stdbool.h>

#include "../base/error.h"

#define OCI_BUNDLE_ROOTFS "rootfs"
#define OCI_BUNDLE_BINARY "binary" /* in the rootfs; "/binary" inside the container */

/** True if id is safe as one path component (id_is_valid(): [A-Za-z0-9][A-Za-z0-9_.-]*, no
 *  ".."). */
bool oci_bundle_id_valid(const char *image_id);

/** Make sure bundles_dir/<image_id>/rootfs exists, building it from binary_path (a regular file)
 *  if not; bundles_dir is created if missing. On success *ret_rootfs is the rootfs's absolute
 *  path (owned by the caller). -EINVAL for an invalid image_id or a relative bundles_dir, -ENOENT
 *  if binary_path does not exist, other -errno from the file system. Blocks on file I/O (a copy of
 *  the binary when it cannot be linked). */
int oci_bundle_ensure(const char *bundles_dir, const char *image_id, const char *binary_path,
                      char **ret_rootfs, Error *e);

/** Remove bundles_dir/<image_id>, when the image is deleted. Containers still running keep their
 *  root mounted and are not disturbed. A missing bundle is not an error. */
int oci_bundle_remove(const char *bundles_dir, const char *image_id, Error *e);

/** Remove what interrupted builds left in bundles_dir (temporary directories). Call at start-up,
 *  before any oci_bundle_ensure(). Returns the number removed or -errno. */
int oci_bundle_sweep(const char *bundles_dir);
