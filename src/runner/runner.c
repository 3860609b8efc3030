/* Dispatch from the runner interface to the implementation. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../base/parse-util.h"
#include "../base/alloc.h"
#include "runner-internal.h"

Runner *runner_free(Runner *r)
{
    if (r)
        r->ops->free(r);
    return NULL;
}

static const char *const type_names[_RUNNER_TYPE_MAX] = {
    [RUNNER_OCI] = "oci",
    [RUNNER_NATIVE] = "native",
    [RUNNER_MOCK] = "mock",
};

const char *runner_type_to_string(RunnerType t)
{
    return t >= 0 && t < _RUNNER_TYPE_MAX ? type_names[t] : NULL;
}

RunnerType runner_type_from_string(const char *s)
{
    return (RunnerType)parse_name(type_names, _RUNNER_TYPE_MAX, s);
}

RunnerType runner_type(Runner *r)
{
    return r->ops->type;
}

int runner_launch(Runner *r, const RunnerLaunch *l, RunnerProcess **ret, Error *e)
{
    return r->ops->launch(r, l, ret, e);
}

int runner_prestart(Runner *r, Error *e)
{
    return r->ops->prestart ? r->ops->prestart(r, e) : 0;
}

int runner_ready_dir(Runner *r, int dirfd, Error *e)
{
    return r->ops->ready_dir ? r->ops->ready_dir(r, dirfd, e) : 0;
}

int runner_attach(Runner *r, const char *run_dir, int *ret_attempt, RunnerProcess **ret, Error *e)
{
    return r->ops->attach(r, run_dir, ret_attempt, ret, e);
}

int runner_collect(Runner *r, const char *run_dir, ExitStatus *ret, Error *e)
{
    return r->ops->collect(r, run_dir, ret, e);
}

int runner_process_fd(RunnerProcess *p)
{
    return p->ops->fd(p);
}

pid_t runner_process_pid(RunnerProcess *p)
{
    return p->ops->pid(p);
}

int runner_process_signal(RunnerProcess *p, int sig)
{
    return p->ops->signal(p, sig);
}

int runner_process_reap(RunnerProcess *p, ExitStatus *ret, Error *e)
{
    return p->ops->reap(p, ret, e);
}

RunnerProcess *runner_process_free(RunnerProcess *p)
{
    if (p)
        p->ops->process_free(p);
    return NULL;
}

char *runner_find_program(const char *env_name, const char *name)
{
    const char *env = secure_getenv(env_name);
    if (env && *env)
        return xstrdup(env);

    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return NULL;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return NULL;
    *slash = '\0';
    char *path = xasprintf("%s/%s", exe, name);
    if (access(path, X_OK) == 0)
        return path;
    free(path);
    return xasprintf("%s/../libexec/%s", exe, name);
}

char *runner_find_shim(void)
{
    return runner_find_program("RUNTARA_SHIM_PATH", "runtara-shim");
}
