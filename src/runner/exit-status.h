/* The exit record: how an instance's process ended, written by runtara-shim as a line of JSON at
 * the end of its lock file (shim.lock, after the attempt and the program's group), and read by
 * the runner once the shim has ended. It outlives the daemon, so an exit that happens while the
 * daemon is down is still collected at the next start. (Shims before it wrote exit.json, a file
 * of its own that a program in the same directory could plant first; it is not read any more: a
 * shim of before that ends after an upgrade is relaunched from its checkpoints, as one killed.)
 *
 * It is a hand-over, not a record the daemon relies on for durability: the daemon records the end
 * durably in its store. So it is written without fsync, and into a file that exists already: a
 * new file costs an inode, and on the reference machine's ext4 (no journal: each allocation
 * skips over the recently deleted inodes) that was the shim's largest cost (docs/benchmarks.md).
 * Nobody reads it while it is written: the runner reads it only after the shim, which holds the
 * lock while it writes, has ended, and only if its attempt is the launch's. A machine that
 * crashes right after the exit may lose it or leave it torn, as it loses the process of an
 * instance still running; either way the instance is relaunched from its checkpoints (recovery
 * finds no readable record), and an end the program reported through the instance API is in the
 * store already. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "../base/error.h"
#include "../base/time-util.h"

/* Held (a POSIX write lock) by the shim for as long as it runs; holds the launch's attempt, then
 * the program's group, then the exit record. */
#define SHIM_LOCK_FILE "shim.lock"
/* The program's stdout and stderr, as much as RunnerSpec.log_limit keeps of each launch. */
#define SHIM_LOG_FILE "stderr.log"

typedef enum ExitKind {
    EXIT_KIND_EXITED,       /* exit(code) */
    EXIT_KIND_SIGNALED,     /* killed by signal `code` */
    EXIT_KIND_SPAWN_FAILED, /* the program could not be started; error says why */
    _EXIT_KIND_MAX,
    _EXIT_KIND_INVALID = -EINVAL,
} ExitKind;

typedef struct ExitStatus {
    ExitKind kind;
    int code;      /* exit status, or signal number */
    int exit_code; /* status, or 128 + signal (STYLE R17); 127 when the spawn failed */
    int pid;
    int attempt;                    /* the launch this was (RunnerSpec.attempt); 0 if unknown */
    uint64_t log_bytes;             /* kept in stderr.log */
    uint64_t log_dropped;           /* beyond the cap */
    uint64_t cpu_usec;              /* natively: the process tree's; in a container: its cgroup's */
    uint64_t max_rss_bytes;         /* in a container: the same as memory_peak_bytes */
    uint64_t memory_peak_bytes;     /* the container's cgroup peak (OCI mode); 0 natively */
    bool oom;                       /* the container's OOM killer fired (OCI mode) */
    usec_t started_at, finished_at; /* CLOCK_REALTIME */
    char error[256];                /* for spawn failures */
} ExitStatus;

/** Append the record to lockfd, the shim's lock file (not synced: see above). */
int exit_status_write(int lockfd, const ExitStatus *s);
/** Read the record of dirfd/shim.lock. -ENOENT if there is none, -EBADMSG if it is
 *  unreadable. A record written before oom and memory_peak_bytes existed reads
 *  with them false and 0. */
int exit_status_read(int dirfd, ExitStatus *ret, Error *e);
const char *exit_kind_to_string(ExitKind k);
