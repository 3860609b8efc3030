#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/alloc.h"
#include "../base/apikey.h"
#include "../base/digest.h"
#include "../base/id.h"
#include "instance.h"

#define MAX_RACES 8

static const char *const event_for_status[_INSTANCE_STATUS_MAX] = {
    [INSTANCE_PENDING] = "resumed",     [INSTANCE_RUNNING] = "started",
    [INSTANCE_SUSPENDED] = "suspended", [INSTANCE_COMPLETED] = "completed",
    [INSTANCE_FAILED] = "failed",       [INSTANCE_CANCELLED] = "cancelled",
};

static void build_update(InstanceCause cause, InstanceStatus to, TerminationReason why,
                         const InstanceOutcome *out, InstanceUpdate *u)
{
    usec_t now = now_usec(CLOCK_REALTIME);

    *u = (InstanceUpdate){
        .to_status = to,
        .reason = why == REASON_NONE ? NULL : termination_reason_to_string(why),
    };
    if (cause == CAUSE_RESUMED || cause == CAUSE_WOKEN)
        u->clear_result = true; /* a new attempt: the old end no longer applies */
    if (cause == CAUSE_LAUNCHED) {
        u->bump_attempt = true;
        u->started_at = now;
    }
    if (to != INSTANCE_PENDING && to != INSTANCE_RUNNING)
        u->finished_at = now;
    if (out) {
        u->set_exit_code = out->set_exit_code;
        u->exit_code = out->exit_code;
        u->memory_peak_bytes = out->memory_peak_bytes;
        u->cpu_usec = out->cpu_usec;
        u->output = out->output;
        u->error = out->error;
        u->token_hash = out->token_hash;
        u->sleep_until = out->sleep_until;
        u->wait_key = cause == CAUSE_WOKEN ? NULL : out->wait_key; /* a guard there */
        u->guard_sleep_until = out->wake_deadline;
        u->restarts = out->restarts;
        u->guard_token_hash = out->launch_token_hash;
    }
    /* a resume reopens the instance for a new launch: the old launch's token is revoked, so a
     * leftover process cannot act (save checkpoints, register) for the next one; the new launch's
     * token comes with the change (out->token_hash) or is issued by the launch */
    if (to == INSTANCE_PENDING && (!out || !out->token_hash))
        u->token_hash = "";
}

/* The payload of the event a change records (JSON text; caller frees). */
static char *event_payload(InstanceCause cause, TerminationReason why, const InstanceOutcome *out)
{
    json_t *p = json_object();
    char buf[32];
    if (out && out->sleep_until)
        json_object_set_new(p, "wake_at",
                            json_string(format_rfc3339(buf, sizeof buf, out->sleep_until)));
    if (out && out->wait_key)
        json_object_set_new(p, "wait_key", json_string(out->wait_key));
    if (cause == CAUSE_WOKEN && out && out->wake_deadline) {
        usec_t now = now_usec(CLOCK_REALTIME);
        json_object_set_new(p, "late_ms",
                            json_real(now > out->wake_deadline
                                          ? (double)(now - out->wake_deadline) / 1000.0
                                          : 0.0));
    }
    if (why != REASON_NONE)
        json_object_set_new(p, "reason", json_string(termination_reason_to_string(why)));
    if (out && out->set_exit_code)
        json_object_set_new(p, "exit_code", json_integer(out->exit_code));
    if (out && out->error)
        json_object_set_new(p, "error", json_string(out->error));
    char *text = json_dumps(p, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(p);
    return text;
}

bool instance_signal_is_drain(SignalKind kind, const char *payload)
{
    return kind == SIGNAL_PAUSE && payload && strcmp(payload, INSTANCE_DRAIN_PAYLOAD) == 0;
}

bool instance_checkpoint_key_is_valid(const char *key)
{
    size_t n = key ? strlen(key) : 0;
    return n > 0 && n <= 128 &&
           strspn(key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-") == n;
}

int instance_apply(Store *s, const char *key, InstanceCause cause, const InstanceOutcome *out,
                   InstanceStatus *ret_status, Error *e)
{
    for (int attempt = 0; attempt < MAX_RACES; attempt++) {
        InstanceRecord rec;
        int r = store_instance_get(s, key, NULL, &rec, e);
        if (r < 0)
            return r;
        InstanceStatus from = rec.status, to;
        TerminationReason why;
        /* a wake-up claims only the suspension that set it */
        bool wakeable = rec.sleep_until != 0 || rec.wait_key != NULL;
        bool deadline_moved = out && out->wake_deadline && rec.sleep_until != out->wake_deadline;
        if (out && out->wait_key && (!rec.wait_key || strcmp(rec.wait_key, out->wait_key) != 0))
            deadline_moved = true; /* waits for another signal, or none */
        /* a launch's token no longer the instance's: that launch is over */
        bool other_launch =
            out && out->launch_token_hash &&
            (!rec.token_hash || strcmp(rec.token_hash, out->launch_token_hash) != 0);
        instance_record_done(&rec);
        if ((cause == CAUSE_WOKEN && (!wakeable || deadline_moved)) || other_launch) {
            if (ret_status)
                *ret_status = from;
            return 0;
        }

        r = instance_transition(from, cause, &to, &why);
        if (r == -ESTALE) {
            if (ret_status)
                *ret_status = from;
            return 0;
        }
        if (r < 0)
            return error_set(e, r, "invalid transition for instance \"%s\"", key);

        InstanceUpdate u;
        build_update(cause, to, why, out, &u);
        /* the change and its event in one transaction: one commit, and never one without the
         * other */
        _cleanup_free_ char *payload = event_payload(cause, why, out);
        InstanceTransition t = {
            .instance_key = key,
            .from_status = from,
            .u = &u,
            .event_type = cause == CAUSE_WOKEN ? "woken" : event_for_status[to],
            .event_payload = payload,
            .then_event = out ? out->then_event : NULL,
            .first_event = out ? out->first_event : NULL,
            .first_payload = out ? out->first_payload : NULL,
            .first_key = out ? out->first_key : NULL,
        };
        r = store_instance_transitions(s, &t, 1, e);
        if (r >= 0)
            r = t.result;
        if (r == -ENOENT)
            return error_set(e, r, "instance \"%s\" does not exist", key);
        if (r < 0)
            return r;
        if (r == 1) {
            if (ret_status)
                *ret_status = to;
            return 1;
        }
        /* lost a race with another change: read again and decide again */
    }
    return error_set(e, -EAGAIN, "instance \"%s\" keeps changing; gave up after %d attempts", key,
                     MAX_RACES);
}

int instance_claim_wakes(Store *s, WakeClaim *w, size_t n, Error *e)
{
    InstanceStatus to;
    TerminationReason why;
    if (instance_transition(INSTANCE_SUSPENDED, CAUSE_WOKEN, &to, &why) < 0)
        return error_set(e, -EINVAL, "a wake-up cannot apply to a suspended instance");
    InstanceUpdate *u = xcalloc(n, sizeof *u);
    InstanceTransition *t = xcalloc(n, sizeof *t);
    char(*late)[48] = xcalloc(n, sizeof *late);
    usec_t now = now_usec(CLOCK_REALTIME);
    for (size_t i = 0; i < n; i++) {
        InstanceOutcome out = {.wake_deadline = w[i].deadline};
        build_update(CAUSE_WOKEN, to, why, &out, &u[i]);
        snprintf(late[i], sizeof late[i], "{\"late_ms\":%.3f}",
                 now > w[i].deadline ? (double)(now - w[i].deadline) / 1000.0 : 0.0);
        t[i] = (InstanceTransition){.instance_key = w[i].instance_key,
                                    .from_status = INSTANCE_SUSPENDED,
                                    .u = &u[i],
                                    .event_type = "woken",
                                    .event_payload = late[i]};
    }
    int r = store_instance_transitions(s, t, n, e);
    for (size_t i = 0; i < n; i++)
        w[i].claimed = r >= 0 && t[i].result == 1;
    free(late);
    free(t);
    free(u);
    return r;
}

int instance_record_exit_code(Store *s, const char *key, int exit_code, uint64_t memory_peak_bytes,
                              uint64_t cpu_usec, Error *e)
{
    for (int attempt = 0; attempt < MAX_RACES; attempt++) {
        InstanceRecord rec;
        int r = store_instance_get(s, key, NULL, &rec, e);
        if (r < 0)
            return r;
        InstanceUpdate u = {
            .to_status = rec.status,
            .reason = rec.termination_reason,
            .set_exit_code = true,
            .exit_code = exit_code,
            .memory_peak_bytes = memory_peak_bytes,
            .cpu_usec = cpu_usec,
            .keep_wake = true, /* a sleeping instance's process exits after it fell asleep */
        };
        r = store_instance_transition(s, key, rec.status, &u, e);
        instance_record_done(&rec);
        if (r != 0)
            return r;
    }
    return error_set(e, -EAGAIN, "instance \"%s\" keeps changing", key);
}

int instance_new_token(char token[static 65], char hash[static 65])
{
    int r = id_random_hex(token, 32);
    if (r < 0)
        return r;
    apikey_hash(token, hash);
    return 0;
}

bool instance_token_is(const char *token_hash, const char *token)
{
    char hash[65];
    apikey_hash(token, hash);
    return token_hash && strcmp(token_hash, hash) == 0;
}

int instance_check_token(Store *s, const char *id, const char *token, InstanceRecord *ret, Error *e)
{
    if (!token || strlen(token) != 64) /* issued tokens are 64 hex characters */
        return 0;
    char hash[65];
    apikey_hash(token, hash);
    /* the token names the instance: its hash finds the row (whatever its tenant), which must be
     * the one the path names */
    InstanceRecord rec;
    int r = store_instance_get_by_token(s, hash, &rec, e);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    if (strcmp(rec.instance_id, id) != 0) {
        instance_record_done(&rec);
        return 0;
    }
    if (ret)
        *ret = rec;
    else
        instance_record_done(&rec);
    return 1;
}
