/* runtara-ctl tenants metrics TENANT: GET /api/v1/tenants/{tenant}/metrics as a table, one row
 * per hour or day. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "../base/alloc.h"
#include "../base/id.h"
#include "../base/strbuf.h"
#include "client.h"
#include "ctl.h"
#include "output.h"

static const char usage[] =
    "usage: runtara-ctl tenants metrics TENANT [--start TIME] [--end TIME]\n"
    "                                          [--granularity hour|day] [--json]\n"
    "\n"
    "What TENANT's instances came to, one row per hour or day (UTC) from the one holding\n"
    "--start (default a day before --end) to the one holding --end (default now): how many\n"
    "ended, how (completed, failed, cancelled), their durations and peak memory. Times are\n"
    "RFC 3339 UTC, e.g. 2026-11-23T10:00:00Z. A tenant key may only ask for its own tenant.\n";

enum {
    ARG_START = CTL_ARG_PRIVATE,
    ARG_END,
    ARG_GRANULARITY,
};

typedef struct MetricsArgs {
    const char *start, *end, *granularity;
} MetricsArgs;

static int time_arg(const char *option, const char *arg, const char **ret)
{
    usec_t t;

    if (parse_rfc3339(arg, &t) < 0)
        return ctl_usage_error("tenants metrics: invalid %s \"%s\": expected RFC 3339 UTC, e.g. "
                               "2026-11-23T10:00:00Z",
                               option, arg);
    *ret = arg;
    return 0;
}

static int metrics_option(int c, const char *arg, void *userdata)
{
    MetricsArgs *a = userdata;

    switch (c) {
    case ARG_START:
        return time_arg("--start", arg, &a->start);
    case ARG_END:
        return time_arg("--end", arg, &a->end);
    case ARG_GRANULARITY:
        if (strcmp(arg, "hour") != 0 && strcmp(arg, "day") != 0)
            return ctl_usage_error("tenants metrics: invalid --granularity \"%s\": expected hour "
                                   "or day",
                                   arg);
        a->granularity = arg;
        return 0;
    default:
        return ctl_usage_error("tenants metrics: unexpected option");
    }
}

/* A number of the bucket for a cell: "-" for null (a figure over nothing). */
static char *cell_number(const json_t *b, const char *key, const char *fmt)
{
    const json_t *v = json_object_get(b, key);
    return json_is_number(v) ? xasprintf(fmt, json_number_value(v)) : xstrdup("-");
}

static char *cell_bytes(const json_t *b, const char *key)
{
    const json_t *v = json_object_get(b, key);
    char buf[FORMAT_BYTES_MAX];
    return json_is_integer(v) && json_integer_value(v) >= 0
               ? xstrdup(format_bytes((uint64_t)json_integer_value(v), buf))
               : xstrdup("-");
}

static void print_metrics(const json_t *buckets)
{
    static const char *const headings[] = {"TIME",      "ENDED",   "COMPLETED", "FAILED",
                                           "CANCELLED", "OK %",    "AVG MS",    "MIN MS",
                                           "MAX MS",    "AVG MEM", "MAX MEM"};
    _cleanup_(table_freep) Table *t = table_new(ELEMENTSOF(headings), headings);
    size_t i;
    json_t *b;

    json_array_foreach(buckets, i, b)
    {
        char when[40];
        char *cells[ELEMENTSOF(headings)] = {
            xstrdup(format_time(json_string_value(json_object_get(b, "time")), when, sizeof when)),
            cell_number(b, "invocation_count", "%.0f"),
            cell_number(b, "success_count", "%.0f"),
            cell_number(b, "failure_count", "%.0f"),
            cell_number(b, "cancelled_count", "%.0f"),
            cell_number(b, "success_rate_percent", "%.1f"),
            cell_number(b, "avg_duration_ms", "%.1f"),
            cell_number(b, "min_duration_ms", "%.1f"),
            cell_number(b, "max_duration_ms", "%.1f"),
            cell_bytes(b, "avg_memory_bytes"),
            cell_bytes(b, "max_memory_bytes"),
        };
        table_add_row(t, (const char *const *)cells);
        for (size_t k = 0; k < ELEMENTSOF(cells); k++)
            free(cells[k]);
    }
    table_print(t, stdout);
}

static int tenants_metrics(int argc, char **argv, CtlOptions *o)
{
    static const struct option longopts[] = {
        CTL_COMMON_OPTIONS,
        {"start", required_argument, NULL, ARG_START},
        {"end", required_argument, NULL, ARG_END},
        {"granularity", required_argument, NULL, ARG_GRANULARITY},
        {},
    };
    const CtlParser p = {"tenants metrics", "", longopts, metrics_option, usage};
    _cleanup_(client_freep) Client *c = NULL;
    _cleanup_(json_decrefp) json_t *doc = NULL;
    MetricsArgs a = {};
    Error e = ERROR_INIT;
    int first;

    int r = ctl_parse_options(&p, argc, argv, &a, o, &first);
    if (r >= 0 && first >= argc)
        r = ctl_usage_error("tenants metrics: missing the TENANT");
    else if (r >= 0 && first + 1 < argc)
        r = ctl_usage_error("tenants metrics: unexpected argument \"%s\"", argv[first + 1]);
    else if (r >= 0 && !id_is_valid(argv[first]))
        r = ctl_usage_error("tenants metrics: invalid tenant \"%s\": %s", argv[first], ID_RULE);
    if (r >= 0)
        r = ctl_client(o, &c);
    if (r < 0)
        return ctl_parse_exit(r);

    StrBuf q = STRBUF_INIT;
    client_query_add(c, &q, "start", a.start);
    client_query_add(c, &q, "end", a.end);
    client_query_add(c, &q, "granularity", a.granularity);
    _cleanup_free_ char *path =
        xasprintf("/api/v1/tenants/%s/metrics%s", argv[first], q.buf ? q.buf : "");
    strbuf_done(&q);
    if (client_call(c, "GET", path, NULL, &doc, &e) < 0)
        return ctl_fail(&e);
    const json_t *buckets = json_object_get(doc, "buckets");
    if (!json_is_array(buckets)) {
        error_set(&e, -EBADMSG, "unexpected answer from %s: no \"buckets\" list", client_url(c));
        return ctl_fail(&e);
    }
    if (o->json)
        (void)output_json(doc);
    else
        print_metrics(buckets);
    return CTL_EXIT_OK;
}

int ctl_tenants(int argc, char **argv, CtlOptions *o)
{
    if (argc < 2)
        return ctl_parse_exit(ctl_usage_error("tenants: missing subcommand: metrics"));
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage, stdout);
        return CTL_EXIT_OK;
    }
    if (strcmp(argv[1], "metrics") == 0)
        return tenants_metrics(argc - 1, argv + 1, o);
    return ctl_parse_exit(ctl_usage_error("tenants: unknown subcommand \"%s\"", argv[1]));
}
