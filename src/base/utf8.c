#include <string.h>

#include "alloc.h"
#include "strbuf.h"
#include "utf8.h"

size_t utf8_sequence_len(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    unsigned char c = p[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* the range of the second byte */

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* past U+10FFFF */
    } else
        return 0;
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

bool utf8_is_valid(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t l = utf8_sequence_len(s + i, n - i);
        if (l == 0)
            return false;
        i += l;
    }
    return true;
}

bool utf8_is_text(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return false;
        size_t l = utf8_sequence_len(s + i, n - i);
        if (l == 0)
            return false;
        i += l;
    }
    return true;
}

char *utf8_make_valid(const char *s, size_t max)
{
    StrBuf b = STRBUF_INIT;
    size_t n = strlen(s), used = 0;

    strbuf_reserve(&b, MIN(n, max ? max : n) + 4);
    for (size_t i = 0; i < n;) {
        size_t l = utf8_sequence_len(s + i, n - i);
        const char *put = l ? s + i : "\xef\xbf\xbd"; /* U+FFFD */
        size_t put_n = l ? l : 3;
        if (max > 0 && used + put_n > max) {
            strbuf_puts(&b, "...");
            break;
        }
        strbuf_put(&b, put, put_n);
        used += put_n;
        i += l ? l : 1;
    }
    return strbuf_steal(&b);
}

json_t *utf8_json_string(const char *s, size_t max)
{
    size_t n = strlen(s);
    if ((max == 0 || n <= max) && utf8_is_valid(s, n)) {
        json_t *j = json_stringn(s, n);
        if (j)
            return j;
    }
    char *v = utf8_make_valid(s, max);
    json_t *j = json_string(v);
    free(v);
    return j ? j : json_string("");
}
