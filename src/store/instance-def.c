#include <stddef.h>
#include <string.h>

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
    for (int i = 0; s && i < _INSTANCE_STATUS_MAX; i++)
        if (strcmp(s, status_names[i]) == 0)
            return (InstanceStatus)i;
    return _INSTANCE_STATUS_INVALID;
}

const char *signal_kind_to_string(SignalKind k)
{
    return k >= 0 && k < _SIGNAL_KIND_MAX ? signal_names[k] : NULL;
}

SignalKind signal_kind_from_string(const char *s)
{
    for (int i = 0; s && i < _SIGNAL_KIND_MAX; i++)
        if (strcmp(s, signal_names[i]) == 0)
            return (SignalKind)i;
    return _SIGNAL_KIND_INVALID;
}
