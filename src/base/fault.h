/* Named fault-injection points for crash tests, compiled only when the build option
 * fault_injection is on (test builds; release builds have none). FAULT_POINT("name") kills the
 * process with SIGKILL, as a power cut or kill -9 would, when RUNTARA_FAULT names that point;
 * "name@N" waits for the Nth time the point is reached. Each point marks a place where a crash
 * must lose and duplicate nothing: tests/integration/test_durable_time.py crashes at each. */
#pragma once

#include <stdbool.h>

/* FAULT_FAIL("name") is true, making the caller fail as if the operation had, for the first N
 * times the point is reached when RUNTARA_FAULT_FAIL is "name:N". */
#ifdef RUNTARA_FAULT_INJECTION
void fault_point(const char *name);
bool fault_fail(const char *name);
#define FAULT_POINT(name) fault_point(name)
#define FAULT_FAIL(name) fault_fail(name)
#else
#define FAULT_POINT(name) ((void)0)
#define FAULT_FAIL(name) false
#endif
