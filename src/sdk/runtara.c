/* libruntara: the calls of the instance API (docs/instance-api.md) and the step/replay logic on
 * top of them (docs/sdk.md). The transport is runtara-http.c. */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

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

/* Take checkpoint_id from the daemon's answer to /register, which knows best. Not its attempt:
 * that may lag one behind RUNTARA_ATTEMPT when the program registers before the daemon has
 * recorded its launch (docs/instance-api.yaml, Registration). */
static void apply_registration(RuntaraClient *c, const RuntaraReply *reply)
{
    json_t *doc = json_loadb(reply->body, reply->n, 0, NULL);
    json_t *field = json_object_get(doc, "checkpoint_id");
    const char *checkpoint = json_string_value(field);

    c->none_stored = json_is_null(field); /* absent says nothing */
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

int runtara_open(RuntaraClient **ret)
{
    RuntaraClient *c = runtara__xmalloc(sizeof *c);
    int r;

    *c = (RuntaraClient){.signal = RUNTARA_SIGNAL_NONE, .fd = -1};
    open_error[0] = '\0';
    if ((r = runtara__env_load(c)) < 0 || (r = do_register(c)) < 0 ||
        (c->heartbeat_ms > 0 && (r = runtara__heartbeat_start(c, c->heartbeat_ms)) < 0)) {
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

void runtara__client_free_fields(RuntaraClient *c)
{
    runtara__disconnect(c);
    if (c->auth_header)
        explicit_bzero(c->auth_header, strlen(c->auth_header));
    free(c->auth_header);
    free(c->instance_id);
    free(c->tenant_id);
    free(c->checkpoint_id);
    free(c->addr);
    free(c->socket_path);
    free(c->tcp_host);
    free(c->tcp_port);
    free(c->host_header);
    free(c->path_base);
    free(c->last_error);
}

void runtara_close(RuntaraClient *c)
{
    if (!c)
        return;
    runtara__heartbeat_stop(c);
    runtara__client_free_fields(c);
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

/* The keys the clients of this process saved or read: a set of 64-bit FNV-1a hashes, so its memory
 * stays 16 to 32 bytes per key however long the keys. Process-wide, since every client of a
 * process serves the same instance. Two keys of one hash make the second look known, which costs
 * only the lookup it would have had anyway. */
static struct {
    pthread_mutex_t lock;
    uint64_t *hashes; /* open addressing; 0: an empty slot */
    size_t n, cap;
} seen = {.lock = PTHREAD_MUTEX_INITIALIZER};

static uint64_t key_hash(const char *key)
{
    uint64_t h = 14695981039346656037ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h ? h : 1;
}

/* With seen.lock held: the slot of h, or the empty one where it would go. */
static size_t key_slot(const uint64_t *hashes, size_t cap, uint64_t h)
{
    size_t i = h & (cap - 1);
    while (hashes[i] && hashes[i] != h)
        i = (i + 1) & (cap - 1);
    return i;
}

static bool key_known(const char *key)
{
    uint64_t h = key_hash(key);
    pthread_mutex_lock(&seen.lock);
    bool known = seen.cap > 0 && seen.hashes[key_slot(seen.hashes, seen.cap, h)] == h;
    pthread_mutex_unlock(&seen.lock);
    return known;
}

static void key_remember(const char *key)
{
    uint64_t h = key_hash(key);
    pthread_mutex_lock(&seen.lock);
    if (2 * (seen.n + 1) > seen.cap) { /* at most half full */
        size_t cap = seen.cap ? 2 * seen.cap : 64;
        uint64_t *hashes = runtara__xmalloc(cap * sizeof *hashes);
        memset(hashes, 0, cap * sizeof *hashes);
        for (size_t i = 0; i < seen.cap; i++)
            if (seen.hashes[i])
                hashes[key_slot(hashes, cap, seen.hashes[i])] = seen.hashes[i];
        free(seen.hashes);
        seen.hashes = hashes;
        seen.cap = cap;
    }
    size_t i = key_slot(seen.hashes, seen.cap, h);
    if (!seen.hashes[i]) {
        seen.hashes[i] = h;
        seen.n++;
    }
    pthread_mutex_unlock(&seen.lock);
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
    key_remember(key);
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
    key_remember(key);

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
    int r;

    /* An instance without a checkpoint at registration has only those saved since (the daemon
     * sets checkpoint_id in the transaction of every save): a key no client of this process has
     * seen needs no lookup, one request less per step of a first run. */
    if (c->none_stored && !key_known(key)) {
        if ((r = check_key(c, key)) < 0)
            return r;
    } else {
        r = runtara_checkpoint_get(c, key, &stored, &n);
        if (r >= 0) {
            step_deliver(stored, n, ret_result, ret_n);
            return 1; /* replay */
        }
        if (r != -ENOENT)
            return r;
        free(c->last_error); /* "not found" is the normal case of a step that has not run yet */
        c->last_error = NULL;
    }

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

/* ---- durable sleeps and signal waits ------------------------------------------------------- */

static long long unix_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The deadline saved under `key`: `proposed` the first time, the first saved one on replay. */
static int durable_deadline(RuntaraClient *c, const char *key, long long proposed, long long *ret)
{
    char text[32];
    void *stored = NULL;
    size_t n = 0;
    int len = snprintf(text, sizeof text, "%lld", proposed);

    int r = runtara_checkpoint(c, key, text, (size_t)len, &stored, &n);
    if (r < 0)
        return r;
    char *end = NULL;
    errno = 0;
    *ret = strtoll(stored, &end, 10);
    bool bad = errno != 0 || end == stored || *end != '\0';
    free(stored);
    if (bad)
        return runtara__set_error(c, -EBADMSG,
                                  "checkpoint \"%s\" does not hold a deadline; was the key used "
                                  "for something else?",
                                  key);
    return 0;
}

static void format_instant(long long unix_ms, char buf[32])
{
    time_t secs = (time_t)(unix_ms / 1000);
    struct tm tm;

    gmtime_r(&secs, &tm);
    size_t n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, 32 - n, ".%03lldZ", unix_ms % 1000);
}

/* POST a suspension request; *ret_reply is the daemon's JSON reply. */
static int post_suspend(RuntaraClient *c, const char *path, json_t *body, const char *what,
                        json_t **ret_reply)
{
    _cleanup_free_ char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text)
        abort(); /* out of memory, as in runtara__xmalloc() */
    RuntaraRequest rq = {.method = "POST",
                         .path = path,
                         .ctype = "application/json",
                         .body = text,
                         .body_n = strlen(text),
                         .what = what};
    RuntaraReply reply;
    int r = runtara__request(c, &rq, &reply);
    if (r < 0)
        return r;
    *ret_reply = json_loadb(reply.body, reply.n, 0, NULL);
    runtara__reply_done(&reply);
    if (!json_is_object(*ret_reply)) {
        json_decref(*ret_reply);
        return runtara__set_error(c, -EIO, "could not %s: the daemon's reply is not JSON", what);
    }
    return 0;
}

static bool reply_is_suspended(json_t *reply)
{
    const char *status = json_string_value(json_object_get(reply, "status"));
    return status && strcmp(status, "suspended") == 0;
}

int runtara_sleep_until(RuntaraClient *c, const char *key, long long unix_ms)
{
    long long deadline;
    int r;

    if ((r = check_key(c, key)) < 0 || (r = durable_deadline(c, key, unix_ms, &deadline)) < 0)
        return r;
    long long left = deadline - unix_now_ms();
    if (left <= 0)
        return 0;
    if ((unsigned long long)left < c->sleep_suspend_ms) {
        struct timespec ts = {(time_t)(left / 1000), (long)(left % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        return 0;
    }
    char until[32];
    json_t *reply = NULL;
    format_instant(deadline, until);
    _cleanup_free_ char *what = runtara__xasprintf("sleep until %s (\"%s\")", until, key);
    if ((r = post_suspend(c, "/sleep", json_pack("{s:s}", "until", until), what, &reply)) < 0)
        return r;
    r = reply_is_suspended(reply) ? RUNTARA_SUSPENDED : 0;
    json_decref(reply);
    return r;
}

int runtara_sleep(RuntaraClient *c, const char *key, unsigned long long ms)
{
    if (ms > (unsigned long long)LLONG_MAX / 2)
        return runtara__set_error(c, -EINVAL, "could not sleep: %llu ms is too long", ms);
    return runtara_sleep_until(c, key, unix_now_ms() + (long long)ms);
}

/* The outcome of a wait, as saved: "S" and the payload, or "T" for a timeout. */
static int wait_outcome(RuntaraClient *c, const char *key, const char *saved, size_t n,
                        char **ret_payload)
{
    if (n == 1 && saved[0] == 'T')
        return runtara__set_error(c, -ETIMEDOUT, "the wait for signal \"%s\" timed out", key);
    /* "S" and the payload: saved by this library before the daemon saved deliveries itself */
    bool legacy = n >= 1 && saved[0] == 'S';
    /* the payload's JSON text, saved by the daemon with the delivery (JSON never starts with
     * 'T' or 'S') */
    _cleanup_free_ char *text = runtara__memdup_nul(saved + legacy, n - legacy);
    if (n >= 1 && (legacy || runtara__json_valid(text))) {
        if (ret_payload)
            *ret_payload = TAKE_PTR(text);
        return 0;
    }
    return runtara__set_error(c, -EBADMSG,
                              "checkpoint \"%s\" does not hold a signal wait's outcome; was the "
                              "key used for something else?",
                              key);
}

/* Save the outcome (first write wins: on a race, the saved one is the answer) and return it. */
static int settle_wait(RuntaraClient *c, const char *key, const char *outcome, size_t n,
                       char **ret_payload)
{
    void *saved = NULL;
    size_t saved_n = 0;
    int r = runtara_checkpoint(c, key, outcome, n, &saved, &saved_n);
    if (r >= 0)
        r = wait_outcome(c, key, saved, saved_n, ret_payload);
    free(saved);
    return r;
}

int runtara_wait_signal(RuntaraClient *c, const char *key, unsigned long long timeout_ms,
                        char **ret_payload)
{
    void *saved = NULL;
    size_t n = 0;
    int r;

    if ((r = check_key(c, key)) < 0)
        return r;
    if (strlen(key) > RUNTARA_KEY_MAX - 9)
        return runtara__set_error(c, -EINVAL, "invalid wait key \"%s\": at most %d characters", key,
                                  RUNTARA_KEY_MAX - 9);
    /* replay: the outcome is already saved */
    r = runtara_checkpoint_get(c, key, &saved, &n);
    if (r == 0) {
        r = wait_outcome(c, key, saved, n, ret_payload);
        free(saved);
        return r;
    }
    if (r != -ENOENT)
        return r;

    _cleanup_free_ char *dkey = runtara__xasprintf("%s:deadline", key);
    long long deadline = 0;
    if (timeout_ms > 0 &&
        (timeout_ms > (unsigned long long)LLONG_MAX / 2 ||
         (r = durable_deadline(c, dkey, unix_now_ms() + (long long)timeout_ms, &deadline)) < 0))
        return r < 0 ? r : runtara__set_error(c, -EINVAL, "could not wait: timeout too long");

    /* a signal is saved under key in the transaction that takes it: never lost to a crash */
    json_t *body = json_pack("{s:s, s:s}", "wait_key", key, "checkpoint", key), *reply = NULL;
    char until[32];
    if (deadline > 0) {
        format_instant(deadline, until);
        json_object_set_new(body, "until", json_string(until));
    }
    _cleanup_free_ char *what = runtara__xasprintf("wait for signal \"%s\"", key);
    if ((r = post_suspend(c, "/wait", body, what, &reply)) < 0) {
        /* A repeat after a lost reply (the daemon restarted) finds the signal delivered into the
         * checkpoint already: 409. Then the checkpoint is the answer. */
        if (r == -EALREADY) {
            char *refusal = c->last_error ? strdup(c->last_error) : NULL;
            if (runtara_checkpoint_get(c, key, &saved, &n) == 0) {
                r = wait_outcome(c, key, saved, n, ret_payload);
                free(saved);
            } else if (refusal) /* no delivery there: the 409 was the answer */
                (void)runtara__set_error(c, r, "%s", refusal);
            free(refusal);
        }
        return r;
    }
    if (reply_is_suspended(reply)) {
        json_decref(reply);
        return RUNTARA_SUSPENDED;
    }
    if (json_is_object(json_object_get(reply, "signal"))) {
        json_decref(reply);
        /* what the daemon saved, byte for byte what a replay will read */
        r = runtara_checkpoint_get(c, key, &saved, &n);
        if (r == 0)
            r = wait_outcome(c, key, saved, n, ret_payload);
        free(saved);
        return r;
    }
    json_decref(reply);
    return settle_wait(c, key, "T", 1, ret_payload); /* timed out */
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
    /* A key per report, the same for every repeat of it: the daemon records a report repeated
     * after a lost reply once. Random per client, so no two clients (launches) share keys. */
    if (!c->event_nonce[0]) {
        uint8_t b[8];
        ssize_t k;
        do
            k = getrandom(b, sizeof b, 0);
        while (k < 0 && errno == EINTR);
        /* without random bytes (no getrandom), reports go without keys, as before keys */
        for (size_t i = 0; k == (ssize_t)sizeof b && i < sizeof b; i++)
            snprintf(c->event_nonce + 2 * i, 3, "%02x", b[i]);
    }
    char key[40] = "";
    if (c->event_nonce[0])
        snprintf(key, sizeof key, "%s.%lu", c->event_nonce, ++c->events);
    json_t *obj = json_pack("{s:s, s:s*, s:s*}", "type", type, "subtype", subtype, "key",
                            key[0] ? key : NULL);
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
