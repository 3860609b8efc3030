/* The one log module (STYLE R9, R11): one line per event on stderr, either logfmt
 * ("ts=... level=info msg=\"...\" req=...") or JSON lines, so journald or a container runtime can
 * collect it. The level check happens before any argument is evaluated. Thread-safe: each line
 * is written with a single write(2), or buffered and written in a batch (log_buffer_start). */
#pragma once

#include <stdlib.h>
#include <syslog.h>

#include "macro.h"

typedef enum LogFormat {
    LOG_FORMAT_TEXT,
    LOG_FORMAT_JSON,
    _LOG_FORMAT_MAX,
    _LOG_FORMAT_INVALID = -EINVAL,
} LogFormat;

/* The only process-wide mutable setting (STYLE R19). */
extern int log_max_level;

void log_set_format(LogFormat f);
/** "error", "warning", "notice", "info", "debug" → LOG_ERR...; -EINVAL otherwise. */
int log_level_from_string(const char *s);
const char *log_level_to_string(int level);
LogFormat log_format_from_string(const char *s);

/** From now on, buffer lines of level info and debug and write them in batches from a thread of
 *  the log's own (at most 10 ms late); lines of level notice and above still go out before
 *  log_internal() returns, with everything buffered before them. For a daemon's access log.
 *  Start it after blocking the signals that threads must not take. It handles SIGABRT (until
 *  log_buffer_stop), so an abort() writes what is buffered first. Returns 0 or -errno. */
int log_buffer_start(void);
/** Write what is buffered and go back to writing each line directly. */
void log_buffer_stop(void);

/** Write one line. fields is NULL or a NULL-terminated array of key, value pairs (a NULL
 *  value skips the pair). If error is non-zero, errno is set to its absolute value so %m works.
 *  Returns -abs(error), so callers can `return log_error_errno(r, ...)`. */
int log_internal(int level, int error, const char *const *fields, const char *fmt, ...)
    _printf_(4, 5);

#define log_full_errno_fields(level, error, fields, ...)                                           \
    ({                                                                                             \
        int _level = (level), _e = (error);                                                        \
        _level <= log_max_level ? log_internal(_level, _e, fields, __VA_ARGS__) : -abs(_e);        \
    })

#define log_full_errno(level, error, ...) log_full_errno_fields(level, error, NULL, __VA_ARGS__)
#define log_full(level, ...) (void)log_full_errno(level, 0, __VA_ARGS__)

#define log_debug(...) log_full(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_full(LOG_INFO, __VA_ARGS__)
#define log_notice(...) log_full(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_full(LOG_ERR, __VA_ARGS__)

#define log_debug_errno(e, ...) log_full_errno(LOG_DEBUG, e, __VA_ARGS__)
#define log_info_errno(e, ...) log_full_errno(LOG_INFO, e, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, e, __VA_ARGS__)
#define log_error_errno(e, ...) log_full_errno(LOG_ERR, e, __VA_ARGS__)
