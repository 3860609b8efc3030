/* The contract between store.c and each backend (STYLE R5). A backend fills a StoreOps table and
 * returns a Store whose first member is the ops pointer. */
#pragma once

#include "store.h"

typedef struct StoreOps {
    const char *name;
    void (*close)(Store *s);
    void (*info)(Store *s, StoreInfo *ret);
    int (*ping)(Store *s, Error *e);
    int (*image_insert)(Store *s, ImageRecord *rec, Error *e);
    int (*image_get)(Store *s, const char *id, const char *tenant, ImageRecord *ret, Error *e);
    int (*image_list)(Store *s, const ImageFilter *f, ImageRecord **ret, size_t *ret_n,
                      bool *ret_more, Error *e);
    int (*image_delete)(Store *s, const char *id, const char *tenant, Error *e);
    int (*image_exists)(Store *s, const char *id, Error *e);
    int (*image_count)(Store *s, uint64_t *ret, Error *e);
    int (*instance_insert_minimal)(Store *s, const char *id, const char *tenant,
                                   const char *image_id, const char *status, Error *e);
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

int store__sqlite_open(const char *path, Store **ret, Error *e);
