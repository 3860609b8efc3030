#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "strbuf.h"
#include "time-util.h"
#include "utf8.h"

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

/* ---- buffered lines ----
 *
 * With log_buffer_start(), lines of level info and debug (the access log, one line per request)
 * collect in a buffer that a writer thread writes out with one write(2) per batch: when the
 * first line has waited LOG_FLUSH_USEC, or when LOG_BUFFER_HIGH bytes are waiting. Lines of level
 * notice and above flush the buffer, themselves included, before log_internal() returns, so
 * what explains a failure is out before the failure. An abort() (a failed assertion, memory
 * exhausted) writes what is buffered from its SIGABRT handler; other crashes lose at most
 * LOG_FLUSH_USEC of info lines. Writes happen under write_lock, which is taken while lock is
 * held: text goes out in the order it was logged. */
#define LOG_BUFFER_SIZE (64U << 10)
#define LOG_BUFFER_HIGH (16U << 10)
#define LOG_FLUSH_USEC (10 * 1000)

static struct {
    pthread_mutex_t lock; /* guards what follows */
    pthread_cond_t cond;  /* the writer waits on it; CLOCK_MONOTONIC */
    pthread_mutex_t write_lock;
    char *buf, *spare; /* spare: the writer's second buffer, swapped in while it writes */
    size_t len;
    struct timespec first; /* when the oldest waiting line came in */
    bool stop;
    pthread_t thread;
} lb = {.lock = PTHREAD_MUTEX_INITIALIZER, .write_lock = PTHREAD_MUTEX_INITIALIZER};

static atomic_bool lb_on;

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* nowhere to report it */
        p += w;
        n -= (size_t)w;
    }
}

/* Write text in the caller's thread, after the writer's batch in flight, if any. Called with
 * lb.lock held, so nothing logged later can go out first. */
static void write_in_order(const char *p, size_t n)
{
    pthread_mutex_lock(&lb.write_lock);
    write_all(p, n);
    pthread_mutex_unlock(&lb.write_lock);
}

/* Write what is buffered, in the caller's thread. Called and returns with lb.lock held. */
static void lb_flush_locked(void)
{
    write_in_order(lb.buf, lb.len);
    lb.len = 0;
}

static void *lb_writer(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&lb.lock);
    for (;;) {
        if (lb.len == 0) {
            if (lb.stop)
                break;
            pthread_cond_wait(&lb.cond, &lb.lock);
            continue;
        }
        if (lb.len < LOG_BUFFER_HIGH && !lb.stop) {
            struct timespec until = lb.first;
            until.tv_nsec += LOG_FLUSH_USEC * 1000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            if (pthread_cond_timedwait(&lb.cond, &lb.lock, &until) != ETIMEDOUT)
                continue; /* more lines, a stop, or a flush by someone else: look again */
            if (lb.len == 0)
                continue;
        }
        /* Swap in the spare buffer and write the full one without holding lock. */
        char *out = lb.buf;
        size_t n = lb.len;
        /* len before buf, both published: an abort handler that sees the new buffer sees
         * its length, not the old one's */
        __atomic_store_n(&lb.len, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&lb.buf, lb.spare, __ATOMIC_RELEASE);
        lb.spare = NULL;
        pthread_mutex_lock(&lb.write_lock);
        pthread_mutex_unlock(&lb.lock);
        write_all(out, n);
        pthread_mutex_unlock(&lb.write_lock);
        pthread_mutex_lock(&lb.lock);
        lb.spare = out;
    }
    pthread_mutex_unlock(&lb.lock);
    return NULL;
}

static struct sigaction lb_abort_before; /* the SIGABRT action log_buffer_start replaced */

/* SIGABRT: the process is going down; write what waits, without the locks (their holder may be
 * the aborting thread). A line being appended right now may come out cut: better than lost.
 * One non-blocking write(2) (async-signal-safe), so a stalled stderr cannot hold up the abort;
 * returning lets abort() go on to the default action. */
static void lb_on_abort(int sig)
{
    (void)sig;
    int saved = errno;
    const char *buf = __atomic_load_n(&lb.buf, __ATOMIC_ACQUIRE);
    size_t n = __atomic_load_n(&lb.len, __ATOMIC_ACQUIRE);
    if (atomic_load(&lb_on) && buf && n > 0) {
        int fl = fcntl(STDERR_FILENO, F_GETFL);
        if (fl >= 0)
            (void)fcntl(STDERR_FILENO, F_SETFL, fl | O_NONBLOCK);
        (void)!write(STDERR_FILENO, buf, MIN(n, (size_t)LOG_BUFFER_SIZE));
    }
    errno = saved;
}

int log_buffer_start(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&lb.cond, &attr);
    pthread_condattr_destroy(&attr);
    lb.buf = malloc(LOG_BUFFER_SIZE);
    lb.spare = malloc(LOG_BUFFER_SIZE);
    lb.len = 0;
    lb.stop = false;
    int r = -ENOMEM;
    if (lb.buf && lb.spare)
        r = -pthread_create(&lb.thread, NULL, lb_writer, NULL);
    if (r < 0) {
        free(lb.buf);
        free(lb.spare);
        lb.buf = lb.spare = NULL;
        pthread_cond_destroy(&lb.cond);
        return r;
    }
    (void)pthread_setname_np(lb.thread, "log-writer");
    atomic_store(&lb_on, true);
    struct sigaction sa = {.sa_handler = lb_on_abort, .sa_flags = SA_RESETHAND | SA_NODEFER};
    sigemptyset(&sa.sa_mask);
    (void)sigaction(SIGABRT, &sa, &lb_abort_before);
    return 0;
}

void log_buffer_stop(void)
{
    if (!atomic_load(&lb_on))
        return;
    pthread_mutex_lock(&lb.lock);
    lb.stop = true;
    pthread_cond_signal(&lb.cond);
    pthread_mutex_unlock(&lb.lock);
    pthread_join(lb.thread, NULL);
    atomic_store(&lb_on, false); /* lines logged from here on are written directly */
    (void)sigaction(SIGABRT, &lb_abort_before, NULL);
    pthread_mutex_lock(&lb.lock);
    lb_flush_locked(); /* lines that came in after the writer's last look */
    free(lb.buf);
    free(lb.spare);
    lb.buf = lb.spare = NULL;
    pthread_mutex_unlock(&lb.lock);
    /* lb.cond is left alive: a thread still logging may signal it once more */
}

static void lb_append(const char *line, size_t n, bool urgent)
{
    bool wake = false;
    pthread_mutex_lock(&lb.lock);
    if (!lb.buf) { /* stopped between the caller's check and here */
        write_in_order(line, n);
        pthread_mutex_unlock(&lb.lock);
        return;
    }
    if (lb.len + n > LOG_BUFFER_SIZE)
        lb_flush_locked(); /* the writer is behind: write in this thread, which slows logging */
    if (n > LOG_BUFFER_SIZE)
        write_in_order(line, n);
    else {
        if (lb.len == 0) {
            clock_gettime(CLOCK_MONOTONIC, &lb.first);
            wake = true; /* the writer sleeps until there is a first line */
        }
        memcpy(lb.buf + lb.len, line, n);
        lb.len += n;
        if (lb.len >= LOG_BUFFER_HIGH)
            wake = true;
        if (urgent) {
            lb_flush_locked();
            wake = false;
        }
    }
    pthread_mutex_unlock(&lb.lock);
    if (wake)
        pthread_cond_signal(&lb.cond);
}

/* logfmt quoting: bare when the value is a plain token, else a quoted, escaped string. */
/* A logfmt value: bare when it can be, else quoted with '"', '\\' and "\n" escaped and every
 * other byte that is a control character or not part of valid UTF-8 written as \xNN, so a line
 * is always valid UTF-8 whatever a client sent. */
static void text_value(StrBuf *b, const char *v)
{
    bool plain = *v != '\0';
    for (const char *p = v; *p && plain; p++)
        if ((unsigned char)*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f ||
            (unsigned char)*p >= 0x80)
            plain = false;
    if (plain) {
        strbuf_puts(b, v);
        return;
    }
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(v);
    strbuf_putc(b, '"');
    for (size_t i = 0; i < n;) {
        size_t run = 0; /* characters that need no escape, appended at once */
        for (;;) {
            unsigned char c = (unsigned char)v[i + run];
            if (c >= 0x80) {
                size_t l = utf8_sequence_len(v + i + run, n - i - run);
                if (l == 0)
                    break;
                run += l;
            } else if (c >= ' ' && c != '"' && c != '\\' && c != 0x7f)
                run++;
            else
                break;
        }
        strbuf_put(b, v + i, run);
        i += run;
        if (i >= n)
            break;
        unsigned char c = (unsigned char)v[i++];
        if (c == '"' || c == '\\')
            strbuf_put(b, (const char[]){'\\', (char)c}, 2);
        else if (c == '\n')
            strbuf_put(b, "\\n", 2);
        else
            strbuf_put(b, (const char[]){'\\', 'x', hex[c >> 4], hex[c & 15]}, 4);
    }
    strbuf_putc(b, '"');
}

static void emit_text(StrBuf *b, const char *ts, int level, const char *msg,
                      const char *const *fields)
{
    /* No printf here: this runs for every access-log line. */
    strbuf_puts(b, "ts=");
    strbuf_puts(b, ts);
    strbuf_puts(b, " level=");
    strbuf_puts(b, log_level_to_string(level));
    strbuf_puts(b, " msg=");
    text_value(b, msg);
    for (size_t i = 0; fields && fields[i]; i += 2) {
        if (!fields[i + 1])
            continue;
        strbuf_putc(b, ' ');
        strbuf_puts(b, fields[i]);
        strbuf_putc(b, '=');
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
    json_object_set_new(o, "msg", utf8_json_string(msg, 0));
    for (size_t i = 0; fields && fields[i]; i += 2)
        if (fields[i + 1])
            json_object_set_new(o, fields[i], utf8_json_string(fields[i + 1], 0));
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
    size_t fixed = strchr(fmt, '%') ? 0 : strlen(fmt);
    if (fixed > 0 && fixed < sizeof msg) /* a fixed message, such as the access log's "request" */
        memcpy(msg, fmt, fixed + 1);
    else {
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    }
    format_rfc3339(ts, sizeof ts, now_usec(CLOCK_REALTIME));

    StrBuf b = STRBUF_INIT;
    if (log_format == LOG_FORMAT_JSON)
        emit_json(&b, ts, level, msg, fields);
    else
        emit_text(&b, ts, level, msg, fields);
    if (atomic_load_explicit(&lb_on, memory_order_relaxed))
        lb_append(b.buf, b.len, level <= LOG_NOTICE);
    else
        write_all(b.buf, b.len);
    strbuf_done(&b);

    errno = saved_errno;
    return -abs(error);
}
