#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"

int error_set(Error *e, int code, const char *fmt, ...)
{
    if (!e)
        return code;

    va_list ap;
    char *m = NULL;

    va_start(ap, fmt);
    if (vasprintf(&m, fmt, ap) < 0)
        m = NULL;
    va_end(ap);
    free(e->msg);
    e->msg = m;
    e->code = code;
    return code;
}

int error_prefix(Error *e, const char *fmt, ...)
{
    if (!e)
        return -EIO;

    va_list ap;
    char *p = NULL;

    va_start(ap, fmt);
    if (vasprintf(&p, fmt, ap) < 0)
        p = NULL;
    va_end(ap);
    if (p) {
        char *m = xasprintf("%s: %s", p, error_message(e));
        free(p);
        free(e->msg);
        e->msg = m;
    }
    if (e->code == 0)
        e->code = -EIO;
    return e->code;
}

const char *error_message(const Error *e)
{
    if (!e)
        return "unknown error";
    if (e->msg)
        return e->msg;
    return e->code ? strerror(-e->code) : "no error";
}

void error_done(Error *e)
{
    if (!e)
        return;
    free(e->msg);
    e->msg = NULL;
    e->code = 0;
}
