#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "strbuf.h"

int log_max_level = LOG_INFO;
static LogFormat log_format = LOG_FORMAT_TEXT;

static const char *const level_names[] = {
    [LOG_EMERG] = "emerg",     [LOG_ALERT] = "alert",   [LOG_CRIT] = "crit", [LOG_ERR] = "error",
    [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice", [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

void log_set_format(LogFormat f)
{
    log_format = f;
}

int log_level_from_string(const char *s)
{
    for (int i = LOG_ERR; i <= LOG_DEBUG; i++)
        if (s && strcmp(s, level_names[i]) == 0)
            return i;
    return -EINVAL;
}

const char *log_level_to_string(int level)
{
    if (level < 0 || level > LOG_DEBUG)
        return "unknown";
    return level_names[level];
}

LogFormat log_format_from_string(const char *s)
{
    if (s && strcmp(s, "text") == 0)
        return LOG_FORMAT_TEXT;
    if (s && strcmp(s, "json") == 0)
        return LOG_FORMAT_JSON;
    return _LOG_FORMAT_INVALID;
}

static void format_timestamp(char *buf, size_t n)
{
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t l = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + l, n - l, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* logfmt quoting: bare when the value is a plain token, else a quoted, escaped string. */
static void text_value(StrBuf *b, const char *v)
{
    bool plain = *v != '\0';
    for (const char *p = v; *p && plain; p++)
        if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f)
            plain = false;
    if (plain) {
        strbuf_puts(b, v);
        return;
    }
    strbuf_putc(b, '"');
    for (const char *p = v; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\')
            strbuf_printf(b, "\\%c", c);
        else if (c == '\n')
            strbuf_puts(b, "\\n");
        else if (c < ' ' || c == 0x7f)
            strbuf_printf(b, "\\x%02x", c);
        else
            strbuf_putc(b, (char)c);
    }
    strbuf_putc(b, '"');
}

static void emit_text(StrBuf *b, const char *ts, int level, const char *msg,
                      const char *const *fields)
{
    strbuf_printf(b, "ts=%s level=%s msg=", ts, log_level_to_string(level));
    text_value(b, msg);
    for (size_t i = 0; fields && fields[i]; i += 2) {
        if (!fields[i + 1])
            continue;
        strbuf_printf(b, " %s=", fields[i]);
        text_value(b, fields[i + 1]);
    }
    strbuf_putc(b, '\n');
}

static void emit_json(StrBuf *b, const char *ts, int level, const char *msg,
                      const char *const *fields)
{
    json_t *o = json_object();
    json_object_set_new(o, "ts", json_string(ts));
    json_object_set_new(o, "level", json_string(log_level_to_string(level)));
    json_object_set_new(o, "msg", json_string(msg));
    for (size_t i = 0; fields && fields[i]; i += 2)
        if (fields[i + 1])
            json_object_set_new(o, fields[i], json_string(fields[i + 1]));
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    if (s) {
        strbuf_puts(b, s);
        free(s);
    }
    strbuf_putc(b, '\n');
}

int log_internal(int level, int error, const char *const *fields, const char *fmt, ...)
{
    int saved_errno = errno;
    char ts[40], msg[2048];
    va_list ap;

    if (error != 0)
        errno = abs(error);
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    format_timestamp(ts, sizeof ts);

    StrBuf b = STRBUF_INIT;
    if (log_format == LOG_FORMAT_JSON)
        emit_json(&b, ts, level, msg, fields);
    else
        emit_text(&b, ts, level, msg, fields);
    (void)!write(STDERR_FILENO, b.buf, b.len);
    strbuf_done(&b);

    errno = saved_errno;
    return -abs(error);
}
