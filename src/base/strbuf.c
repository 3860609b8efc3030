#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "strbuf.h"

static void reserve(StrBuf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1)
        cap *= 2;
    b->buf = xrealloc(b->buf, cap);
    b->cap = cap;
}

void strbuf_reserve(StrBuf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    b->cap = b->len + extra + 1;
    b->buf = xrealloc(b->buf, b->cap);
}

void strbuf_put(StrBuf *b, const void *data, size_t n)
{
    reserve(b, n);
    memcpy(b->buf + b->len, data, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

void strbuf_puts(StrBuf *b, const char *s)
{
    strbuf_put(b, s, strlen(s));
}

void strbuf_putc(StrBuf *b, char c)
{
    strbuf_put(b, &c, 1);
}

void strbuf_printf(StrBuf *b, const char *fmt, ...)
{
    va_list ap, ap2;

    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n > 0) {
        reserve(b, (size_t)n);
        vsnprintf(b->buf + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
}

char *strbuf_steal(StrBuf *b)
{
    char *s = b->buf ? b->buf : xstrdup("");
    *b = (StrBuf)STRBUF_INIT;
    return s;
}

void strbuf_done(StrBuf *b)
{
    free(b->buf);
    *b = (StrBuf)STRBUF_INIT;
}
