/* GET /api/v1/tenants/{tenant}/metrics: what a tenant's instances came to, hour by hour or day by
 * day (the original's GetTenantMetrics, store_tenant_metrics()). */
#include <string.h>

#include "api.h"

/* A day before end: the range when the request names no start. */
#define METRICS_DEFAULT_SPAN (24 * 3600 * USEC_PER_SEC)

static json_t *ms_or_null(bool has, usec_t usec)
{
    return has ? json_real((double)usec / (double)USEC_PER_MSEC) : json_null();
}

static json_t *bucket_json(const MetricsBucket *b)
{
    char t[32];
    json_t *o = json_pack(
        "{s:s, s:I, s:I, s:I, s:I}", "time", format_rfc3339(t, sizeof t, b->start),
        "invocation_count", (json_int_t)b->invocations, "success_count", (json_int_t)b->succeeded,
        "failure_count", (json_int_t)b->failed, "cancelled_count", (json_int_t)b->cancelled);
    json_object_set_new(
        o, "avg_duration_ms",
        b->timed ? json_real((double)b->duration_sum / (double)b->timed / (double)USEC_PER_MSEC)
                 : json_null());
    json_object_set_new(o, "min_duration_ms", ms_or_null(b->timed > 0, b->duration_min));
    json_object_set_new(o, "max_duration_ms", ms_or_null(b->timed > 0, b->duration_max));
    json_object_set_new(o, "avg_memory_bytes",
                        b->measured ? json_integer((json_int_t)(b->memory_sum / b->measured))
                                    : json_null());
    json_object_set_new(o, "max_memory_bytes",
                        b->measured ? json_integer((json_int_t)b->memory_max) : json_null());
    json_object_set_new(o, "success_rate_percent",
                        b->invocations
                            ? json_real(100.0 * (double)b->succeeded / (double)b->invocations)
                            : json_null());
    return o;
}

void api_tenants_metrics(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    static const char *const allowed[] = {"start", "end", "granularity", NULL};
    Error e = ERROR_INIT;
    const char *tenant = NULL;
    usec_t end = 0, start = 0;
    MetricsGranularity g = METRICS_HOUR;
    const char *gran = http_request_query(req, "granularity");
    int r = api_check_query(req, allowed, &e);
    if (r >= 0)
        r = api_scope_tenant(req, http_request_param(req, 0), &tenant, &e);
    if (r >= 0)
        r = api_query_time(req, "end", &end, &e);
    if (r >= 0)
        r = api_query_time(req, "start", &start, &e);
    if (r >= 0 && gran && (g = metrics_granularity_from_string(gran)) < 0)
        r = error_set(&e, -EINVAL, "invalid granularity \"%s\": expected hour or day", gran);
    if (r < 0) {
        api_fail(req, &e);
        return;
    }
    if (!end)
        end = now_usec(CLOCK_REALTIME);
    if (!start)
        start = end > METRICS_DEFAULT_SPAN ? end - METRICS_DEFAULT_SPAN : 1;
    MetricsBucket *m = NULL;
    size_t n = 0;
    if (store_tenant_metrics(ctx->store, tenant, start, end, g, &m, &n, &e) < 0) {
        api_fail(req, &e);
        return;
    }
    json_t *buckets = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(buckets, bucket_json(&m[i]));
    free(m);
    char ts[32], te[32];
    http_reply_json(req, 200,
                    json_pack("{s:s, s:s, s:s, s:s, s:o}", "tenant_id", tenant, "start",
                              format_rfc3339(ts, sizeof ts, start), "end",
                              format_rfc3339(te, sizeof te, end), "granularity",
                              metrics_granularity_to_string(g), "buckets", buckets));
}
