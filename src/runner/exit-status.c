#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/alloc.h"
#include "../base/fileio.h"
#include "../base/utf8.h"
#include "exit-status.h"

static const char *const kind_names[_EXIT_KIND_MAX] = {
    [EXIT_KIND_EXITED] = "exited",
    [EXIT_KIND_SIGNALED] = "signaled",
    [EXIT_KIND_SPAWN_FAILED] = "spawn_failed",
};

const char *exit_kind_to_string(ExitKind k)
{
    return k >= 0 && k < _EXIT_KIND_MAX ? kind_names[k] : NULL;
}

int exit_status_write(int lockfd, const ExitStatus *s)
{
    /* error may name the program's path: bytes from outside, and snprintf() cuts where it must */
    json_t *o = json_pack(
        "{s:s, s:i, s:i, s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:b, s:I, s:I, s:o}", "kind",
        exit_kind_to_string(s->kind), "code", s->code, "exit_code", s->exit_code, "pid", s->pid,
        "attempt", s->attempt, "log_bytes", (json_int_t)s->log_bytes, "log_dropped",
        (json_int_t)s->log_dropped, "cpu_usec", (json_int_t)s->cpu_usec, "max_rss_bytes",
        (json_int_t)s->max_rss_bytes, "memory_peak_bytes", (json_int_t)s->memory_peak_bytes, "oom",
        s->oom, "started_at", (json_int_t)s->started_at, "finished_at", (json_int_t)s->finished_at,
        "error", utf8_json_string(s->error, 0));
    if (!o)
        return -ENOMEM;
    char *text = json_dumps(o, JSON_COMPACT); /* one line: JSON escapes every newline */
    json_decref(o);
    if (!text)
        return -ENOMEM;
    size_t n = strlen(text);
    text = xrealloc(text, n + 2);
    memcpy(text + n, "\n", 2);
    struct stat st;
    int r = fstat(lockfd, &st) < 0 ? -errno : 0;
    ssize_t k = r < 0 ? -1 : pwrite(lockfd, text, n + 1, st.st_size);
    if (r == 0 && k != (ssize_t)(n + 1))
        r = k < 0 ? -errno : -EIO;
    free(text);
    return r;
}

/* The most read of shim.lock: a shim writes a few hundred bytes, its error message included. */
#define EXIT_STATUS_MAX (64 * 1024)

int exit_status_read(int dirfd, ExitStatus *ret, Error *e)
{
    /* whole, in one read (jansson's json_loadfd() reads a byte at a time: ~250 system calls on
     * the event loop per exit), and bounded: the run directory is the program's too */
    const char *name = SHIM_LOCK_FILE;
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return error_set(e, -errno, "could not open %s: %m", name);
    _cleanup_free_ char *text = NULL;
    size_t n = 0;
    int k = fileio_read_fd(fd, EXIT_STATUS_MAX, &text, &n);
    (void)close(fd);
    if (k < 0)
        return error_set(e, k, "could not read %s: %s", name,
                         k == -EFBIG ? "larger than 64 KiB" : strerror(-k));
    /* the record: the line that begins with "{" (the attempt and the program come before it) */
    const char *record = n > 0 && text[0] == '{' ? text : memmem(text, n, "\n{", 2);
    if (!record)
        return error_set(e, -ENOENT, "%s holds no exit record", name);
    if (record[0] == '\n')
        record++;
    const char *end = memchr(record, '\n', (size_t)(text + n - record));
    n = (size_t)((end ? end : text + n) - record);
    json_error_t jerr;
    json_t *o = json_loadb(record, n, 0, &jerr);
    if (!o)
        return error_set(e, -EBADMSG, "could not parse the exit record in %s: %s", name, jerr.text);

    const char *kind = NULL, *err = "";
    json_int_t lb = 0, ld = 0, cpu = 0, rss = 0, peak = 0, st = 0, fin = 0;
    int oom = 0;
    ExitStatus s = {0};
    int r = json_unpack_ex(o, &jerr, 0,
                           "{s:s, s:i, s:i, s:i, s?i, s:I, s:I, s:I, s:I, s?I, s?b, s:I, s:I, s?s}",
                           "kind", &kind, "code", &s.code, "exit_code", &s.exit_code, "pid", &s.pid,
                           "attempt", &s.attempt, "log_bytes", &lb, "log_dropped", &ld, "cpu_usec",
                           &cpu, "max_rss_bytes", &rss, "memory_peak_bytes", &peak, "oom", &oom,
                           "started_at", &st, "finished_at", &fin, "error", &err);
    s.kind = _EXIT_KIND_INVALID;
    for (int i = 0; r == 0 && i < _EXIT_KIND_MAX; i++)
        if (strcmp(kind, kind_names[i]) == 0)
            s.kind = (ExitKind)i;
    if (r < 0 || s.kind < 0) {
        json_decref(o);
        return error_set(e, -EBADMSG, "invalid exit record in %s: %s", name,
                         r < 0 ? jerr.text : "unknown kind");
    }
    s.log_bytes = (uint64_t)lb;
    s.log_dropped = (uint64_t)ld;
    s.cpu_usec = (uint64_t)cpu;
    s.max_rss_bytes = (uint64_t)rss;
    s.memory_peak_bytes = (uint64_t)peak;
    s.oom = oom != 0;
    s.started_at = (usec_t)st;
    s.finished_at = (usec_t)fin;
    if (strlen(err) < sizeof s.error)
        snprintf(s.error, sizeof s.error, "%s", err);
    else { /* cut at a character boundary, so that it can be written again */
        _cleanup_free_ char *cut = utf8_make_valid(err, sizeof s.error - 4);
        snprintf(s.error, sizeof s.error, "%s", cut);
    }
    json_decref(o);
    *ret = s;
    return 0;
}
