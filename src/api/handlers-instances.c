/* /api/v1/instances: start, list, status (with long-poll), stop, resume, signals, checkpoints,
 * events and logs. Tenant keys see only their tenant: another tenant's instance is 404. */
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/alloc.h"
#include "../base/digest.h"
#include "../base/hashmap.h"
#include "../base/id.h"
#include "../base/log.h"
#include "../base/parse-util.h"
#include "../base/strbuf.h"
#include "../core/instance.h"
#include "api-error.h"
#include "api.h"

#define ENV_MAX 64
#define ENV_VALUE_MAX 4096
#define TIMEOUT_MAX 31536000
#define WAIT_MAX (60 * USEC_PER_SEC)

static json_t *time_or_null(usec_t t)
{
    char buf[40];
    return t ? json_string(format_rfc3339(buf, sizeof buf, t)) : json_null();
}

json_t *api_instance_json(const InstanceRecord *r)
{
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:s, s:s?, s:i, s:i, s:o, s:o, s:s?, s:o, s:s?}", "instance_id",
                  r->instance_id, "tenant_id", r->tenant_id, "image_id", r->image_id, "status",
                  instance_status_to_string(r->status), "termination_reason", r->termination_reason,
                  "attempt", r->attempt, "timeout_secs", (int)r->timeout_secs, "input",
                  api_json_or_null(r->input), "output", api_json_or_null(r->output), "error",
                  r->error, "env", api_json_or_null(r->env), "checkpoint_id", r->checkpoint_id);
    json_object_set_new(o, "daemon", r->owner ? json_string(r->owner) : json_null());
    json_object_set_new(o, "exit_code",
                        r->has_exit_code ? json_integer(r->exit_code) : json_null());
    json_object_set_new(o, "memory_peak_bytes",
                        r->has_usage ? json_integer((json_int_t)r->memory_peak_bytes)
                                     : json_null());
    json_object_set_new(o, "cpu_usec",
                        r->has_usage ? json_integer((json_int_t)r->cpu_usec) : json_null());
    json_object_set_new(o, "created_at", time_or_null(r->created_at));
    json_object_set_new(o, "started_at", time_or_null(r->started_at));
    json_object_set_new(o, "finished_at", time_or_null(r->finished_at));
    json_object_set_new(o, "heartbeat_at", time_or_null(r->heartbeat_at));
    return o;
}

/* ---- the status document, remembered ----
 *
 * GET status is the call asked most (dashboards, scripts, `?wait` polls), and most answers
 * repeat the previous one. Building the document is most of the request's work: callgrind puts
 * about three quarters of its instructions in jansson (parsing input, output and env back,
 * packing, serialising). So each HTTP thread keeps the last documents it built, in a table indexed
 * by instance id, together with the exact bytes of every field the document is built from. A
 * row whose fields are byte for byte the same gives the same document, so a hit is exact and
 * nothing needs invalidating; a changed row misses and takes the slot over. */
#define DOC_CACHE_SLOTS 64
/* Rows larger than this (outputs and inputs may reach megabytes) are built each time: a table
 * of 64 such documents per thread would hold hundreds of MiB for good; this bounds a thread at
 * about 1 MiB. */
#define DOC_CACHE_ROW_MAX (8U << 10)

typedef struct DocCacheSlot {
    char *key; /* the fields api_instance_json() reads, each length-prefixed */
    size_t key_n;
    char *doc; /* the reply body */
    size_t doc_n;
} DocCacheSlot;

static pthread_key_t doc_cache_key;
static pthread_once_t doc_cache_once = PTHREAD_ONCE_INIT;

static void doc_cache_free(void *p)
{
    DocCacheSlot *slots = p;
    for (size_t i = 0; i < DOC_CACHE_SLOTS; i++) {
        free(slots[i].key);
        free(slots[i].doc);
    }
    free(slots);
}

static void doc_cache_init(void)
{
    ASSERT_SE(pthread_key_create(&doc_cache_key, doc_cache_free) == 0);
}

static void key_text(StrBuf *b, const char *s)
{
    size_t n = s ? strlen(s) + 1 : 0; /* 0: NULL; else the length with its NUL */
    strbuf_put(b, &n, sizeof n);
    if (s)
        strbuf_put(b, s, n);
}

/* Every field api_instance_json() reads, and nothing else: keep the two in step. */
static void doc_key(StrBuf *b, const InstanceRecord *r)
{
    const char *texts[] = {r->instance_id,  r->tenant_id, r->image_id, r->termination_reason,
                           r->input,        r->output,    r->error,    r->env,
                           r->checkpoint_id};
    for (size_t i = 0; i < ELEMENTSOF(texts); i++)
        key_text(b, texts[i]);
    int64_t nums[] = {r->status,
                      r->attempt,
                      r->timeout_secs,
                      r->has_exit_code,
                      r->exit_code,
                      (int64_t)r->created_at,
                      (int64_t)r->started_at,
                      (int64_t)r->finished_at,
                      (int64_t)r->heartbeat_at};
    strbuf_put(b, nums, sizeof nums);
}

/* Reply 200 with the instance's status document, built or remembered. */
static void reply_instance(HttpRequest *req, const InstanceRecord *r)
{
    pthread_once(&doc_cache_once, doc_cache_init);
    DocCacheSlot *slots = pthread_getspecific(doc_cache_key);
    if (!slots) {
        slots = xcalloc(DOC_CACHE_SLOTS, sizeof *slots);
        ASSERT_SE(pthread_setspecific(doc_cache_key, slots) == 0);
    }
    DocCacheSlot *slot = &slots[hashmap_hash(r->instance_key) % DOC_CACHE_SLOTS];

    StrBuf key = STRBUF_INIT;
    doc_key(&key, r);
    if (key.len > DOC_CACHE_ROW_MAX) {
        strbuf_done(&key);
        http_reply_json(req, 200, api_instance_json(r));
        return;
    }
    if (!slot->key || slot->key_n != key.len || memcmp(slot->key, key.buf, key.len) != 0) {
        free(slot->key);
        free(slot->doc);
        slot->key_n = key.len;
        slot->key = strbuf_steal(&key);
        slot->doc = http_json_body(api_instance_json(r), &slot->doc_n);
    }
    strbuf_done(&key);
    if (!slot->doc) { /* not cached: http_reply_json() answers the failure */
        free(TAKE_PTR(slot->key));
        http_reply_json(req, 200, NULL);
        return;
    }
    http_reply_data(req, 200, "application/json", slot->doc, slot->doc_n);
}

/* Routes on one instance take no query parameters but the tenant's (load_target()). */
static int no_query(HttpRequest *req, Error *e)
{
    static const char *const none[] = {"tenant_id", NULL};
    return api_check_query(req, none, e);
}

/* Load the instance named in the path. Ids are per tenant: a tenant key means its own tenant's;
 * an admin names the tenant with ?tenant_id=, or leaves it out when only one tenant has an
 * instance with that id. */
static int load_target(HttpRequest *req, InstanceRecord *ret, Error *e)
{
    ApiContext *ctx = http_request_userdata(req);
    const char *id = http_request_param(req, 0), *tenant = NULL;
    if (!id_is_valid(id))
        return error_set(e, -EINVAL, "invalid instance id: %s", ID_RULE);
    int r = api_scope_tenant(req, http_request_query(req, "tenant_id"), &tenant, e);
    if (r < 0)
        return r;
    http_request_log_field(req, "instance", id);
    if (tenant) {
        _cleanup_free_ char *key = store_instance_key(tenant, id);
        r = store_instance_get(ctx->store, key, NULL, ret, e);
        if (r == -ENOENT)
            return error_set(e, -ENOENT, "instance \"%s\" of tenant \"%s\" does not exist", id,
                             tenant);
        return r;
    }
    r = store_instance_find(ctx->store, id, ret, e);
    if (r == -ENOENT)
        return error_set(e, -ENOENT, "instance \"%s\" does not exist", id);
    if (r == -ENOTUNIQ)
        return error_set(e, -EINVAL,
                         "instance id \"%s\" is used by more than one tenant. hint: name the "
                         "tenant with ?tenant_id=",
                         id);
    return r;
}

/* ---- start ---------------------------------------------------------------------------------- */

static int check_env(json_t *env, Error *e)
{
    const char *k;
    json_t *v;
    if (!json_is_object(env))
        return error_set(e, -EINVAL, "env must be an object of strings");
    if (json_object_size(env) > ENV_MAX)
        return error_set(e, -EINVAL, "env has more than %d variables", ENV_MAX);
    json_object_foreach(env, k, v)
    {
        size_t n = strlen(k);
        if (n == 0 || n > 128 || (k[0] >= '0' && k[0] <= '9') ||
            strspn(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") != n)
            return error_set(e, -EINVAL,
                             "invalid env name \"%.128s\": must match "
                             "[A-Za-z_][A-Za-z0-9_]{0,127}",
                             k);
        if (strncmp(k, "RUNTARA_", 8) == 0)
            return error_set(e, -EINVAL,
                             "env may not set %s: the RUNTARA_ variables are set by the runner", k);
        if (!json_is_string(v) || json_string_length(v) > ENV_VALUE_MAX ||
            strlen(json_string_value(v)) != json_string_length(v))
            return error_set(e, -EINVAL, "env %s must be a string of at most %d bytes without NUL",
                             k, ENV_VALUE_MAX);
    }
    return 0;
}

/* Resolve the image a start names: image_id, or the newest version of image (a name). */
static int resolve_image(ApiContext *ctx, json_t *body, const char *tenant, ImageRecord *ret,
                         Error *e)
{
    const char *id = json_string_value(json_object_get(body, "image_id"));
    const char *name = json_string_value(json_object_get(body, "image"));
    if (!!id == !!name)
        return error_set(e, -EINVAL, "give either image_id or image (a name), not both or neither");
    if (id) {
        if (!id_is_valid(id))
            return error_set(e, -EINVAL, "invalid image_id: %s", ID_RULE);
        return store_image_get(ctx->store, id, tenant, ret, e);
    }
    if (!tenant)
        return error_set(e, -EINVAL, "tenant_id is required to start by image name");
    ImageFilter f = {.tenant_id = tenant, .name = name, .limit = 1};
    ImageRecord *rows = NULL;
    size_t n = 0;
    bool more;
    int r = store_image_list(ctx->store, &f, &rows, &n, &more, e);
    if (r < 0)
        return r;
    if (n == 0) {
        image_records_free(rows, n);
        return error_set(e, -ENOENT, "image \"%s\" does not exist for tenant \"%s\"", name, tenant);
    }
    *ret = rows[0];
    free(rows);
    return 0;
}

/* The fingerprint of a start request, for idempotency. */
static void request_hash(const char *image_id, json_t *input, unsigned timeout, json_t *env,
                         char hex[65])
{
    json_t *o = json_pack("{s:s, s:O, s:i, s:O}", "image_id", image_id, "input", input,
                          "timeout_secs", (int)timeout, "env", env);
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    Sha256 *h = sha256_new();
    sha256_update(h, text, strlen(text));
    sha256_final_hex(h, hex);
    sha256_free(h);
    free(text);
    json_decref(o);
}

static int parse_start(HttpRequest *req, json_t *body, const char **ret_tenant,
                       unsigned *ret_timeout, Error *e)
{
    static const char *const fields[] = {"image_id", "image", "tenant_id",    "instance_id",
                                         "input",    "env",   "timeout_secs", NULL};
    ApiContext *ctx = http_request_userdata(req);
    static const char *const none[] = {NULL};
    int r = api_check_query(req, none, e);
    if (r >= 0)
        r = api_check_fields(body, fields, e);
    if (r >= 0)
        r = api_scope_tenant(req, json_string_value(json_object_get(body, "tenant_id")), ret_tenant,
                             e);
    if (r < 0)
        return r;
    static const char *const strings[] = {"image_id", "image", "tenant_id", NULL};
    for (const char *const *f = strings; *f; f++) {
        json_t *v = json_object_get(body, *f);
        if (v && !json_is_string(v))
            return error_set(e, -EINVAL, "%s must be a string", *f);
    }
    json_t *iid = json_object_get(body, "instance_id");
    if (iid && (!json_is_string(iid) || !id_is_valid(json_string_value(iid))))
        return error_set(e, -EINVAL, "invalid instance_id: %s", ID_RULE);
    json_t *env = json_object_get(body, "env");
    if (env && (r = check_env(env, e)) < 0)
        return r;
    json_t *t = json_object_get(body, "timeout_secs");
    *ret_timeout = ctx->limits.default_timeout;
    if (t) {
        if (!json_is_integer(t) || json_integer_value(t) < 1 || json_integer_value(t) > TIMEOUT_MAX)
            return error_set(e, -EINVAL, "timeout_secs must be an integer between 1 and %d",
                             TIMEOUT_MAX);
        *ret_timeout = (unsigned)json_integer_value(t);
    }
    return 0;
}

/* The launch of a new instance, handed to the supervisor as soon as its row is visible: the
 * process starts while the row is being made durable, which takes as long as a process start
 * (an fsync; docs/benchmarks.md). Safe because the row can be lost only with the machine, and
 * the process with it; the client's 201 still waits for durability. */
typedef struct StartLaunch {
    Supervisor *sv;
    const char *id, *token;
} StartLaunch;

static void launch_when_visible(void *userdata)
{
    const StartLaunch *l = userdata;
    supervisor_launch_issued(l->sv, l->id, l->token);
}

void api_instances_start(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    json_t *body = http_request_json(req);
    const char *tenant = NULL;
    unsigned timeout = 0;
    Error e = ERROR_INIT;
    _cleanup_(image_record_done) ImageRecord img = {0};

    if (api_refuse_while_draining(req, ctx))
        return;
    if (parse_start(req, body, &tenant, &timeout, &e) < 0 ||
        resolve_image(ctx, body, tenant, &img, &e) < 0 ||
        (strcmp(img.runner_type, "native") == 0 &&
         api_may_run_native(req, img.tenant_id, &e) < 0)) {
        api_fail(req, &e);
        return;
    }
    char id[ID_MAX_LEN + 1], hash[65], token[65], token_hash[65];
    const char *given = json_string_value(json_object_get(body, "instance_id"));
    if (given)
        snprintf(id, sizeof id, "%s", given);
    else
        (void)id_new_uuid(id);
    json_t *given_input = json_object_get(body, "input");
    json_t *input = given_input ? json_incref(given_input) : json_object(); /* absent = {} */
    json_t *env = json_object_get(body, "env");
    json_t *env_or_empty = env ? json_incref(env) : json_object();
    request_hash(img.image_id, input, timeout, env_or_empty, hash);
    _cleanup_free_ char *input_text = json_dumps(input, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(input);
    _cleanup_free_ char *env_text = json_dumps(env_or_empty, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(env_or_empty);

    /* the first launch's token goes into the row: the launch then needs no commit of its own
     * before the process starts */
    int r = instance_new_token(token, token_hash);
    if (r < 0) {
        error_set(&e, r, "could not create a launch token: %s", strerror(-r));
        api_fail(req, &e);
        return;
    }
    InstanceRecord rec = {.instance_id = id,
                          .tenant_id = img.tenant_id,
                          .image_id = img.image_id,
                          .input = input_text,
                          .env = env_text,
                          .request_hash = hash,
                          .token_hash = token_hash,
                          .timeout_secs = timeout,
                          .runner = img.runner_type};
    InstanceRecord existing = {0};
    _cleanup_free_ char *key = store_instance_key(img.tenant_id, id);
    StartLaunch launch = {.sv = ctx->sv, .id = key, .token = token};
    r = store_instance_create(ctx->store, &rec, &existing, launch_when_visible, &launch, &e);
    http_request_log_field(req, "instance", id);
    if (r == -EEXIST) {
        error_done(&e);
        bool same = strcmp(existing.request_hash, hash) == 0;
        if (same)
            http_reply_json(req, 200, api_instance_json(&existing));
        else
            http_reply_error(req, -EEXIST, "instance already exists with a different request",
                             "starting the same instance_id again is idempotent only with the "
                             "same image, input, env and timeout");
        instance_record_done(&existing);
        return;
    }
    if (r < 0) {
        api_fail(req, &e);
        return;
    }
    explicit_bzero(token, sizeof token);
    InstanceRecord now;
    if (store_instance_get(ctx->store, key, NULL, &now, &e) < 0) {
        api_fail(req, &e);
        return;
    }
    _cleanup_free_ char *loc = xasprintf("/api/v1/instances/%s?tenant_id=%s", id, img.tenant_id);
    http_reply_header(req, "Location", loc);
    http_reply_json(req, 201, api_instance_json(&now));
    instance_record_done(&now);
}

/* ---- list and get --------------------------------------------------------------------------- */

static int parse_list(HttpRequest *req, InstanceFilter *f, Error *e)
{
    static const char *const allowed[] = {
        "tenant_id",      "status",          "image_id", "created_after", "created_before",
        "finished_after", "finished_before", "limit",    "cursor",        NULL};
    int r = api_check_query(req, allowed, e);
    if (r >= 0)
        r = api_scope_tenant(req, http_request_query(req, "tenant_id"), &f->tenant_id, e);
    if (r < 0)
        return r;
    const char *status = http_request_query(req, "status");
    if (status) {
        f->status = instance_status_from_string(status);
        if (f->status < 0)
            return error_set(e, -EINVAL,
                             "invalid status \"%s\": must be pending, running, suspended, "
                             "completed, failed or cancelled",
                             status);
        f->has_status = true;
    }
    f->image_id = http_request_query(req, "image_id");
    if (f->tenant_id && !id_is_valid(f->tenant_id))
        return error_set(e, -EINVAL, "invalid tenant_id: %s", ID_RULE);
    if (f->image_id && !id_is_valid(f->image_id))
        return error_set(e, -EINVAL, "invalid image_id: %s", ID_RULE);
    if ((r = api_query_time(req, "created_after", &f->created_after, e)) < 0 ||
        (r = api_query_time(req, "created_before", &f->created_before, e)) < 0 ||
        (r = api_query_time(req, "finished_after", &f->finished_after, e)) < 0 ||
        (r = api_query_time(req, "finished_before", &f->finished_before, e)) < 0)
        return r;
    return api_parse_page(req, &f->limit, &f->before_seq, e);
}

void api_instances_list(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    InstanceFilter f = {0};
    Error e = ERROR_INIT;
    InstanceRecord *rows = NULL;
    size_t n = 0;
    bool more = false;
    uint64_t total = 0;
    int64_t last = 0;

    if (parse_list(req, &f, &e) < 0 ||
        store_instance_list(ctx->store, &f, &rows, &n, &more, &total, &last, &e) < 0) {
        api_fail(req, &e);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, api_instance_json(&rows[i]));
    instance_records_free(rows, n);
    char cursor[24];
    snprintf(cursor, sizeof cursor, "%lld", (long long)last);
    http_reply_json(req, 200,
                    json_pack("{s:o, s:o, s:I}", "instances", arr, "next_cursor",
                              more ? json_string(cursor) : json_null(), "total",
                              (json_int_t)total));
}

static bool settled(const InstanceRecord *r)
{
    return r->status != INSTANCE_PENDING && r->status != INSTANCE_RUNNING;
}

/* The deadline of a long-poll: arrival plus ?wait (validated before the first park). */
static usec_t wait_deadline(HttpRequest *req)
{
    usec_t span = 0;
    const char *wait = http_request_query(req, "wait");
    if (wait)
        (void)api_parse_wait(wait, WAIT_MAX, &span, NULL);
    return http_request_start(req) + span;
}

/* Reply with the instance once it has settled (left pending and running) or the wait is over;
 * until then park the request under the instance id. Also the resume callback, so a change that
 * does not settle the instance (such as its launch) parks it again. */
static void reply_when_settled(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    InstanceRecord rec;
    Error e = ERROR_INIT;
    if (load_target(req, &rec, &e) < 0) {
        api_fail(req, &e);
        return;
    }
    usec_t deadline = wait_deadline(req);
    if (settled(&rec) || now_usec(CLOCK_MONOTONIC) >= deadline ||
        waiters_park(ctx->waiters, rec.instance_key, req, deadline, reply_when_settled) < 0) {
        reply_instance(req, &rec);
        instance_record_done(&rec);
        return;
    }
    /* parked; a change between the read and the park must not be missed */
    InstanceRecord again;
    if (store_instance_get(ctx->store, rec.instance_key, NULL, &again, NULL) >= 0) {
        if (again.status != rec.status)
            waiters_release(ctx->waiters, req);
        instance_record_done(&again);
    }
    instance_record_done(&rec);
}

/* The query of a long poll: only allowed arguments, and a valid ?wait; false after a 400. */
static bool long_poll_query_ok(HttpRequest *req, const char *const *allowed)
{
    const char *wait = http_request_query(req, "wait");
    usec_t span = 0;
    Error e = ERROR_INIT;

    if (api_check_query(req, allowed, &e) < 0 ||
        (wait && api_parse_wait(wait, WAIT_MAX, &span, &e) < 0)) {
        api_fail(req, &e);
        return false;
    }
    return true;
}

void api_instances_get(HttpRequest *req)
{
    static const char *const allowed[] = {"wait", "tenant_id", NULL};
    if (long_poll_query_ok(req, allowed))
        reply_when_settled(req);
}

/* ---- stop, resume, signals ------------------------------------------------------------------ */

static void reply_conflict(HttpRequest *req, const InstanceRecord *rec, const char *what)
{
    char msg[256];
    snprintf(msg, sizeof msg, "cannot %s instance \"%s\": it is %s", what, rec->instance_id,
             instance_status_to_string(rec->status));
    http_reply_error(req, -EBUSY, msg, NULL);
}

/* Reply 202 with the instance as it is now. */
static void accepted(HttpRequest *req, const char *id)
{
    ApiContext *ctx = http_request_userdata(req);
    InstanceRecord rec;
    Error e = ERROR_INIT;
    if (store_instance_get(ctx->store, id, NULL, &rec, &e) < 0) {
        api_fail(req, &e);
        return;
    }
    http_reply_json(req, 202, api_instance_json(&rec));
    instance_record_done(&rec);
}

void api_instances_stop(HttpRequest *req)
{
    static const char *const fields[] = {"grace_secs", NULL};
    ApiContext *ctx = http_request_userdata(req);
    json_t *body = http_request_json(req);
    _cleanup_(instance_record_done) InstanceRecord rec = {0};
    Error e = ERROR_INIT;

    if (no_query(req, &e) < 0 || api_check_fields(body, fields, &e) < 0 ||
        load_target(req, &rec, &e) < 0) {
        api_fail(req, &e);
        return;
    }
    json_t *g = json_object_get(body, "grace_secs");
    if (g && (!json_is_integer(g) || json_integer_value(g) < 0 || json_integer_value(g) > 3600)) {
        http_reply_error(req, -EINVAL, "grace_secs must be an integer between 0 and 3600", NULL);
        return;
    }
    if (!instance_status_is_unfinished(rec.status)) {
        reply_conflict(req, &rec, "stop");
        return;
    }
    unsigned grace = g ? (unsigned)json_integer_value(g) : ctx->limits.stop_grace;
    supervisor_stop(ctx->sv, rec.instance_key, CAUSE_STOPPED, grace);
    accepted(req, rec.instance_key);
}

/* Reopen a suspended, failed or cancelled instance and launch it again from its checkpoints. */
static void resume(HttpRequest *req, const InstanceRecord *rec)
{
    ApiContext *ctx = http_request_userdata(req);
    Error e = ERROR_INIT;
    ImageRecord img;

    if (store_image_get(ctx->store, rec->image_id, NULL, &img, &e) < 0) {
        error_done(&e);
        char msg[256];
        snprintf(msg, sizeof msg, "cannot resume instance \"%s\": its image \"%s\" was deleted",
                 rec->instance_id, rec->image_id);
        http_reply_error(req, -EBUSY, msg, NULL);
        return;
    }
    image_record_done(&img);
    /* an operator's resume also lifts the limit of relaunches after crashes; the launch's token
     * goes in with it (supervisor_launch_issued) */
    char token[65], token_hash[65];
    int r = instance_new_token(token, token_hash);
    if (r < 0) {
        error_set(&e, r, "could not create a launch token: %s", strerror(-r));
        api_fail(req, &e);
        return;
    }
    InstanceOutcome fresh = {.restarts = -1, .token_hash = token_hash};
    r = instance_apply(ctx->store, rec->instance_key, CAUSE_RESUMED, &fresh, NULL, &e);
    if (r < 0) {
        api_fail(req, &e);
        return;
    }
    if (r == 0) {
        reply_conflict(req, rec, "resume");
        return;
    }
    (void)store_signal_ack(ctx->store, rec->instance_key, SIGNAL_PAUSE, NULL);
    supervisor_launch_issued(ctx->sv, rec->instance_key, token);
    explicit_bzero(token, sizeof token);
    api_instance_changed(ctx, rec->instance_key);
    accepted(req, rec->instance_key);
}

void api_instances_resume(HttpRequest *req)
{
    _cleanup_(instance_record_done) InstanceRecord rec = {0};
    Error e = ERROR_INIT;
    if (api_refuse_while_draining(req, http_request_userdata(req)))
        return;
    if (no_query(req, &e) < 0 || load_target(req, &rec, &e) < 0) {
        api_fail(req, &e);
        return;
    }
    InstanceStatus s = rec.status;
    if (s == INSTANCE_PENDING || s == INSTANCE_RUNNING || s == INSTANCE_COMPLETED) {
        reply_conflict(req, &rec, "resume");
        return;
    }
    resume(req, &rec);
}

static int signal_payload(json_t *body, char **ret, Error *e)
{
    json_t *p = json_object_get(body, "payload");
    *ret = p ? json_dumps(p, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (*ret && strlen(*ret) > 65536) {
        free(*ret);
        *ret = NULL;
        return error_set(e, -EFBIG, "signal payload exceeds 65536 bytes");
    }
    return 0;
}

void api_instances_signal(HttpRequest *req)
{
    static const char *const fields[] = {"type", "payload", NULL};
    ApiContext *ctx = http_request_userdata(req);
    json_t *body = http_request_json(req);
    _cleanup_(instance_record_done) InstanceRecord rec = {0};
    _cleanup_free_ char *payload = NULL;
    Error e = ERROR_INIT;

    if (no_query(req, &e) < 0 || api_check_fields(body, fields, &e) < 0 ||
        signal_payload(body, &payload, &e) < 0 || load_target(req, &rec, &e) < 0) {
        api_fail(req, &e);
        return;
    }
    SignalKind kind = signal_kind_from_string(json_string_value(json_object_get(body, "type")));
    InstanceStatus s = rec.status;
    if (kind < 0) {
        http_reply_error(req, -EINVAL, "invalid signal type: must be cancel, pause or resume",
                         NULL);
        return;
    }
    if (kind == SIGNAL_RESUME) {
        if (s == INSTANCE_SUSPENDED)
            resume(req, &rec);
        else
            reply_conflict(req, &rec, "resume");
        return;
    }
    bool cancel = kind == SIGNAL_CANCEL;
    if (s == INSTANCE_RUNNING) {
        if (store_signal_send(ctx->store, rec.instance_key, kind, payload, &e) < 0) {
            api_fail(req, &e);
            return;
        }
        if (cancel)
            supervisor_enforce_cancel(ctx->sv, rec.instance_key);
        api_signal_sent(ctx, rec.instance_key);
    } else if (cancel && instance_status_is_unfinished(s)) {
        supervisor_stop(ctx->sv, rec.instance_key, CAUSE_CANCELLED, 0); /* nothing runs */
    } else {
        reply_conflict(req, &rec, cancel ? "cancel" : "pause");
        return;
    }
    accepted(req, rec.instance_key);
}

void api_instances_custom_signal(HttpRequest *req)
{
    static const char *const fields[] = {"wait_key", "payload", NULL};
    ApiContext *ctx = http_request_userdata(req);
    json_t *body = http_request_json(req);
    _cleanup_(instance_record_done) InstanceRecord rec = {0};
    _cleanup_free_ char *payload = NULL;
    Error e = ERROR_INIT;

    if (no_query(req, &e) < 0 || api_check_fields(body, fields, &e) < 0 ||
        signal_payload(body, &payload, &e) < 0 || load_target(req, &rec, &e) < 0) {
        api_fail(req, &e);
        return;
    }
    const char *key = json_string_value(json_object_get(body, "wait_key"));
    if (!instance_checkpoint_key_is_valid(key)) {
        http_reply_error(req, -EINVAL, "invalid wait_key: " CHECKPOINT_KEY_RULE, NULL);
        return;
    }
    if (instance_status_is_terminal(rec.status)) {
        reply_conflict(req, &rec, "signal");
        return;
    }
    if (store_custom_signal_put(ctx->store, rec.instance_key, key, payload, &e) < 0) {
        api_fail(req, &e);
        return;
    }
    api_signal_sent(ctx, rec.instance_key);
    /* an instance suspended until this signal arrives is relaunched to take it */
    supervisor_signal_arrived(ctx->sv, rec.instance_key, key);
    accepted(req, rec.instance_key);
}

/* ---- checkpoints, events, logs -------------------------------------------------------------- */

void api_instances_checkpoints(HttpRequest *req)
{
    static const char *const allowed[] = {"limit", "cursor", "tenant_id", NULL};
    ApiContext *ctx = http_request_userdata(req);
    _cleanup_(instance_record_done) InstanceRecord rec = {0};
    CheckpointInfo *rows = NULL;
    size_t n = 0;
    bool more = false;
    unsigned limit;
    int64_t after;
    Error e = ERROR_INIT;

    if (api_check_query(req, allowed, &e) < 0 || api_parse_page(req, &limit, &after, &e) < 0 ||
        load_target(req, &rec, &e) < 0 ||
        store_checkpoint_list(ctx->store, rec.instance_key, after, limit, &rows, &n, &more, &e) <
            0) {
        api_fail(req, &e);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:s, s:I, s:o}", "key", rows[i].key, "size_bytes",
                                             (json_int_t)rows[i].size, "created_at",
                                             time_or_null(rows[i].created_at)));
    int64_t last = n ? rows[n - 1].seq : 0;
    checkpoint_infos_free(rows, n);
    http_reply_json(
        req, 200,
        json_pack("{s:o, s:o}", "checkpoints", arr, "next_cursor", api_cursor_json(more, last)));
}

void api_instances_checkpoint(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    _cleanup_(instance_record_done) InstanceRecord rec = {0};
    _cleanup_free_ void *data = NULL;
    size_t n = 0;
    Error e = ERROR_INIT;

    if (!instance_checkpoint_key_is_valid(http_request_param(req, 1)))
        error_set(&e, -EINVAL, "invalid checkpoint key: %s", CHECKPOINT_KEY_RULE);
    if (e.code < 0 || no_query(req, &e) < 0 || load_target(req, &rec, &e) < 0 ||
        store_checkpoint_get(ctx->store, rec.instance_key, http_request_param(req, 1), &data, &n,
                             NULL, &e) < 0) {
        api_fail(req, &e);
        return;
    }
    http_reply_data_owned(req, 200, "application/octet-stream", TAKE_PTR(data), n);
}

/* The page of events the request asks for, once it has one or the wait is over; until then park
 * the request under the instance's event key (api_events_appended() wakes it). Also the resume
 * callback. */
static void reply_events(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    _cleanup_(instance_record_done) InstanceRecord rec = {0};
    EventFilter f = {0};
    EventRecord *rows = NULL;
    size_t n = 0;
    bool more = false;
    Error e = ERROR_INIT;

    if (api_parse_page(req, &f.limit, &f.after_id, &e) < 0 ||
        api_query_time(req, "after", &f.after, &e) < 0 ||
        api_query_time(req, "before", &f.before, &e) < 0 || load_target(req, &rec, &e) < 0) {
        api_fail(req, &e);
        return;
    }
    f.instance_key = rec.instance_key;
    f.type = http_request_query(req, "type");
    f.subtype = http_request_query(req, "subtype");
    if (store_event_list(ctx->store, &f, &rows, &n, &more, &e) < 0) {
        api_fail(req, &e);
        return;
    }
    usec_t deadline = wait_deadline(req);
    if (n == 0 && now_usec(CLOCK_MONOTONIC) < deadline) {
        _cleanup_free_ char *key = api_events_key(rec.instance_key);
        if (waiters_park(ctx->waiters, key, req, deadline, reply_events) >= 0) {
            /* parked; an event recorded between the read and the park must not be missed */
            event_records_free(rows, n);
            rows = NULL;
            n = 0;
            f.limit = 1;
            if (store_event_list(ctx->store, &f, &rows, &n, &more, NULL) >= 0 && n > 0)
                waiters_release(ctx->waiters, req);
            event_records_free(rows, n);
            return;
        }
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr,
                              json_pack("{s:I, s:s, s:s?, s:o, s:o}", "id", (json_int_t)rows[i].id,
                                        "type", rows[i].type, "subtype", rows[i].subtype, "payload",
                                        api_json_or_null(rows[i].payload), "created_at",
                                        time_or_null(rows[i].created_at)));
    int64_t last = n ? rows[n - 1].id : 0;
    event_records_free(rows, n);
    http_reply_json(
        req, 200,
        json_pack("{s:o, s:o}", "events", arr, "next_cursor", api_cursor_json(more, last)));
}

void api_instances_events(HttpRequest *req)
{
    static const char *const allowed[] = {"type",   "subtype", "after",     "before", "limit",
                                          "cursor", "wait",    "tenant_id", NULL};
    if (long_poll_query_ok(req, allowed))
        reply_events(req);
}

void api_instances_logs(HttpRequest *req)
{
    static const char *const allowed[] = {"tail_bytes", "tenant_id", NULL};
    ApiContext *ctx = http_request_userdata(req);
    _cleanup_(instance_record_done) InstanceRecord rec = {0};
    Error e = ERROR_INIT;
    uint64_t tail = 65536;
    const char *v = http_request_query(req, "tail_bytes");

    if (api_check_query(req, allowed, &e) < 0 || load_target(req, &rec, &e) < 0) {
        api_fail(req, &e);
        return;
    }
    if (v && (parse_uint64(v, &tail) < 0 || tail < 1 || tail > ctx->limits.log_tail_max)) {
        char msg[128];
        snprintf(msg, sizeof msg, "invalid tail_bytes: must be between 1 and %zu",
                 ctx->limits.log_tail_max);
        http_reply_error(req, -EINVAL, msg, NULL);
        return;
    }
    _cleanup_free_ char *path = supervisor_log_path(ctx->sv, rec.tenant_id, rec.instance_id);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        http_reply_data(req, 200, "text/plain; charset=utf-8", "", 0);
        return;
    }
    off_t from = st.st_size > (off_t)tail ? st.st_size - (off_t)tail : 0;
    size_t n = (size_t)(st.st_size - from);
    _cleanup_free_ char *buf = xmalloc(n + 1);
    ssize_t k = pread(fd, buf, n, from);
    http_reply_data(req, 200, "text/plain; charset=utf-8", buf, k > 0 ? (size_t)k : 0);
}
