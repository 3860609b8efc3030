/* runtara-ctl instances events|checkpoints|checkpoint|logs: what an instance left behind, over
 * /api/v1/instances/{id}/events, /checkpoints, /checkpoints/{key} and /logs. The last two answer
 * raw bytes, streamed as they arrive, never held whole: a checkpoint to stdout or a file, the log
 * to stdout (with control characters other than newline and tab replaced on a terminal). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/alloc.h"
#include "../base/fileio.h"
#include "../base/strbuf.h"
#include "client.h"
#include "cmd-instances.h"
#include "output.h"

#define PAYLOAD_CELL_MAX 60 /* characters of an event's payload in the table */
#define CHECKPOINT_KEY_MAX 128

/* ---- events --------------------------------------------------------------------------------- */

static void print_event_table(const json_t *events)
{
    static const char *const headings[] = {"ID", "TIME", "TYPE", "SUBTYPE", "PAYLOAD"};
    _cleanup_(table_freep) Table *t = table_new(ELEMENTSOF(headings), headings);
    size_t i;
    json_t *ev;

    json_array_foreach(events, i, ev)
    {
        char id[24], time[40];
        snprintf(id, sizeof id, "%lld", (long long)json_integer_value(json_object_get(ev, "id")));
        _cleanup_free_ char *payload =
            format_json_brief(json_object_get(ev, "payload"), PAYLOAD_CELL_MAX);
        table_add_row(
            t, (const char *const[]){id, format_time(inst_str(ev, "created_at"), time, sizeof time),
                                     inst_str(ev, "type"), inst_str(ev, "subtype"), payload});
    }
    table_print(t, stdout);
}

/* Print a listing of one instance: the merged pages with --json, else a table or a note. */
static void show_listing(const CtlOptions *o, const char *field, json_t *items, const char *next,
                         const char *id, void (*print_table)(const json_t *))
{
    if (o->json) {
        _cleanup_(json_decrefp) json_t *doc =
            json_pack("{s:O, s:s?}", field, items, "next_cursor", next);
        (void)output_json(doc);
        return;
    }
    if (json_array_size(items) == 0)
        fprintf(stderr, "no %s found for instance \"%s\"\n", field, id);
    else
        print_table(items);
    if (next)
        fprintf(stderr, "note: more %s exist; use --all to list them all\n", field);
}

int instances_events(int argc, char **argv, CtlOptions *o)
{
    static const struct option longopts[] = {
        CTL_COMMON_OPTIONS,
        {"type", required_argument, NULL, ARG_TYPE},
        {"subtype", required_argument, NULL, ARG_SUBTYPE},
        {"limit", required_argument, NULL, ARG_LIMIT},
        {"all", no_argument, NULL, 'a'},
        {},
    };
    static const char *const names[] = {"INSTANCE_ID"};
    _cleanup_(inst_args_done) InstArgs a = INST_ARGS_INIT("instances events");
    _cleanup_(client_freep) Client *c = NULL;
    _cleanup_(json_decrefp) json_t *all = json_array();
    _cleanup_free_ char *next = NULL;
    const char *id = NULL;
    json_int_t total;
    StrBuf q = STRBUF_INIT;
    Error e = ERROR_INIT;

    int r = inst_parse(&a, "a", longopts, argc, argv, o, 1, names, &id);
    if (r >= 0)
        r = ctl_client(o, &c);
    if (r < 0)
        return ctl_parse_exit(r);

    client_query_add(c, &q, "type", a.type);
    client_query_add(c, &q, "subtype", a.subtype);
    client_query_add(c, &q, "limit", a.limit);
    _cleanup_free_ char *base = inst_path(c, &a, id, "/events", NULL);
    r = inst_fetch_pages(c, base, q.buf, "events", a.all, all, &next, &total, &e);
    strbuf_done(&q);
    if (r < 0)
        return ctl_fail(&e);
    show_listing(o, "events", all, next, id, print_event_table);
    return CTL_EXIT_OK;
}

/* ---- checkpoints ---------------------------------------------------------------------------- */

static void print_checkpoint_table(const json_t *checkpoints)
{
    static const char *const headings[] = {"KEY", "SIZE", "CREATED"};
    _cleanup_(table_freep) Table *t = table_new(ELEMENTSOF(headings), headings);
    size_t i;
    json_t *cp;

    json_array_foreach(checkpoints, i, cp)
    {
        char size[FORMAT_BYTES_MAX], created[40];
        json_int_t n = json_integer_value(json_object_get(cp, "size_bytes"));
        table_add_row(t, (const char *const[]){
                             inst_str(cp, "key"), format_bytes((uint64_t)n, size),
                             format_time(inst_str(cp, "created_at"), created, sizeof created)});
    }
    table_print(t, stdout);
}

int instances_checkpoints(int argc, char **argv, CtlOptions *o)
{
    static const struct option longopts[] = {
        CTL_COMMON_OPTIONS,
        {"limit", required_argument, NULL, ARG_LIMIT},
        {"all", no_argument, NULL, 'a'},
        {},
    };
    static const char *const names[] = {"INSTANCE_ID"};
    _cleanup_(inst_args_done) InstArgs a = INST_ARGS_INIT("instances checkpoints");
    _cleanup_(client_freep) Client *c = NULL;
    _cleanup_(json_decrefp) json_t *all = json_array();
    _cleanup_free_ char *next = NULL;
    const char *id = NULL;
    json_int_t total;
    StrBuf q = STRBUF_INIT;
    Error e = ERROR_INIT;

    int r = inst_parse(&a, "a", longopts, argc, argv, o, 1, names, &id);
    if (r >= 0)
        r = ctl_client(o, &c);
    if (r < 0)
        return ctl_parse_exit(r);

    client_query_add(c, &q, "limit", a.limit);
    _cleanup_free_ char *base = inst_path(c, &a, id, "/checkpoints", NULL);
    r = inst_fetch_pages(c, base, q.buf, "checkpoints", a.all, all, &next, &total, &e);
    strbuf_done(&q);
    if (r < 0)
        return ctl_fail(&e);
    show_listing(o, "checkpoints", all, next, id, print_checkpoint_table);
    return CTL_EXIT_OK;
}

/* ---- checkpoint ----------------------------------------------------------------------------- */

/* The rule of the instance API: 1-128 characters of [A-Za-z0-9_.:-]. */
static bool checkpoint_key_is_valid(const char *k)
{
    size_t n = strlen(k);
    return n >= 1 && n <= CHECKPOINT_KEY_MAX &&
           strspn(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-") == n;
}

/* Standard output as a sink; with tty set, control characters other than newline and tab are
 * replaced, so program output cannot drive the terminal. */
typedef struct StdoutSink {
    bool tty;
} StdoutSink;

static int stdout_write(const void *data, size_t n, void *userdata)
{
    const StdoutSink *s = userdata;
    const unsigned char *p = data;

    if (!s->tty)
        return fwrite(p, 1, n, stdout) == n ? 0 : -EIO;
    for (size_t i = 0; i < n; i++) {
        bool bad = (p[i] < 0x20 && p[i] != '\n' && p[i] != '\t') || p[i] == 0x7f;
        if (putchar(bad ? '?' : p[i]) == EOF)
            return -EIO;
    }
    return 0;
}

/* -o FILE. A regular file (or a new one) is written under a temporary name next to it and renamed
 * over it once complete, so a failed download leaves the old file as it was; anything else that
 * exists (a FIFO, /dev/null) is written in place. */
typedef struct FileSink {
    const char *path;
    char *tmp; /* the temporary name, or NULL when writing in place; owned */
    int fd;
} FileSink;

static int file_write(const void *data, size_t n, void *userdata)
{
    FileSink *f = userdata;
    return fileio_write_all(f->fd, data, n);
}

static int file_open(FileSink *f, const char *path, Error *e)
{
    struct stat st;
    mode_t mode;

    f->path = path;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return error_set(e, -EISDIR, "cannot write to \"%s\": it is a directory", path);
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        f->fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
        if (f->fd < 0)
            return error_set(e, -errno, "could not open \"%s\": %m", path);
        return 0;
    }
    if (stat(path, &st) == 0)
        mode = st.st_mode & 0777;
    else {
        mode_t mask = umask(0);
        (void)umask(mask);
        mode = 0666 & ~mask;
    }
    f->tmp = xasprintf("%s.tmp-XXXXXX", path);
    f->fd = mkostemp(f->tmp, O_CLOEXEC);
    if (f->fd < 0) {
        int r = error_set(e, -errno, "could not create a file next to \"%s\": %m", path);
        free(f->tmp);
        f->tmp = NULL;
        return r;
    }
    if (fchmod(f->fd, mode) < 0)
        return error_set(e, -errno, "could not set the mode of \"%s\": %m", f->tmp);
    return 0;
}

/* Close the file (if open); on success (ok) fsync it and rename the temporary file into place,
 * otherwise remove it. */
static int file_close(FileSink *f, bool ok, Error *e)
{
    int r = 0;

    if (f->fd >= 0 && f->tmp && ok && fsync(f->fd) < 0)
        r = error_set(e, -errno, "could not write \"%s\": %m", f->path);
    if (f->fd >= 0 && close(TAKE_FD(f->fd)) < 0 && ok && r >= 0)
        r = error_set(e, -errno, "could not write \"%s\": %m", f->path);
    if (f->tmp && ok && r >= 0 && rename(f->tmp, f->path) < 0)
        r = error_set(e, -errno, "could not rename \"%s\" to \"%s\": %m", f->tmp, f->path);
    if (f->tmp && (!ok || r < 0))
        (void)unlink(f->tmp);
    free(f->tmp);
    f->tmp = NULL;
    return r;
}

int ctl_download_to_file(Client *c, const char *path, const char *file, uint64_t *ret_size,
                         Error *e)
{
    FileSink f = {.fd = -EBADF};
    _cleanup_free_ char *name = xasprintf("\"%s\"", file);
    const ClientSink sink = {file_write, &f, name};

    int r = file_open(&f, file, e);
    if (r >= 0)
        r = client_download(c, path, &sink, ret_size, e);
    if (r < 0) {
        (void)file_close(&f, false, NULL);
        return r;
    }
    return file_close(&f, true, e);
}

int instances_checkpoint(int argc, char **argv, CtlOptions *o)
{
    static const struct option longopts[] = {
        CTL_COMMON_OPTIONS,
        {"output", required_argument, NULL, 'o'},
        {},
    };
    static const char *const names[] = {"INSTANCE_ID", "KEY"};
    _cleanup_(inst_args_done) InstArgs a = INST_ARGS_INIT("instances checkpoint");
    _cleanup_(client_freep) Client *c = NULL;
    const char *pos[2] = {};
    uint64_t size = 0;
    Error e = ERROR_INIT;

    int r = inst_parse(&a, "o:", longopts, argc, argv, o, 2, names, pos);
    if (r >= 0 && !checkpoint_key_is_valid(pos[1]))
        r = ctl_usage_error("instances checkpoint: invalid checkpoint key \"%s\": must be 1-%d "
                            "characters of [A-Za-z0-9_.:-]",
                            pos[1], CHECKPOINT_KEY_MAX);
    if (r >= 0)
        r = ctl_client(o, &c);
    if (r < 0)
        return ctl_parse_exit(r);

    _cleanup_free_ char *suffix = xasprintf("/checkpoints/%s", pos[1]);
    _cleanup_free_ char *path = inst_path(c, &a, pos[0], suffix, NULL);
    if (!a.output || strcmp(a.output, "-") == 0) {
        /* Raw bytes, also with --json and on a terminal: they are the data asked for. */
        StdoutSink out = {.tty = false};
        const ClientSink sink = {stdout_write, &out, "standard output"};
        if (client_download(c, path, &sink, NULL, &e) < 0)
            return ctl_fail(&e);
        return CTL_EXIT_OK;
    }
    if (ctl_download_to_file(c, path, a.output, &size, &e) < 0)
        return ctl_fail(&e);
    if (o->json) {
        _cleanup_(json_decrefp) json_t *doc =
            json_pack("{s:s, s:s, s:I, s:s}", "instance_id", pos[0], "key", pos[1], "size_bytes",
                      (json_int_t)size, "file", a.output);
        (void)output_json(doc);
    } else {
        char human[FORMAT_BYTES_MAX];
        printf("wrote checkpoint \"%s\" (%s) to \"%s\"\n", pos[1], format_bytes(size, human),
               a.output);
    }
    return CTL_EXIT_OK;
}

/* ---- logs ----------------------------------------------------------------------------------- */

int instances_logs(int argc, char **argv, CtlOptions *o)
{
    static const struct option longopts[] = {
        CTL_COMMON_OPTIONS,
        {"tail", required_argument, NULL, ARG_TAIL},
        {},
    };
    static const char *const names[] = {"INSTANCE_ID"};
    _cleanup_(inst_args_done) InstArgs a = INST_ARGS_INIT("instances logs");
    _cleanup_(client_freep) Client *c = NULL;
    StrBuf q = STRBUF_INIT;
    const char *id = NULL;
    uint64_t size = 0;
    Error e = ERROR_INIT;

    int r = inst_parse(&a, "", longopts, argc, argv, o, 1, names, &id);
    if (r >= 0)
        r = ctl_client(o, &c);
    if (r < 0)
        return ctl_parse_exit(r);

    client_query_add(c, &q, "tail_bytes", a.tail);
    _cleanup_free_ char *path = inst_path(c, &a, id, "/logs", q.buf);
    strbuf_done(&q);
    StdoutSink out = {.tty = isatty(STDOUT_FILENO) == 1};
    const ClientSink sink = {stdout_write, &out, "standard output"};
    if (client_download(c, path, &sink, &size, &e) < 0)
        return ctl_fail(&e);
    if (size == 0)
        fprintf(stderr, "note: the log of instance \"%s\" is empty\n", id);
    return CTL_EXIT_OK;
}

/* ---- watch ---------------------------------------------------------------------------------- */

#define WATCH_WAIT "30s"     /* each event poll waits this long for the next event */
#define WATCH_EXIT_WAIT "5s" /* after the end, for the process's exit to be recorded */

static bool ended(const char *status)
{
    return status && (strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0 ||
                      strcmp(status, "cancelled") == 0);
}

/* One line per event: its time (UTC, to the millisecond), type, subtype and payload. */
static void print_event_line(const CtlOptions *o, json_t *ev)
{
    if (o->json) {
        _cleanup_(json_decrefp) json_t *line = json_pack("{s:O}", "event", ev);
        (void)output_json_line(line);
        return;
    }
    const char *at = inst_str(ev, "created_at");
    _cleanup_free_ char *payload =
        format_json_brief(json_object_get(ev, "payload"), PAYLOAD_CELL_MAX);
    const char *subtype = inst_str(ev, "subtype");
    printf("%.12s  %-10s %s%s%s\n", at && strlen(at) >= 23 ? at + 11 : "-",
           inst_str(ev, "type") ?: "-", subtype ? subtype : "",
           subtype && strcmp(payload, "-") != 0 ? "  " : "",
           strcmp(payload, "-") != 0 ? payload : "");
    fflush(stdout);
}

static void print_status_line(const CtlOptions *o, json_t *inst)
{
    if (o->json) {
        _cleanup_(json_decrefp) json_t *line = json_pack("{s:O}", "instance", inst);
        (void)output_json_line(line);
        return;
    }
    const char *reason = inst_str(inst, "termination_reason");
    printf("-- %s: %s", inst_str(inst, "instance_id") ?: "-", inst_str(inst, "status") ?: "-");
    if (reason)
        printf(" (%s)", reason);
    printf(", attempt %lld\n", (long long)json_integer_value(json_object_get(inst, "attempt")));
    fflush(stdout);
}

/* Print the events after *last (waiting up to wait for the first one); *last moves on. */
static int watch_events(const CtlOptions *o, Client *c, const InstArgs *a, const char *id,
                        const char *wait, int64_t *last, Error *e)
{
    for (;;) {
        StrBuf q = STRBUF_INIT;
        char cursor[24];
        snprintf(cursor, sizeof cursor, "%lld", (long long)*last);
        client_query_add(c, &q, "cursor", *last > 0 ? cursor : NULL);
        client_query_add(c, &q, "limit", "1000");
        client_query_add(c, &q, "wait", wait);
        _cleanup_free_ char *path = inst_path(c, a, id, "/events", q.buf);
        strbuf_done(&q);
        _cleanup_(json_decrefp) json_t *page = NULL;
        int r = client_call(c, "GET", path, NULL, &page, e);
        if (r < 0)
            return r;
        json_t *events = json_object_get(page, "events");
        if (!json_is_array(events))
            return error_set(e, -EBADMSG, "unexpected answer from %s: no \"events\" list",
                             client_url(c));
        size_t i;
        json_t *ev;
        json_array_foreach(events, i, ev)
        {
            print_event_line(o, ev);
            *last = MAX(*last, (int64_t)json_integer_value(json_object_get(ev, "id")));
        }
        if (!json_is_string(json_object_get(page, "next_cursor")))
            return 0;
        wait = NULL; /* more pages: at once */
    }
}

int instances_watch(int argc, char **argv, CtlOptions *o)
{
    static const struct option longopts[] = {CTL_COMMON_OPTIONS, {}};
    static const char *const names[] = {"INSTANCE_ID"};
    _cleanup_(inst_args_done) InstArgs a = INST_ARGS_INIT("instances watch");
    _cleanup_(client_freep) Client *c = NULL;
    _cleanup_free_ char *status = NULL;
    const char *id = NULL;
    int64_t last = 0;
    Error e = ERROR_INIT;

    int r = inst_parse(&a, "", longopts, argc, argv, o, 1, names, &id);
    if (r >= 0)
        r = ctl_client(o, &c);
    if (r < 0)
        return ctl_parse_exit(r);

    /* the status, the events so far at once, then each poll waits for the next event */
    for (const char *wait = NULL;; wait = WATCH_WAIT) {
        _cleanup_(json_decrefp) json_t *inst = NULL;
        _cleanup_free_ char *path = inst_path(c, &a, id, "", NULL);
        if (client_call(c, "GET", path, NULL, &inst, &e) < 0)
            return ctl_fail(&e);
        const char *now = inst_str(inst, "status");
        if (!now) {
            error_set(&e, -EBADMSG, "unexpected answer from %s: no instance status", client_url(c));
            return ctl_fail(&e);
        }
        if (!status || strcmp(status, now) != 0) {
            print_status_line(o, inst);
            free(status);
            status = xstrdup(now);
        }
        if (ended(now)) {
            /* its last events, the process's exit among them once it is recorded */
            bool exited = !json_is_null(json_object_get(inst, "exit_code"));
            if (watch_events(o, c, &a, id, exited ? NULL : WATCH_EXIT_WAIT, &last, &e) < 0)
                return ctl_fail(&e);
            return strcmp(now, "completed") == 0 ? CTL_EXIT_OK : CTL_EXIT_FAILURE;
        }
        if (watch_events(o, c, &a, id, wait, &last, &e) < 0)
            return ctl_fail(&e);
    }
}
