/* Instance lifecycle operations on the store: every status change goes through instance_apply(),
 * which reads the current status, asks the state machine (instance-state.h) and performs the
 * guarded update; a lost race is re-read and decided again, so concurrent causes (a stop and a
 * "completed" arriving together) end in exactly one consistent state. May block on the store;
 * callable from any thread. */
#pragma once

#include <stdbool.h>

#include "../base/error.h"
#include "../store/store.h"
#include "instance-state.h"

typedef struct InstanceOutcome {
    bool set_exit_code;
    int exit_code;
    uint64_t memory_peak_bytes, cpu_usec; /* what the launch used, with its exit code */
    const char *output;                   /* JSON text, or NULL */
    const char *error;                    /* message, or NULL */
    const char *token_hash;               /* a new launch's token, or NULL */
    usec_t sleep_until;   /* CAUSE_SLEEPING, CAUSE_WAITING_SIGNAL: the wake deadline */
    const char *wait_key; /* CAUSE_WAITING_SIGNAL: the custom signal awaited; CAUSE_WOKEN:
                             only wake an instance waiting for this one */
    usec_t wake_deadline; /* CAUSE_WOKEN: the deadline being claimed; 0 = any */
    int restarts;         /* auto_restarts: 0 leave, 1 add one, -1 reset (InstanceUpdate) */
    /* CAUSE_LAUNCHED: the launch's token; the change applies only while it is the instance's
     * (a later launch, or none, leaves it as it is). NULL: any. */
    const char *launch_token_hash;
    const char *then_event; /* an event recorded after the change's own, with it; or NULL */
    /* an event recorded before the change's own, with it, once per first_key (an event request
     * key, or NULL); or NULL */
    const char *first_event, *first_payload, *first_key;
} InstanceOutcome;

/* The payload of the pause signal a draining daemon sends: acknowledging it suspends the instance
 * with reason shutdown (relaunched at the next start) rather than paused. */
#define INSTANCE_DRAIN_PAYLOAD "{\"reason\":\"shutdown\"}"
bool instance_signal_is_drain(SignalKind kind, const char *payload);

/* Checkpoint keys and signal wait keys: 1-128 characters of [A-Za-z0-9_.:-]. */
#define CHECKPOINT_KEY_RULE "must be 1-128 characters of [A-Za-z0-9_.:-]"
bool instance_checkpoint_key_is_valid(const char *key);

/** Apply cause to the instance named by key (store_instance_key()). Returns 1 if it changed the
 * status, 0 if the cause did not apply to the current status (a late event; nothing changed),
 * -ENOENT if the instance does not exist. *ret_status (may be NULL) receives the status after the
 * call either way. Appends an event for the change ("started", "completed", "failed", "cancelled",
 * "suspended", "resumed", "woken").
 *
 *  CAUSE_WOKEN is the wake claim: it applies only to an instance suspended with a wake-up
 *  (sleeping or waiting_signal) and, when out->wake_deadline is set, only while that is still its
 *  deadline; of several claims of one wake-up (a stale timer, another daemon), one wins.
 *
 *  CAUSE_LAUNCHED records a launch: the supervisor once its process has had time to start, or the
 *  program's first call to the instance API, whichever comes first (out->launch_token_hash names
 *  the launch, so that only one of them applies, and only to that launch). */
int instance_apply(Store *s, const char *key, InstanceCause cause, const InstanceOutcome *out,
                   InstanceStatus *ret_status, Error *e);

typedef struct WakeClaim {
    const char *instance_key;
    usec_t deadline;
    bool claimed; /* out */
} WakeClaim;

/** Claim n due wake-ups with one commit: each instance still suspended with exactly that
 *  deadline becomes pending (CAUSE_WOKEN), with a "woken" event that records how late the claim
 *  came (late_ms). No read first: the guard is the check. Sets claimed for those that moved. */
int instance_claim_wakes(Store *s, WakeClaim *w, size_t n, Error *e);

/** Record the exit code of the last process on the instance's current row, whatever its status,
 *  without changing it (the exit of a process whose end was already reported). */
int instance_record_exit_code(Store *s, const char *key, int exit_code, uint64_t memory_peak_bytes,
                              uint64_t cpu_usec, Error *e);

/** A new launch token: 64 hex characters into token, the hash the store keeps into hash. Only
 *  the launched process and the daemon's memory ever hold the token itself. -errno if the
 *  system has no randomness to give. */
int instance_new_token(char token[static 65], char hash[static 65]);
/** Does the stored token_hash (may be NULL) belong to token? */
bool instance_token_is(const char *token_hash, const char *token);

/** Is the token presented by a process the current launch's token of an instance with id (of
 *  whichever tenant: the token names the instance)? Its hash finds the row, whose id must be id.
 *  A token is issued at launch and revoked by a resume, so only the current launch's process is
 *  let in. 0 no (no such token, or another instance's); 1 yes, and *ret (may be NULL) gets the
 *  row. */
int instance_check_token(Store *s, const char *id, const char *token, InstanceRecord *ret,
                         Error *e);
