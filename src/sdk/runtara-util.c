/* Allocation, messages and JSON text helpers of libruntara. Allocation failure aborts, as in the
 * daemon (STYLE R15): every size that comes from outside is bounded before it is allocated. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "runtara-internal.h"

static void oom(void)
{
    fputs("libruntara: out of memory\n", stderr);
    abort();
}

void *runtara__xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (!p)
        oom();
    return p;
}

void *runtara__xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);

    if (!q)
        oom();
    return q;
}

char *runtara__xstrdup(const char *s)
{
    char *p = strdup(s);

    if (!p)
        oom();
    return p;
}

/* Measured first, then written into one allocation of the exact size: vasprintf() grows its
 * buffer as it writes and frees the smaller ones, which would leave copies of a string that
 * holds the token (the Authorization header, a request's head) in freed memory. */
_printf_(1, 0) static char *xvasprintf(const char *fmt, va_list ap)
{
    va_list aq;

    if (!fmt) /* never: every caller passes a literal; it keeps GCC's UBSan build from warning */
        abort();
    va_copy(aq, ap);
    int n = vsnprintf(NULL, 0, fmt, aq);
    va_end(aq);
    if (n < 0)
        oom();
    char *p = runtara__xmalloc((size_t)n + 1);
    (void)vsnprintf(p, (size_t)n + 1, fmt, ap);
    return p;
}

char *runtara__xasprintf(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    char *p = xvasprintf(fmt, ap);
    va_end(ap);
    return p;
}

void runtara__freep(void *p)
{
    free(*(void **)p);
}

void *runtara__memdup_nul(const void *data, size_t n)
{
    char *p = runtara__xmalloc(n + 1);

    if (n > 0)
        memcpy(p, data, n);
    p[n] = '\0';
    return p;
}

int runtara__set_error(RuntaraClient *c, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    free(c->last_error);
    c->last_error = msg;
    return code;
}

bool runtara__json_valid(const char *s)
{
    json_t *j = json_loads(s, JSON_DECODE_ANY, NULL);

    json_decref(j);
    return j != NULL;
}

char *runtara__json_splice(const char *obj_json, const char *name, const char *value_json)
{
    size_t len = strlen(obj_json);

    /* obj_json is "{}" or "{...}" as json_dumps() wrote it, so it ends with '}'. */
    if (len < 2 || obj_json[len - 1] != '}')
        abort();
    return runtara__xasprintf("%.*s%s\"%s\":%s}", (int)(len - 1), obj_json, len > 2 ? "," : "",
                              name, value_json);
}
