/* The contract between runner.c and each runner implementation (STYLE R5). */
#pragma once

#include "runner.h"

typedef struct RunnerOps {
    RunnerType type;
    int (*launch)(Runner *r, const RunnerLaunch *l, RunnerProcess **ret, Error *e);
    int (*prestart)(Runner *r, Error *e);             /* NULL: nothing to ready */
    int (*ready_dir)(Runner *r, int dirfd, Error *e); /* NULL: a launch creates nothing */
    int (*attach)(Runner *r, const char *run_dir, int *ret_attempt, RunnerProcess **ret, Error *e);
    int (*collect)(Runner *r, const char *run_dir, ExitStatus *ret, Error *e);
    int (*fd)(RunnerProcess *p);
    pid_t (*pid)(RunnerProcess *p);
    int (*signal)(RunnerProcess *p, int sig);
    int (*reap)(RunnerProcess *p, ExitStatus *ret, Error *e);
    void (*process_free)(RunnerProcess *p);
    void (*free)(Runner *r);
} RunnerOps;

struct Runner {
    const RunnerOps *ops;
};

struct RunnerProcess {
    const RunnerOps *ops;
};
