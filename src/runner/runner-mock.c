/* The mock runner, for tests: nothing is executed. A launch "runs" for MOCK_DELAY_MS
 * (from the instance's environment; default 0) and then "exits" with MOCK_EXIT (an exit
 * status, or "signal:N"; default 0), after writing MOCK_OUTPUT into output.json when set.
 * The exit is a timerfd firing, so the event loop sees it exactly as it sees a real one. SIGTERM
 * and SIGKILL end the "process" at once with 128 + the signal. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "../base/alloc.h"
#include "../base/fileio.h"
#include "runner-internal.h"

typedef struct MockProcess {
    RunnerProcess base;
    int tfd;
    int dirfd;
    ExitStatus st; /* what the exit will look like */
    bool reaped;
} MockProcess;

static const RunnerOps mock_ops;
static int next_pid = 100000;

static const char *env_get(const char *const *envp, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; envp && envp[i]; i++)
        if (strncmp(envp[i], name, n) == 0 && envp[i][n] == '=')
            return envp[i] + n + 1;
    return NULL;
}

static int arm(MockProcess *p, unsigned long ms)
{
    struct itimerspec its = {.it_value = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L}};
    if (ms == 0)
        its.it_value.tv_nsec = 1; /* 0 would disarm */
    return RET_NERRNO(timerfd_settime(p->tfd, 0, &its, NULL));
}

static int mock_launch(Runner *r, const RunnerLaunch *spec, RunnerProcess **ret, Error *e)
{
    const char *delay = env_get(spec->envp, "MOCK_DELAY_MS");
    const char *code = env_get(spec->envp, "MOCK_EXIT");
    const char *output = env_get(spec->envp, "MOCK_OUTPUT");
    (void)r;

    MockProcess *p = xcalloc(1, sizeof *p);
    p->base.ops = &mock_ops;
    p->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    p->dirfd = open(spec->run_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (p->tfd < 0 || p->dirfd < 0) {
        int k = -errno;
        mock_ops.process_free(&p->base);
        return error_set(e, k, "could not start a mock process in \"%s\": %s", spec->run_dir,
                         strerror(-k));
    }
    p->st = (ExitStatus){
        .kind = EXIT_KIND_EXITED, .pid = next_pid++, .started_at = now_usec(CLOCK_REALTIME)};
    if (code && strncmp(code, "signal:", 7) == 0) {
        p->st.kind = EXIT_KIND_SIGNALED;
        p->st.code = atoi(code + 7);
        p->st.exit_code = 128 + p->st.code;
    } else if (code)
        p->st.code = p->st.exit_code = atoi(code);
    if (output)
        (void)fileio_write_replace(p->dirfd, "output.json", output, strlen(output), 0640);
    (void)arm(p, delay ? strtoul(delay, NULL, 10) : 0);
    *ret = &p->base;
    return 0;
}

static int mock_fd(RunnerProcess *p)
{
    return ((MockProcess *)p)->tfd;
}

static pid_t mock_pid(RunnerProcess *p)
{
    return ((MockProcess *)p)->st.pid;
}

static int mock_signal(RunnerProcess *proc, int sig)
{
    MockProcess *p = (MockProcess *)proc;
    if (p->reaped)
        return -ESRCH;
    p->st.kind = EXIT_KIND_SIGNALED;
    p->st.code = sig == SIGKILL ? SIGKILL : SIGTERM;
    p->st.exit_code = 128 + p->st.code;
    return arm(p, 0);
}

static int mock_reap(RunnerProcess *proc, ExitStatus *ret, Error *e)
{
    MockProcess *p = (MockProcess *)proc;
    uint64_t n;
    (void)e;
    if (!p->reaped && read(p->tfd, &n, sizeof n) != sizeof n)
        return -EAGAIN;
    p->reaped = true;
    p->st.finished_at = now_usec(CLOCK_REALTIME);
    *ret = p->st;
    return 0;
}

static void mock_process_free(RunnerProcess *proc)
{
    MockProcess *p = (MockProcess *)proc;
    if (p->tfd >= 0)
        (void)close(p->tfd);
    if (p->dirfd >= 0)
        (void)close(p->dirfd);
    free(p);
}

static void mock_free(Runner *r)
{
    free(r);
}

/* A mock process never outlives the daemon that "ran" it, and leaves no exit status behind. */
static int mock_attach(Runner *r, const char *run_dir, int *ret_attempt, RunnerProcess **ret,
                       Error *e)
{
    (void)r, (void)run_dir, (void)ret_attempt, (void)ret, (void)e;
    return 0;
}

static int mock_collect(Runner *r, const char *run_dir, ExitStatus *ret, Error *e)
{
    (void)r, (void)run_dir, (void)ret;
    return error_set(e, -ENOENT, "the mock runner leaves no exit status");
}

static const RunnerOps mock_ops = {
    .type = RUNNER_MOCK,
    .launch = mock_launch,
    .attach = mock_attach,
    .collect = mock_collect,
    .fd = mock_fd,
    .pid = mock_pid,
    .signal = mock_signal,
    .reap = mock_reap,
    .process_free = mock_process_free,
    .free = mock_free,
};

int runner_mock_new(Runner **ret)
{
    Runner *r = xcalloc(1, sizeof *r);
    r->ops = &mock_ops;
    *ret = r;
    return 0;
}
