/* The instance state machine (DESIGN §3), as pure logic. Every change of an instance's status
 * is one of the causes below applied to its current status; instance_transition() says whether
 * the cause applies and what the instance becomes. The store then performs the change as a
 * guarded update (... WHERE status = <from>), so a race between two causes ends in exactly one
 * of them, never in a flip-flop.
 *
 * Terminal statuses (completed, failed, cancelled) are sticky against every event: a late
 * "completed" from a process that was just stopped does nothing. Only an explicit operator
 * resume reopens failed or cancelled (a new attempt from the checkpoints); completed is final. */
#pragma once

#include <errno.h>
#include <stdbool.h>

#include "../store/instance-def.h" /* InstanceStatus, with its names */

/* Why an instance stopped running. Every end carries one. */
typedef enum TerminationReason {
    REASON_NONE, /* still pending or running */
    REASON_COMPLETED,
    REASON_APPLICATION_ERROR, /* the program reported failure */
    REASON_CRASHED,           /* exited or died without reporting */
    REASON_LAUNCH_FAILED,     /* could not be started */
    REASON_TIMEOUT,
    REASON_HEARTBEAT_TIMEOUT,
    REASON_CANCELLED, /* cancel signal */
    REASON_STOPPED,   /* operator stop */
    REASON_PAUSED,
    REASON_SLEEPING,
    REASON_WAITING_SIGNAL,
    REASON_SHUTDOWN,            /* the daemon drained it */
    REASON_ENVIRONMENT_RESTART, /* the machine or daemon went away under it */
    REASON_OOM,                 /* killed by the OOM killer at its memory limit (a container) */
    _TERMINATION_REASON_MAX,
    _TERMINATION_REASON_INVALID = -EINVAL,
} TerminationReason;

/* What happened. */
typedef enum InstanceCause {
    CAUSE_LAUNCHED,         /* the runner started the process */
    CAUSE_LAUNCH_FAILED,    /* the runner could not */
    CAUSE_REPORTED_DONE,    /* the program said "completed" */
    CAUSE_REPORTED_FAILURE, /* the program said "failed" */
    CAUSE_EXITED,           /* the process ended without a report (crash) */
    CAUSE_TIMED_OUT,        /* the instance timeout passed; the process was killed */
    CAUSE_HEARTBEAT_LOST,   /* no heartbeat within the timeout; the process was killed */
    CAUSE_CANCELLED,        /* cancel signal acted on (or a cancel of a suspended instance) */
    CAUSE_STOPPED,          /* operator stop (SIGTERM, grace, SIGKILL) */
    CAUSE_PAUSED,           /* the process ended at a checkpoint after a pause signal */
    CAUSE_SLEEPING,         /* the process ended for a durable sleep */
    CAUSE_WAITING_SIGNAL,   /* the process ended to wait for a custom signal */
    CAUSE_SHUTDOWN,         /* the daemon drained it at shutdown */
    CAUSE_MACHINE_RESTART,  /* found dead after a daemon or machine restart */
    CAUSE_RESUMED,          /* operator resume, or a relaunch after a shutdown or restart */
    CAUSE_WOKEN,            /* a sleep's deadline passed or the awaited signal arrived */
    CAUSE_OUT_OF_MEMORY,    /* the process was killed at its memory limit, without a report */
    _INSTANCE_CAUSE_MAX,
} InstanceCause;

const char *termination_reason_to_string(TerminationReason r);
TerminationReason termination_reason_from_string(const char *s);
bool instance_status_is_terminal(InstanceStatus s);
/** True for statuses an instance leaves on its own (pending, running, suspended). */
bool instance_status_is_unfinished(InstanceStatus s);

/** Apply cause to an instance in status `from`. On success sets *ret_to and *ret_reason (the
 *  reason recorded with the new status; REASON_NONE for running) and returns 0. Returns -ESTALE
 *  when the cause does not apply from that status (a late event: ignore it), -EINVAL for an
 *  invalid argument. */
int instance_transition(InstanceStatus from, InstanceCause cause, InstanceStatus *ret_to,
                        TerminationReason *ret_reason);
