/* Identifiers that come from outside. Every tenant, instance and image id is checked here before
 * it reaches a path, a container name or SQL (DESIGN §3). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define ID_MAX_LEN 128
/* The rule of id_is_valid() in words, for error messages. */
#define ID_RULE                                                                                    \
    "must be 1-128 characters of [A-Za-z0-9_.-], starting with a letter or digit, without \"..\""

/** True if s matches [A-Za-z0-9][A-Za-z0-9_.-]{0,127} and contains no "..": safe as one path
 *  component, a container name and a SQL parameter. */
bool id_is_valid(const char *s);
/** Write a random UUID v4 (lower-case, hyphenated, 36 chars + NUL) into buf[37]. Returns 0 or a
 *  negative errno from getrandom(2). */
int id_new_uuid(char buf[static 37]);
/** Fill buf with n random bytes written as 2n lower-case hex characters + NUL (buf[2n+1]). */
int id_random_hex(char *buf, size_t n);
