/* Tables, records, sizes and the progress bar for runtara-ctl. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../base/alloc.h"
#include "../base/strbuf.h"
#include "output.h"

#define FIELD_WIDTH 13 /* "description: " — the longest key of an image, plus the colon */
#define COLUMN_GAP 3
#define BAR_WIDTH 24

struct Table {
    size_t ncols;
    size_t nrows; /* rows in cells, the headings included */
    size_t cap;
    char **cells; /* nrows * ncols strings, owned */
};

/* A copy of s with control characters replaced, so it cannot move the cursor or change colours. */
static char *sanitized(const char *s)
{
    char *p = xstrdup(s ? s : "-");
    for (char *q = p; *q; q++)
        if ((unsigned char)*q < 0x20 || *q == 0x7f)
            *q = '?';
    return p;
}

/* Like sanitized(), keeping the line breaks of a multi-line text. */
static char *sanitized_keep_newlines(const char *s)
{
    char *p = xstrdup(s);
    for (char *q = p; *q; q++)
        if (((unsigned char)*q < 0x20 && *q != '\n') || *q == 0x7f)
            *q = '?';
    return p;
}

/* Display width of UTF-8 text: one column per code point (no East Asian wide forms here). */
static size_t text_width(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            n++;
    return n;
}

static void table_append(Table *t, const char *const *cells)
{
    if (t->nrows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->cells = xrealloc(t->cells, t->cap * t->ncols * sizeof *t->cells);
    }
    for (size_t i = 0; i < t->ncols; i++)
        t->cells[t->nrows * t->ncols + i] = sanitized(cells[i]);
    t->nrows++;
}

Table *table_new(size_t ncols, const char *const *headings)
{
    Table *t = xcalloc(1, sizeof *t);
    t->ncols = ncols;
    table_append(t, headings);
    return t;
}

void table_add_row(Table *t, const char *const *cells)
{
    table_append(t, cells);
}

size_t table_rows(const Table *t)
{
    return t->nrows - 1;
}

void table_print(const Table *t, FILE *f)
{
    _cleanup_free_ size_t *width = xcalloc(t->ncols, sizeof *width);

    for (size_t r = 0; r < t->nrows; r++)
        for (size_t i = 0; i < t->ncols; i++)
            width[i] = MAX(width[i], text_width(t->cells[r * t->ncols + i]));
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t i = 0; i < t->ncols; i++) {
            const char *cell = t->cells[r * t->ncols + i];
            if (i + 1 == t->ncols) {
                fprintf(f, "%s\n", cell);
                break;
            }
            fprintf(f, "%s%*s", cell, (int)(width[i] - text_width(cell) + COLUMN_GAP), "");
        }
    }
}

Table *table_free(Table *t)
{
    if (!t)
        return NULL;
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
    return NULL;
}

char *format_bytes(uint64_t n, char buf[static FORMAT_BYTES_MAX])
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)n;
    size_t u = 0;

    if (n < 1024) {
        snprintf(buf, FORMAT_BYTES_MAX, "%llu B", (unsigned long long)n);
        return buf;
    }
    for (v /= 1024; v >= 1024 && u + 1 < ELEMENTSOF(units); u++)
        v /= 1024;
    snprintf(buf, FORMAT_BYTES_MAX, "%.1f %s", v, units[u]);
    return buf;
}

char *format_time(const char *rfc3339, char *buf, size_t n)
{
    /* "2026-11-23T10:00:00.123Z": keep the first 19 characters and the zone. */
    size_t len = rfc3339 ? strlen(rfc3339) : 0;
    if (len > 20 && rfc3339[19] == '.' && rfc3339[len - 1] == 'Z')
        snprintf(buf, n, "%.19sZ", rfc3339);
    else
        snprintf(buf, n, "%s", rfc3339 ? rfc3339 : "-");
    return buf;
}

void output_field(const char *key, const char *value)
{
    _cleanup_free_ char *v = sanitized(value);
    printf("%s:%*s%s\n", key, (int)MAX(1, FIELD_WIDTH - (int)strlen(key) - 1), "", v);
}

void output_fieldf(const char *key, const char *fmt, ...)
{
    _cleanup_free_ char *v = NULL;
    va_list ap;

    va_start(ap, fmt);
    if (vasprintf(&v, fmt, ap) < 0)
        abort(); /* out of memory, as in xmalloc */
    va_end(ap);
    output_field(key, v);
}

void output_field_json(const char *key, const json_t *value)
{
    int width = MAX(1, FIELD_WIDTH - (int)strlen(key) - 1);
    _cleanup_free_ char *text =
        value ? json_dumps(value, JSON_INDENT(2) | JSON_ENCODE_ANY | JSON_SORT_KEYS) : NULL;

    if (!text) {
        output_field(key, NULL);
        return;
    }
    _cleanup_free_ char *clean = sanitized_keep_newlines(text);
    printf("%s:%*s", key, width, "");
    for (char *line = clean, *nl; line; line = nl) {
        nl = strchr(line, '\n');
        if (nl)
            *nl++ = '\0';
        printf("%*s%s\n", line == clean ? 0 : (int)strlen(key) + 1 + width, "", line);
    }
}

char *format_json_brief(const json_t *v, size_t max)
{
    static const char ellipsis[] = "...";
    size_t keep = max > strlen(ellipsis) ? max - strlen(ellipsis) : 0, chars = 0;

    if (!v || json_is_null(v))
        return xstrdup("-");
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text)
        abort(); /* out of memory, as in xmalloc */
    if (text_width(text) <= max)
        return text;
    char *p = text;
    for (; *p; p++)
        if (((unsigned char)*p & 0xc0) != 0x80 && chars++ == keep)
            break;
    *p = '\0';
    char *cut = xasprintf("%s%s", text, ellipsis);
    free(text);
    return cut;
}

int output_json(const json_t *doc)
{
    if (json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_ENCODE_ANY) < 0 || putchar('\n') == EOF)
        return -EIO;
    return 0;
}

int output_json_line(const json_t *doc)
{
    if (json_dumpf(doc, stdout, JSON_COMPACT | JSON_ENCODE_ANY) < 0 || putchar('\n') == EOF ||
        fflush(stdout) == EOF)
        return -EIO;
    return 0;
}

void output_progress(uint64_t done, uint64_t total, usec_t elapsed, bool final)
{
    char sdone[FORMAT_BYTES_MAX], stotal[FORMAT_BYTES_MAX], srate[FORMAT_BYTES_MAX];
    unsigned pct = total ? (unsigned)(MIN(done, total) * 100 / total) : 100;
    uint64_t rate = elapsed ? (uint64_t)((double)done * USEC_PER_SEC / (double)elapsed) : 0;
    char bar[BAR_WIDTH + 1];
    size_t fill = (size_t)pct * BAR_WIDTH / 100;

    memset(bar, '#', fill);
    memset(bar + fill, '.', BAR_WIDTH - fill);
    bar[BAR_WIDTH] = '\0';
    fprintf(stderr, "\r[%s] %3u%%  %s / %s  %s/s\033[K%s", bar, pct, format_bytes(done, sdone),
            format_bytes(total, stotal), format_bytes(rate, srate), final ? "\n" : "");
    fflush(stderr);
}

void output_field_pairs(const char *key, const json_t *obj)
{
    StrBuf b = STRBUF_INIT;
    const char *k;
    json_t *v;

    json_object_foreach((json_t *)obj, k, v)
        strbuf_printf(&b, "%s%s=%s", b.len ? ", " : "", k, json_string_value(v) ?: "");
    output_field(key, b.len ? b.buf : NULL);
    strbuf_done(&b);
}
