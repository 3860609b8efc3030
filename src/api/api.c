#include <string.h>

#include "../base/alloc.h"
#include "../base/log.h"
#include "api.h"

static const HttpRoute routes[] = {
    {"GET", "/api/v1/health", "health", HTTP_BODY_NONE, api_health, NULL, true},
    {"GET", "/metrics", "metrics", HTTP_BODY_NONE, api_metrics, NULL, true},
    {"POST", "/api/v1/images", "images.register", HTTP_BODY_STREAM, NULL, &api_images_upload,
     false},
    {"GET", "/api/v1/images", "images.list", HTTP_BODY_NONE, api_images_list, NULL, false},
    {"GET", "/api/v1/images/{}", "images.get", HTTP_BODY_NONE, api_images_get, NULL, false},
    {"DELETE", "/api/v1/images/{}", "images.delete", HTTP_BODY_NONE, api_images_delete, NULL,
     false},
};

const HttpRoute *api_management_routes(size_t *ret_n)
{
    *ret_n = ELEMENTSOF(routes);
    return routes;
}

int api_admit(HttpRequest *req, void *userdata, Error *e)
{
    ApiContext *ctx = userdata;
    Principal *p = xcalloc(1, sizeof *p);
    int r = auth_check(ctx->auth, http_request_header(req, "Authorization"), p, e);
    if (r < 0) {
        free(p);
        return r;
    }
    http_request_set_auth(req, p);
    if (!p->admin)
        http_request_log_field(req, "key_tenant", p->tenant);
    if (p->key_name[0])
        http_request_log_field(req, "key", p->key_name);
    return 0;
}

const Principal *api_principal(HttpRequest *req)
{
    static const Principal open_admin = {.admin = true};
    const Principal *p = http_request_get_auth(req);
    return p ? p : &open_admin;
}

int api_scope_tenant(HttpRequest *req, const char *requested, const char **ret, Error *e)
{
    const Principal *p = api_principal(req);
    if (p->admin) {
        *ret = requested;
        return 0;
    }
    if (requested && strcmp(requested, p->tenant) != 0)
        return error_set(e, -EPERM,
                         "this API key belongs to tenant \"%s\" and cannot act for "
                         "another tenant",
                         p->tenant);
    *ret = p->tenant;
    return 0;
}

void api_reply_error(HttpRequest *req, Error *e)
{
    http_reply_error(req, e->code, error_message(e), NULL);
}

typedef struct QueryCheck {
    const char *const *allowed;
    const char *bad;
} QueryCheck;

static void check_one(const char *k, const char *v, void *u)
{
    QueryCheck *c = u;
    (void)v;
    if (c->bad)
        return;
    for (const char *const *a = c->allowed; *a; a++)
        if (strcmp(*a, k) == 0)
            return;
    c->bad = k;
}

int api_check_query(HttpRequest *req, const char *const *allowed, Error *e)
{
    QueryCheck c = {.allowed = allowed};
    http_request_query_each(req, check_one, &c);
    if (!c.bad)
        return 0;

    _cleanup_free_ char *list = NULL;
    for (const char *const *a = allowed; *a; a++) {
        char *l = list ? xasprintf("%s, %s", list, *a) : xstrdup(*a);
        free(list);
        list = l;
    }
    return error_set(e, -EINVAL, "unknown query parameter \"%s\" (accepted: %s)", c.bad,
                     list ? list : "none");
}
