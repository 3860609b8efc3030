/* /api/v1/images: streamed registration, list, get, delete. Tenant keys see only their tenant;
 * another tenant's image answers exactly like a missing one (404). */
#include <string.h>

#include "../base/alloc.h"
#include "../base/id.h"
#include "../base/log.h"
#include "../base/parse-util.h"
#include "../runner/oci-bundle.h"
#include "api.h"
#include "metrics.h"

json_t *api_image_json(const ImageRecord *r)
{
    char created[40];
    json_error_t jerr;
    json_t *labels = json_loads(r->labels_json ? r->labels_json : "{}", 0, &jerr);
    return json_pack("{s:s, s:s, s:s, s:I, s:s?, s:s, s:o, s:I, s:s, s:s}", "image_id", r->image_id,
                     "tenant_id", r->tenant_id, "name", r->name, "version", (json_int_t)r->version,
                     "description", r->description, "runner_type", r->runner_type, "labels",
                     labels ? labels : json_object(), "size_bytes", (json_int_t)r->size_bytes,
                     "sha256", r->sha256, "created_at",
                     format_rfc3339(created, sizeof created, r->created_at));
}

/* ---- POST /api/v1/images: the body is the executable, metadata in the query ----------------- */

typedef struct LabelCollect {
    json_t *labels;
    Error *e;
    int r;
} LabelCollect;

static void collect_label(const char *k, const char *v, void *u)
{
    LabelCollect *c = u;
    if (c->r < 0 || strcmp(k, "label") != 0)
        return;
    c->r = image_labels_add(c->labels, v ? v : "", c->e);
}

static bool is_octet_stream(const char *ct)
{
    static const char want[] = "application/octet-stream";
    return ct && strncasecmp(ct, want, sizeof want - 1) == 0 &&
           (ct[sizeof want - 1] == '\0' || ct[sizeof want - 1] == ';');
}

static int upload_begin(HttpRequest *req, Error *e)
{
    static const char *const allowed[] = {"tenant_id", "name",   "description", "runner_type",
                                          "label",     "sha256", NULL};
    ApiContext *ctx = http_request_userdata(req);
    const char *tenant = NULL;

    int r = api_check_query(req, allowed, e);
    if (r < 0)
        return r;
    if (!is_octet_stream(http_request_header(req, "Content-Type")))
        return error_set(e, -EPROTONOSUPPORT,
                         "the image must be sent as Content-Type: application/octet-stream, not "
                         "\"%s\"",
                         http_request_header(req, "Content-Type") ?: "(none)");
    r = api_scope_tenant(req, http_request_query(req, "tenant_id"), &tenant, e);
    if (r < 0)
        return r;

    LabelCollect lc = {.labels = json_object(), .e = e};
    http_request_query_each(req, collect_label, &lc);
    if (lc.r < 0) {
        json_decref(lc.labels);
        return lc.r;
    }
    const char *runner = http_request_query(req, "runner_type") ?: ctx->default_runner;
    if (tenant && runner && strcmp(runner, "native") == 0) {
        r = api_may_run_native(req, tenant, e);
        if (r < 0) {
            json_decref(lc.labels);
            return r;
        }
    }
    ImageSpec spec = {
        .tenant_id = tenant,
        .name = http_request_query(req, "name"),
        .description = http_request_query(req, "description"),
        .runner_type = runner,
        .labels = lc.labels,
        .expected_sha256 = http_request_query(req, "sha256"),
    };
    ImageUpload *u = NULL;
    r = image_upload_begin(ctx->images, &spec, http_request_content_length(req), &u, e);
    json_decref(lc.labels);
    if (r < 0)
        return r;
    http_request_log_field(req, "tenant", tenant);
    http_request_set_data(req, u);
    return 0;
}

static int upload_chunk(HttpRequest *req, const char *data, size_t n, Error *e)
{
    return image_upload_write(http_request_get_data(req), data, n, e);
}

static void upload_finish(HttpRequest *req)
{
    ImageUpload *u = http_request_get_data(req);
    ImageRecord rec;
    Error e = ERROR_INIT;

    http_request_set_data(req, NULL);
    uint64_t bytes = image_upload_bytes(u);
    int r = image_upload_commit(u, &rec, &e);
    if (r < 0) {
        if (e.code != -EINVAL)
            log_error("could not register image: %s", error_message(&e));
        api_reply_error(req, &e);
        error_done(&e);
        return;
    }
    metrics_image_registered(bytes);
    http_request_log_field(req, "image", rec.image_id);
    _cleanup_free_ char *loc = xasprintf("/api/v1/images/%s", rec.image_id);
    http_reply_header(req, "Location", loc);
    http_reply_json(req, 201, api_image_json(&rec));
    image_record_done(&rec);
}

static void upload_abort(HttpRequest *req)
{
    image_upload_abort(http_request_get_data(req));
    http_request_set_data(req, NULL);
}

const HttpStreamOps api_images_upload = {
    .begin = upload_begin,
    .chunk = upload_chunk,
    .finish = upload_finish,
    .abort = upload_abort,
};

/* ---- GET /api/v1/images --------------------------------------------------------------------- */

static int parse_list_query(HttpRequest *req, ImageFilter *f, Error *e)
{
    static const char *const allowed[] = {"tenant_id", "name",   "name_prefix",
                                          "limit",     "cursor", NULL};

    int r = api_check_query(req, allowed, e);
    if (r < 0)
        return r;
    r = api_scope_tenant(req, http_request_query(req, "tenant_id"), &f->tenant_id, e);
    if (r < 0)
        return r;
    if (f->tenant_id && !id_is_valid(f->tenant_id))
        return error_set(e, -EINVAL, "invalid tenant_id: %s", ID_RULE);
    f->name = http_request_query(req, "name");
    f->name_prefix = http_request_query(req, "name_prefix");
    if (f->name_prefix && strlen(f->name_prefix) > ID_MAX_LEN)
        return error_set(e, -EINVAL, "name_prefix is longer than %d characters", ID_MAX_LEN);
    return api_parse_page(req, &f->limit, &f->before_seq, e);
}

void api_images_list(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    ImageFilter f = {0};
    Error e = ERROR_INIT;
    ImageRecord *rows = NULL;
    size_t n = 0;
    bool more = false;

    if (parse_list_query(req, &f, &e) < 0 ||
        store_image_list(ctx->store, &f, &rows, &n, &more, &e) < 0) {
        api_reply_error(req, &e);
        error_done(&e);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, api_image_json(&rows[i]));
    json_t *cursor = api_cursor_json(more && n > 0, n > 0 ? rows[n - 1].seq : 0);
    image_records_free(rows, n);
    http_reply_json(req, 200, json_pack("{s:o, s:o}", "images", arr, "next_cursor", cursor));
}

/* ---- GET / DELETE /api/v1/images/{id} ------------------------------------------------------- */

static int image_target(HttpRequest *req, const char **ret_id, const char **ret_tenant, Error *e)
{
    static const char *const none[] = {NULL};
    const char *id = http_request_param(req, 0);
    int r = api_check_query(req, none, e);
    if (r < 0)
        return r;
    if (!id_is_valid(id))
        return error_set(e, -EINVAL, "invalid image id: %s", ID_RULE);
    r = api_scope_tenant(req, NULL, ret_tenant, e);
    if (r < 0)
        return r;
    *ret_id = id;
    http_request_log_field(req, "image", id);
    return 0;
}

void api_images_get(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    const char *id = NULL, *tenant = NULL;
    Error e = ERROR_INIT;
    ImageRecord rec;

    if (image_target(req, &id, &tenant, &e) < 0 ||
        store_image_get(ctx->store, id, tenant, &rec, &e) < 0) {
        api_reply_error(req, &e);
        error_done(&e);
        return;
    }
    http_reply_json(req, 200, api_image_json(&rec));
    image_record_done(&rec);
}

void api_images_delete(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    const char *id = NULL, *tenant = NULL;
    Error e = ERROR_INIT;

    if (image_target(req, &id, &tenant, &e) < 0 ||
        image_registry_delete(ctx->images, id, tenant, &e) < 0) {
        api_reply_error(req, &e);
        error_done(&e);
        return;
    }
    /* its root file system for containers, if one was built (running ones keep theirs mounted) */
    if (ctx->bundles_dir && oci_bundle_remove(ctx->bundles_dir, id, &e) < 0) {
        log_warning("could not remove the root file system of image \"%s\": %s", id,
                    error_message(&e));
        error_done(&e);
    }
    http_reply_data(req, 204, NULL, "", 0);
}
