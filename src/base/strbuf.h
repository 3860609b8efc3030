/* A growable byte buffer, always NUL-terminated. Allocation aborts on exhaustion (alloc.h). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

typedef struct StrBuf {
    char *buf; /* NULL until the first append; owned */
    size_t len;
    size_t cap;
} StrBuf;

#define STRBUF_INIT                                                                                \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

/** Make room for `extra` more bytes at once, allocating exactly that much when it must grow (a
 *  body of known length is then read without a copy per doubling). */
void strbuf_reserve(StrBuf *b, size_t extra);
void strbuf_put(StrBuf *b, const void *data, size_t n);
void strbuf_puts(StrBuf *b, const char *s);
void strbuf_putc(StrBuf *b, char c);
void strbuf_printf(StrBuf *b, const char *fmt, ...) _printf_(2, 3);
/** Hand the string to the caller (never NULL) and reset the buffer. */
char *strbuf_steal(StrBuf *b);
void strbuf_done(StrBuf *b);
