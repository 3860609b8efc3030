/* The instance state machine: every (status, cause) pair against the expected table. */
#include "../../src/core/instance-state.h"
#include "../lib/tests.h"

TEST(names_round_trip)
{
    for (int s = 0; s < _INSTANCE_STATUS_MAX; s++)
        ASSERT_EQ(instance_status_from_string(instance_status_to_string((InstanceStatus)s)), s);
    for (int r = 0; r < _TERMINATION_REASON_MAX; r++)
        ASSERT_EQ(
            termination_reason_from_string(termination_reason_to_string((TerminationReason)r)), r);
    ASSERT_EQ(instance_status_from_string("sleeping"), _INSTANCE_STATUS_INVALID);
    ASSERT_NULL(instance_status_to_string(_INSTANCE_STATUS_MAX));
    ASSERT_EQ(instance_status_from_string(NULL), _INSTANCE_STATUS_INVALID);
    for (int k = 0; k < _SIGNAL_KIND_MAX; k++)
        ASSERT_EQ(signal_kind_from_string(signal_kind_to_string((SignalKind)k)), k);
    ASSERT_STREQ(signal_kind_to_string(SIGNAL_PAUSE), "pause");
    ASSERT_EQ(signal_kind_from_string("kill"), _SIGNAL_KIND_INVALID);
    ASSERT_EQ(signal_kind_from_string(NULL), _SIGNAL_KIND_INVALID);
    ASSERT_NULL(signal_kind_to_string(_SIGNAL_KIND_INVALID));
}

/* Expected outcome for every status × cause; "-" = not applicable (-ESTALE). */
static const char *const expect[_INSTANCE_CAUSE_MAX][_INSTANCE_STATUS_MAX] = {
    /*                         pending            running            suspended   completed failed
       cancelled */
    [CAUSE_LAUNCHED] = {"running/none", "-", "-", "-", "-", "-"},
    [CAUSE_LAUNCH_FAILED] = {"failed/launch_failed", "-", "-", "-", "-", "-"},
    [CAUSE_REPORTED_DONE] = {"-", "completed/completed", "-", "-", "-", "-"},
    [CAUSE_REPORTED_FAILURE] = {"-", "failed/application_error", "-", "-", "-", "-"},
    [CAUSE_EXITED] = {"-", "failed/crashed", "-", "-", "-", "-"},
    [CAUSE_TIMED_OUT] = {"failed/timeout", "failed/timeout", "-", "-", "-", "-"},
    [CAUSE_HEARTBEAT_LOST] = {"-", "failed/heartbeat_timeout", "-", "-", "-", "-"},
    [CAUSE_CANCELLED] = {"cancelled/cancelled", "cancelled/cancelled", "cancelled/cancelled", "-",
                         "-", "-"},
    [CAUSE_STOPPED] = {"cancelled/stopped", "cancelled/stopped", "cancelled/stopped", "-", "-",
                       "-"},
    [CAUSE_PAUSED] = {"-", "suspended/paused", "-", "-", "-", "-"},
    [CAUSE_SLEEPING] = {"-", "suspended/sleeping", "-", "-", "-", "-"},
    [CAUSE_WAITING_SIGNAL] = {"-", "suspended/waiting_signal", "-", "-", "-", "-"},
    [CAUSE_SHUTDOWN] = {"suspended/shutdown", "suspended/shutdown", "-", "-", "-", "-"},
    [CAUSE_MACHINE_RESTART] = {"suspended/environment_restart", "suspended/environment_restart",
                               "-", "-", "-", "-"},
    [CAUSE_RESUMED] = {"-", "-", "pending/none", "-", "pending/none", "pending/none"},
    [CAUSE_WOKEN] = {"-", "-", "pending/none", "-", "-", "-"},
    [CAUSE_OUT_OF_MEMORY] = {"-", "failed/oom", "-", "-", "-", "-"},
};

TEST(transition_table)
{
    for (int c = 0; c < _INSTANCE_CAUSE_MAX; c++)
        for (int s = 0; s < _INSTANCE_STATUS_MAX; s++) {
            InstanceStatus to = _INSTANCE_STATUS_INVALID;
            TerminationReason why = _TERMINATION_REASON_INVALID;
            int r = instance_transition((InstanceStatus)s, (InstanceCause)c, &to, &why);
            char got[64];
            if (r == -ESTALE)
                snprintf(got, sizeof got, "-");
            else
                snprintf(got, sizeof got, "%s/%s", instance_status_to_string(to),
                         termination_reason_to_string(why));
            if (!expect[c][s] || strcmp(got, expect[c][s]) != 0)
                TEST_FAIL("cause %d from %s: got %s, expected %s", c,
                          instance_status_to_string((InstanceStatus)s), got,
                          expect[c][s] ? expect[c][s] : "(no row)");
        }
}

TEST(terminal_states_are_sticky_against_events)
{
    /* Every cause except an operator resume leaves completed, failed and cancelled alone. */
    for (int s = INSTANCE_COMPLETED; s <= INSTANCE_CANCELLED; s++)
        for (int c = 0; c < _INSTANCE_CAUSE_MAX; c++) {
            InstanceStatus to;
            TerminationReason why;
            int r = instance_transition((InstanceStatus)s, (InstanceCause)c, &to, &why);
            if (c == CAUSE_RESUMED && s != INSTANCE_COMPLETED)
                ASSERT_OK(r);
            else
                ASSERT_EQ(r, -ESTALE);
        }
    ASSERT_TRUE(instance_status_is_terminal(INSTANCE_FAILED));
    ASSERT_FALSE(instance_status_is_terminal(INSTANCE_SUSPENDED));
    ASSERT_TRUE(instance_status_is_unfinished(INSTANCE_SUSPENDED));
}

TEST(invalid_arguments)
{
    InstanceStatus to;
    TerminationReason why;
    ASSERT_EQ(instance_transition(_INSTANCE_STATUS_INVALID, CAUSE_LAUNCHED, &to, &why), -EINVAL);
    ASSERT_EQ(instance_transition(INSTANCE_PENDING, _INSTANCE_CAUSE_MAX, &to, &why), -EINVAL);
}

TESTS_MAIN(T(names_round_trip), T(transition_table), T(terminal_states_are_sticky_against_events),
           T(invalid_arguments))
