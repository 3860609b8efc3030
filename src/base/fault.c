#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"
#include "log.h"

#ifdef RUNTARA_FAULT_INJECTION
void fault_point(const char *name)
{
    static atomic_uint hits;
    const char *spec = secure_getenv("RUNTARA_FAULT");
    size_t n = strlen(name);

    if (!spec || strncmp(spec, name, n) != 0 || (spec[n] != '\0' && spec[n] != '@'))
        return;
    unsigned nth = spec[n] == '@' ? (unsigned)strtoul(spec + n + 1, NULL, 10) : 1;
    if (atomic_fetch_add(&hits, 1) + 1 < nth)
        return;
    log_warning("fault injection: crashing at \"%s\" (RUNTARA_FAULT)", name);
    fflush(stderr);
    raise(SIGKILL);
}

bool fault_fail(const char *name)
{
    static atomic_uint hits;
    const char *spec = secure_getenv("RUNTARA_FAULT_FAIL");
    size_t n = strlen(name);

    if (!spec || strncmp(spec, name, n) != 0 || spec[n] != ':')
        return false;
    return atomic_fetch_add(&hits, 1) < (unsigned)strtoul(spec + n + 1, NULL, 10);
}
#endif
