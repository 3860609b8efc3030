#include <stddef.h>
#include <string.h>

#include "../base/parse-util.h"
#include "instance-def.h"

static const char *const status_names[_INSTANCE_STATUS_MAX] = {
    [INSTANCE_PENDING] = "pending",     [INSTANCE_RUNNING] = "running",
    [INSTANCE_SUSPENDED] = "suspended", [INSTANCE_COMPLETED] = "completed",
    [INSTANCE_FAILED] = "failed",       [INSTANCE_CANCELLED] = "cancelled",
};

static const char *const signal_names[_SIGNAL_KIND_MAX] = {
    [SIGNAL_CANCEL] = "cancel",
    [SIGNAL_PAUSE] = "pause",
    [SIGNAL_RESUME] = "resume",
};

const char *instance_status_to_string(InstanceStatus s)
{
    return s >= 0 && s < _INSTANCE_STATUS_MAX ? status_names[s] : NULL;
}

InstanceStatus instance_status_from_string(const char *s)
{
    return (InstanceStatus)parse_name(status_names, _INSTANCE_STATUS_MAX, s);
}

const char *signal_kind_to_string(SignalKind k)
{
    return k >= 0 && k < _SIGNAL_KIND_MAX ? signal_names[k] : NULL;
}

SignalKind signal_kind_from_string(const char *s)
{
    return (SignalKind)parse_name(signal_names, _SIGNAL_KIND_MAX, s);
}
