/* The durable store: one interface (this file), one ops table per backend (store-internal.h).
 * The SQLite backend is the embedded default; a PostgreSQL backend plugs in behind the same ops
 * and runs the same conformance tests (tests/unit/test-store.c).
 *
 * Threads: every function may be called from any thread and may block on disk I/O (fsync). A
 * write returns once it is durable, and a read started after a write returned (in any thread)
 * sees it; how a backend batches concurrent writes is its own affair. Rows handed out are owned
 * by the caller and freed with the matching _done() function.
 * Times are CLOCK_REALTIME microseconds (usec_t). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../base/error.h"
#include "../base/time-util.h"
#include "instance-def.h"

typedef struct Store Store;

/* Instance ids are per tenant. Inside the daemon an instance is named by its key,
 * "<tenant_id>/<instance_id>" (ids cannot hold a '/'), and every function below that names an
 * existing instance takes that key, instance_key. */

/* The longest key: two ids (base/id.h: at most 128 characters each) and the '/'. */
#define STORE_INSTANCE_KEY_MAX 257
/** The key of instance id of tenant (caller frees). */
char *store_instance_key(const char *tenant_id, const char *instance_id);

/* One registered image version. Strings are owned. */
typedef struct ImageRecord {
    int64_t seq; /* insertion order; the list cursor */
    char *image_id;
    char *tenant_id;
    char *name;
    int64_t version;   /* 1, 2, ... per (tenant, name) */
    char *description; /* may be NULL */
    char *runner_type; /* "oci" or "native" */
    char *labels_json; /* a JSON object, "{}" when none */
    char *sha256;      /* lower-case hex */
    uint64_t size_bytes;
    usec_t created_at;
} ImageRecord;

typedef struct ImageFilter {
    const char *tenant_id;   /* NULL = every tenant */
    const char *name;        /* exact name, or NULL */
    const char *name_prefix; /* or NULL */
    int64_t before_seq;      /* 0 = from the newest; else only seq < before_seq */
    unsigned limit;          /* 1..1000 */
} ImageFilter;

typedef struct StoreInfo {
    const char *backend; /* "sqlite" or "postgres"; static */
    int schema_version;
    int schema_latest;
} StoreInfo;

typedef enum StoreBackend {
    STORE_SQLITE,
    STORE_POSTGRES,
    _STORE_BACKEND_MAX,
    _STORE_BACKEND_INVALID = -EINVAL,
} StoreBackend;

/** What a database URL names: "sqlite:PATH" (or "sqlite://PATH") a SQLite file, PATH non-empty;
 *  "postgres://...", "postgresql://..." or a libpq keyword string ("host=... dbname=...") a
 *  PostgreSQL database, checked by libpq's own parser. *ret_target (may be NULL) is the path, or
 *  the connection string as given, pointing into url. -EINVAL with a message in e otherwise,
 *  which never quotes url (it may hold a password). The
 *  one parser of database URLs: the settings check them with it at start-up, store_open()
 *  dispatches on it. */
StoreBackend store_url_parse(const char *url, const char **ret_target, Error *e);

/** Whether a store call failed because its database could not be reached (a PostgreSQL server
 *  down or restarting): the same call may succeed later, unlike any other failure. */
static inline bool store_unavailable(int r)
{
    return r == -ECONNRESET || r == -ECONNREFUSED || r == -ETIMEDOUT;
}

/** Open the store named by url ("sqlite:PATH" or "postgres://...") and bring its schema up to
 *  date. Refuses (-EPROTO) a database whose schema is newer than this binary knows. */
int store_open(const char *url, Store **ret, Error *reterr);
/** Bring the schema of the database named by url up to date, and close it: what store_open()
 *  does first, alone (`runtara-environment migrate`). Safe while other processes do the same on
 *  PostgreSQL (they take turns on an advisory lock); a SQLite file must not be open elsewhere.
 *  *ret says the backend and the version reached. */
int store_migrate(const char *url, StoreInfo *ret, Error *reterr);
/** Close; NULL-safe. Returns NULL. */
Store *store_close(Store *s);
/* The default of store_set_timeout(). */
#define STORE_TIMEOUT_DEFAULT (10 * USEC_PER_SEC)
/** The longest a call waits for one round trip to a database server (PostgreSQL) before it gives
 *  the connection up and fails as unavailable (-ETIMEDOUT): a server that hangs never hangs the
 *  caller. Also bounds each reconnect. Call before any other use. No effect on SQLite. */
void store_set_timeout(Store *s, usec_t timeout);
void store_info(Store *s, StoreInfo *ret);
/** A cheap round trip to prove the store answers. */
int store_ping(Store *s, Error *reterr);
typedef enum StoreBackupFlags {
    /* fsync the copy and its directory before returning; without it, the copy is only meant
     * to be read back at once (GET /api/v1/backup streams it and removes it) */
    STORE_BACKUP_DURABLE = 1 << 0,
} StoreBackupFlags;

/** Write a consistent copy of the whole store, as of one moment, into a new file at path
 *  (created here: -EEXIST if something is there); writes go on meanwhile. The copy is a
 *  database this backend opens as it is: put it at the store's path to restore. -ENOSYS for a
 *  backend whose server has its own tools (PostgreSQL: pg_dump). */
int store_backup(Store *s, const char *path, StoreBackupFlags flags, Error *reterr);

/* ---- several daemons on one database (src/sched/README.md) ---------------------------------- */

/* The longest daemon id (base/id.h rules: letters, digits, '-', '_', '.'). */
#define STORE_DAEMON_ID_MAX 64

/** This store's rows belong to the daemon daemon_id from now on: the instances it creates, and
 *  those it moves to pending (which it then launches), name it as their owner. Call once, before
 *  any write. */
void store_set_owner(Store *s, const char *daemon_id);

/** Register this daemon (its store_set_owner() id) with a lease of lease_usec from now, on the
 *  database's clock. The row of an earlier run under the same id is replaced, unless its lease
 *  is still live and it names another host: -EBUSY then (two machines with one DATA_DIR's id). */
int store_daemon_register(Store *s, const char *host, int pid, usec_t lease_usec, Error *reterr);
/** Renew the lease for lease_usec from now: 1, or 0 if the daemon's row is gone (its lease
 *  ended and another daemon took its instances over; register again to go on). */
int store_daemon_renew(Store *s, usec_t lease_usec, Error *reterr);
/** Remove this daemon's row at a clean stop: the instances it leaves are taken over at once. */
int store_daemon_unregister(Store *s, Error *reterr);

/* A daemon registered in the store. */
typedef struct DaemonRecord {
    char *id, *host;
    int pid;
    usec_t started_at, lease_until;
    bool live;          /* its lease has not ended, on the database's clock */
    uint64_t instances; /* the unfinished instances it owns (pending, running, suspended) */
} DaemonRecord;

/** Every registered daemon, by id; free with daemon_records_free(). At most STORE_LIST_MAX. */
int store_daemon_list(Store *s, DaemonRecord **ret, size_t *ret_n, Error *reterr);
void daemon_records_free(DaemonRecord *r, size_t n);
/** Take over up to limit instances that need a daemon (unfinished, or their latest exit not
 *  recorded) and whose owner is no live daemon: none (rows from before owners existed) or one
 *  whose lease ended (with expired_too; its row is removed). Their owner becomes this store's.
 *  Takeovers by several daemons at once take turns, so each row goes to one. *ret_keys (free with
 *  store_keys_free()) are the instance keys taken, oldest first. Only rows after *after (their
 *  seq) are looked at, and *after becomes the last one taken: a pass starts at 0 and passes the
 *  same cursor on, so it reads each row once however many batches it takes (without it, each
 *  batch read again every row the ones before had taken: 8 s to start with 100,000 sleepers).
 *  A row passed over (locked by another daemon's takeover on PostgreSQL) waits for the next
 *  pass. */
int store_instance_adopt(Store *s, bool expired_too, unsigned limit, int64_t *after,
                         char ***ret_keys, size_t *ret_n, Error *reterr);
void store_keys_free(char **keys, size_t n);

/** Keep the bytes of an image (content sha256, lower-case hex) where every daemon reaches them,
 *  read from fd (n bytes, from offset 0). Idempotent. -ENOSYS on a backend that serves one daemon
 *  (SQLite: the image files in DATA_DIR are the only copy). */
int store_image_blob_put(Store *s, const char *sha256, int fd, uint64_t n, Error *reterr);
/** Write the bytes kept for sha256 to fd (from its current offset): -ENOENT if none are kept,
 *  -ENOSYS as above. The caller checks the digest. */
int store_image_blob_get(Store *s, const char *sha256, int fd, Error *reterr);

/** Insert a new image version. rec->version is assigned (previous highest for the tenant and name
 *  plus one) and rec->seq is set. Fails with -EEXIST if image_id exists. */
int store_image_insert(Store *s, ImageRecord *rec, Error *reterr);
/** Load one image. -ENOENT if missing, or if tenant_id is non-NULL and differs (no existence
 *  leak across tenants). */
int store_image_get(Store *s, const char *image_id, const char *tenant_id, ImageRecord *ret,
                    Error *reterr);
/** List images newest first. ret is a new array of *ret_n records (free with image_records_free).
 *  *ret_more is set when more rows follow the last one. */
int store_image_list(Store *s, const ImageFilter *f, ImageRecord **ret, size_t *ret_n,
                     bool *ret_more, Error *reterr);
/** Delete one image row. -ENOENT as for get; -EBUSY if an unfinished instance uses it. */
int store_image_delete(Store *s, const char *image_id, const char *tenant_id, Error *reterr);
/** Whether an image row exists (for the start-up sweep of orphaned image directories). */
int store_image_exists(Store *s, const char *image_id, Error *reterr);
/** Number of image rows. */
int store_image_count(Store *s, uint64_t *ret, Error *reterr);

void image_record_done(ImageRecord *r);
void image_records_free(ImageRecord *r, size_t n);

/* The most rows one list call returns; every list limit must be 1..STORE_LIST_MAX (-EINVAL). */
#define STORE_LIST_MAX 1000u

/* Instance statuses are InstanceStatus (instance-def.h) through this interface; each backend
 * turns them into its column's text and back in one place, and a row whose status it does not
 * know is a corrupt row (-EIO, with a message), never a status. The caller decides which
 * transitions are legal (core/instance-state.h). A status out of range is -EINVAL. */

/** Record an instance row for an image with defaults for everything else (tests and tools).
 *  -EEXIST if the id exists. */
int store_instance_insert_minimal(Store *s, const char *instance_id, const char *tenant_id,
                                  const char *image_id, InstanceStatus status, Error *reterr);

/* One instance. Strings are owned; those marked "or NULL" may be NULL, the others never are when
 * read from the store. Times are 0 when unset. */
typedef struct InstanceRecord {
    int64_t seq;        /* insertion order; the list cursor */
    char *instance_key; /* "<tenant_id>/<instance_id>": how the daemon names it (made on create) */
    char *instance_id;  /* the id its tenant gave it, unique within the tenant */
    char *tenant_id;
    char *image_id;
    InstanceStatus status;
    char *termination_reason; /* or NULL */
    char *input;              /* JSON text */
    char *output;             /* JSON text, or NULL */
    char *error;              /* or NULL */
    char *env;                /* JSON object text */
    char *request_hash;       /* idempotency fingerprint chosen by the caller; "" when none */
    char *token_hash;         /* SHA-256 hex of the current launch's token, or NULL */
    char *checkpoint_id;      /* key of the last checkpoint saved, or NULL */
    char *wait_key;           /* the custom signal a waiting_signal instance waits for, or NULL */
    char *runner; /* the runner type its launches use ("oci", "native"), from its image */
    char *owner;  /* the daemon that launches it (store_set_owner()), or NULL */
    bool has_exit_code;
    int exit_code;
    /* with the exit code: what the latest launch used (has_usage false when not recorded) */
    bool has_usage;
    uint64_t memory_peak_bytes; /* a container's cgroup peak, or a native process's peak RSS */
    uint64_t cpu_usec;
    uint32_t timeout_secs;
    int attempt;       /* number of launches */
    int auto_restarts; /* relaunches after a crash of the machine since the last new checkpoint */
    usec_t created_at, updated_at, started_at, finished_at, heartbeat_at, sleep_until;
} InstanceRecord;

/** Called by store_instance_create once the new row is visible to every reader of the store,
 *  possibly before it is durable, and always before store_instance_create returns: for work
 *  that needs the row and would end with the machine anyway (starting the instance's process),
 *  never for anything a client is told. It runs on whichever thread commits the write, with
 *  the store's writer held, so it must be quick and must not write to the store (it would wait
 *  for itself); a read through the store sees the new row. */
typedef void (*StoreVisible_cb)(void *userdata);

/** Insert a new instance in status "pending" with attempt 0. Read from rec: instance_id,
 *  tenant_id, image_id (required, else -EINVAL), input and env (NULL = "{}"), request_hash
 *  (NULL = ""), token_hash (the first launch's token, issued with the row; NULL = none),
 *  timeout_secs (0 = 300), created_at (0 = now) and runner (NULL = "native"); every other field
 *  is ignored.
 *  If the id exists, returns -EEXIST and, when ret_existing is non-NULL, fills it with the
 *  existing row (the caller compares request_hash to tell an idempotent retry from a clash).
 *  visible (or NULL) is called with userdata once the new row is visible, only if it was
 *  inserted; the return still waits until the row is durable. */
int store_instance_create(Store *s, const InstanceRecord *rec, InstanceRecord *ret_existing,
                          StoreVisible_cb visible, void *userdata, Error *reterr);
/** Load the instance whose current launch has the token of token_hash (the instance API's
 *  admission: the token names the instance, whatever its tenant). -ENOENT (without a message)
 *  if none has. */
int store_instance_get_by_token(Store *s, const char *token_hash, InstanceRecord *ret,
                                Error *reterr);
/** Load the one instance with instance_id, whatever its tenant (an admin naming no tenant).
 *  -ENOENT (without a message) if none has it, -ENOTUNIQ (without a message) if more than one
 *  tenant has. */
int store_instance_find(Store *s, const char *instance_id, InstanceRecord *ret, Error *reterr);
/** Load one instance. -ENOENT if missing, or if tenant_id is non-NULL and differs. */
int store_instance_get(Store *s, const char *instance_key, const char *tenant_id,
                       InstanceRecord *ret, Error *reterr);

/* The change a transition makes besides the status. clear_result is applied first, then every
 * explicit field, so clear_result plus started_at reads "a fresh run started now". */
typedef struct InstanceUpdate {
    InstanceStatus to_status; /* required */
    const char *reason;       /* the new termination_reason; NULL sets it NULL */
    bool set_exit_code;
    int exit_code;
    uint64_t memory_peak_bytes, cpu_usec; /* written with the exit code */
    const char *output;                   /* NULL = leave */
    const char *error;                    /* NULL = leave */
    bool clear_result;      /* set output, error, exit_code, termination_reason, finished_at NULL */
    const char *token_hash; /* NULL = leave */
    bool bump_attempt;      /* attempt + 1 */
    usec_t started_at;      /* 0 = leave */
    usec_t finished_at;     /* 0 = leave */
    /* The wake-up of a suspended instance. Every transition writes both, unless keep_wake: a
     * transition that does not set them clears them, since only the suspension that set them may
     * be woken. keep_wake is for updates that leave the status as it is. */
    usec_t sleep_until;   /* the deadline; 0 = none */
    const char *wait_key; /* the custom signal it waits for; NULL = none */
    bool keep_wake;
    /* Non-zero: apply only if the row's sleep_until equals it. The wake claim: of a stale heap
     * entry, a second daemon or an operator resume racing it, exactly one wins. */
    usec_t guard_sleep_until;
    /* Non-NULL: apply only if the row's token_hash equals it, i.e. the launch whose token it is
     * is still the instance's current one. */
    const char *guard_token_hash;
    int restarts; /* auto_restarts: 0 leave, 1 add one, -1 reset to 0 */
    /* The new owner; NULL = leave, except that a move to pending through a store with an owner
     * (store_set_owner()) takes that one: whoever makes an instance pending launches it. */
    const char *owner;
} InstanceUpdate;

/** Move an instance from from_status to u->to_status with one guarded UPDATE (... WHERE
 *  instance_key = ? AND status = from_status), also setting updated_at. Returns 1 if applied,
 *  0 if the instance was not in from_status (a lost race: re-read and decide again), -ENOENT if
 *  it does not exist, -EINVAL for a status out of range. */
int store_instance_transition(Store *s, const char *instance_key, InstanceStatus from_status,
                              const InstanceUpdate *u, Error *reterr);

/* One change of a batch (store_instance_transitions). */
typedef struct InstanceTransition {
    const char *instance_key;
    InstanceStatus from_status;
    const InstanceUpdate *u;
    const char *event_type;    /* appended when the change applies; NULL = none */
    const char *event_payload; /* or NULL */
    const char *then_event;    /* appended after it, without payload, in the same transaction */
    /* appended before the change's event, with it, and recorded once per first_key (an event
     * request key; NULL: none) */
    const char *first_event, *first_payload, *first_key;
    int result; /* out: as store_instance_transition() returns */
} InstanceTransition;

/** Apply n transitions in one transaction (one commit for all: the wake scheduler claims a burst
 *  of due wake-ups so), each guarded like store_instance_transition() and each with its event
 *  when it applies. t[i].result is each one's outcome; returns 0, or < 0 when the transaction
 *  itself failed (then nothing applied). */
int store_instance_transitions(Store *s, InstanceTransition *t, size_t n, Error *reterr);

typedef struct InstanceFilter {
    const char *tenant_id;                  /* NULL = every tenant */
    bool has_status;                        /* false = any status */
    InstanceStatus status;                  /* with has_status: only this one */
    const char *image_id;                   /* NULL = any */
    usec_t created_after, created_before;   /* 0 = no bound; after is >=, before is < */
    usec_t finished_after, finished_before; /* as above; either excludes unfinished rows */
    int64_t before_seq;                     /* 0 = from the newest; else only seq < before_seq */
    unsigned limit;                         /* 1..STORE_LIST_MAX */
    bool exit_unrecorded; /* only launched rows whose latest launch has no exit code yet */
    const char *owner;    /* NULL = any owner; else only rows this daemon owns */
} InstanceFilter;

/** List instances newest first (by seq). ret is a new array of *ret_n records (free with
 *  instance_records_free). *ret_more is set when more rows follow; *ret_last_seq is the cursor
 *  for the next page (the last row's seq, 0 when none); *ret_total counts every row matching
 *  the filters, ignoring cursor and limit. ret_more, ret_total and ret_last_seq may be NULL
 *  (a NULL ret_total skips the count). -EINVAL for a bad limit or status. */
int store_instance_list(Store *s, const InstanceFilter *f, InstanceRecord **ret, size_t *ret_n,
                        bool *ret_more, uint64_t *ret_total, int64_t *ret_last_seq, Error *reterr);
/* A suspended instance's wake-up, for rebuilding the wake heap. */
typedef struct InstanceWake {
    int64_t seq; /* the cursor */
    char *instance_key;
    usec_t sleep_until;
} InstanceWake;

/** List suspended instances that have a wake deadline, by seq after the cursor after_seq (0 = from
 *  the start), those of owner only (NULL: every one). Free with instance_wakes_free. -EINVAL for
 *  a bad limit. */
int store_instance_list_wakes(Store *s, const char *owner, int64_t after_seq, unsigned limit,
                              InstanceWake **ret, size_t *ret_n, bool *ret_more, Error *reterr);
void instance_wakes_free(InstanceWake *w, size_t n);

/* A deleted row, named for the caller's clean-up of files. Strings are owned. */
typedef struct StoreRef {
    char *id;
    char *tenant_id;
} StoreRef;
void store_refs_free(StoreRef *r, size_t n);

/** Retention: delete up to limit finished instances (completed, failed, cancelled) whose
 *  finished_at is before finished_before, oldest first, with their checkpoints, events and
 *  signals, in one transaction. *ret lists what was deleted (free with store_refs_free). */
int store_instance_purge(Store *s, usec_t finished_before, unsigned limit, StoreRef **ret,
                         size_t *ret_n, Error *reterr);
/** Retention: delete up to limit image versions created before created_before that no instance
 *  row uses and that are not the newest version of their (tenant, name). *ret lists them. */
int store_image_purge(Store *s, usec_t created_before, unsigned limit, StoreRef **ret,
                      size_t *ret_n, Error *reterr);

/** Record a heartbeat (heartbeat_at = now). -ENOENT if missing. With token_hash (may be NULL: no
 *  check), only while the instance is pending or running that launch, checked in the same
 *  transaction: -ESTALE otherwise (the launch ended, was stopped or relaunched). */
int store_instance_heartbeat(Store *s, const char *instance_key, const char *token_hash, usec_t now,
                             Error *reterr);
/** Count instances per status, optionally for one tenant (NULL = all), into ret_counts indexed
 *  by InstanceStatus. */
int store_instance_count_by_status(Store *s, const char *tenant_id,
                                   uint64_t ret_counts[_INSTANCE_STATUS_MAX], Error *reterr);

/* ---- tenant metrics ------------------------------------------------------------------------- */

typedef enum MetricsGranularity {
    METRICS_HOUR,
    METRICS_DAY,
    _METRICS_GRANULARITY_MAX,
    _METRICS_GRANULARITY_INVALID = -EINVAL,
} MetricsGranularity;

/** "hour" or "day"; NULL when g is out of range. */
const char *metrics_granularity_to_string(MetricsGranularity g);
/** The granularity named s; _METRICS_GRANULARITY_INVALID for NULL or an unknown name. */
MetricsGranularity metrics_granularity_from_string(const char *s);

/* The most buckets one call gives: a year and a half of hours, 27 years of days. */
#define STORE_METRICS_BUCKETS_MAX 13200

/* What one hour or day of a tenant's instances came to: those that ended (completed, failed or
 * cancelled; not suspended) within it. */
typedef struct MetricsBucket {
    usec_t start; /* the bucket's first moment, on the hour or day (UTC) */
    uint64_t invocations, succeeded, failed, cancelled;
    /* durations (end - start of the latest launch) of those with both; timed = how many */
    uint64_t timed;
    usec_t duration_sum, duration_min, duration_max;
    /* peak memory of the latest launch, of those whose runner reported it; measured = how many */
    uint64_t measured;
    uint64_t memory_sum, memory_max;
} MetricsBucket;

/** The metrics of tenant's instances that ended in [start, end), one bucket per hour or day from
 *  the one holding start to the one holding end, both included, empty ones too (the original's
 *  GetTenantMetrics). *ret (caller frees) has *ret_n buckets, oldest first. -EINVAL for an empty
 *  tenant, start >= end, or more than STORE_METRICS_BUCKETS_MAX buckets, with a hint. */
int store_tenant_metrics(Store *s, const char *tenant_id, usec_t start, usec_t end,
                         MetricsGranularity g, MetricsBucket **ret, size_t *ret_n, Error *reterr);

/** Free a record's strings and zero it; NULL-safe. */
void instance_record_done(InstanceRecord *r);
/** Free n records and the array; NULL-safe. */
void instance_records_free(InstanceRecord *r, size_t n);

/** Save checkpoint (instance_key, key): first write wins. In one transaction, if the key is new:
 *  store data, set the instance's checkpoint_id to key, heartbeat_at to now and auto_restarts to
 *  0, append a "checkpoint" event (subtype key), and return 1 with *ret_data a copy of data. If the
 * key exists: change nothing and return 0 with *ret_data the stored bytes (the caller replays
 * them). *ret_data is a new allocation (never NULL, even for 0 bytes) owned by the caller; ret_data
 * and ret_n may be NULL. data may be NULL when n is 0. -ENOENT if the instance does not exist,
 * -EINVAL for an empty key, -EFBIG if the backend cannot hold that many bytes. *ret_signal (may
 * be NULL) is the kind of the instance's pending control signal, read in the same transaction,
 * or _SIGNAL_KIND_INVALID if there is none: what the reply tells the program, without a read of
 * its own; -EIO if that signal's row is corrupt (as store_signal_get()).
 * token_hash (may be NULL: no check) binds a new key's save to one launch: unless the instance
 * is still pending or running with that token hash, in the same transaction, nothing is stored
 * and the result is -ESTALE (the instance was stopped, finished or relaunched meanwhile, e.g.
 * while a large body was arriving). */
int store_checkpoint_save(Store *s, const char *instance_key, const char *key,
                          const char *token_hash, const void *data, size_t n, void **ret_data,
                          size_t *ret_n, SignalKind *ret_signal, Error *reterr);
/* The outcome of an asynchronous checkpoint save, handed to its completion. The completion may
 * take the pointers (TAKE_PTR); whatever it leaves is freed after it returns. */
typedef struct CheckpointSaved {
    int result; /* as store_checkpoint_save: 1 stored, 0 the key existed, or a negative errno */
    void *data; /* result 0: the stored bytes; result 1: NULL (the bytes are the caller's) */
    size_t n;   /* result >= 0: the length of the checkpoint's bytes */
    /* result >= 0: the pending control signal, read in the save's transaction, or
     * _SIGNAL_KIND_INVALID when none is */
    SignalKind signal;
    Error error; /* result < 0: what went wrong */
} CheckpointSaved;
typedef void (*StoreCheckpointSaved_cb)(CheckpointSaved *res, void *userdata);

/** store_checkpoint_save() without a thread waiting for it: the save is queued and done(res,
 *  userdata) is called exactly once, after the commit that holds it is durable (or with its
 *  error), on whichever thread committed it: a store thread, or the caller's own before this
 *  returns. instance_key, key and data are borrowed until done runs. done must not block for
 *  long (it holds up the next batch's completions); it may read the store but must not write to
 *  it synchronously (that write could wait for a leader that is this very thread). Writes submitted
 *  before (asynchronous or not, from any thread, once they are queued) are applied before this
 *  one. Returns 0, or a negative errno without ever calling done: -EINVAL as
 *  store_checkpoint_save, -ESHUTDOWN after store_quiesce() (the caller saves synchronously
 *  instead). Does not block on the disk
 *  unless no commit is running (then the caller commits its save at once, as the synchronous
 *  call would). */
int store_checkpoint_save_async(Store *s, const char *instance_key, const char *key,
                                const char *token_hash, const void *data, size_t n,
                                StoreCheckpointSaved_cb done, void *userdata, Error *reterr);
/** Refuse further asynchronous submissions (-ESHUTDOWN) and wait until every accepted one has
 *  completed (its callback returned). For shutdown: call it before stopping the HTTP servers
 *  whose requests wait for saves, and before store_close(). Blocks; synchronous calls keep
 *  working. */
void store_quiesce(Store *s);
/** Load one checkpoint's bytes (a new allocation, never NULL) and creation time (ret_created may
 *  be NULL). -ENOENT if it does not exist. */
int store_checkpoint_get(Store *s, const char *instance_key, const char *key, void **ret_data,
                         size_t *ret_n, usec_t *ret_created, Error *reterr);

typedef struct CheckpointInfo {
    char *key; /* owned */
    size_t size;
    usec_t created_at;
    int64_t seq; /* the list cursor */
} CheckpointInfo;

/** List an instance's checkpoints oldest first, after the cursor after_seq (0 = from the
 *  start), without loading their bytes. Free with checkpoint_infos_free. An unknown instance
 *  has no checkpoints (an empty list). -EINVAL for a bad limit. */
int store_checkpoint_list(Store *s, const char *instance_key, int64_t after_seq, unsigned limit,
                          CheckpointInfo **ret, size_t *ret_n, bool *ret_more, Error *reterr);
/** Free n infos and the array; NULL-safe. */
void checkpoint_infos_free(CheckpointInfo *c, size_t n);

/* One entry of an instance's append-only event log. Strings are owned. */
typedef struct EventRecord {
    int64_t id; /* increasing across the store; the list cursor */
    char *instance_key;
    char *type;    /* started, checkpoint, heartbeat, custom, completed, failed, ... */
    char *subtype; /* or NULL */
    char *payload; /* or NULL */
    usec_t created_at;
} EventRecord;

/** Append an event (created_at = now). type is free text validated by the caller (non-empty,
 *  else -EINVAL). *ret_id (may be NULL) is the new id. -ENOENT if the instance does not exist. */
int store_event_append(Store *s, const char *instance_key, const char *type, const char *subtype,
                       const char *payload, int64_t *ret_id, Error *reterr);
/** The same with request_key (may be NULL: as store_event_append), unique per instance: returns
 *  1 when the event is recorded, 0 when an event with that key was recorded before (nothing
 *  changes; *ret_id is that event's id). For reports a program may repeat. With token_hash (may
 *  be NULL: no check), only while the instance is pending or running that launch, checked in the
 *  same transaction: -ESTALE otherwise, and nothing is recorded. */
int store_event_append_keyed(Store *s, const char *instance_key, const char *type,
                             const char *subtype, const char *payload, const char *request_key,
                             const char *token_hash, int64_t *ret_id, Error *reterr);

typedef struct EventFilter {
    const char *instance_key; /* required */
    const char *type;         /* NULL = any */
    const char *subtype;      /* NULL = any */
    usec_t after, before;     /* created_at bounds; 0 = none; after is >=, before is < */
    int64_t after_id;         /* cursor: only id > after_id */
    unsigned limit;           /* 1..STORE_LIST_MAX */
} EventFilter;

/** List events oldest first (by id). Free with event_records_free. An unknown instance has no
 *  events (an empty list). -EINVAL for a bad limit or a missing instance_key. */
int store_event_list(Store *s, const EventFilter *f, EventRecord **ret, size_t *ret_n,
                     bool *ret_more, Error *reterr);
/** Free n records and the array; NULL-safe. */
void event_records_free(EventRecord *r, size_t n);

/* Control signals are SignalKind (instance-def.h) through this interface, stored by name as
 * statuses are; a name the backend does not know is a corrupt row (-EIO with a message). */

/** Make a signal of kind the instance's pending control signal, unless a pending one outranks
 *  it (cancel > pause > resume). Returns 1 if stored (replacing a pending signal of equal or
 *  lower rank), 0 if an outranking signal is pending (it stays). payload may be NULL. -ENOENT
 *  if the instance does not exist, -EINVAL for a kind out of range. */
int store_signal_send(Store *s, const char *instance_key, SignalKind kind, const char *payload,
                      Error *reterr);
/** Read the pending control signal: returns 1 with *ret_kind and *ret_payload (a new string, or
 *  NULL), or 0 with *ret_kind = _SIGNAL_KIND_INVALID and *ret_payload NULL when none is pending
 *  (also for an unknown instance). ret_payload may be NULL. -EIO for a corrupt signal row. */
int store_signal_get(Store *s, const char *instance_key, SignalKind *ret_kind, char **ret_payload,
                     Error *reterr);
/** Acknowledge: delete the pending signal only if it is of kind. Returns 1 if deleted, 0
 *  otherwise (none pending, or another kind, which stays). -EINVAL for a kind out of range. */
int store_signal_ack(Store *s, const char *instance_key, SignalKind kind, Error *reterr);

/** Store a custom signal for (instance_key, wait_key), replacing an earlier one. payload may be
 *  NULL. -ENOENT if the instance does not exist, -EINVAL for an empty wait key. */
int store_custom_signal_put(Store *s, const char *instance_key, const char *wait_key,
                            const char *payload, Error *reterr);
/** Take (read and delete atomically) the custom signal for (instance_key, wait_key): returns 1
 *  with *ret_payload (a new string, or NULL) if there was one, 0 if not. ret_payload may be
 *  NULL. */
int store_custom_signal_take(Store *s, const char *instance_key, const char *wait_key,
                             char **ret_payload, Error *reterr);
/** Take the custom signal for (instance_key, wait_key) and save its payload (the JSON text, "null"
 *  when it had none) as checkpoint checkpoint_key, in one transaction: a program that saves its
 *  wait's outcome this way gets each signal exactly once, also when it crashes before the
 *  reply arrives (its relaunch finds the checkpoint). Returns 1 with *ret_payload (may be NULL;
 *  a new string or NULL) if a signal was taken, 0 if none is pending. The checkpoint is recorded
 *  as store_checkpoint_save() records one, token_hash included (-ESTALE); -EEXIST if that key
 *  is saved already. On any error nothing is taken. */
int store_custom_signal_deliver(Store *s, const char *instance_key, const char *wait_key,
                                const char *checkpoint_key, const char *token_hash,
                                char **ret_payload, Error *reterr);
/** Whether a custom signal for (instance_key, wait_key) is waiting to be taken: 1 or 0. */
int store_custom_signal_exists(Store *s, const char *instance_key, const char *wait_key,
                               Error *reterr);
