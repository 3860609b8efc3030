/* The instance API ("core"): what a running workflow program calls, on the unix socket
 * (docs/instance-api.md). Every request carries the per-launch token of the instance it names;
 * api_core_admit() checks it, so a handler acts only on that instance. Control signals ride on
 * replies in the Runtara-Signal header. */
#include <assert.h>
#include <pthread.h>
#include <string.h>

#include "../base/alloc.h"
#include "../base/apikey.h"
#include "../base/fault.h"
#include "../base/id.h"
#include "../base/log.h"
#include "../core/instance.h"
#include "api.h"

#define EVENT_PAYLOAD_MAX (64 << 10)
#define SIGNAL_WAIT_MAX (60 * USEC_PER_SEC)

/* What api_core_admit() attaches to a request: the instance's row as read when the request was
 * admitted, the handler's view of it (self_record()). */
typedef struct Admitted {
    InstanceRecord rec;
    bool registered; /* the admission recorded the launch with its "registered" event */
    bool from_memo;  /* admitted from the memo of tokens (rec holds only key, id, token hash) */
} Admitted;

static void admitted_free(void *p)
{
    Admitted *a = p;
    instance_record_done(&a->rec);
    free(a);
}

/* The first call of a launch's program while its launch is not recorded yet (the supervisor waits
 * a little before it records one, so that the commit does not compete with the program's start:
 * src/sched/README.md): record it now, before the call acts on the instance; a register records
 * its own event in the same commit. Then read the row again: running now, or no longer this
 * launch's (the token check fails). Returns as instance_check_token(); a->rec is left empty when
 * it fails. */
static int admit_recording_launch(HttpRequest *req, ApiContext *ctx, const char *id,
                                  const char *token, Admitted *a, Error *e)
{
    bool registering = strcmp(http_request_route(req), "core.register") == 0;
    InstanceOutcome out = {.launch_token_hash = a->rec.token_hash,
                           .then_event = registering ? "registered" : NULL};
    const char *key = a->rec.instance_key;
    int r = instance_apply(ctx->store, key, CAUSE_LAUNCHED, &out, NULL, e);
    if (r > 0) {
        a->registered = registering;
        /* its events only: a status long-poll waits for an end or a suspension, and a running
         * instance has neither (the poll would wake, read the row again and park again) */
        api_events_appended(ctx, key);
        if (!registering) /* a register tells the supervisor itself, once it has answered */
            supervisor_registered(ctx->sv, key);
    }
    instance_record_done(&a->rec);
    a->rec = (InstanceRecord){0};
    return r < 0 ? r : instance_check_token(ctx->store, id, token, &a->rec, e);
}

/* What a call with a token that names no instance, or another one, is told (401): the same for
 * both, so nothing leaks. */
static int invalid_token(Error *e, const char *id)
{
    return error_set(e, -EACCES, "invalid instance token for instance \"%s\"", id);
}

/* A checkpoint save of a launch the memo knows (token-memo.h): admitted without reading the
 * instance's row. The handler needs only the key and the token's hash, and the save's own
 * transaction checks that hash and the status again, so a launch that ended meanwhile gets the
 * same 409 it gets from a read here. Returns true if admitted. */
static bool admit_from_memo(HttpRequest *req, ApiContext *ctx, const char *id, const char *token)
{
    if (!ctx->tokens || strlen(token) != 64 ||
        strcmp(http_request_route(req), "core.checkpoint_save") != 0)
        return false;
    char hash[65];
    apikey_hash(token, hash);
    char *key = token_memo_get(ctx->tokens, hash, id);
    if (!key)
        return false;
    Admitted *a = xcalloc(1, sizeof *a);
    a->rec = (InstanceRecord){.instance_key = key,
                              .instance_id = xstrdup(id),
                              .token_hash = xstrdup(hash),
                              .status = INSTANCE_RUNNING};
    a->from_memo = true;
    http_request_set_auth_full(req, a, admitted_free);
    http_request_log_field(req, "instance", id);
    return true;
}

int api_core_admit(HttpRequest *req, void *userdata, Error *e)
{
    ApiContext *ctx = userdata;
    const char *id = http_request_param(req, 0);
    const char *auth = http_request_header(req, "Authorization");

    if (!id_is_valid(id))
        return error_set(e, -EINVAL, "invalid instance id: %s", ID_RULE);
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return error_set(e, -EACCES,
                         "missing instance token: send \"Authorization: Bearer "
                         "$RUNTARA_INSTANCE_TOKEN\"");
    if (admit_from_memo(req, ctx, id, auth + 7))
        return 0;
    Admitted *a = xcalloc(1, sizeof *a);
    Error check = ERROR_INIT;
    int r = instance_check_token(ctx->store, id, auth + 7, &a->rec, &check);
    if (r < 0 && store_unavailable(r)) {
        /* not a wrong token: the store cannot say (503), and the program asks again */
        r = error_set(e, r, "could not check the token of instance \"%s\": %s", id,
                      error_message(&check));
        error_done(&check);
        free(a);
        return r;
    }
    error_done(&check);
    if (r > 0 && a->rec.status == INSTANCE_PENDING) {
        Error why = ERROR_INIT;
        r = admit_recording_launch(req, ctx, id, auth + 7, a, &why);
        if (r < 0 && why.code != -ENOENT) {
            r = error_set(e, why.code, "could not record the launch of instance \"%s\": %s", id,
                          error_message(&why));
            error_done(&why);
            free(a);
            return r;
        }
        error_done(&why);
    }
    if (r <= 0) { /* unknown instance or wrong token: the same answer, so nothing leaks */
        if (r == 0)
            instance_record_done(&a->rec);
        free(a);
        return invalid_token(e, id);
    }
    /* The row read for the token check is the handler's view of the instance (self_record()):
     * one store read per call instead of two. A running launch's token is remembered for its
     * saves. */
    if (a->rec.status == INSTANCE_RUNNING && ctx->tokens)
        token_memo_put(ctx->tokens, a->rec.token_hash, a->rec.instance_key, a->rec.instance_id);
    http_request_set_auth_full(req, a, admitted_free);
    http_request_log_field(req, "instance", id);
    return 0;
}

/* The key of the caller's instance (the token names it, with its tenant). */
static const char *self(HttpRequest *req)
{
    const Admitted *a = http_request_get_auth(req);
    return a->rec.instance_key;
}

/* Attach the pending control signal, if any, to the reply about to be built. */
static void signal_header(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    SignalKind kind;
    if (store_signal_get(ctx->store, self(req), &kind, NULL, NULL) > 0)
        http_reply_header(req, "Runtara-Signal", signal_kind_to_string(kind));
}

static void reply_store_error(HttpRequest *req, Error *e)
{
    if (e->code != -ENOENT && e->code != -EINVAL && e->code != -EBUSY && e->code != -ESTALE &&
        e->code != -EEXIST)
        log_error("instance \"%s\": %s", self(req), error_message(e));
    api_reply_error(req, e);
    error_done(e);
}

/* The instance's row as read when the request was admitted (api_core_admit). */
static const InstanceRecord *self_record(HttpRequest *req)
{
    const Admitted *a = http_request_get_auth(req);
    assert(a);
    return &a->rec;
}

/* A process may only act while its instance runs (or is being launched). */
static int require_live(HttpRequest *req, const InstanceRecord *rec)
{
    if (rec->status == INSTANCE_RUNNING || rec->status == INSTANCE_PENDING)
        return 0;
    char msg[256];
    snprintf(msg, sizeof msg, "instance \"%s\" is %s; the process should exit", rec->instance_id,
             instance_status_to_string(rec->status));
    http_reply_error(req, -EBUSY, msg, NULL);
    return -EBUSY;
}

void api_core_register(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    const InstanceRecord *rec = self_record(req);
    const Admitted *a = http_request_get_auth(req);
    if (require_live(req, rec) == 0) {
        if (!a->registered && /* the launch was recorded before this call */
            store_event_append(ctx->store, rec->instance_key, "registered", NULL, NULL, NULL,
                               NULL) >= 0)
            api_events_appended(ctx, rec->instance_key);
        signal_header(req);
        http_reply_json(req, 200,
                        json_pack("{s:s, s:s, s:i, s:s?, s:s}", "instance_id", rec->instance_id,
                                  "tenant_id", rec->tenant_id, "attempt", rec->attempt,
                                  "checkpoint_id", rec->checkpoint_id, "status", "running"));
        supervisor_registered(ctx->sv, rec->instance_key);
    }
}

void api_core_input(HttpRequest *req)
{
    const InstanceRecord *rec = self_record(req);
    http_reply_data(req, 200, "application/json", rec->input, strlen(rec->input));
}

/* A save admitted from the memo was refused as no longer this launch's (-ESTALE) or its instance
 * is gone (-ENOENT): false if its token names no instance any more (a relaunch gave the instance
 * a new one, or it was deleted), which a read at the admission answers with 401; the memo then
 * forgets it. True otherwise, and for a save admitted by a read. */
static bool token_still_names_a_row(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    const Admitted *a = http_request_get_auth(req);
    if (!a->from_memo)
        return true;
    InstanceRecord rec;
    int r = store_instance_get_by_token(ctx->store, a->rec.token_hash, &rec, NULL);
    if (r == -ENOENT) {
        token_memo_forget(ctx->tokens, a->rec.token_hash);
        return false;
    }
    if (r >= 0)
        instance_record_done(&rec);
    return true;
}

static int checkpoint_key(HttpRequest *req, const char **ret)
{
    const char *key = http_request_param(req, 1);
    if (instance_checkpoint_key_is_valid(key)) {
        *ret = key;
        return 0;
    }
    http_reply_error(req, -EINVAL, "invalid checkpoint key: " CHECKPOINT_KEY_RULE, NULL);
    return -EINVAL;
}

/* Reply to a save, once it is durable (or failed), on either path below. The body is the bytes now
 * under the key: the request's own (`*data`, taken over by the response) when this save stored
 * them, the earlier ones (res->data, taken over) when the key existed. */
static void reply_saved(HttpRequest *req, CheckpointSaved *res, char **data)
{
    if (res->result < 0) {
        if ((res->error.code == -ESTALE || res->error.code == -ENOENT) &&
            !token_still_names_a_row(req)) {
            /* admitted from the memo with the token of an earlier launch, or of an instance
             * deleted since: what a read at the admission would have said */
            error_done(&res->error);
            invalid_token(&res->error, self_record(req)->instance_id);
            api_fail(req, &res->error);
            return;
        }
        reply_store_error(req, &res->error);
        return;
    }
    FAULT_POINT("checkpoint-saved"); /* durable, but the program never hears so */
    if (res->result == 1)            /* and its "checkpoint" event */
        api_events_appended(http_request_userdata(req), self(req));
    http_reply_header(req, "Runtara-Checkpoint", res->result == 1 ? "stored" : "existing");
    if (res->signal >= 0) /* read in the save's own transaction */
        http_reply_header(req, "Runtara-Signal", signal_kind_to_string(res->signal));
    void *body = res->result == 1 ? (void *)TAKE_PTR(*data) : TAKE_PTR(res->data);
    http_reply_data_owned(req, res->result == 1 ? 201 : 200, "application/octet-stream", body,
                          res->n);
}

/* A save in flight. The request waits suspended (no HTTP thread held) while the store's group
 * commit saves it; two references: the store's until the completion ran, the request's until it
 * ended (on_done). The bytes are taken from the request, which the client may end (MHD then
 * frees it) while the save is still queued; the 201 gives them to the response. */
typedef struct PendingSave {
    pthread_mutex_t lock; /* guards req against the request ending while the completion runs */
    unsigned n_ref;
    HttpRequest *req; /* NULL once the request ended */
    CheckpointSaved res;
    char *id, *key, *token_hash;
    char *data; /* n bytes; NULL once handed to the response */
    size_t n;
} PendingSave;

static void pending_save_unref(PendingSave *p)
{
    pthread_mutex_lock(&p->lock);
    unsigned left = --p->n_ref;
    pthread_mutex_unlock(&p->lock);
    if (left > 0)
        return;
    pthread_mutex_destroy(&p->lock);
    free(p->res.data);
    error_done(&p->res.error);
    free(p->id);
    free(p->key);
    free(p->token_hash);
    free(p->data);
    free(p);
}

/* The request ended (after its reply, or the client went away): the completion must not touch
 * it any more. */
static void pending_save_detach(HttpRequest *req, void *userdata)
{
    PendingSave *p = userdata;
    (void)req;
    pthread_mutex_lock(&p->lock);
    p->req = NULL;
    pthread_mutex_unlock(&p->lock);
    pending_save_unref(p);
}

/* On the committing thread: keep the outcome and resume the request, which replies on its own
 * thread (checkpoint_saved). Resuming only schedules it, so holding the lock is safe; the lock
 * keeps the request from being freed before the resume is through. */
static void pending_save_done(CheckpointSaved *res, void *userdata)
{
    PendingSave *p = userdata;
    pthread_mutex_lock(&p->lock);
    p->res = *res;
    *res = (CheckpointSaved){.error = ERROR_INIT};
    if (p->req)
        http_request_resume(p->req);
    pthread_mutex_unlock(&p->lock);
    pending_save_unref(p);
}

static void checkpoint_saved(HttpRequest *req)
{
    PendingSave *p = http_request_get_data(req);
    http_request_set_data(req, NULL);
    reply_saved(req, &p->res, &p->data);
}

void api_core_checkpoint_put(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    const char *key;
    /* Checked at admission, and again in the save's transaction (the token hash): a stop, an
     * end or a relaunch that lands while the body arrives makes the save a 409. */
    if (checkpoint_key(req, &key) < 0 || require_live(req, self_record(req)) < 0)
        return;
    const char *token_hash = self_record(req)->token_hash;

    size_t n;
    char *data = http_request_take_body(req, &n);
    PendingSave *p = xmalloc(sizeof *p);
    *p = (PendingSave){.n_ref = 2,
                       .req = req,
                       .id = xstrdup(self(req)),
                       .key = xstrdup(key),
                       .token_hash = xstrdup(token_hash),
                       .data = data,
                       .n = n};
    pthread_mutex_init(&p->lock, NULL);
    http_request_set_data(req, p);
    http_request_on_done(req, pending_save_detach, p);

    Error e = ERROR_INIT;
    int r = store_checkpoint_save_async(ctx->store, p->id, p->key, p->token_hash, p->data, n,
                                        pending_save_done, p, &e);
    if (r >= 0) {
        /* the reply comes from checkpoint_saved, perhaps at once if the save is already done */
        http_request_suspend(req, checkpoint_saved);
        return;
    }
    pending_save_unref(p); /* the store's reference: done will never run */
    http_request_set_data(req, NULL);
    error_done(&e);

    /* Shutting down: save while this thread waits. */
    CheckpointSaved res = {.signal = _SIGNAL_KIND_INVALID, .error = ERROR_INIT};
    void *stored = NULL;
    res.result = store_checkpoint_save(ctx->store, p->id, p->key, p->token_hash, p->data, n,
                                       &stored, &res.n, &res.signal, &res.error);
    if (res.result == 0)
        res.data = TAKE_PTR(stored);
    free(stored);
    reply_saved(req, &res, &p->data);
    free(res.data);
}

void api_core_checkpoint_get(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    const char *key;
    if (checkpoint_key(req, &key) < 0)
        return;
    _cleanup_free_ void *data = NULL;
    size_t n = 0;
    Error e = ERROR_INIT;
    if (store_checkpoint_get(ctx->store, self(req), key, &data, &n, NULL, &e) < 0) {
        reply_store_error(req, &e);
        return;
    }
    signal_header(req); /* a replaying step learns of a cancel before it would run */
    http_reply_data_owned(req, 200, "application/octet-stream", TAKE_PTR(data), n);
}

void api_core_heartbeat(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    Error e = ERROR_INIT;
    const InstanceRecord *rec = self_record(req);
    if (require_live(req, rec) < 0)
        return;
    if (store_instance_heartbeat(ctx->store, self(req), rec->token_hash, now_usec(CLOCK_REALTIME),
                                 &e) < 0) {
        reply_store_error(req, &e);
        return;
    }
    signal_header(req);
    http_reply_data(req, 204, NULL, "", 0);
}

void api_core_event(HttpRequest *req)
{
    static const char *const fields[] = {"type", "subtype", "payload", "key", NULL};
    ApiContext *ctx = http_request_userdata(req);
    json_t *body = http_request_json(req);
    Error e = ERROR_INIT;
    const char *type = json_string_value(json_object_get(body, "type"));
    json_t *sub = json_object_get(body, "subtype"), *key = json_object_get(body, "key");

    if (api_check_fields(body, fields, &e) < 0) {
        reply_store_error(req, &e);
        return;
    }
    if (!type || (strcmp(type, "progress") != 0 && strcmp(type, "custom") != 0 &&
                  strcmp(type, "log") != 0)) {
        http_reply_error(req, -EINVAL, "invalid event type: must be progress, custom or log", NULL);
        return;
    }
    if (sub && (!json_is_string(sub) || json_string_length(sub) > 128)) {
        http_reply_error(req, -EINVAL, "invalid subtype: must be a string of at most 128 bytes",
                         NULL);
        return;
    }
    if (key && !instance_checkpoint_key_is_valid(json_string_value(key))) {
        http_reply_error(req, -EINVAL, "invalid key: " CHECKPOINT_KEY_RULE, NULL);
        return;
    }
    json_t *payload = json_object_get(body, "payload");
    _cleanup_free_ char *text =
        payload ? json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (text && strlen(text) > EVENT_PAYLOAD_MAX) {
        http_reply_error(req, -EFBIG, "event payload exceeds 65536 bytes", NULL);
        return;
    }
    int64_t id = 0;
    const InstanceRecord *rec = self_record(req);
    if (require_live(req, rec) < 0)
        return;
    int r = store_event_append_keyed(ctx->store, self(req), type, json_string_value(sub), text,
                                     json_string_value(key), rec->token_hash, &id, &e);
    if (r < 0) {
        reply_store_error(req, &e);
        return;
    }
    if (r > 0)
        api_events_appended(ctx, self(req));
    signal_header(req); /* 200: a repeat of the report with that key, recorded before */
    http_reply_json(req, r > 0 ? 201 : 200, json_pack("{s:I}", "id", (json_int_t)id));
}

/* ---- signals -------------------------------------------------------------------------------- */

/* A custom signal sent for wait_key, taken (each is delivered once); NULL when none. With
 * checkpoint_key, the payload is saved under that key in the transaction that takes it, so a
 * reply lost to a crash loses no signal. */
static json_t *take_custom_into(HttpRequest *req, const char *wait_key, const char *checkpoint_key,
                                Error *e, int *ret)
{
    ApiContext *ctx = http_request_userdata(req);
    _cleanup_free_ char *payload = NULL;
    *ret = checkpoint_key
               ? store_custom_signal_deliver(ctx->store, self(req), wait_key, checkpoint_key,
                                             self_record(req)->token_hash, &payload, e)
               : store_custom_signal_take(ctx->store, self(req), wait_key, &payload, e);
    if (*ret <= 0)
        return NULL;
    if (checkpoint_key)
        FAULT_POINT("signal-delivered"); /* taken and saved, but the program never hears */
    return json_pack("{s:s, s:s, s:o}", "type", "custom", "wait_key", wait_key, "payload",
                     api_json_or_null(payload));
}

/* GET /signals?wait_key=K[&checkpoint=C]: take_custom_into() with the request's own query. */
static json_t *take_custom(HttpRequest *req, const char *wait_key, Error *e, int *ret)
{
    return take_custom_into(req, wait_key, http_request_query(req, "checkpoint"), e, ret);
}

/* The pending control signal, or with ?wait_key= the custom signal for that key (taken, or
 * already taken by signal_ready() and kept in the request's data slot). */
static void reply_signal(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    const char *wait_key = http_request_query(req, "wait_key");
    SignalKind kind;
    _cleanup_free_ char *payload = NULL;
    Error e = ERROR_INIT;
    json_t *sig = http_request_get_data(req);
    int r = 0;

    http_request_set_data(req, NULL);
    if (sig)
        ; /* taken while parking */
    else if (wait_key)
        sig = take_custom(req, wait_key, &e, &r);
    else if ((r = store_signal_get(ctx->store, self(req), &kind, &payload, &e)) > 0)
        sig = json_pack("{s:s, s:o}", "type", signal_kind_to_string(kind), "payload",
                        api_json_or_null(payload));
    if (r < 0) {
        reply_store_error(req, &e);
        return;
    }
    http_reply_json(req, 200, json_pack("{s:o}", "signal", sig ? sig : json_null()));
}

/* Is there something to deliver now? A custom signal is taken here (it is delivered once) and
 * kept in the request for reply_signal(). */
static bool signal_ready(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    const char *wait_key = http_request_query(req, "wait_key");
    SignalKind kind;
    if (!wait_key)
        return store_signal_get(ctx->store, self(req), &kind, NULL, NULL) > 0;
    int r = 0;
    json_t *sig = take_custom(req, wait_key, NULL, &r);
    if (!sig) /* a refusal to save into the checkpoint: answered by reply_signal() at once */
        return r < 0 && http_request_query(req, "checkpoint");
    http_request_set_data(req, sig);
    return true;
}

void api_core_signals(HttpRequest *req)
{
    static const char *const allowed[] = {"wait", "wait_key", "checkpoint", NULL};
    ApiContext *ctx = http_request_userdata(req);
    const char *wait = http_request_query(req, "wait");
    const char *wait_key = http_request_query(req, "wait_key");
    const char *checkpoint = http_request_query(req, "checkpoint");
    usec_t span = 0;
    Error e = ERROR_INIT;

    if (api_check_query(req, allowed, &e) < 0 ||
        (wait && api_parse_wait(wait, SIGNAL_WAIT_MAX, &span, &e) < 0)) {
        reply_store_error(req, &e);
        return;
    }
    if (wait_key && !instance_checkpoint_key_is_valid(wait_key)) {
        http_reply_error(req, -EINVAL, "invalid wait_key: " CHECKPOINT_KEY_RULE, NULL);
        return;
    }
    if (checkpoint && !wait_key) {
        http_reply_error(req, -EINVAL, "checkpoint is given without wait_key",
                         "only a custom signal is saved into a checkpoint as it is taken");
        return;
    }
    if (checkpoint && !instance_checkpoint_key_is_valid(checkpoint)) {
        http_reply_error(req, -EINVAL, "invalid checkpoint: " CHECKPOINT_KEY_RULE, NULL);
        return;
    }
    if (checkpoint) {
        /* saved only while this launch is the instance's: an ended one is told now, as is a
         * refusal of the take (the key saved already), not after the wait */
        if (require_live(req, self_record(req)) < 0)
            return;
        int r = 0;
        json_t *sig = take_custom(req, wait_key, &e, &r);
        if (r < 0) {
            reply_store_error(req, &e);
            return;
        }
        if (sig || span == 0) {
            http_reply_json(req, 200, json_pack("{s:o}", "signal", sig ? sig : json_null()));
            return;
        }
    } else if (span == 0 || signal_ready(req)) {
        reply_signal(req);
        return;
    }
    _cleanup_free_ char *key = api_signal_key(self(req));
    if (waiters_park(ctx->waiters, key, req, now_usec(CLOCK_MONOTONIC) + span, reply_signal) < 0) {
        reply_signal(req); /* too many waiters: answer now */
        return;
    }
    /* a signal that arrived before parking must not wait for the deadline */
    if (signal_ready(req))
        waiters_release(ctx->waiters, req);
}

void api_core_signal_ack(HttpRequest *req)
{
    static const char *const fields[] = {"type", NULL};
    ApiContext *ctx = http_request_userdata(req);
    json_t *body = http_request_json(req);
    SignalKind kind = signal_kind_from_string(json_string_value(json_object_get(body, "type")));
    Error e = ERROR_INIT;

    if (api_check_fields(body, fields, &e) < 0) {
        reply_store_error(req, &e);
        return;
    }
    if (kind < 0) {
        http_reply_error(req, -EINVAL, "invalid signal type: must be cancel, pause or resume",
                         NULL);
        return;
    }
    /* the pause of a draining daemon suspends for a relaunch at its next start */
    SignalKind pending;
    _cleanup_free_ char *payload = NULL;
    bool drain = kind == SIGNAL_PAUSE &&
                 store_signal_get(ctx->store, self(req), &pending, &payload, NULL) > 0 &&
                 instance_signal_is_drain(pending, payload);
    int r = store_signal_ack(ctx->store, self(req), kind, &e);
    if (r < 0) {
        reply_store_error(req, &e);
        return;
    }
    if (r == 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "no %s signal is pending", signal_kind_to_string(kind));
        http_reply_error(req, -EBUSY, msg, NULL);
        return;
    }
    if (kind != SIGNAL_RESUME) {
        InstanceCause cause = kind == SIGNAL_CANCEL ? CAUSE_CANCELLED
                              : drain               ? CAUSE_SHUTDOWN
                                                    : CAUSE_PAUSED;
        if (instance_apply(ctx->store, self(req), cause, NULL, NULL, &e) < 0) {
            reply_store_error(req, &e);
            return;
        }
        supervisor_expect_exit(ctx->sv, self(req));
        api_instance_changed(ctx, self(req));
    }
    http_reply_data(req, 204, NULL, "", 0);
}

/* ---- ends ----------------------------------------------------------------------------------- */

/* Apply what the process reports about itself. Returns 1 if it changed the instance, which must
 * then exit (the supervisor kills it after the stop grace); else the error or 409 reply (the
 * message says what the instance is instead: `conflict_fmt` gets the id and the status) is sent
 * and 0 or < 0 returned. */
static int apply_own(HttpRequest *req, InstanceCause cause, const InstanceOutcome *out,
                     const char *conflict_fmt, InstanceStatus *ret_now)
{
    ApiContext *ctx = http_request_userdata(req);
    Error e = ERROR_INIT;
    int r = instance_apply(ctx->store, self(req), cause, out, ret_now, &e);
    if (r < 0) {
        reply_store_error(req, &e);
        return r;
    }
    if (r == 0) {
        char msg[256];
        snprintf(msg, sizeof msg, conflict_fmt, self(req), instance_status_to_string(*ret_now));
        http_reply_error(req, -EBUSY, msg, NULL);
        return 0;
    }
    token_memo_forget(ctx->tokens, self_record(req)->token_hash); /* this launch is done */
    supervisor_expect_exit(ctx->sv, self(req));
    api_instance_changed(ctx, self(req));
    return 1;
}

static void report_end(HttpRequest *req, InstanceCause cause, const InstanceOutcome *out)
{
    InstanceStatus now;
    if (apply_own(req, cause, out, "instance \"%s\" has already ended as %s; nothing changed",
                  &now) <= 0)
        return;
    http_reply_json(req, 200, json_pack("{s:s}", "status", instance_status_to_string(now)));
}

void api_core_completed(HttpRequest *req)
{
    static const char *const fields[] = {"output", NULL};
    ApiContext *ctx = http_request_userdata(req);
    json_t *body = http_request_json(req);
    Error e = ERROR_INIT;

    if (api_check_fields(body, fields, &e) < 0) {
        reply_store_error(req, &e);
        return;
    }
    json_t *output = json_object_get(body, "output");
    _cleanup_free_ char *text =
        json_dumps(output ? output : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
    if (strlen(text) > ctx->limits.max_output) {
        char msg[128];
        snprintf(msg, sizeof msg, "output exceeds the limit of %zu bytes (RUNTARA_MAX_OUTPUT_SIZE)",
                 ctx->limits.max_output);
        http_reply_error(req, -EFBIG, msg, NULL);
        return;
    }
    InstanceOutcome out = {.output = text};
    report_end(req, CAUSE_REPORTED_DONE, &out);
}

void api_core_failed(HttpRequest *req)
{
    static const char *const fields[] = {"error", "detail", NULL};
    json_t *body = http_request_json(req);
    Error e = ERROR_INIT;

    if (api_check_fields(body, fields, &e) < 0) {
        reply_store_error(req, &e);
        return;
    }
    json_t *err = json_object_get(body, "error");
    if (!json_is_string(err) || json_string_length(err) == 0 || json_string_length(err) > 4096) {
        http_reply_error(req, -EINVAL, "error must be a non-empty string of at most 4096 bytes",
                         NULL);
        return;
    }
    json_t *detail = json_object_get(body, "detail");
    _cleanup_free_ char *message = NULL;
    if (detail) {
        _cleanup_free_ char *d = json_dumps(detail, JSON_COMPACT | JSON_ENCODE_ANY);
        message = xasprintf("%s: %.4096s", json_string_value(err), d);
    }
    InstanceOutcome out = {.error = message ? message : json_string_value(err)};
    report_end(req, CAUSE_REPORTED_FAILURE, &out);
}

/* ---- durable sleeps and signal waits -------------------------------------------------------- */

/* The longest a sleep or a wait may last. */
#define SUSPEND_MAX (10 * 366 * 24 * 3600 * USEC_PER_SEC)

/* body.until: an RFC 3339 instant, within SUSPEND_MAX from now. *ret = 0 when absent or null
 * and optional. Replies with an error and returns < 0 when invalid. */
static int parse_until(HttpRequest *req, json_t *body, bool required, usec_t *ret)
{
    json_t *v = json_object_get(body, "until");
    usec_t t = 0;
    if ((!v || json_is_null(v)) && !required) {
        *ret = 0;
        return 0;
    }
    if (!json_is_string(v) || parse_rfc3339(json_string_value(v), &t) < 0 ||
        t > now_usec(CLOCK_REALTIME) + SUSPEND_MAX) {
        http_reply_error(req, -EINVAL,
                         "until must be an RFC 3339 UTC instant such as "
                         "\"2026-01-02T03:04:05.000Z\", at most 10 years ahead",
                         NULL);
        return -EINVAL;
    }
    *ret = t;
    return 0;
}

/* The process goes on: the deadline passed already, or the signal is here. */
static void reply_running(HttpRequest *req, json_t *extra)
{
    json_t *o = json_pack("{s:s}", "status", "running");
    if (extra)
        json_object_update_new(o, extra);
    http_reply_json(req, 200, o);
}

/* Suspend the instance for `cause` until out->sleep_until (and/or the signal out->wait_key);
 * its process must exit. Returns 1 if it was suspended (the reply is sent either way). */
static int suspend(HttpRequest *req, InstanceCause cause, const InstanceOutcome *out)
{
    ApiContext *ctx = http_request_userdata(req);
    InstanceStatus now;
    int r = apply_own(req, cause, out,
                      "instance \"%s\" is %s, not running; the process should exit", &now);
    if (r <= 0)
        return r;
    if (out->sleep_until)
        supervisor_schedule_wake(ctx->sv, self(req), out->sleep_until);
    char buf[32];
    http_reply_json(req, 200,
                    json_pack("{s:s, s:o}", "status", "suspended", "wake_at",
                              out->sleep_until
                                  ? json_string(format_rfc3339(buf, sizeof buf, out->sleep_until))
                                  : json_null()));
    return 1;
}

void api_core_sleep(HttpRequest *req)
{
    static const char *const fields[] = {"until", NULL};
    json_t *body = http_request_json(req);
    usec_t until;
    Error e = ERROR_INIT;

    if (api_check_fields(body, fields, &e) < 0) {
        reply_store_error(req, &e);
        return;
    }
    if (parse_until(req, body, true, &until) < 0)
        return;
    if (until <= now_usec(CLOCK_REALTIME)) {
        reply_running(req, NULL);
        return;
    }
    InstanceOutcome out = {.sleep_until = until};
    (void)suspend(req, CAUSE_SLEEPING, &out);
}

void api_core_wait(HttpRequest *req)
{
    static const char *const fields[] = {"wait_key", "until", "checkpoint", NULL};
    ApiContext *ctx = http_request_userdata(req);
    json_t *body = http_request_json(req);
    const char *key = json_string_value(json_object_get(body, "wait_key"));
    json_t *ck = json_object_get(body, "checkpoint");
    usec_t until;
    Error e = ERROR_INIT;

    if (api_check_fields(body, fields, &e) < 0) {
        reply_store_error(req, &e);
        return;
    }
    if (!instance_checkpoint_key_is_valid(key)) {
        http_reply_error(req, -EINVAL, "invalid wait_key: " CHECKPOINT_KEY_RULE, NULL);
        return;
    }
    if (ck && !instance_checkpoint_key_is_valid(json_string_value(ck))) {
        http_reply_error(req, -EINVAL, "invalid checkpoint: " CHECKPOINT_KEY_RULE, NULL);
        return;
    }
    if (parse_until(req, body, false, &until) < 0)
        return;
    int r = 0;
    json_t *sig = take_custom_into(req, key, json_string_value(ck), &e, &r);
    if (r < 0) {
        reply_store_error(req, &e);
        return;
    }
    if (sig) {
        reply_running(req, json_pack("{s:o}", "signal", sig));
        return;
    }
    if (until && until <= now_usec(CLOCK_REALTIME)) {
        reply_running(req, json_pack("{s:b}", "timed_out", true));
        return;
    }
    InstanceOutcome out = {.sleep_until = until, .wait_key = key};
    /* a signal sent between the take above and the suspension finds the instance still
     * running, so nothing woke it: look once more now that it waits */
    if (suspend(req, CAUSE_WAITING_SIGNAL, &out) > 0 &&
        store_custom_signal_exists(ctx->store, self(req), key, NULL) > 0)
        supervisor_signal_arrived(ctx->sv, self(req), key);
}
