/* libruntara: the C SDK for workflow programs run by runtara-environment.
 *
 * A workflow program calls runtara_open() first, reads its input, runs its work as checkpointed
 * steps, and reports how it ended with runtara_complete() or runtara_fail(). The daemon may kill
 * and relaunch the program at any time (crash, pause and resume, daemon restart); a relaunched
 * program runs again from the top, and every step that already ran replays its saved result
 * instead of running again. docs/sdk.md explains this with a complete example; the wire protocol
 * is docs/instance-api.md.
 *
 * Conventions of every function here:
 * - Functions returning int return >= 0 on success and a negative errno on failure. The errors a
 *   reply of the daemon maps to are: -EINVAL (400), -EACCES (401, 403: wrong or stale token),
 *   -ENOENT (404), -EALREADY (409: the instance is no longer running, so the process should
 *   exit; or nothing to acknowledge),
 *   -EFBIG (413, or a reply larger than RUNTARA_REPLY_MAX), -EIO (5xx or an unexpected reply).
 *   Transport failures are -ECONNREFUSED (cannot connect), -ETIMEDOUT or -EIO. After a failure,
 *   runtara_last_error() tells what went wrong in one line.
 * - Calls that talk to the daemon block until it answers; none is retried automatically.
 * - A RuntaraClient may be used by one thread at a time. Different clients are independent.
 * - Out of memory aborts the process; every size that comes from the daemon is bounded.
 * - ret_ parameters are written only on success. Returned buffers are malloc()ed, owned by the
 *   caller (free() them), and followed by a NUL byte that the returned size does not count, so
 *   text can be used as a C string directly.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The largest reply body the SDK accepts (the daemon's own limits are lower). */
#define RUNTARA_REPLY_MAX ((size_t)64 << 20)

/* The longest checkpoint key; keys are 1 to 128 characters of [A-Za-z0-9_.:-]. */
#define RUNTARA_KEY_MAX 128

typedef struct RuntaraClient RuntaraClient;

/* A control signal pending for the instance. */
typedef enum RuntaraSignal {
    RUNTARA_SIGNAL_NONE,
    RUNTARA_SIGNAL_CANCEL,
    RUNTARA_SIGNAL_PAUSE,
    RUNTARA_SIGNAL_RESUME,
    _RUNTARA_SIGNAL_MAX,
    _RUNTARA_SIGNAL_INVALID = -EINVAL,
} RuntaraSignal;

/* The work of one step. It returns 0 (or any value >= 0) with *ret_result set to a malloc()ed
 * buffer of *ret_n bytes, which the SDK takes over (NULL with *ret_n == 0 is an empty result),
 * or a negative errno, which runtara_step() passes through. */
typedef int (*runtara_step_cb)(void *userdata, void **ret_result, size_t *ret_n);

/** Connect this process to the daemon as the instance the environment names, and register the
 * launch (POST /register). Reads RUNTARA_INSTANCE_ID, RUNTARA_TENANT_ID, RUNTARA_SERVER_ADDR
 * (`unix:/path`, an absolute socket path, or `host:port`), RUNTARA_INSTANCE_TOKEN and
 * RUNTARA_ATTEMPT, which are required, and RUNTARA_CHECKPOINT_ID, which is optional.
 *
 * On success *ret is a new client the caller owns (free it with runtara_close()). On failure *ret
 * is untouched, and runtara_open_error() gives the reason: -EINVAL for a missing or malformed
 * variable, -ENAMETOOLONG for a socket path that is too long, and the errors of any call for the
 * registration itself (-EACCES: the token is not, or no longer, valid). Blocks. */
int runtara_open(RuntaraClient **ret);

/** Why the last runtara_open() of the calling thread failed, as one lower-case line (for example
 * `environment variable RUNTARA_INSTANCE_ID is not set`), or "" if it did not fail. The string is
 * thread-local and valid until the next runtara_open() in the same thread. Never NULL. */
const char *runtara_open_error(void);

/** Close the connection and free the client. NULL-safe. Does not report anything to the daemon:
 * a program that exits without runtara_complete() or runtara_fail() ends as its exit status
 * says (docs/instance-api.md). */
void runtara_close(RuntaraClient *c);

/** The instance id, tenant id and last checkpoint key of this launch (RUNTARA_CHECKPOINT_ID, or
 * the one the daemon confirmed at registration), borrowed from the client and valid until
 * runtara_close(). runtara_checkpoint_id() is NULL when the instance never saved a checkpoint. */
const char *runtara_instance_id(const RuntaraClient *c);
const char *runtara_tenant_id(const RuntaraClient *c);
const char *runtara_checkpoint_id(const RuntaraClient *c);

/** The launch number of this process, 1 for the first launch. */
unsigned runtara_attempt(const RuntaraClient *c);

/** The message of the last failed call on this client, as one lower-case line: the daemon's
 * message for an error reply, else the transport's (for example `could not save checkpoint
 * "step-1": checkpoint is larger than 16 MiB`). "" if no call failed yet. Borrowed; valid until
 * the next call on the client. Never NULL. */
const char *runtara_last_error(const RuntaraClient *c);

/** The instance's input, exactly as given at start (GET /input): JSON text, *ret_json owned by
 * the caller. Every launch gets the same input. Blocks. */
int runtara_input(RuntaraClient *c, char **ret_json);

/** Save `n` bytes under `key` unless the key already holds bytes (PUT /checkpoints/{key}). Returns
 * 0 when this call stored them, 1 when the key already existed: then the bytes stored first are
 * the checkpoint's value, and the caller must continue with them instead of its own. If ret_data
 * is not NULL, *ret_data and *ret_n receive a copy of the checkpoint's value in both cases.
 * `data` is borrowed and may contain any bytes. -EINVAL for a malformed key, -EFBIG for data
 * larger than the daemon accepts. Blocks. */
int runtara_checkpoint(RuntaraClient *c, const char *key, const void *data, size_t n,
                       void **ret_data, size_t *ret_n);

/** Read the bytes saved under `key` (GET /checkpoints/{key}) into *ret_data and *ret_n, owned by
 * the caller. -ENOENT if the key holds nothing. Blocks. */
int runtara_checkpoint_get(RuntaraClient *c, const char *key, void **ret_data, size_t *ret_n);

/** Run one step of the workflow exactly once across launches: if `key` already holds a result
 * (saved by this or an earlier launch), return it without calling `fn` (replay, returns 1).
 * Otherwise, with a cancel or pause pending as of the last reply (runtara_signal()), return
 * -ECANCELED without calling `fn` (call runtara_should_exit() next). Otherwise call
 * fn(userdata, ...), save its result under `key` and return 0. If saving finds the key already
 * stored by someone else, the stored result wins and 1 is returned.
 *
 * A failing fn's negative return is passed through and nothing is saved, so the next launch runs
 * the step again. So does a crash between fn and the save: fn's side effects happen at least
 * once, its result is recorded exactly once.
 *
 * If ret_result is not NULL, *ret_result and *ret_n receive the step's result, owned by the
 * caller; else the result is freed. -EINVAL for a malformed key. Blocks, and runs fn. */
int runtara_step(RuntaraClient *c, const char *key, runtara_step_cb fn, void *userdata,
                 void **ret_result, size_t *ret_n);

/** The control signal pending as of the daemon's last reply, without a request (the replies to
 * register, checkpoints, heartbeat and events carry it). RUNTARA_SIGNAL_NONE if none. */
RuntaraSignal runtara_signal(const RuntaraClient *c);

/** True when a cancel is pending as of the daemon's last reply. Makes no request. */
bool runtara_cancelled(const RuntaraClient *c);

/** Ask the daemon for the pending signal (GET /signals), waiting up to wait_secs seconds for one
 * to arrive when none is pending (0: do not wait; the daemon caps the wait at 60 s). Stores the
 * result in *ret (RUNTARA_SIGNAL_NONE if none) and as the client's pending signal. Blocks up to
 * the wait. */
int runtara_poll_signal(RuntaraClient *c, unsigned wait_secs, RuntaraSignal *ret);

/** The point where a program gives way to a cancel or pause: if the last reply reported one as
 * pending, acknowledge it (POST /signals/ack) and return it (RUNTARA_SIGNAL_CANCEL or
 * RUNTARA_SIGNAL_PAUSE, both > 0); the program must then exit with status 0 at once, without
 * runtara_complete(). Returns 0 when there is nothing to act on, including when the daemon no
 * longer has the signal pending (then the client asks it what is pending now, GET /signals, for
 * the next step to act on). Makes no request when nothing is pending. Blocks. */
int runtara_should_exit(RuntaraClient *c);

/** Tell the daemon the program is alive (POST /heartbeat). Programs with steps longer than the
 * daemon's heartbeat timeout call it from within the step. Blocks. */
int runtara_heartbeat(RuntaraClient *c);

/** Record an event (POST /events). `type` is "progress", "custom" or "log"; `subtype` is optional
 * (NULL); `payload_json` is any JSON text (NULL for null), at most 64 KiB. -EINVAL if it is not
 * valid JSON (checked before sending). Blocks. */
int runtara_event(RuntaraClient *c, const char *type, const char *subtype,
                  const char *payload_json);

/** End the instance as completed with the given output (POST /completed); `output_json` is any
 * JSON text, NULL for null. -EINVAL if it is not valid JSON, -EALREADY if the instance has
 * already ended (stopped, cancelled, timed out): the first end wins. The program should exit
 * afterwards. Blocks. */
int runtara_complete(RuntaraClient *c, const char *output_json);

/** End the instance as failed (POST /failed) with a one-line `message` and optional JSON detail
 * (NULL for none). -EINVAL if detail_json is not valid JSON, -EALREADY as for runtara_complete().
 * The program should exit afterwards. Blocks. */
int runtara_fail(RuntaraClient *c, const char *message, const char *detail_json);

/* Returned (> 0) by runtara_sleep(), runtara_sleep_until() and runtara_wait_signal() when the
 * daemon suspended the instance: the program must exit with status 0 at once, without
 * runtara_complete(). The daemon relaunches it when the time comes, and the relaunched program,
 * replaying its steps, reaches the same call again, which then returns 0. */
#define RUNTARA_SUSPENDED 1

/** A durable sleep of `ms` milliseconds from the first time this program reaches it. The
 * deadline is saved as checkpoint `key`, so a relaunched program replaying to the same call
 * sleeps until the same instant, not `ms` again. Returns 0 once the deadline has passed. A sleep
 * shorter than the daemon's threshold (RUNTARA_SLEEP_SUSPEND_MS, default 1 s) passes inside the
 * process; a longer one suspends the instance (reason "sleeping") and returns RUNTARA_SUSPENDED:
 * exit then, and no process or memory is held until the deadline, however far. Blocks for short
 * sleeps. -EINVAL for a malformed key. */
int runtara_sleep(RuntaraClient *c, const char *key, unsigned long long ms);

/** Like runtara_sleep(), until an absolute instant: `unix_ms` milliseconds since the epoch. */
int runtara_sleep_until(RuntaraClient *c, const char *key, long long unix_ms);

/** Wait for the custom signal `key` (sent with POST /api/v1/instances/{id}/signals/custom and
 * that wait_key) for at most timeout_ms milliseconds from the first time this program reaches the
 * call (0: no timeout). Returns 0 with *ret_payload (the signal's JSON payload, "null" when it had
 * none; owned by the caller) once the signal is here; -ETIMEDOUT once the timeout has passed; or
 * RUNTARA_SUSPENDED when the instance is suspended to wait (reason "waiting_signal"): exit then.
 * The outcome is saved as checkpoint `key` (and the deadline as `key:deadline`), so a replay
 * returns the same payload or timeout. `key` is at most RUNTARA_KEY_MAX - 9 characters. Blocks. */
int runtara_wait_signal(RuntaraClient *c, const char *key, unsigned long long timeout_ms,
                        char **ret_payload);

/** "cancel", "pause", "resume", or "none" for RUNTARA_SIGNAL_NONE; NULL for other values. */
const char *runtara_signal_to_string(RuntaraSignal s);

/** The signal named `s` ("none", "cancel", "pause", "resume"), or _RUNTARA_SIGNAL_INVALID. */
RuntaraSignal runtara_signal_from_string(const char *s);

#ifdef __cplusplus
}
#endif
