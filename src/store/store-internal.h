/* The contract between store.c and each backend (STYLE R5). A backend fills a StoreOps table and
 * returns a Store whose first member is the ops pointer and whose batch is its batcher. */
#pragma once

#include "store-ops.h"
#include "store.h"

typedef struct StoreOps {
    const char *name;
    void (*close)(Store *s);
    void (*info)(Store *s, StoreInfo *ret);
    int (*ping)(Store *s, Error *e);
    int (*backup)(Store *s, const char *path, StoreBackupFlags flags,
                  Error *e); /* NULL: not offered */

    /* Reads. Arguments reach these already checked by store.c: required strings are non-NULL,
     * statuses and signal kinds are in range, limits are 1..STORE_LIST_MAX. */
    int (*image_get)(Store *s, const char *id, const char *tenant, ImageRecord *ret, Error *e);
    int (*image_list)(Store *s, const ImageFilter *f, ImageRecord **ret, size_t *ret_n,
                      bool *ret_more, Error *e);
    int (*image_exists)(Store *s, const char *id, Error *e);
    int (*image_count)(Store *s, uint64_t *ret, Error *e);
    int (*instance_get_by_token)(Store *s, const char *token_hash, InstanceRecord *ret, Error *e);
    int (*instance_find)(Store *s, const char *instance_id, InstanceRecord *ret, Error *e);
    int (*instance_get)(Store *s, const char *id, const char *tenant, InstanceRecord *ret,
                        Error *e);
    int (*instance_list)(Store *s, const InstanceFilter *f, InstanceRecord **ret, size_t *ret_n,
                         bool *ret_more, uint64_t *ret_total, int64_t *ret_last_seq, Error *e);
    int (*instance_list_wakes)(Store *s, const char *owner, int64_t after_seq, unsigned limit,
                               InstanceWake **ret, size_t *ret_n, bool *ret_more, Error *e);
    int (*instance_count_by_status)(Store *s, const char *tenant,
                                    uint64_t ret_counts[_INSTANCE_STATUS_MAX], Error *e);
    int (*checkpoint_get)(Store *s, const char *id, const char *key, void **ret_data, size_t *ret_n,
                          usec_t *ret_created, Error *e);
    int (*checkpoint_list)(Store *s, const char *id, int64_t after_seq, unsigned limit,
                           CheckpointInfo **ret, size_t *ret_n, bool *ret_more, Error *e);
    int (*event_list)(Store *s, const EventFilter *f, EventRecord **ret, size_t *ret_n,
                      bool *ret_more, Error *e);
    int (*signal_get)(Store *s, const char *id, SignalKind *ret_kind, char **ret_payload, Error *e);
    int (*custom_signal_exists)(Store *s, const char *id, const char *wait_key, Error *e);
    /* Fold every instance of tenant that ended in [start, end) into m's buckets
     * (store__metrics_add()); the buckets are unit long from m[0].start. */
    int (*tenant_metrics)(Store *s, const char *tenant, usec_t start, usec_t end, usec_t unit,
                          MetricsBucket *m, size_t n, Error *e);
    int (*daemon_list)(Store *s, DaemonRecord **ret, size_t *ret_n, Error *e);

    /* Writes: each op's statements on the writer connection (store-ops.h says what each op
     * carries in and out); store.c builds the op and submits it to the store's batcher. */
    StoreRun image_insert_run;            /* ImageInsertOp */
    StoreRun image_delete_run;            /* ImageDeleteOp */
    StoreRun instance_insert_minimal_run; /* InsertMinimalOp */
    StoreRun instance_create_run;         /* InstanceCreateOp */
    StoreRun instance_transition_run;     /* TransitionOp */
    StoreRun instance_transitions_run;    /* TransitionsOp */
    StoreRun instance_heartbeat_run;      /* HeartbeatOp */
    StoreRun instance_purge_run;          /* PurgeOp */
    StoreRun image_purge_run;             /* PurgeOp */
    StoreRun checkpoint_save_run;         /* CheckpointSaveOp, synchronous and not */
    StoreRun event_append_run;            /* EventAppendOp */
    StoreRun signal_send_run;             /* SignalOp */
    StoreRun signal_ack_run;              /* SignalOp */
    StoreRun custom_signal_put_run;       /* SignalOp */
    StoreRun custom_signal_take_run;      /* SignalOp, its payload out */
    StoreRun custom_signal_deliver_run;   /* SignalOp, its payload out */
    StoreRun daemon_register_run;         /* DaemonOp */
    StoreRun daemon_renew_run;            /* DaemonOp, renewed out */
    StoreRun daemon_unregister_run;       /* DaemonOp */
    StoreRun instance_adopt_run;          /* AdoptOp */

    /* Image bytes for every daemon, outside the batcher (a transfer must not hold up the
     * writes of others); NULL where one daemon is all there is (store_image_blob_put()). */
    int (*image_blob_put)(Store *s, const char *sha256, int fd, uint64_t n, Error *e);
    int (*image_blob_get)(Store *s, const char *sha256, int fd, Error *e);
} StoreOps;

struct Store {
    const StoreOps *ops;
    StoreBatcher *batch; /* the backend's, on its writer connection (store-batch.h) */
    char *owner;         /* store_set_owner()'s daemon id, or NULL; set before any write */
    usec_t timeout;      /* store_set_timeout(); set before any use */
};

/* One row of a backend's tenant metrics query: the instances of one status that ended in the
 * bucket starting at bucket, and their sums. */
typedef struct MetricsRow {
    usec_t bucket;
    InstanceStatus status;
    uint64_t count, timed, measured;
    usec_t duration_sum, duration_min, duration_max;
    uint64_t memory_sum, memory_max;
} MetricsRow;

/** Add row to the bucket of m (n buckets, unit long, from m[0].start) it falls in; a row outside
 *  them, or of a status that has not ended, is a corrupt answer (-EIO). */
int store__metrics_add(MetricsBucket *m, size_t n, usec_t unit, const MetricsRow *row, Error *e);

/* A schema migration compiled into the binary (generated from migrations/<backend>/NNN_name.sql).
 */
typedef struct StoreMigration {
    int version;
    const char *name;
    const char *sql;
} StoreMigration;

extern const StoreMigration store__sqlite_migrations[];
extern const size_t store__sqlite_migrations_n;

extern const StoreMigration store__pg_migrations[];
extern const size_t store__pg_migrations_n;

int store__sqlite_open(const char *path, Store **ret, Error *e);

/* store-pg.c */
typedef struct pg_conn PGconn;
int store__pg_connect(const char *conninfo, PGconn **ret, Error *e);
int store__pg_migrate(const char *conninfo, StoreInfo *ret, Error *e);
int store__pg_open(const char *conninfo, Store **ret, Error *e);
