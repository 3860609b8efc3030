/* The management API: routes, authentication and the handlers of /api/v1. */
#pragma once

#include "../base/time-util.h"
#include "../core/image-registry.h"
#include "../store/store.h"
#include "auth.h"
#include "http.h"

typedef struct ApiContext {
    Store *store;
    ImageRegistry *images;
    Auth *auth;
    usec_t started; /* CLOCK_MONOTONIC */
} ApiContext;

/** The management route table. */
const HttpRoute *api_management_routes(size_t *ret_n);
/** The admit callback for management routes: authenticates and records the principal. */
int api_admit(HttpRequest *req, void *userdata, Error *e);
/** The caller of an admitted request (admin in open mode). */
const Principal *api_principal(HttpRequest *req);
/** Resolve which tenant a request acts for: the given tenant_id, or the key's own tenant.
 *  -EPERM if a tenant key names another tenant. *ret is NULL for an admin without tenant_id. */
int api_scope_tenant(HttpRequest *req, const char *requested, const char **ret, Error *e);
/** Reply with the error and log it at the right level. */
void api_reply_error(HttpRequest *req, Error *e);
/** Check that every query argument is one of allowed (NULL-terminated); 400 otherwise. */
int api_check_query(HttpRequest *req, const char *const *allowed, Error *e);

/** The JSON form of an image (a new reference). */
json_t *api_image_json(const ImageRecord *r);

/* handlers, one file per resource */
void api_health(HttpRequest *req);
void api_metrics(HttpRequest *req);
void api_images_list(HttpRequest *req);
void api_images_get(HttpRequest *req);
void api_images_delete(HttpRequest *req);
extern const HttpStreamOps api_images_upload;
