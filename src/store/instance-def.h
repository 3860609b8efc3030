/* The names of an instance's statuses and of its control signals. They are defined here, in the
 * lowest layer that stores them, so that the store's records, core's state machine
 * (core/instance-state.h) and the API all speak the same enums; the strings are what the store
 * keeps in its TEXT columns and what the API sends and accepts, converted only at those edges. */
#pragma once

#include <errno.h>

typedef enum InstanceStatus {
    INSTANCE_PENDING,
    INSTANCE_RUNNING,
    INSTANCE_SUSPENDED,
    INSTANCE_COMPLETED,
    INSTANCE_FAILED,
    INSTANCE_CANCELLED,
    _INSTANCE_STATUS_MAX,
    _INSTANCE_STATUS_INVALID = -EINVAL,
} InstanceStatus;

/* A control signal an operator sends to a running instance. At most one is pending per instance,
 * and a higher one replaces a lower: cancel outranks pause outranks resume. _SIGNAL_KIND_INVALID
 * also stands for "none pending" where a signal is read. */
typedef enum SignalKind {
    SIGNAL_CANCEL,
    SIGNAL_PAUSE,
    SIGNAL_RESUME,
    _SIGNAL_KIND_MAX,
    _SIGNAL_KIND_INVALID = -EINVAL,
} SignalKind;

/** The name of s ("pending", ...), a static string; NULL when s is out of range. */
const char *instance_status_to_string(InstanceStatus s);
/** The status named s; _INSTANCE_STATUS_INVALID for NULL or an unknown name. */
InstanceStatus instance_status_from_string(const char *s);
/** The name of k ("cancel", "pause" or "resume"), a static string; NULL when k is out of range. */
const char *signal_kind_to_string(SignalKind k);
/** The kind named s; _SIGNAL_KIND_INVALID for NULL or an unknown name. */
SignalKind signal_kind_from_string(const char *s);
