/* Human-readable output of runtara-ctl: aligned tables, "key: value" records, sizes, times, JSON
 * documents and the upload progress bar. Text that came from the server is printed with control
 * characters replaced by '?', so a hostile name cannot drive the terminal. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "../base/macro.h"
#include "../base/time-util.h"

typedef struct Table Table;

/** A table with ncols columns titled by headings (copied). Never returns NULL. */
Table *table_new(size_t ncols, const char *const *headings);
/** Append a row of exactly ncols cells (copied; NULL prints as "-"). */
void table_add_row(Table *t, const char *const *cells);
/** Number of rows added. */
size_t table_rows(const Table *t);
/** Print the headings and the rows to f, columns padded to their widest cell and separated by
 *  three spaces; the last column is not padded. */
void table_print(const Table *t, FILE *f);
/** Free the table; NULL-safe; returns NULL. */
Table *table_free(Table *t);

DEFINE_TRIVIAL_CLEANUP_FUNC(Table *, table_free);

#define FORMAT_BYTES_MAX 32

/** n bytes for humans: "512 B", "4.9 KiB", "1.2 GiB". Returns buf. */
char *format_bytes(uint64_t n, char buf[static FORMAT_BYTES_MAX]);
/** An RFC 3339 time from the server shortened to seconds for a table ("2026-11-23 10:00:00Z").
 *  Anything unexpected is copied as is (truncated to n - 1 bytes). Returns buf. */
char *format_time(const char *rfc3339, char *buf, size_t n);

/** Print one "key: value" line to stdout with the values aligned at a fixed column. A NULL value
 *  prints as "-". */
void output_field(const char *key, const char *value);
/** Like output_field() with a printf format for the value. */
void output_fieldf(const char *key, const char *fmt, ...) _printf_(2, 3);

/** Print one "key: value" line for a JSON value: a scalar on the line; an object or array
 *  indented by two spaces, its first line on the key's line and the others aligned under it.
 *  NULL prints as "-". */
void output_field_json(const char *key, const json_t *value);

/** v as compact JSON on one line for a table cell: when longer than max characters (code points),
 *  cut and ended with "..." to be exactly max. NULL or JSON null gives "-". The caller frees the
 *  result. */
char *format_json_brief(const json_t *v, size_t max);

/** Print doc to stdout as one indented JSON document followed by a newline. Returns 0 or -EIO. */
int output_json(const json_t *doc);
/** Print doc to stdout as JSON on one line, and flush (a stream of documents, one per line).
 *  Returns 0 or -EIO. */
int output_json_line(const json_t *doc);

/** Draw the upload progress bar on stderr ("\r" then percentage, bytes, rate); with final set,
 *  draw it once more and end the line. Only call when stderr is a terminal. */
void output_progress(uint64_t done, uint64_t total, usec_t elapsed, bool final);

/** A key: value line whose value lists a JSON object of strings as "k=v, k=v" ("-" if empty). */
void output_field_pairs(const char *key, const json_t *obj);
