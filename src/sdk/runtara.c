/* libruntara: the calls of the instance API (docs/instance-api.md) and the step/replay logic on
 * top of them (docs/sdk.md). The transport is runtara-http.c. */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "runtara-internal.h"

#define KEY_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"

static _Thread_local char open_error[1024];

static const char *const signal_names[_RUNTARA_SIGNAL_MAX] = {
    [RUNTARA_SIGNAL_NONE] = "none",
    [RUNTARA_SIGNAL_CANCEL] = "cancel",
    [RUNTARA_SIGNAL_PAUSE] = "pause",
    [RUNTARA_SIGNAL_RESUME] = "resume",
};

const char *runtara_signal_to_string(RuntaraSignal s)
{
    return s >= 0 && s < _RUNTARA_SIGNAL_MAX ? signal_names[s] : NULL;
}

RuntaraSignal runtara_signal_from_string(const char *s)
{
    for (int i = 0; s && i < _RUNTARA_SIGNAL_MAX; i++)
        if (strcmp(s, signal_names[i]) == 0)
            return (RuntaraSignal)i;
    return _RUNTARA_SIGNAL_INVALID;
}

/* ---- open and close ------------------------------------------------------------------------ */

static int curl_global_status = -1;

static void curl_global(void)
{
    /* Never undone: curl_global_cleanup() is not safe while another library may use libcurl. */
    curl_global_status = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -ENOMEM;
}

/* Take checkpoint_id from the daemon's answer to /register, which knows best. Not its attempt:
 * that may lag one behind RUNTARA_ATTEMPT when the program registers before the daemon has
 * recorded its launch (docs/instance-api.yaml, Registration). */
static void apply_registration(RuntaraClient *c, const RuntaraReply *reply)
{
    json_t *doc = json_loadb(reply->body, reply->n, 0, NULL);
    const char *checkpoint = json_string_value(json_object_get(doc, "checkpoint_id"));

    if (checkpoint && *checkpoint) {
        free(c->checkpoint_id);
        c->checkpoint_id = runtara__xstrdup(checkpoint);
    }
    json_decref(doc);
}

static int do_register(RuntaraClient *c)
{
    _cleanup_free_ char *what = runtara__xasprintf("register instance \"%s\"", c->instance_id);
    RuntaraRequest rq = {
        .method = "POST", .path = "/register", .carries_signal = true, .what = what};
    RuntaraReply reply;

    int r = runtara__request(c, &rq, &reply);
    if (r < 0)
        return r;

    apply_registration(c, &reply);
    runtara__reply_done(&reply);
    return 0;
}

static int client_init(RuntaraClient *c)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;

    (void)pthread_once(&once, curl_global);
    if (curl_global_status < 0)
        return runtara__set_error(c, -ENOMEM, "could not initialise libcurl");
    c->curl = curl_easy_init();
    if (!c->curl)
        return runtara__set_error(c, -ENOMEM, "could not initialise libcurl");
    return 0;
}

int runtara_open(RuntaraClient **ret)
{
    RuntaraClient *c = runtara__xmalloc(sizeof *c);
    int r;

    *c = (RuntaraClient){.signal = RUNTARA_SIGNAL_NONE};
    open_error[0] = '\0';
    if ((r = client_init(c)) < 0 || (r = runtara__env_load(c)) < 0 || (r = do_register(c)) < 0) {
        (void)snprintf(open_error, sizeof open_error, "%s",
                       c->last_error ? c->last_error : "could not connect to runtara");
        runtara_close(c);
        return r;
    }
    *ret = c;
    return 0;
}

const char *runtara_open_error(void)
{
    return open_error;
}

void runtara_close(RuntaraClient *c)
{
    if (!c)
        return;
    if (c->curl)
        curl_easy_cleanup(c->curl);
    if (c->auth_header)
        explicit_bzero(c->auth_header, strlen(c->auth_header));
    free(c->auth_header);
    free(c->instance_id);
    free(c->tenant_id);
    free(c->checkpoint_id);
    free(c->addr);
    free(c->socket_path);
    free(c->base_url);
    free(c->last_error);
    free(c);
}

/* ---- accessors ----------------------------------------------------------------------------- */

const char *runtara_instance_id(const RuntaraClient *c)
{
    return c->instance_id;
}

const char *runtara_tenant_id(const RuntaraClient *c)
{
    return c->tenant_id;
}

const char *runtara_checkpoint_id(const RuntaraClient *c)
{
    return c->checkpoint_id;
}

unsigned runtara_attempt(const RuntaraClient *c)
{
    return c->attempt;
}

const char *runtara_last_error(const RuntaraClient *c)
{
    return c->last_error ? c->last_error : "";
}

RuntaraSignal runtara_signal(const RuntaraClient *c)
{
    return c->signal;
}

bool runtara_cancelled(const RuntaraClient *c)
{
    return c->signal == RUNTARA_SIGNAL_CANCEL;
}

/* ---- input and checkpoints ----------------------------------------------------------------- */

int runtara_input(RuntaraClient *c, char **ret_json)
{
    RuntaraRequest rq = {.method = "GET", .path = "/input", .what = "read the instance's input"};
    RuntaraReply reply;

    int r = runtara__request(c, &rq, &reply);
    if (r < 0)
        return r;

    *ret_json = TAKE_PTR(reply.body);
    return 0;
}

static int check_key(RuntaraClient *c, const char *key)
{
    size_t n = key ? strlen(key) : 0;

    if (n == 0 || n > RUNTARA_KEY_MAX || strspn(key, KEY_CHARS) != n)
        return runtara__set_error(c, -EINVAL,
                                  "invalid checkpoint key \"%.*s\": expected 1 to %d characters "
                                  "of A-Z, a-z, 0-9, '_', '.', ':' and '-'",
                                  RUNTARA_KEY_MAX + 1, key ? key : "", RUNTARA_KEY_MAX);
    return 0;
}

/* PUT the checkpoint. Returns 0 if stored now, 1 if it existed, with the stored bytes in *ret. */
static int checkpoint_put(RuntaraClient *c, const char *key, const void *data, size_t n,
                          RuntaraReply *ret)
{
    _cleanup_free_ char *path = runtara__xasprintf("/checkpoints/%s", key);
    _cleanup_free_ char *what = runtara__xasprintf("save checkpoint \"%s\"", key);
    RuntaraRequest rq = {
        .method = "PUT",
        .path = path,
        .ctype = "application/octet-stream",
        .body = data,
        .body_n = n,
        .carries_signal = true,
        .what = what,
    };

    int r = runtara__request(c, &rq, ret);
    if (r < 0)
        return r;

    return r == 200 ? 1 : 0; /* 201: stored now; 200: stored earlier (docs/instance-api.md) */
}

int runtara_checkpoint(RuntaraClient *c, const char *key, const void *data, size_t n,
                       void **ret_data, size_t *ret_n)
{
    RuntaraReply reply;
    int r;

    assert(data || n == 0);
    if ((r = check_key(c, key)) < 0 || (r = checkpoint_put(c, key, data, n, &reply)) < 0)
        return r;

    if (ret_data) {
        /* The stored bytes: ours when we stored them (the 201 body repeats them), else the
         * daemon's. */
        *ret_data = r == 1 ? TAKE_PTR(reply.body) : runtara__memdup_nul(data, n);
        if (ret_n)
            *ret_n = r == 1 ? reply.n : n;
    }
    runtara__reply_done(&reply);
    return r;
}

int runtara_checkpoint_get(RuntaraClient *c, const char *key, void **ret_data, size_t *ret_n)
{
    RuntaraReply reply;
    int r;

    if ((r = check_key(c, key)) < 0)
        return r;

    _cleanup_free_ char *path = runtara__xasprintf("/checkpoints/%s", key);
    _cleanup_free_ char *what = runtara__xasprintf("read checkpoint \"%s\"", key);
    /* The daemon need not announce the signal on this reply (docs/instance-api.md names only
     * the save), so its absence says nothing. */
    RuntaraRequest rq = {.method = "GET", .path = path, .what = what};
    r = runtara__request(c, &rq, &reply);
    if (r < 0)
        return r;

    *ret_data = TAKE_PTR(reply.body);
    if (ret_n)
        *ret_n = reply.n;
    return 0;
}

/* ---- steps --------------------------------------------------------------------------------- */

/* Hand a step's result (owned, n bytes followed by a NUL) to the caller, or free it. */
static void step_deliver(void *result, size_t n, void **ret_result, size_t *ret_n)
{
    if (ret_result)
        *ret_result = result;
    else
        free(result);
    if (ret_n)
        *ret_n = n;
}

/* Run fn and save its result; returns 0 (saved) or 1 (someone saved first: theirs wins). */
static int step_run(RuntaraClient *c, const char *key, runtara_step_cb fn, void *userdata,
                    void **ret_result, size_t *ret_n)
{
    void *result = NULL;
    size_t n = 0;
    RuntaraReply reply;

    int r = fn(userdata, &result, &n);
    if (r < 0)
        return runtara__set_error(c, r, "step \"%s\" failed: %s", key, strerror(-r));
    assert(result || n == 0);

    r = checkpoint_put(c, key, result, n, &reply);
    if (r == 0) {
        runtara__reply_done(&reply);
        result = runtara__xrealloc(result, n + 1);
        ((char *)result)[n] = '\0';
        step_deliver(result, n, ret_result, ret_n);
        return 0;
    }
    free(result);
    if (r < 0)
        return r;
    step_deliver(TAKE_PTR(reply.body), reply.n, ret_result, ret_n);
    return 1;
}

int runtara_step(RuntaraClient *c, const char *key, runtara_step_cb fn, void *userdata,
                 void **ret_result, size_t *ret_n)
{
    void *stored = NULL;
    size_t n = 0;

    int r = runtara_checkpoint_get(c, key, &stored, &n);
    if (r >= 0) {
        step_deliver(stored, n, ret_result, ret_n);
        return 1; /* replay */
    }
    if (r != -ENOENT)
        return r;
    free(c->last_error); /* "not found" is the normal case of a step that has not run yet */
    c->last_error = NULL;

    if (c->signal == RUNTARA_SIGNAL_CANCEL || c->signal == RUNTARA_SIGNAL_PAUSE)
        return runtara__set_error(c, -ECANCELED, "step \"%s\" not run: a %s is pending", key,
                                  runtara_signal_to_string(c->signal));
    return step_run(c, key, fn, userdata, ret_result, ret_n);
}

/* ---- signals ------------------------------------------------------------------------------- */

/* {"signal": null} or {"signal": {"type": "cancel", "payload": ...}} */
static int parse_signal(RuntaraClient *c, const RuntaraReply *reply, RuntaraSignal *ret)
{
    json_t *doc = json_loadb(reply->body, reply->n, 0, NULL);
    json_t *sig = json_object_get(doc, "signal");
    const char *type = json_string_value(json_object_get(sig, "type"));
    RuntaraSignal s = runtara_signal_from_string(type);
    bool valid = json_is_null(sig) || type;

    json_decref(doc);
    if (!valid)
        return runtara__set_error(c, -EIO,
                                  "could not read the pending signal: the reply is not "
                                  "{\"signal\": ...}");
    /* An unknown signal type from a newer daemon counts as none. */
    *ret = s < 0 ? RUNTARA_SIGNAL_NONE : s;
    return 0;
}

int runtara_poll_signal(RuntaraClient *c, unsigned wait_secs, RuntaraSignal *ret)
{
    _cleanup_free_ char *path = wait_secs ? runtara__xasprintf("/signals?wait=%us", wait_secs)
                                          : runtara__xstrdup("/signals");
    RuntaraRequest rq = {
        .method = "GET", .path = path, .wait_s = wait_secs, .what = "read the pending signal"};
    RuntaraReply reply;
    RuntaraSignal s = RUNTARA_SIGNAL_NONE;

    int r = runtara__request(c, &rq, &reply);
    if (r < 0)
        return r;

    r = parse_signal(c, &reply, &s);
    runtara__reply_done(&reply);
    if (r < 0)
        return r;
    c->signal = s;
    *ret = s;
    return 0;
}

int runtara_should_exit(RuntaraClient *c)
{
    RuntaraSignal s = c->signal;

    if (s != RUNTARA_SIGNAL_CANCEL && s != RUNTARA_SIGNAL_PAUSE)
        return 0;

    _cleanup_free_ char *body =
        runtara__xasprintf("{\"type\":\"%s\"}", runtara_signal_to_string(s));
    _cleanup_free_ char *what =
        runtara__xasprintf("acknowledge the %s", runtara_signal_to_string(s));
    RuntaraRequest rq = {
        .method = "POST",
        .path = "/signals/ack",
        .ctype = "application/json",
        .body = body,
        .body_n = strlen(body),
        .what = what,
    };
    RuntaraReply reply;
    int r = runtara__request(c, &rq, &reply);
    if (r == -EALREADY) {
        /* Not pending any more (withdrawn, or replaced by another signal): carry on with what
         * the daemon says is pending now; the next step acts on it. */
        RuntaraSignal now;
        if ((r = runtara_poll_signal(c, 0, &now)) < 0)
            return r;
        free(c->last_error);
        c->last_error = NULL;
        return 0;
    }
    if (r < 0)
        return r;

    runtara__reply_done(&reply);
    c->signal = RUNTARA_SIGNAL_NONE;
    return s;
}

/* ---- heartbeat, events, end ---------------------------------------------------------------- */

/* POST a JSON body (or none) and discard the reply. */
static int post(RuntaraClient *c, const char *path, const char *json, bool carries_signal,
                const char *what)
{
    RuntaraRequest rq = {
        .method = "POST",
        .path = path,
        .ctype = json ? "application/json" : NULL,
        .body = json,
        .body_n = json ? strlen(json) : 0,
        .carries_signal = carries_signal,
        .what = what,
    };
    RuntaraReply reply;

    int r = runtara__request(c, &rq, &reply);
    if (r < 0)
        return r;

    runtara__reply_done(&reply);
    return 0;
}

int runtara_heartbeat(RuntaraClient *c)
{
    return post(c, "/heartbeat", NULL, true, "send a heartbeat");
}

/* `obj` (jansson; NULL if json_pack() failed on invalid UTF-8) with member `name` set to the JSON
 * text `value_json` (NULL: omitted) and serialised. Steals obj. */
static int build_body(RuntaraClient *c, json_t *obj, const char *name, const char *value_json,
                      const char *what, char **ret)
{
    if (!obj)
        return runtara__set_error(c, -EINVAL, "could not %s: a string is not valid UTF-8", what);
    if (value_json && !runtara__json_valid(value_json)) {
        json_decref(obj);
        return runtara__set_error(c, -EINVAL, "could not %s: the %s is not valid JSON", what, name);
    }
    _cleanup_free_ char *head = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!head)
        abort(); /* out of memory, as in runtara__xmalloc() */
    *ret = value_json ? runtara__json_splice(head, name, value_json) : TAKE_PTR(head);
    return 0;
}

int runtara_event(RuntaraClient *c, const char *type, const char *subtype, const char *payload_json)
{
    _cleanup_free_ char *body = NULL;
    const char *what = "record an event";
    int r;

    if (!type)
        return runtara__set_error(c, -EINVAL, "could not %s: the event has no type", what);
    json_t *obj = json_pack("{s:s, s:s*}", "type", type, "subtype", subtype);
    if ((r = build_body(c, obj, "payload", payload_json ? payload_json : "null", what, &body)) < 0)
        return r;
    return post(c, "/events", body, true, what);
}

int runtara_complete(RuntaraClient *c, const char *output_json)
{
    _cleanup_free_ char *body = NULL;
    const char *what = "report completion";
    int r;

    if ((r = build_body(c, json_object(), "output", output_json ? output_json : "null", what,
                        &body)) < 0)
        return r;
    return post(c, "/completed", body, false, what);
}

int runtara_fail(RuntaraClient *c, const char *message, const char *detail_json)
{
    _cleanup_free_ char *body = NULL;
    const char *what = "report failure";
    int r;

    json_t *obj = json_pack("{s:s}", "error", message ? message : "failed");
    if ((r = build_body(c, obj, "detail", detail_json, what, &body)) < 0)
        return r;
    return post(c, "/failed", body, false, what);
}
