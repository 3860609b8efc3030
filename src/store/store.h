/* The durable store: one interface (this file), one ops table per backend (store-internal.h).
 * The SQLite backend is the embedded default; a PostgreSQL backend plugs in behind the same ops
 * and runs the same conformance tests (tests/unit/test-store.c).
 *
 * Threads: every function may be called from any thread and may block on disk I/O (fsync). Rows
 * handed out are owned by the caller and freed with the matching _done() function.
 * Times are CLOCK_REALTIME microseconds (usec_t). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../base/error.h"
#include "../base/time-util.h"

typedef struct Store Store;

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

/** Open the store named by url ("sqlite:PATH" or "postgres://...") and bring its schema up to
 *  date. Refuses (-EPROTO) a database whose schema is newer than this binary knows. */
int store_open(const char *url, Store **ret, Error *reterr);
/** Close; NULL-safe. Returns NULL. */
Store *store_close(Store *s);
void store_info(Store *s, StoreInfo *ret);
/** A cheap round trip to prove the store answers. */
int store_ping(Store *s, Error *reterr);

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

/** Record an instance row for an image (used by the instance layer; minimal until instances land).
 *  status is one of pending, running, suspended, completed, failed, cancelled. */
int store_instance_insert_minimal(Store *s, const char *instance_id, const char *tenant_id,
                                  const char *image_id, const char *status, Error *reterr);
