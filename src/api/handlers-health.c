/* GET /api/v1/health and GET /metrics: public, cheap, never write. */
#include "../base/log.h"
#include "../base/strbuf.h"
#include "api.h"
#include "metrics.h"

void api_health(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    Error e = ERROR_INIT;
    StoreInfo info;
    usec_t uptime = now_usec(CLOCK_MONOTONIC) - ctx->started;

    store_info(ctx->store, &info);
    int r = store_ping(ctx->store, &e);
    json_t *store = json_pack("{s:s, s:s, s:i}", "backend", info.backend, "status",
                              r < 0 ? "unavailable" : "ok", "schema_version", info.schema_version);
    if (r < 0) {
        json_object_set_new(store, "error", json_string(error_message(&e)));
        log_warning("health check: store unavailable: %s", error_message(&e));
    }
    bool draining = atomic_load(&ctx->draining);
    http_reply_json(req, r < 0 || draining ? 503 : 200,
                    json_pack("{s:s, s:s, s:I, s:o}", "status",
                              r < 0      ? "degraded"
                              : draining ? "draining"
                                         : "ok",
                              "version", RUNTARA_VERSION, "uptime_ms",
                              (json_int_t)(uptime / USEC_PER_MSEC), "store", store));
    error_done(&e);
}

void api_metrics(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    StrBuf b = STRBUF_INIT;
    uint64_t images = 0;
    int r = store_image_count(ctx->store, &images, NULL);

    metrics_render(&b, now_usec(CLOCK_MONOTONIC) - ctx->started, r < 0 ? -1 : (int64_t)images);
    http_reply_data(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.buf, b.len);
    strbuf_done(&b);
}
