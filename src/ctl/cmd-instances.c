/* runtara-ctl instances start|list|get|wait|stop|resume|signal|send: the instances of the
 * management API (/api/v1/instances), and the options and paging every instance subcommand shares
 * (cmd-instances.h). Waiting is the server's long-poll (GET ?wait=, at most 60 s a request) in a
 * loop until the instance leaves pending and running. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/alloc.h"
#include "../base/id.h"
#include "../base/parse-util.h"
#include "../base/strbuf.h"
#include "client.h"
#include "cmd-instances.h"
#include "output.h"

#define TIMEOUT_MAX 31536000              /* the server's limit of timeout_secs */
#define WAIT_DEFAULT (300 * USEC_PER_SEC) /* --wait and wait without a limit given */
#define WAIT_CHUNK (60 * USEC_PER_SEC)    /* the server holds a GET ?wait= at most this long */
#define WAIT_RETRY (250 * USEC_PER_MSEC)  /* pause after an early unsettled answer */
#define INPUT_FILE_MAX ((off_t)64 << 20)  /* the server's largest JSON body */
#define GRACE_MAX 3600
#define WAIT_KEY_MAX 128

const char instances_usage[] =
    "usage: runtara-ctl instances start (--image-id ID | --image NAME) [--tenant T]\n"
    "                 [--id INSTANCE_ID] [--input JSON | --input-file PATH] [--env KEY=VALUE]...\n"
    "                 [--timeout SECS] [--wait [SECS]]\n"
    "       runtara-ctl instances list [--tenant T] [--status S] [--image-id ID]\n"
    "                 [--created-after TIME] [--created-before TIME] [--finished-after TIME]\n"
    "                 [--finished-before TIME] [--limit N] [--all]\n"
    "       runtara-ctl instances get INSTANCE [--wait [SECS]]\n"
    "       runtara-ctl instances wait INSTANCE [--timeout SECS]\n"
    "       runtara-ctl instances stop INSTANCE [--grace SECS]\n"
    "       runtara-ctl instances resume INSTANCE\n"
    "       runtara-ctl instances signal INSTANCE cancel|pause|resume [--payload JSON]\n"
    "       runtara-ctl instances send INSTANCE WAIT_KEY [--payload JSON]\n"
    "       runtara-ctl instances events INSTANCE [--type T] [--subtype S] [--limit N] [--all]\n"
    "       runtara-ctl instances checkpoints INSTANCE [--limit N] [--all]\n"
    "       runtara-ctl instances checkpoint INSTANCE KEY [-o FILE]\n"
    "       runtara-ctl instances logs INSTANCE [--tail BYTES]\n"
    "       runtara-ctl instances watch INSTANCE\n"
    "\n"
    "INSTANCE is an instance id, or TENANT/ID: ids are per tenant, and with an admin key an id\n"
    "that more than one tenant uses needs its tenant.\n"
    "start --wait, get --wait and wait long-poll until the instance leaves pending and running,\n"
    "for at most SECS seconds (default 300, 0 for no limit); start --wait and wait then exit 0\n"
    "only if it completed. --input-file - reads standard input. TIME is RFC 3339 UTC, e.g.\n"
    "2026-11-23T10:00:00Z. checkpoint and logs print raw bytes, also with --json.\n"
    "watch prints the status, then each event as it is recorded, until the instance ends\n"
    "(exit 0 if it completed); with --json one document per line.\n"
    "Every command also takes --url URL, --api-key KEY and --json.\n";

static const char *const statuses[] = {"pending",   "running", "suspended",
                                       "completed", "failed",  "cancelled"};

/* ---- shared: options, positionals, paging --------------------------------------------------- */

const char *inst_str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

void inst_args_done(InstArgs *a)
{
    free(a->ref);
    json_decref(a->input);
    json_decref(a->env);
    json_decref(a->payload);
}

/* JSON from the command line: any value, duplicate keys refused as the server does. */
static int parse_json_arg(const InstArgs *a, const char *option, const char *text, json_t **ret)
{
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);

    if (!v)
        return ctl_usage_error("%s: %s is not valid JSON: %s (line %d, column %d)", a->cmd, option,
                               err.text, err.line, err.column);
    json_decref(*ret);
    *ret = v;
    return 0;
}

static int parse_secs(const InstArgs *a, const char *option, const char *arg, uint64_t min,
                      uint64_t max, uint64_t *ret)
{
    if (parse_uint64(arg, ret) < 0 || *ret < min || *ret > max)
        return ctl_usage_error("%s: invalid %s \"%s\": must be a whole number of seconds between "
                               "%llu and %llu",
                               a->cmd, option, arg, (unsigned long long)min,
                               (unsigned long long)max);
    return 0;
}

static int parse_time_arg(const InstArgs *a, const char *option, const char *arg, const char **ret)
{
    usec_t t;

    if (parse_rfc3339(arg, &t) < 0)
        return ctl_usage_error("%s: invalid %s \"%s\": expected RFC 3339 UTC, e.g. "
                               "2026-11-23T10:00:00Z",
                               a->cmd, option, arg);
    *ret = arg;
    return 0;
}

/* --wait takes an optional value: "--wait=SECS", or "--wait SECS" when the next argument is all
 * digits (consumed here the way getopt consumes a required value), so that "get --wait 30 ID" and
 * "get ID --wait" both work while an id such as "3f2a-..." is never taken for SECS. */
static int wait_option(InstArgs *a, const char *arg)
{
    uint64_t secs = WAIT_DEFAULT / USEC_PER_SEC;
    const char *next = optind < a->argc ? a->argv[optind] : NULL;

    if (!arg && next && *next && strspn(next, "0123456789") == strlen(next)) {
        arg = next;
        optind++;
    }
    if (arg && parse_secs(a, "--wait", arg, 0, TIMEOUT_MAX, &secs) < 0)
        return -EINVAL;
    a->wait = true;
    a->wait_for = secs * USEC_PER_SEC;
    return 0;
}

static int env_option(InstArgs *a, const char *arg)
{
    const char *eq = strchr(arg, '=');

    if (!eq || eq == arg)
        return ctl_usage_error("%s: invalid --env \"%s\": expected KEY=VALUE", a->cmd, arg);
    if (!a->env)
        a->env = json_object();
    _cleanup_free_ char *key = xstrndup(arg, (size_t)(eq - arg));
    json_t *value = json_string(eq + 1);
    /* json_object_set_new() takes value, also when it refuses the key */
    if (!value || json_object_set_new(a->env, key, value) < 0)
        return ctl_usage_error("%s: invalid --env \"%s\": it is not UTF-8", a->cmd, arg);
    return 0;
}

static int inst_option(int c, const char *arg, void *userdata)
{
    InstArgs *a = userdata;
    uint64_t n;

    switch (c) {
    case ARG_IMAGE_ID:
        if (!id_is_valid(arg))
            return ctl_usage_error("%s: invalid image id \"%s\": %s", a->cmd, arg, ID_RULE);
        a->image_id = arg;
        return 0;
    case ARG_IMAGE:
        if (!*arg)
            return ctl_usage_error("%s: --image needs an image name", a->cmd);
        a->image = arg;
        return 0;
    case 't':
        a->tenant = arg;
        return 0;
    case ARG_ID:
        if (!id_is_valid(arg))
            return ctl_usage_error("%s: invalid instance id \"%s\": %s", a->cmd, arg, ID_RULE);
        a->id = arg;
        return 0;
    case ARG_INPUT:
        return parse_json_arg(a, "--input", arg, &a->input);
    case ARG_INPUT_FILE:
        a->input_file = arg;
        return 0;
    case ARG_ENV:
        return env_option(a, arg);
    case ARG_TIMEOUT:
        if (parse_secs(a, "--timeout", arg, 1, TIMEOUT_MAX, &n) < 0)
            return -EINVAL;
        a->timeout = (unsigned)n;
        return 0;
    case ARG_WAIT_TIMEOUT:
        if (parse_secs(a, "--timeout", arg, 0, TIMEOUT_MAX, &n) < 0)
            return -EINVAL;
        a->wait = true;
        a->wait_for = n * USEC_PER_SEC;
        return 0;
    case ARG_WAIT:
        return wait_option(a, arg);
    case ARG_STATUS:
        for (size_t i = 0; i < ELEMENTSOF(statuses); i++)
            if (strcmp(arg, statuses[i]) == 0) {
                a->status = arg;
                return 0;
            }
        return ctl_usage_error("%s: invalid status \"%s\": expected pending, running, suspended, "
                               "completed, failed or cancelled",
                               a->cmd, arg);
    case ARG_CREATED_AFTER:
        return parse_time_arg(a, "--created-after", arg, &a->created_after);
    case ARG_CREATED_BEFORE:
        return parse_time_arg(a, "--created-before", arg, &a->created_before);
    case ARG_FINISHED_AFTER:
        return parse_time_arg(a, "--finished-after", arg, &a->finished_after);
    case ARG_FINISHED_BEFORE:
        return parse_time_arg(a, "--finished-before", arg, &a->finished_before);
    case ARG_LIMIT:
        if (parse_uint64(arg, &n) < 0 || n < 1 || n > INST_LIMIT_MAX)
            return ctl_usage_error("%s: invalid limit \"%s\": must be between 1 and %d", a->cmd,
                                   arg, INST_LIMIT_MAX);
        a->limit = arg;
        return 0;
    case 'a':
        a->all = true;
        return 0;
    case ARG_GRACE:
        if (parse_secs(a, "--grace", arg, 0, GRACE_MAX, &n) < 0)
            return -EINVAL;
        a->grace = (int)n;
        return 0;
    case ARG_PAYLOAD:
        return parse_json_arg(a, "--payload", arg, &a->payload);
    case ARG_TYPE:
        a->type = arg;
        return 0;
    case ARG_SUBTYPE:
        a->subtype = arg;
        return 0;
    case 'o':
        if (!*arg)
            return ctl_usage_error("%s: -o needs a FILE", a->cmd);
        a->output = arg;
        return 0;
    case ARG_TAIL:
        if (parse_size(arg, &n) < 0 || n < 1)
            return ctl_usage_error("%s: invalid --tail \"%s\": a number of bytes such as 4096 or "
                                   "64K",
                                   a->cmd, arg);
        snprintf(a->tail_buf, sizeof a->tail_buf, "%llu", (unsigned long long)n);
        a->tail = a->tail_buf;
        return 0;
    default:
        return ctl_usage_error("%s: unexpected option", a->cmd);
    }
}

char *inst_path(Client *c, const InstArgs *a, const char *id, const char *suffix, const char *query)
{
    StrBuf q = STRBUF_INIT;
    if (query)
        strbuf_puts(&q, query);
    client_query_add(c, &q, "tenant_id", a->tenant);
    char *path = xasprintf("/api/v1/instances/%s%s%s", id, suffix, q.buf ? q.buf : "");
    strbuf_done(&q);
    return path;
}

int inst_parse(InstArgs *a, const char *shortopts, const struct option *longopts, int argc,
               char **argv, CtlOptions *o, size_t n, const char *const *names, const char **pos)
{
    const CtlParser p = {a->cmd, shortopts, longopts, inst_option, instances_usage};
    int first;

    a->argc = argc;
    a->argv = argv;
    int r = ctl_parse_options(&p, argc, argv, a, o, &first);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++) {
        if (first + (int)i >= argc)
            return ctl_usage_error("%s: missing the %s", a->cmd, names[i]);
        pos[i] = argv[first + (int)i];
        if (strcmp(names[i], "INSTANCE_ID") != 0)
            continue;
        const char *slash = strchr(pos[i], '/');
        if (slash) { /* TENANT/ID, as the daemon's messages name an instance */
            free(a->ref);
            a->ref = xstrdup(pos[i]);
            a->ref[slash - pos[i]] = '\0';
            if (!id_is_valid(a->ref))
                return ctl_usage_error("%s: invalid tenant \"%s\" in \"%s\": %s", a->cmd, a->ref,
                                       pos[i], ID_RULE);
            a->tenant = a->ref;
            pos[i] = a->ref + (slash - pos[i]) + 1;
        }
        if (!id_is_valid(pos[i]))
            return ctl_usage_error("%s: invalid instance id \"%s\": %s", a->cmd, pos[i], ID_RULE);
    }
    if (first + (int)n < argc)
        return ctl_usage_error("%s: unexpected argument \"%s\"", a->cmd, argv[first + (int)n]);
    return 0;
}

/* One page: its items are appended to items; *ret_next is the next cursor or NULL. */
static int fetch_page(Client *c, const char *base, const char *query, const char *field,
                      const char *cursor, json_t *items, char **ret_next, json_int_t *ret_total,
                      Error *e)
{
    _cleanup_(json_decrefp) json_t *page = NULL;
    StrBuf q = STRBUF_INIT;

    if (query)
        strbuf_puts(&q, query);
    client_query_add(c, &q, "cursor", cursor);
    _cleanup_free_ char *path = xasprintf("%s%s", base, q.buf ? q.buf : "");
    strbuf_done(&q);

    int r = client_call(c, "GET", path, NULL, &page, e);
    if (r < 0)
        return r;
    json_t *list = json_object_get(page, field);
    json_t *next = json_object_get(page, "next_cursor");
    if (!json_is_array(list) || !(json_is_null(next) || json_is_string(next)))
        return error_set(e, -EBADMSG, "unexpected answer from %s: no \"%s\" list", client_url(c),
                         field);
    json_array_extend(items, list);
    *ret_next = json_is_string(next) ? xstrdup(json_string_value(next)) : NULL;
    *ret_total = json_is_integer(json_object_get(page, "total"))
                     ? json_integer_value(json_object_get(page, "total"))
                     : -1;
    return 0;
}

int inst_fetch_pages(Client *c, const char *base, const char *query, const char *field, bool all,
                     json_t *items, char **ret_next, json_int_t *ret_total, Error *e)
{
    _cleanup_free_ char *cursor = NULL;
    json_int_t total = -1;

    for (bool first = true;; first = false) {
        char *next = NULL;
        json_int_t t = -1;
        int r = fetch_page(c, base, query, field, cursor, items, &next, &t, e);
        if (r < 0)
            return r;
        if (first)
            total = t;
        if (!next || !all) {
            *ret_next = next;
            *ret_total = total;
            return 0;
        }
        if (cursor && strcmp(cursor, next) == 0) {
            free(next);
            return error_set(e, -EBADMSG, "the server sent cursor \"%s\" twice", cursor);
        }
        free(cursor);
        cursor = next;
        if (json_array_size(items) >= INST_ITEMS_MAX)
            return error_set(e, -E2BIG, "more than %d %s: narrow the listing", INST_ITEMS_MAX,
                             field);
    }
}

/* ---- output --------------------------------------------------------------------------------- */

static void print_instance(const json_t *inst)
{
    json_t *exit_code = json_object_get(inst, "exit_code");
    json_t *timeout = json_object_get(inst, "timeout_secs");

    output_field("instance_id", inst_str(inst, "instance_id"));
    output_field("tenant_id", inst_str(inst, "tenant_id"));
    output_field("image_id", inst_str(inst, "image_id"));
    output_field("status", inst_str(inst, "status"));
    output_field("reason", inst_str(inst, "termination_reason"));
    if (json_is_integer(exit_code))
        output_fieldf("exit_code", "%lld", (long long)json_integer_value(exit_code));
    else
        output_field("exit_code", NULL);
    output_field("error", inst_str(inst, "error"));
    output_fieldf("attempt", "%lld",
                  (long long)json_integer_value(json_object_get(inst, "attempt")));
    output_field("checkpoint", inst_str(inst, "checkpoint_id"));
    if (json_is_integer(timeout))
        output_fieldf("timeout", "%lld s", (long long)json_integer_value(timeout));
    else
        output_field("timeout", NULL);
    output_field("created_at", inst_str(inst, "created_at"));
    output_field("started_at", inst_str(inst, "started_at"));
    output_field("finished_at", inst_str(inst, "finished_at"));
    output_field("heartbeat", inst_str(inst, "heartbeat_at"));
    output_field_pairs("env", json_object_get(inst, "env"));
    output_field_json("input", json_object_get(inst, "input"));
    output_field_json("output", json_object_get(inst, "output"));
}

static void show_instance(const CtlOptions *o, const json_t *inst)
{
    /* Errors writing stdout are reported once, by main(). */
    if (o->json)
        (void)output_json(inst);
    else
        print_instance(inst);
}

static void print_instance_table(const json_t *instances)
{
    static const char *const headings[] = {"INSTANCE ID", "TENANT",  "STATUS",  "REASON",
                                           "ATTEMPT",     "CREATED", "FINISHED"};
    _cleanup_(table_freep) Table *t = table_new(ELEMENTSOF(headings), headings);
    size_t i;
    json_t *inst;

    json_array_foreach(instances, i, inst)
    {
        char attempt[24], created[40], finished[40];
        snprintf(attempt, sizeof attempt, "%lld",
                 (long long)json_integer_value(json_object_get(inst, "attempt")));
        table_add_row(t,
                      (const char *const[]){
                          inst_str(inst, "instance_id"), inst_str(inst, "tenant_id"),
                          inst_str(inst, "status"), inst_str(inst, "termination_reason"), attempt,
                          format_time(inst_str(inst, "created_at"), created, sizeof created),
                          format_time(inst_str(inst, "finished_at"), finished, sizeof finished)});
    }
    table_print(t, stdout);
}

/* ---- waiting -------------------------------------------------------------------------------- */

static bool settled(const json_t *inst)
{
    const char *s = inst_str(inst, "status");
    return s && strcmp(s, "pending") != 0 && strcmp(s, "running") != 0;
}

/* Long-poll the instance until it leaves pending and running or limit passes (0: no limit).
 * *ret is the last answer, settled or not. */
static int wait_settled(Client *c, const InstArgs *a, const char *id, usec_t limit, json_t **ret,
                        Error *e)
{
    usec_t deadline = limit ? now_usec(CLOCK_MONOTONIC) + limit : USEC_INFINITY;

    for (;;) {
        usec_t asked = now_usec(CLOCK_MONOTONIC), now = asked;
        usec_t span = MIN(WAIT_CHUNK, deadline > now ? deadline - now : 0);
        _cleanup_free_ char *path = NULL;
        json_t *inst = NULL;

        char wait[40];
        snprintf(wait, sizeof wait, "?wait=%llums", (unsigned long long)(span / USEC_PER_MSEC));
        path = inst_path(c, a, id, "", span >= USEC_PER_MSEC ? wait : NULL);

        int r = client_call(c, "GET", path, NULL, &inst, e);
        if (r < 0)
            return r;
        if (!json_is_object(inst) || !inst_str(inst, "status")) {
            json_decref(inst);
            return error_set(e, -EBADMSG, "unexpected answer from %s: no instance status",
                             client_url(c));
        }
        now = now_usec(CLOCK_MONOTONIC);
        if (settled(inst) || now >= deadline) {
            *ret = inst;
            return 0;
        }
        json_decref(inst);
        /* An answer long before the time asked for (a server short of waiting slots) must not
         * turn this into a busy loop. */
        if (now - asked < WAIT_RETRY && span > WAIT_RETRY)
            (void)usleep((useconds_t)MIN(WAIT_RETRY, deadline - now));
    }
}

/* Print the instance a wait ended with; the exit status says whether it completed. */
static int wait_result(const CtlOptions *o, const json_t *inst, usec_t limit)
{
    const char *status = inst_str(inst, "status");

    show_instance(o, inst);
    if (!settled(inst))
        return ctl_failf("instance \"%s\" is still %s after %llu s", inst_str(inst, "instance_id"),
                         status, (unsigned long long)(limit / USEC_PER_SEC));
    if (strcmp(status, "completed") != 0)
        return ctl_failf("instance \"%s\" did not complete: it is %s (%s)",
                         inst_str(inst, "instance_id"), status,
                         inst_str(inst, "termination_reason") ?: "no reason");
    return CTL_EXIT_OK;
}

/* ---- start ---------------------------------------------------------------------------------- */

/* Read --input-file (or standard input for "-") as JSON. Returns 0; -EIO after a message when
 * the file cannot be read (exit 1); -EINVAL after a usage error when it is not JSON (exit 2). */
static int read_input_file(InstArgs *a)
{
    bool is_stdin = strcmp(a->input_file, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(a->input_file, "re");
    const char *problem = NULL;
    struct stat st;
    json_error_t err;

    if (!f) {
        ctl_failf("could not open input file \"%s\": %m", a->input_file);
        return -EIO;
    }
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode))
        problem = "it is a directory";
    else if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > INPUT_FILE_MAX)
        problem = "it is larger than 64 MiB";
    json_t *v = problem ? NULL : json_loadf(f, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
    if (!problem && ferror(f))
        problem = "read error";
    if (!is_stdin)
        fclose(f);
    if (problem) {
        json_decref(v);
        ctl_failf("cannot read input file \"%s\": %s", a->input_file, problem);
        return -EIO;
    }
    if (!v)
        return ctl_usage_error("%s: input file \"%s\" is not valid JSON: %s (line %d, column %d)",
                               a->cmd, a->input_file, err.text, err.line, err.column);
    a->input = v;
    return 0;
}

static json_t *start_body(const InstArgs *a)
{
    json_t *body = json_object();

    if (a->image_id)
        json_object_set_new(body, "image_id", json_string(a->image_id));
    if (a->image)
        json_object_set_new(body, "image", json_string(a->image));
    if (a->tenant)
        json_object_set_new(body, "tenant_id", json_string(a->tenant));
    if (a->id)
        json_object_set_new(body, "instance_id", json_string(a->id));
    if (a->input)
        json_object_set(body, "input", a->input);
    if (a->env)
        json_object_set(body, "env", a->env);
    if (a->timeout)
        json_object_set_new(body, "timeout_secs", json_integer(a->timeout));
    return body;
}

static int instances_start(int argc, char **argv, CtlOptions *o)
{
    static const struct option longopts[] = {
        CTL_COMMON_OPTIONS,
        {"image-id", required_argument, NULL, ARG_IMAGE_ID},
        {"image", required_argument, NULL, ARG_IMAGE},
        {"tenant", required_argument, NULL, 't'},
        {"id", required_argument, NULL, ARG_ID},
        {"input", required_argument, NULL, ARG_INPUT},
        {"input-file", required_argument, NULL, ARG_INPUT_FILE},
        {"env", required_argument, NULL, ARG_ENV},
        {"timeout", required_argument, NULL, ARG_TIMEOUT},
        {"wait", optional_argument, NULL, ARG_WAIT},
        {},
    };
    _cleanup_(inst_args_done) InstArgs a = INST_ARGS_INIT("instances start");
    _cleanup_(client_freep) Client *c = NULL;
    _cleanup_(json_decrefp) json_t *inst = NULL;
    Error e = ERROR_INIT;

    int r = inst_parse(&a, "t:", longopts, argc, argv, o, 0, NULL, NULL);
    if (r >= 0 && !!a.image_id == !!a.image)
        r = ctl_usage_error("instances start: give exactly one of --image-id and --image");
    else if (r >= 0 && a.input && a.input_file)
        r = ctl_usage_error("instances start: give --input or --input-file, not both");
    if (r >= 0)
        r = ctl_client(o, &c);
    if (r >= 0 && a.input_file)
        r = read_input_file(&a);
    if (r == -EIO)
        return CTL_EXIT_FAILURE;
    if (r < 0)
        return ctl_parse_exit(r);

    _cleanup_(json_decrefp) json_t *body = start_body(&a);
    if (client_call_json(c, "POST", "/api/v1/instances", body, &inst, &e) < 0)
        return ctl_fail(&e);
    if (!a.wait) {
        show_instance(o, inst);
        return CTL_EXIT_OK;
    }
    const char *id = inst_str(inst, "instance_id");
    if (!id || !id_is_valid(id))
        return ctl_failf("unexpected answer from %s: no instance id", client_url(c));

    _cleanup_(json_decrefp) json_t *final = NULL;
    a.tenant = inst_str(inst, "tenant_id"); /* the start's, whoever named it */
    if (wait_settled(c, &a, id, a.wait_for, &final, &e) < 0)
        return ctl_fail(&e);
    return wait_result(o, final, a.wait_for);
}

/* ---- list, get, wait ------------------------------------------------------------------------ */

static char *list_query(Client *c, const InstArgs *a)
{
    StrBuf q = STRBUF_INIT;

    client_query_add(c, &q, "tenant_id", a->tenant);
    client_query_add(c, &q, "status", a->status);
    client_query_add(c, &q, "image_id", a->image_id);
    client_query_add(c, &q, "created_after", a->created_after);
    client_query_add(c, &q, "created_before", a->created_before);
    client_query_add(c, &q, "finished_after", a->finished_after);
    client_query_add(c, &q, "finished_before", a->finished_before);
    client_query_add(c, &q, "limit", a->limit);
    return q.buf; /* NULL when empty */
}

static int instances_list(int argc, char **argv, CtlOptions *o)
{
    static const struct option longopts[] = {
        CTL_COMMON_OPTIONS,
        {"tenant", required_argument, NULL, 't'},
        {"status", required_argument, NULL, ARG_STATUS},
        {"image-id", required_argument, NULL, ARG_IMAGE_ID},
        {"created-after", required_argument, NULL, ARG_CREATED_AFTER},
        {"created-before", required_argument, NULL, ARG_CREATED_BEFORE},
        {"finished-after", required_argument, NULL, ARG_FINISHED_AFTER},
        {"finished-before", required_argument, NULL, ARG_FINISHED_BEFORE},
        {"limit", required_argument, NULL, ARG_LIMIT},
        {"all", no_argument, NULL, 'a'},
        {},
    };
    _cleanup_(inst_args_done) InstArgs a = INST_ARGS_INIT("instances list");
    _cleanup_(client_freep) Client *c = NULL;
    _cleanup_(json_decrefp) json_t *all = json_array();
    _cleanup_free_ char *next = NULL, *query = NULL;
    json_int_t total = -1;
    Error e = ERROR_INIT;

    int r = inst_parse(&a, "t:a", longopts, argc, argv, o, 0, NULL, NULL);
    if (r >= 0)
        r = ctl_client(o, &c);
    if (r < 0)
        return ctl_parse_exit(r);

    query = list_query(c, &a);
    if (inst_fetch_pages(c, "/api/v1/instances", query, "instances", a.all, all, &next, &total,
                         &e) < 0)
        return ctl_fail(&e);
    size_t shown = json_array_size(all);
    if (o->json) {
        _cleanup_(json_decrefp) json_t *doc =
            json_pack("{s:O, s:s?, s:I}", "instances", all, "next_cursor", next, "total",
                      total >= 0 ? total : (json_int_t)shown);
        (void)output_json(doc);
        return CTL_EXIT_OK;
    }
    if (shown == 0) {
        fputs("no instances found\n", stderr);
        return CTL_EXIT_OK;
    }
    print_instance_table(all);
    if (total < 0)
        total = (json_int_t)shown;
    if (next)
        fprintf(stderr, "note: %zu of %lld instances shown; use --all to list them all\n", shown,
                (long long)total);
    else
        fprintf(stderr, "total: %lld instance%s\n", (long long)total, total == 1 ? "" : "s");
    return CTL_EXIT_OK;
}

static int instances_get(int argc, char **argv, CtlOptions *o)
{
    static const struct option longopts[] = {
        CTL_COMMON_OPTIONS,
        {"wait", optional_argument, NULL, ARG_WAIT},
        {},
    };
    static const char *const names[] = {"INSTANCE_ID"};
    _cleanup_(inst_args_done) InstArgs a = INST_ARGS_INIT("instances get");
    _cleanup_(client_freep) Client *c = NULL;
    _cleanup_(json_decrefp) json_t *inst = NULL;
    const char *id = NULL;
    Error e = ERROR_INIT;

    int r = inst_parse(&a, "", longopts, argc, argv, o, 1, names, &id);
    if (r >= 0)
        r = ctl_client(o, &c);
    if (r < 0)
        return ctl_parse_exit(r);

    if (a.wait)
        r = wait_settled(c, &a, id, a.wait_for, &inst, &e);
    else {
        _cleanup_free_ char *path = inst_path(c, &a, id, "", NULL);
        r = client_call(c, "GET", path, NULL, &inst, &e);
    }
    if (r < 0)
        return ctl_fail(&e);
    show_instance(o, inst);
    return CTL_EXIT_OK;
}

static int instances_wait(int argc, char **argv, CtlOptions *o)
{
    static const struct option longopts[] = {
        CTL_COMMON_OPTIONS,
        {"timeout", required_argument, NULL, ARG_WAIT_TIMEOUT},
        {},
    };
    static const char *const names[] = {"INSTANCE_ID"};
    _cleanup_(inst_args_done) InstArgs a = INST_ARGS_INIT("instances wait");
    _cleanup_(client_freep) Client *c = NULL;
    _cleanup_(json_decrefp) json_t *inst = NULL;
    const char *id = NULL;
    Error e = ERROR_INIT;

    int r = inst_parse(&a, "", longopts, argc, argv, o, 1, names, &id);
    if (r >= 0)
        r = ctl_client(o, &c);
    if (r < 0)
        return ctl_parse_exit(r);
    if (!a.wait)
        a.wait_for = WAIT_DEFAULT;

    if (wait_settled(c, &a, id, a.wait_for, &inst, &e) < 0)
        return ctl_fail(&e);
    return wait_result(o, inst, a.wait_for);
}

/* ---- stop, resume, signal, send ------------------------------------------------------------- */

/* POST an operation on the instance and report what the server accepted (202 + the instance). */
static int operate(const CtlOptions *o, Client *c, const InstArgs *a, const char *id,
                   const char *op, const json_t *body, const char *done)
{
    _cleanup_(json_decrefp) json_t *inst = NULL;
    _cleanup_free_ char *suffix = xasprintf("/%s", op);
    _cleanup_free_ char *path = inst_path(c, a, id, suffix, NULL);
    Error e = ERROR_INIT;

    if (client_call_json(c, "POST", path, body, &inst, &e) < 0)
        return ctl_fail(&e);
    if (o->json)
        (void)output_json(inst);
    else
        printf("%s instance \"%s\" (status: %s)\n", done, id, inst_str(inst, "status") ?: "-");
    return CTL_EXIT_OK;
}

static int instances_stop(int argc, char **argv, CtlOptions *o)
{
    static const struct option longopts[] = {
        CTL_COMMON_OPTIONS,
        {"grace", required_argument, NULL, ARG_GRACE},
        {},
    };
    static const char *const names[] = {"INSTANCE_ID"};
    _cleanup_(inst_args_done) InstArgs a = INST_ARGS_INIT("instances stop");
    _cleanup_(client_freep) Client *c = NULL;
    _cleanup_(json_decrefp) json_t *body = NULL;
    const char *id = NULL;

    int r = inst_parse(&a, "", longopts, argc, argv, o, 1, names, &id);
    if (r >= 0)
        r = ctl_client(o, &c);
    if (r < 0)
        return ctl_parse_exit(r);

    if (a.grace >= 0)
        body = json_pack("{s:i}", "grace_secs", a.grace);
    return operate(o, c, &a, id, "stop", body, "stop requested for");
}

static int instances_resume(int argc, char **argv, CtlOptions *o)
{
    static const struct option longopts[] = {CTL_COMMON_OPTIONS, {}};
    static const char *const names[] = {"INSTANCE_ID"};
    _cleanup_(inst_args_done) InstArgs a = INST_ARGS_INIT("instances resume");
    _cleanup_(client_freep) Client *c = NULL;
    const char *id = NULL;

    int r = inst_parse(&a, "", longopts, argc, argv, o, 1, names, &id);
    if (r >= 0)
        r = ctl_client(o, &c);
    if (r < 0)
        return ctl_parse_exit(r);
    return operate(o, c, &a, id, "resume", NULL, "resumed");
}

static int instances_signal(int argc, char **argv, CtlOptions *o)
{
    static const struct option longopts[] = {
        CTL_COMMON_OPTIONS,
        {"payload", required_argument, NULL, ARG_PAYLOAD},
        {},
    };
    static const char *const names[] = {"INSTANCE_ID", "signal type (cancel, pause or resume)"};
    _cleanup_(inst_args_done) InstArgs a = INST_ARGS_INIT("instances signal");
    _cleanup_(client_freep) Client *c = NULL;
    const char *pos[2] = {};

    int r = inst_parse(&a, "", longopts, argc, argv, o, 2, names, pos);
    if (r >= 0 && strcmp(pos[1], "cancel") != 0 && strcmp(pos[1], "pause") != 0 &&
        strcmp(pos[1], "resume") != 0)
        r = ctl_usage_error("instances signal: unknown signal type \"%s\": expected cancel, pause "
                            "or resume (a custom signal is sent with instances send)",
                            pos[1]);
    if (r >= 0)
        r = ctl_client(o, &c);
    if (r < 0)
        return ctl_parse_exit(r);

    _cleanup_(json_decrefp) json_t *body = json_pack("{s:s}", "type", pos[1]);
    if (a.payload)
        json_object_set(body, "payload", a.payload);
    _cleanup_free_ char *done = xasprintf("sent %s to", pos[1]);
    return operate(o, c, &a, pos[0], "signals", body, done);
}

static int instances_send(int argc, char **argv, CtlOptions *o)
{
    static const struct option longopts[] = {
        CTL_COMMON_OPTIONS,
        {"payload", required_argument, NULL, ARG_PAYLOAD},
        {},
    };
    static const char *const names[] = {"INSTANCE_ID", "WAIT_KEY"};
    _cleanup_(inst_args_done) InstArgs a = INST_ARGS_INIT("instances send");
    _cleanup_(client_freep) Client *c = NULL;
    const char *pos[2] = {};

    int r = inst_parse(&a, "", longopts, argc, argv, o, 2, names, pos);
    if (r >= 0 && (!*pos[1] || strlen(pos[1]) > WAIT_KEY_MAX))
        r = ctl_usage_error("instances send: invalid WAIT_KEY \"%s\": must be 1-%d characters",
                            pos[1], WAIT_KEY_MAX);
    if (r >= 0)
        r = ctl_client(o, &c);
    if (r < 0)
        return ctl_parse_exit(r);

    _cleanup_(json_decrefp) json_t *body = json_pack("{s:s}", "wait_key", pos[1]);
    if (!body)
        return ctl_parse_exit(ctl_usage_error("instances send: invalid WAIT_KEY: it is not UTF-8"));
    if (a.payload)
        json_object_set(body, "payload", a.payload);
    _cleanup_free_ char *done = xasprintf("sent signal \"%s\" to", pos[1]);
    return operate(o, c, &a, pos[0], "signals/custom", body, done);
}

/* ---- dispatch ------------------------------------------------------------------------------- */

int ctl_instances(int argc, char **argv, CtlOptions *o)
{
    static const struct {
        const char *name;
        int (*fn)(int argc, char **argv, CtlOptions *o);
    } verbs[] = {
        {"start", instances_start},
        {"list", instances_list},
        {"get", instances_get},
        {"wait", instances_wait},
        {"stop", instances_stop},
        {"resume", instances_resume},
        {"signal", instances_signal},
        {"send", instances_send},
        {"events", instances_events},
        {"checkpoints", instances_checkpoints},
        {"checkpoint", instances_checkpoint},
        {"logs", instances_logs},
        {"watch", instances_watch},
    };

    if (argc < 2)
        return ctl_parse_exit(ctl_usage_error(
            "instances: missing subcommand: start, list, get, wait, stop, resume, signal, send, "
            "events, checkpoints, checkpoint or logs"));
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(instances_usage, stdout);
        return CTL_EXIT_OK;
    }
    for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
        if (strcmp(argv[1], verbs[i].name) == 0)
            return verbs[i].fn(argc - 1, argv + 1, o);
    return ctl_parse_exit(ctl_usage_error("instances: unknown subcommand \"%s\"", argv[1]));
}
