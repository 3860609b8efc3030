/* Strict parsers for numbers, sizes and booleans from outside (environment, query strings).
 * All reject empty strings, signs, trailing garbage and overflow. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/** Decimal unsigned integer. Returns 0, -EINVAL or -ERANGE. */
int parse_uint64(const char *s, uint64_t *ret);
/** The index of s in names[0..n) (an enum's name table), or -EINVAL if it is not there or NULL. */
int parse_name(const char *const *names, int n, const char *s);
/** v in decimal into buf (at least 21 bytes), NUL-terminated; returns buf. No printf: for the
 *  per-request paths. */
char *format_uint64(char buf[static 21], uint64_t v);
/** A size with an optional binary suffix: "512", "64K", "16M", "1G" (also "KiB", "MiB", "GiB").
 *  Returns 0, -EINVAL or -ERANGE. */
int parse_size(const char *s, uint64_t *ret);
/** "1", "true", "yes", "on" / "0", "false", "no", "off". Returns 0 or -EINVAL. */
int parse_boolean(const char *s, bool *ret);
