#include <string.h>

#include "../base/alloc.h"
#include "../base/log.h"
#include "../base/parse-util.h"
#include "../base/strbuf.h"
#include "api-error.h"
#include "api.h"

static const HttpRoute routes[] = {
    HTTP_ROUTE("GET", "/api/v1/health", "health", HTTP_BODY_NONE, api_health, .public = true),
    HTTP_ROUTE("GET", "/metrics", "metrics", HTTP_BODY_NONE, api_metrics, .public = true),
    HTTP_ROUTE("GET", "/api/v1/backup", "backup", HTTP_BODY_NONE, api_backup),
    HTTP_ROUTE("GET", "/api/v1/daemons", "daemons", HTTP_BODY_NONE, api_daemons),
    HTTP_ROUTE("POST", "/api/v1/images", "images.register", HTTP_BODY_STREAM, NULL,
               .stream = &api_images_upload),
    HTTP_ROUTE("GET", "/api/v1/images", "images.list", HTTP_BODY_NONE, api_images_list),
    HTTP_ROUTE("GET", "/api/v1/images/{}", "images.get", HTTP_BODY_NONE, api_images_get),
    HTTP_ROUTE("DELETE", "/api/v1/images/{}", "images.delete", HTTP_BODY_NONE, api_images_delete),
    HTTP_ROUTE("POST", "/api/v1/instances", "instances.start", HTTP_BODY_JSON, api_instances_start),
    HTTP_ROUTE("GET", "/api/v1/instances", "instances.list", HTTP_BODY_NONE, api_instances_list),
    HTTP_ROUTE("GET", "/api/v1/instances/{}", "instances.get", HTTP_BODY_NONE, api_instances_get),
    HTTP_ROUTE("POST", "/api/v1/instances/{}/stop", "instances.stop", HTTP_BODY_JSON,
               api_instances_stop, .body_optional = true),
    HTTP_ROUTE("POST", "/api/v1/instances/{}/resume", "instances.resume", HTTP_BODY_NONE,
               api_instances_resume),
    HTTP_ROUTE("POST", "/api/v1/instances/{}/signals", "instances.signal", HTTP_BODY_JSON,
               api_instances_signal),
    HTTP_ROUTE("POST", "/api/v1/instances/{}/signals/custom", "instances.custom_signal",
               HTTP_BODY_JSON, api_instances_custom_signal),
    HTTP_ROUTE("GET", "/api/v1/instances/{}/checkpoints", "instances.checkpoints", HTTP_BODY_NONE,
               api_instances_checkpoints),
    HTTP_ROUTE("GET", "/api/v1/instances/{}/checkpoints/{}", "instances.checkpoint", HTTP_BODY_NONE,
               api_instances_checkpoint),
    HTTP_ROUTE("GET", "/api/v1/instances/{}/events", "instances.events", HTTP_BODY_NONE,
               api_instances_events),
    HTTP_ROUTE("GET", "/api/v1/instances/{}/logs", "instances.logs", HTTP_BODY_NONE,
               api_instances_logs),
    HTTP_ROUTE("GET", "/api/v1/tenants/{}/metrics", "tenants.metrics", HTTP_BODY_NONE,
               api_tenants_metrics),
    /* the web console's files: public, they hold no data (handlers-ui.c) */
    HTTP_ROUTE("GET", "/ui", "ui", HTTP_BODY_NONE, api_ui, .public = true),
    HTTP_ROUTE("GET", "/ui/{}", "ui.file", HTTP_BODY_NONE, api_ui, .public = true),
};

const HttpRoute *api_management_routes(size_t *ret_n)
{
    *ret_n = ELEMENTSOF(routes);
    return routes;
}

/* The instance API. Filled at start-up (the checkpoint limit is a setting), read-only after. */
static HttpRoute core_routes[] = {
    HTTP_ROUTE("POST", "/api/v1/instances/{}/register", "core.register", HTTP_BODY_NONE,
               api_core_register),
    HTTP_ROUTE("GET", "/api/v1/instances/{}/input", "core.input", HTTP_BODY_NONE, api_core_input),
    HTTP_ROUTE("PUT", "/api/v1/instances/{}/checkpoints/{}", "core.checkpoint_save",
               HTTP_BODY_BYTES, api_core_checkpoint_put),
    HTTP_ROUTE("GET", "/api/v1/instances/{}/checkpoints/{}", "core.checkpoint_get", HTTP_BODY_NONE,
               api_core_checkpoint_get),
    HTTP_ROUTE("POST", "/api/v1/instances/{}/heartbeat", "core.heartbeat", HTTP_BODY_NONE,
               api_core_heartbeat),
    HTTP_ROUTE("POST", "/api/v1/instances/{}/events", "core.event", HTTP_BODY_JSON, api_core_event),
    HTTP_ROUTE("GET", "/api/v1/instances/{}/signals", "core.signals", HTTP_BODY_NONE,
               api_core_signals),
    HTTP_ROUTE("POST", "/api/v1/instances/{}/signals/ack", "core.signal_ack", HTTP_BODY_JSON,
               api_core_signal_ack),
    HTTP_ROUTE("POST", "/api/v1/instances/{}/completed", "core.completed", HTTP_BODY_JSON,
               api_core_completed),
    HTTP_ROUTE("POST", "/api/v1/instances/{}/failed", "core.failed", HTTP_BODY_JSON,
               api_core_failed),
    HTTP_ROUTE("POST", "/api/v1/instances/{}/sleep", "core.sleep", HTTP_BODY_JSON, api_core_sleep),
    HTTP_ROUTE("POST", "/api/v1/instances/{}/wait", "core.wait", HTTP_BODY_JSON, api_core_wait),
};

const HttpRoute *api_core_routes(size_t *ret_n)
{
    *ret_n = ELEMENTSOF(core_routes);
    return core_routes;
}

void api_core_routes_set_limits(const ApiLimits *l)
{
    core_routes[2].max_body = l->max_checkpoint;
}

bool api_refuse_while_draining(HttpRequest *req, ApiContext *ctx)
{
    if (!atomic_load(&ctx->draining))
        return false;
    http_reply_header(req, "Retry-After", "10");
    http_reply_error(req, -ESHUTDOWN,
                     "the daemon is shutting down and starts no instances; retry against it "
                     "after its restart, or against another daemon",
                     NULL);
    return true;
}

void api_instance_changed(ApiContext *ctx, const char *instance_key)
{
    if (ctx->waiters)
        waiters_wake(ctx->waiters, instance_key);
    api_events_appended(ctx, instance_key); /* a change of status comes with its event */
}

char *api_events_key(const char *instance_key)
{
    return xasprintf("ev:%s", instance_key);
}

void api_events_appended(ApiContext *ctx, const char *instance_key)
{
    if (!ctx->waiters)
        return;
    _cleanup_free_ char *key = api_events_key(instance_key);
    waiters_wake(ctx->waiters, key);
}

char *api_signal_key(const char *instance_key)
{
    return xasprintf("sig:%s", instance_key);
}

void api_signal_sent(ApiContext *ctx, const char *instance_key)
{
    _cleanup_free_ char *key = api_signal_key(instance_key);
    waiters_wake(ctx->waiters, key);
}

json_t *api_json_or_null(const char *text)
{
    json_error_t jerr;
    json_t *v = text ? json_loads(text, JSON_DECODE_ANY, &jerr) : NULL;
    return v ? v : json_null();
}

int api_check_fields(json_t *body, const char *const *allowed, Error *e)
{
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, k) == 0;
        if (!ok) {
            StrBuf list = STRBUF_INIT;
            for (const char *const *a = allowed; *a; a++)
                strbuf_printf(&list, "%s%s", a == allowed ? "" : ", ", *a);
            error_set(e, -EINVAL, "unknown field \"%.64s\" (accepted: %s)", k, list.buf);
            strbuf_done(&list);
            return -EINVAL;
        }
    }
    return 0;
}

int api_parse_page(HttpRequest *req, unsigned *ret_limit, int64_t *ret_cursor, Error *e)
{
    const char *v;
    uint64_t n;
    *ret_limit = API_LIST_LIMIT_DEFAULT;
    *ret_cursor = 0;
    if ((v = http_request_query(req, "limit"))) {
        if (parse_uint64(v, &n) < 0 || n < 1 || n > API_LIST_LIMIT_MAX)
            return error_set(e, -EINVAL, "invalid limit \"%s\": must be between 1 and %d", v,
                             API_LIST_LIMIT_MAX);
        *ret_limit = (unsigned)n;
    }
    if ((v = http_request_query(req, "cursor"))) {
        if (parse_uint64(v, &n) < 0 || n == 0 || n > INT64_MAX)
            return error_set(e, -EINVAL,
                             "invalid cursor \"%s\": pass next_cursor from a previous page", v);
        *ret_cursor = (int64_t)n;
    }
    return 0;
}

json_t *api_cursor_json(bool more, int64_t last)
{
    char c[24];
    snprintf(c, sizeof c, "%lld", (long long)last);
    return more ? json_string(c) : json_null();
}

int api_parse_wait(const char *s, usec_t max, usec_t *ret, Error *e)
{
    static const struct {
        const char *suffix;
        usec_t unit;
    } units[] = {
        {"ms", USEC_PER_MSEC}, {"s", USEC_PER_SEC}, {"m", 60 * USEC_PER_SEC}, {"", USEC_PER_SEC}};
    size_t n = strspn(s, "0123456789");
    uint64_t v = 0;
    char digits[21];
    if (n == 0 || n > 20)
        goto bad;
    memcpy(digits, s, n);
    digits[n] = '\0';
    if (parse_uint64(digits, &v) < 0)
        goto bad;
    for (size_t i = 0; i < ELEMENTSOF(units); i++)
        if (strcmp(s + n, units[i].suffix) == 0) {
            if (v > max / units[i].unit)
                goto bad;
            *ret = v * units[i].unit;
            return 0;
        }
bad:
    return error_set(e, -EINVAL,
                     "invalid wait \"%.32s\": a duration such as 30s, 500ms or 1m, "
                     "at most %llu seconds",
                     s, (unsigned long long)(max / USEC_PER_SEC));
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

int api_query_time(HttpRequest *req, const char *name, usec_t *ret, Error *e)
{
    const char *v = http_request_query(req, name);
    if (v && parse_rfc3339(v, ret) < 0)
        return error_set(e, -EINVAL,
                         "invalid %s \"%s\": expected RFC 3339 UTC, e.g. "
                         "2026-11-23T10:00:00Z",
                         name, v);
    return 0;
}

int api_scope_tenant(HttpRequest *req, const char *requested, const char **ret, Error *e)
{
    const Principal *p = api_principal(req);
    if (requested && !id_is_valid(requested)) /* before it is echoed or used anywhere */
        return error_set(e, -EINVAL, "invalid tenant_id: %s", ID_RULE);
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

int api_may_run_native(HttpRequest *req, const char *tenant, Error *e)
{
    const ApiContext *ctx = http_request_userdata(req);
    const Principal *p = api_principal(req);
    const char *list = ctx->native_tenants;
    if (p->admin || (list && strcmp(list, "*") == 0))
        return 0;
    size_t n = strlen(tenant);
    for (const char *s = list; s && *s;) {
        size_t len = strcspn(s, ",");
        if (len == n && strncmp(s, tenant, n) == 0)
            return 0;
        s += len + (s[len] == ',');
    }
    return error_set(e, -EPERM,
                     "tenant \"%s\" may not run native images: their programs run unisolated, as "
                     "the daemon's user. hint: use runner_type=oci, or have an operator add the "
                     "tenant to RUNTARA_NATIVE_TENANTS",
                     tenant);
}

void api_reply_error(HttpRequest *req, Error *e)
{
    http_reply_error(req, e->code, error_message(e), NULL);
}

void api_fail(HttpRequest *req, Error *e)
{
    if (api_error_kind(e->code).status >= 500)
        log_error("%s %s: %s", http_request_method(req), http_request_path(req), error_message(e));
    api_reply_error(req, e);
    error_done(e);
}

typedef struct QueryCheck {
    const char *const *allowed;
    const char *bad;
    bool no_value; /* bad is allowed, but given without "=" (it would read as absent) */
} QueryCheck;

static void check_one(const char *k, const char *v, void *u)
{
    QueryCheck *c = u;
    if (c->bad)
        return;
    for (const char *const *a = c->allowed; *a; a++)
        if (strcmp(*a, k) == 0) {
            if (!v) {
                c->bad = k;
                c->no_value = true;
            }
            return;
        }
    c->bad = k;
}

int api_check_query(HttpRequest *req, const char *const *allowed, Error *e)
{
    QueryCheck c = {.allowed = allowed};
    http_request_query_each(req, check_one, &c);
    if (!c.bad)
        return 0;
    if (c.no_value)
        return error_set(e, -EINVAL, "query parameter \"%s\" has no value: write %s=VALUE", c.bad,
                         c.bad);

    _cleanup_free_ char *list = NULL;
    for (const char *const *a = allowed; *a; a++) {
        char *l = list ? xasprintf("%s, %s", list, *a) : xstrdup(*a);
        free(list);
        list = l;
    }
    return error_set(e, -EINVAL, "unknown query parameter \"%s\" (accepted: %s)", c.bad,
                     list ? list : "none");
}
