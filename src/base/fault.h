/* Named fault-injection points for crash tests, compiled only when the build option
 * fault_injection is on (test builds; release builds have none). FAULT_POINT("name") kills the
 * process with SIGKILL, as a power cut or kill -9 would, when RUNTARA_FAULT names that point;
 * "name@N" waits for the Nth time the point is reached. Each point marks a place where a crash
 * must lose and duplicate nothing: tests/integration/test_durable_time.py crashes at each. */
#pragma once

#ifdef RUNTARA_FAULT_INJECTION
void fault_point(const char *name);
#define FAULT_POINT(name) fault_point(name)
#else
#define FAULT_POINT(name) ((void)0)
#endif
