/* UTF-8 text from outside. Whatever bytes a client sends, what the daemon writes into JSON and
 * logs is valid UTF-8 of a bounded size: jansson refuses invalid UTF-8 (json_string() and
 * json_pack() return NULL), so unchecked bytes would drop a field or a whole reply. The rules are
 * RFC 3629's, the same jansson applies: no overlong forms, no surrogates, nothing past U+10FFFF. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* What an error may echo of a value from outside, in bytes (a path, a query value, a header). */
#define UTF8_ECHO_MAX 256

/** The length of the valid UTF-8 sequence at s (1-4), or 0 if the byte at s starts none. s holds
 *  at least n > 0 bytes. */
size_t utf8_sequence_len(const char *s, size_t n);
/** True if the n bytes at s are valid UTF-8 (NUL bytes included: they are valid code points). */
bool utf8_is_valid(const char *s, size_t n);
/** True if s is valid UTF-8 without control characters (C0, DEL): text fit for a name or a
 *  one-line description. */
bool utf8_is_text(const char *s);
/** A copy of s (malloc'd, never NULL) that is valid UTF-8: each byte that starts no valid sequence
 *  becomes U+FFFD. With max > 0 the copy is cut at a character boundary to at most max bytes of s's
 *  text, and "..." is appended where something was cut. */
char *utf8_make_valid(const char *s, size_t max);
/** json_string() for text from outside: never NULL, invalid bytes replaced as utf8_make_valid()
 *  does, cut to max bytes when max > 0. */
json_t *utf8_json_string(const char *s, size_t max);
