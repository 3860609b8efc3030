/* Allocation that never returns NULL: on exhaustion the process aborts with a message (STYLE R15).
 * Sizes that come from outside must be checked against a limit before they reach these. */
#pragma once

#include <stddef.h>

/** malloc() that aborts on failure. Never returns NULL. */
void *xmalloc(size_t n);
/** calloc() that aborts on failure or multiplication overflow. */
void *xcalloc(size_t n, size_t size);
/** realloc() that aborts on failure. */
void *xrealloc(void *p, size_t n);
/** strdup() that aborts on failure; NULL in gives NULL out. */
char *xstrdup(const char *s);
/** strndup() that aborts on failure. */
char *xstrndup(const char *s, size_t n);
/** free() that returns NULL, for p = mfree(p). */
void *mfree(void *p);
/** asprintf() that aborts on failure; returns the new string. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
