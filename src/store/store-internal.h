/* The contract between store.c and each backend (STYLE R5). A backend fills a StoreOps table and
 * returns a Store whose first member is the ops pointer. */
#pragma once

#include "store.h"

typedef struct StoreOps {
    const char *name;
    void (*close)(Store *s);
    void (*info)(Store *s, StoreInfo *ret);
    int (*ping)(Store *s, Error *e);
    int (*backup)(Store *s, const char *path, StoreBackupFlags flags,
                  Error *e); /* NULL: not offered */
    int (*image_insert)(Store *s, ImageRecord *rec, Error *e);
    int (*image_get)(Store *s, const char *id, const char *tenant, ImageRecord *ret, Error *e);
    int (*image_list)(Store *s, const ImageFilter *f, ImageRecord **ret, size_t *ret_n,
                      bool *ret_more, Error *e);
    int (*image_delete)(Store *s, const char *id, const char *tenant, Error *e);
    int (*image_exists)(Store *s, const char *id, Error *e);
    int (*image_count)(Store *s, uint64_t *ret, Error *e);
    int (*instance_insert_minimal)(Store *s, const char *id, const char *tenant,
                                   const char *image_id, InstanceStatus status, Error *e);

    /* Arguments reach the entries below already checked by store.c: required strings are
     * non-NULL, statuses and signal kinds are in range, limits are 1..STORE_LIST_MAX. */
    int (*instance_create)(Store *s, const InstanceRecord *rec, InstanceRecord *ret_existing,
                           StoreVisible_cb visible, void *userdata, Error *e);
    int (*instance_get_by_token)(Store *s, const char *token_hash, InstanceRecord *ret, Error *e);
    int (*instance_find)(Store *s, const char *instance_id, InstanceRecord *ret, Error *e);
    int (*instance_get)(Store *s, const char *id, const char *tenant, InstanceRecord *ret,
                        Error *e);
    int (*instance_transition)(Store *s, const char *id, InstanceStatus from_status,
                               const InstanceUpdate *u, Error *e);
    int (*instance_transitions)(Store *s, InstanceTransition *t, size_t n, Error *e);
    int (*instance_list)(Store *s, const InstanceFilter *f, InstanceRecord **ret, size_t *ret_n,
                         bool *ret_more, uint64_t *ret_total, int64_t *ret_last_seq, Error *e);
    int (*instance_heartbeat)(Store *s, const char *id, const char *token_hash, usec_t now,
                              Error *e);
    int (*instance_list_wakes)(Store *s, int64_t after_seq, unsigned limit, InstanceWake **ret,
                               size_t *ret_n, bool *ret_more, Error *e);
    int (*instance_purge)(Store *s, usec_t finished_before, unsigned limit, StoreRef **ret,
                          size_t *ret_n, Error *e);
    int (*image_purge)(Store *s, usec_t created_before, unsigned limit, StoreRef **ret,
                       size_t *ret_n, Error *e);
    int (*instance_count_by_status)(Store *s, const char *tenant,
                                    uint64_t ret_counts[_INSTANCE_STATUS_MAX], Error *e);
    int (*checkpoint_save)(Store *s, const char *id, const char *key, const char *token_hash,
                           const void *data, size_t n, void **ret_data, size_t *ret_n,
                           SignalKind *ret_signal, Error *e);
    /* Optional (NULL: -EOPNOTSUPP); then quiesce is optional too. */
    int (*checkpoint_save_async)(Store *s, const char *id, const char *key, const char *token_hash,
                                 const void *data, size_t n, StoreCheckpointSaved_cb done,
                                 void *userdata);
    void (*quiesce)(Store *s);
    int (*checkpoint_get)(Store *s, const char *id, const char *key, void **ret_data, size_t *ret_n,
                          usec_t *ret_created, Error *e);
    int (*checkpoint_list)(Store *s, const char *id, int64_t after_seq, unsigned limit,
                           CheckpointInfo **ret, size_t *ret_n, bool *ret_more, Error *e);
    /* 1 recorded, 0 request_key (may be NULL) was recorded before (*ret_id: that event) */
    int (*event_append)(Store *s, const char *id, const char *type, const char *subtype,
                        const char *payload, const char *request_key, const char *token_hash,
                        int64_t *ret_id, Error *e);
    int (*event_list)(Store *s, const EventFilter *f, EventRecord **ret, size_t *ret_n,
                      bool *ret_more, Error *e);
    int (*signal_send)(Store *s, const char *id, SignalKind kind, const char *payload, Error *e);
    int (*signal_get)(Store *s, const char *id, SignalKind *ret_kind, char **ret_payload, Error *e);
    int (*signal_ack)(Store *s, const char *id, SignalKind kind, Error *e);
    int (*custom_signal_put)(Store *s, const char *id, const char *wait_key, const char *payload,
                             Error *e);
    int (*custom_signal_take)(Store *s, const char *id, const char *wait_key, char **ret_payload,
                              Error *e);
    int (*custom_signal_deliver)(Store *s, const char *id, const char *wait_key,
                                 const char *checkpoint_key, const char *token_hash,
                                 char **ret_payload, Error *e);
    int (*custom_signal_exists)(Store *s, const char *id, const char *wait_key, Error *e);
} StoreOps;

struct Store {
    const StoreOps *ops;
};

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
