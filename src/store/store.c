/* Dispatch from the store interface to the backend named by the URL. */
#include <stdlib.h>
#include <string.h>

#include "../base/alloc.h"
#include "store-internal.h"

int store_open(const char *url, Store **ret, Error *reterr)
{
    if (strncmp(url, "sqlite://", 9) == 0)
        return store__sqlite_open(url + 9, ret, reterr);
    if (strncmp(url, "sqlite:", 7) == 0)
        return store__sqlite_open(url + 7, ret, reterr);
    if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0)
        return error_set(reterr, -EPROTONOSUPPORT,
                         "the PostgreSQL store is not available in this build; use sqlite:PATH");
    return error_set(reterr, -EINVAL, "unknown store URL \"%s\": expected sqlite:PATH", url);
}

Store *store_close(Store *s)
{
    if (s)
        s->ops->close(s);
    return NULL;
}

void store_info(Store *s, StoreInfo *ret)
{
    s->ops->info(s, ret);
}

int store_ping(Store *s, Error *reterr)
{
    return s->ops->ping(s, reterr);
}

int store_image_insert(Store *s, ImageRecord *rec, Error *reterr)
{
    return s->ops->image_insert(s, rec, reterr);
}

int store_image_get(Store *s, const char *image_id, const char *tenant_id, ImageRecord *ret,
                    Error *reterr)
{
    return s->ops->image_get(s, image_id, tenant_id, ret, reterr);
}

int store_image_list(Store *s, const ImageFilter *f, ImageRecord **ret, size_t *ret_n,
                     bool *ret_more, Error *reterr)
{
    return s->ops->image_list(s, f, ret, ret_n, ret_more, reterr);
}

int store_image_delete(Store *s, const char *image_id, const char *tenant_id, Error *reterr)
{
    return s->ops->image_delete(s, image_id, tenant_id, reterr);
}

int store_image_exists(Store *s, const char *image_id, Error *reterr)
{
    return s->ops->image_exists(s, image_id, reterr);
}

int store_image_count(Store *s, uint64_t *ret, Error *reterr)
{
    return s->ops->image_count(s, ret, reterr);
}

int store_instance_insert_minimal(Store *s, const char *instance_id, const char *tenant_id,
                                  const char *image_id, const char *status, Error *reterr)
{
    return s->ops->instance_insert_minimal(s, instance_id, tenant_id, image_id, status, reterr);
}

void image_record_done(ImageRecord *r)
{
    if (!r)
        return;
    free(r->image_id);
    free(r->tenant_id);
    free(r->name);
    free(r->description);
    free(r->runner_type);
    free(r->labels_json);
    free(r->sha256);
    memset(r, 0, sizeof *r);
}

void image_records_free(ImageRecord *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++)
        image_record_done(&r[i]);
    free(r);
}
