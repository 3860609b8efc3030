/* The OCI runtime-spec config.json of one launch (runtime-spec 1.0.2), as crun and runc read it.
 *
 * The spec is the whole isolation contract of an instance: a read-only root holding only the
 * image's static program, a non-root user with no capabilities and no_new_privs, its own pid,
 * ipc, uts, mount, cgroup and (unless OCI_NETWORK_HOST) network namespaces, cgroup limits on
 * memory (swap included), CPU and pids, and a seccomp allow-list. Writable places are /data (the
 * run directory), /tmp and /dev/shm (small tmpfs); the instance API's socket directory is
 * mounted read-only at /run/runtara. Everything else is decided here, not by the caller. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../base/error.h"

#define OCI_SPEC_VERSION "1.0.2"
#define OCI_SPEC_DATA_DIR "/data"          /* the run directory, inside */
#define OCI_SPEC_SOCKET_DIR "/run/runtara" /* the instance API socket's directory, inside */
#define OCI_SPEC_NOBODY 65534u             /* the default uid and gid */

typedef enum OciNetwork {
    OCI_NETWORK_NONE, /* a network namespace of its own: loopback only */
    OCI_NETWORK_HOST, /* the host's network, with its /etc/resolv.conf and /etc/hosts */
    _OCI_NETWORK_MAX,
    _OCI_NETWORK_INVALID = -EINVAL,
} OciNetwork;

/* A host path bound into every container (RUNTARA_OCI_MOUNTS): the operator's choice, for what a
 * program needs beyond itself (an interpreter's /usr, a shared read-only data set). Always nosuid
 * and nodev; read-only unless writable, and then never executable. */
typedef struct OciMount {
    char *source;      /* absolute, normalized host path */
    char *destination; /* absolute, normalized path inside */
    bool writable;
} OciMount;

#define OCI_MOUNTS_MAX 32

typedef struct OciSpec {
    const char *rootfs;      /* absolute path of the image's read-only rootfs */
    const char *const *args; /* argv inside the container, e.g. {"/binary", NULL} */
    const char *const *envp; /* KEY=value, NULL-terminated, already translated */
    const char *hostname;    /* NULL: none set */
    uint32_t uid, gid;       /* non-root by default: OCI_SPEC_NOBODY */
    const char *run_dir;     /* host path, bind-mounted rw at /data (nosuid,nodev,noexec) */
    /* host DIRECTORY holding the instance API socket, bound ro at /run/runtara: the directory,
     * not the socket file, so that a restarted daemon's new socket is seen; NULL: none */
    const char *socket_dir;
    OciNetwork network;
    uint64_t memory_bytes;                /* 0 = no limit; swap is limited to the same */
    uint64_t cpu_quota_us, cpu_period_us; /* 50000/100000 = half a CPU; 0 = no limit */
    int64_t pids_limit;                   /* 0 = none */
    uint64_t rlimit_nofile, rlimit_cpu_secs, rlimit_as_bytes; /* 0 = leave */
    const char
        *cgroups_path; /* oci_cgroups_path(): "/runtara/<id>", "runtara.slice:runtara:<id>" */
    /* the seccomp filter compiled once (oci_seccomp_compile()), for crun's annotation
     * run.oci.seccomp_bpf_data; NULL: the runtime compiles linux.seccomp at each start */
    const char *seccomp_bpf;
    const OciMount *mounts; /* the operator's extra mounts, after the spec's own */
    size_t n_mounts;
} OciSpec;

/** The config.json of s as a new JSON object (the caller owns the reference), or NULL if s is
 *  incomplete (no rootfs, args, run_dir) or a path is not absolute. Does not block. */
json_t *oci_spec_build(const OciSpec *s);

/** Write the config.json of s as dirfd/name, atomically (a reader sees the old file or the new
 *  one) but without fsync: it is per-launch state, made again at the next launch. -EINVAL if s is
 *  incomplete, otherwise the write's -errno, with a message in e. */
int oci_spec_write(int dirfd, const char *name, const OciSpec *s, Error *e);

/** Parse RUNTARA_OCI_MOUNTS: entries separated by commas, each SOURCE[:DESTINATION][:ro|rw]
 *  (DESTINATION defaults to SOURCE, the mode to ro). Refused, with a message in e naming the
 *  entry: relative or unnormalized paths, a source that does not exist, a source that is, holds
 *  or lies inside one of private_paths (NULL-terminated: the daemon's data directory and the like;
 *  compared after resolving symbolic links), a destination at / or at or under what the spec
 *  mounts itself (/proc, /dev, /sys, /data, /run/runtara, /binary, /etc/hosts,
 *  /etc/resolv.conf; /tmp itself, not under it), and more than OCI_MOUNTS_MAX entries. *ret is NULL
 * when text has none. */
int oci_mounts_parse(const char *text, const char *const *private_paths, OciMount **ret,
                     size_t *ret_n, Error *e);
OciMount *oci_mounts_copy(const OciMount *m, size_t n);
void oci_mounts_free(OciMount *m, size_t n);

const char *oci_network_to_string(OciNetwork n);
/** "none" (or "isolated") and "host"; _OCI_NETWORK_INVALID for anything else. */
OciNetwork oci_network_from_string(const char *s);
