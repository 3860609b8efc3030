#include <stddef.h>
#include <string.h>

#include "../base/parse-util.h"
#include "instance-state.h"

static const char *const reason_names[_TERMINATION_REASON_MAX] = {
    [REASON_NONE] = "none",
    [REASON_COMPLETED] = "completed",
    [REASON_APPLICATION_ERROR] = "application_error",
    [REASON_CRASHED] = "crashed",
    [REASON_LAUNCH_FAILED] = "launch_failed",
    [REASON_TIMEOUT] = "timeout",
    [REASON_HEARTBEAT_TIMEOUT] = "heartbeat_timeout",
    [REASON_CANCELLED] = "cancelled",
    [REASON_STOPPED] = "stopped",
    [REASON_PAUSED] = "paused",
    [REASON_SLEEPING] = "sleeping",
    [REASON_WAITING_SIGNAL] = "waiting_signal",
    [REASON_SHUTDOWN] = "shutdown",
    [REASON_ENVIRONMENT_RESTART] = "environment_restart",
    [REASON_OOM] = "oom",
};

const char *termination_reason_to_string(TerminationReason r)
{
    return r >= 0 && r < _TERMINATION_REASON_MAX ? reason_names[r] : NULL;
}

TerminationReason termination_reason_from_string(const char *s)
{
    return (TerminationReason)parse_name(reason_names, _TERMINATION_REASON_MAX, s);
}

bool instance_status_is_terminal(InstanceStatus s)
{
    return s == INSTANCE_COMPLETED || s == INSTANCE_FAILED || s == INSTANCE_CANCELLED;
}

bool instance_status_is_unfinished(InstanceStatus s)
{
    return s == INSTANCE_PENDING || s == INSTANCE_RUNNING || s == INSTANCE_SUSPENDED;
}

/* Bit sets of the statuses a cause applies from. */
#define S(x) (1u << (x))
#define FROM_RUNNING S(INSTANCE_RUNNING)
#define FROM_LIVE (S(INSTANCE_PENDING) | S(INSTANCE_RUNNING))
#define FROM_UNFINISHED (S(INSTANCE_PENDING) | S(INSTANCE_RUNNING) | S(INSTANCE_SUSPENDED))

static const struct {
    unsigned from;
    InstanceStatus to;
    TerminationReason reason;
} rules[_INSTANCE_CAUSE_MAX] = {
    [CAUSE_LAUNCHED] = {S(INSTANCE_PENDING), INSTANCE_RUNNING, REASON_NONE},
    [CAUSE_LAUNCH_FAILED] = {S(INSTANCE_PENDING), INSTANCE_FAILED, REASON_LAUNCH_FAILED},
    [CAUSE_REPORTED_DONE] = {FROM_RUNNING, INSTANCE_COMPLETED, REASON_COMPLETED},
    [CAUSE_REPORTED_FAILURE] = {FROM_RUNNING, INSTANCE_FAILED, REASON_APPLICATION_ERROR},
    [CAUSE_EXITED] = {FROM_RUNNING, INSTANCE_FAILED, REASON_CRASHED},
    [CAUSE_TIMED_OUT] = {FROM_LIVE, INSTANCE_FAILED, REASON_TIMEOUT},
    [CAUSE_HEARTBEAT_LOST] = {FROM_RUNNING, INSTANCE_FAILED, REASON_HEARTBEAT_TIMEOUT},
    [CAUSE_CANCELLED] = {FROM_UNFINISHED, INSTANCE_CANCELLED, REASON_CANCELLED},
    [CAUSE_STOPPED] = {FROM_UNFINISHED, INSTANCE_CANCELLED, REASON_STOPPED},
    [CAUSE_PAUSED] = {FROM_RUNNING, INSTANCE_SUSPENDED, REASON_PAUSED},
    [CAUSE_SLEEPING] = {FROM_RUNNING, INSTANCE_SUSPENDED, REASON_SLEEPING},
    [CAUSE_WAITING_SIGNAL] = {FROM_RUNNING, INSTANCE_SUSPENDED, REASON_WAITING_SIGNAL},
    [CAUSE_SHUTDOWN] = {FROM_LIVE, INSTANCE_SUSPENDED, REASON_SHUTDOWN},
    [CAUSE_MACHINE_RESTART] = {FROM_LIVE, INSTANCE_SUSPENDED, REASON_ENVIRONMENT_RESTART},
    [CAUSE_RESUMED] = {S(INSTANCE_SUSPENDED) | S(INSTANCE_FAILED) | S(INSTANCE_CANCELLED),
                       INSTANCE_PENDING, REASON_NONE},
    [CAUSE_WOKEN] = {S(INSTANCE_SUSPENDED), INSTANCE_PENDING, REASON_NONE},
    [CAUSE_OUT_OF_MEMORY] = {FROM_RUNNING, INSTANCE_FAILED, REASON_OOM},
};

int instance_transition(InstanceStatus from, InstanceCause cause, InstanceStatus *ret_to,
                        TerminationReason *ret_reason)
{
    if (from < 0 || from >= _INSTANCE_STATUS_MAX || cause < 0 || cause >= _INSTANCE_CAUSE_MAX)
        return -EINVAL;
    if (!(rules[cause].from & S(from)))
        return -ESTALE;
    *ret_to = rules[cause].to;
    *ret_reason = rules[cause].reason;
    return 0;
}
