/* Compiler helpers and scope-bound cleanup (the systemd idioms, reduced to what we use). */
#pragma once

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _noreturn_ __attribute__((noreturn))
#define _unused_ __attribute__((unused))
#define _cleanup_(f) __attribute__((cleanup(f)))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Hand out ownership of a pointer or fd held by a _cleanup_ variable. */
#define TAKE_GENERIC(var, type, nullvalue)                                                         \
    ({                                                                                             \
        type *_pvar_ = &(var);                                                                     \
        type _var_ = *_pvar_;                                                                      \
        *_pvar_ = (nullvalue);                                                                     \
        _var_;                                                                                     \
    })
#define TAKE_PTR(p) TAKE_GENERIC(p, __typeof__(p), NULL)
#define TAKE_FD(fd) TAKE_GENERIC(fd, int, -EBADF)

/* Convert a libc-style "-1 and errno" return into a negative errno. */
#define RET_NERRNO(expr)                                                                           \
    ({                                                                                             \
        __typeof__(expr) _r_ = (expr);                                                             \
        _r_ < 0 ? -errno : _r_;                                                                    \
    })

#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                                    \
    static inline void func##p(type *p)                                                            \
    {                                                                                              \
        if (*p)                                                                                    \
            func(*p);                                                                              \
    }

static inline void freep(void *p)
{
    free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void closep(int *fd)
{
    if (*fd >= 0)
        (void)close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

/* Always-on assertion for invariants whose violation would corrupt durable state. */
#define ASSERT_SE(expr)                                                                            \
    do {                                                                                           \
        if (_unlikely_(!(expr)))                                                                   \
            assert_se_failed(#expr, __FILE__, __LINE__);                                           \
    } while (0)

_noreturn_ void assert_se_failed(const char *expr, const char *file, int line);
