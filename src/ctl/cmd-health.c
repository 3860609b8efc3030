/* runtara-ctl health: GET /api/v1/health. Exit 0 when the daemon reports "ok", 1 when it is
 * degraded (503) or cannot be reached. runtara-ctl backup FILE: GET /api/v1/backup into FILE.
 * runtara-ctl daemons: GET /api/v1/daemons as a table. */
#include <stdio.h>
#include <string.h>

#include "../base/alloc.h"
#include "client.h"
#include "ctl.h"
#include "output.h"

static const char usage[] = "usage: runtara-ctl health [--json]\n"
                            "\n"
                            "Ask the daemon whether it and its store are healthy.\n";

static void print_uptime(json_int_t ms)
{
    long long s = (long long)ms / 1000;

    if (s >= 86400)
        output_fieldf("uptime", "%lldd %02lldh %02lldm", s / 86400, s / 3600 % 24, s / 60 % 60);
    else if (s >= 3600)
        output_fieldf("uptime", "%lldh %02lldm %02llds", s / 3600, s / 60 % 60, s % 60);
    else
        output_fieldf("uptime", "%lldm %02llds", s / 60, s % 60);
}

static void print_health(const json_t *h, const char *url)
{
    const char *status = NULL, *version = NULL, *daemon = NULL, *backend = NULL, *sstatus = NULL,
               *serr = NULL;
    json_int_t uptime = 0, schema = 0;

    (void)json_unpack((json_t *)h, "{s?s, s?s, s?I, s?s, s?{s?s, s?s, s?I, s?s}}", "status",
                      &status, "version", &version, "uptime_ms", &uptime, "daemon", &daemon,
                      "store", "backend", &backend, "status", &sstatus, "schema_version", &schema,
                      "error", &serr);
    output_field("server", url);
    output_field("status", status);
    output_field("version", version);
    print_uptime(uptime);
    if (daemon)
        output_field("daemon", daemon);
    output_fieldf("store", "%s, %s, schema version %lld", backend ? backend : "-",
                  sstatus ? sstatus : "-", (long long)schema);
    if (serr)
        output_field("store error", serr);
}

int ctl_health(int argc, char **argv, CtlOptions *o)
{
    static const struct option longopts[] = {CTL_COMMON_OPTIONS, {}};
    const CtlParser p = {.cmd = "health", .shortopts = "", .longopts = longopts, .usage = usage};
    _cleanup_(client_freep) Client *c = NULL;
    _cleanup_(json_decrefp) json_t *body = NULL;
    Error e = ERROR_INIT;
    long status = 0;
    int first, r;

    r = ctl_parse_options(&p, argc, argv, NULL, o, &first);
    if (r < 0)
        return ctl_parse_exit(r);
    if (first < argc)
        return ctl_parse_exit(ctl_usage_error("health: unexpected argument \"%s\"", argv[first]));
    if (ctl_client(o, &c) < 0)
        return CTL_EXIT_USAGE;

    r = client_request(c, "GET", "/api/v1/health", NULL, &status, &body, &e);
    if (r >= 0 && (status == 200 || status == 503) &&
        json_is_object(json_object_get(body, "store")))
        r = 0;
    else if (r >= 0)
        r = client_reply_error(status, body, &e);
    if (r < 0)
        return ctl_fail(&e);
    /* Errors writing stdout are reported once, by main(). */
    if (o->json)
        (void)output_json(body);
    else
        print_health(body, client_url(c));
    if (status != 200)
        return ctl_failf("the daemon is degraded (HTTP %ld)", status);
    return CTL_EXIT_OK;
}

static const char backup_usage[] =
    "usage: runtara-ctl backup [--json] FILE\n"
    "\n"
    "Write a consistent copy of the daemon's store (every tenant's images, instances,\n"
    "checkpoints, events and signals, as of one moment) to FILE, while the daemon runs.\n"
    "Needs an admin key. To restore: stop the daemon, put FILE at DATA_DIR/runtara.db\n"
    "(removing runtara.db-wal), and copy the images/ directory along (see docs/operations.md).\n";

int ctl_backup(int argc, char **argv, CtlOptions *o)
{
    static const struct option longopts[] = {CTL_COMMON_OPTIONS, {}};
    const CtlParser p = {
        .cmd = "backup", .shortopts = "", .longopts = longopts, .usage = backup_usage};
    _cleanup_(client_freep) Client *c = NULL;
    Error e = ERROR_INIT;
    uint64_t size = 0;
    int first;

    int r = ctl_parse_options(&p, argc, argv, NULL, o, &first);
    if (r < 0)
        return ctl_parse_exit(r);
    if (first != argc - 1)
        return ctl_parse_exit(ctl_usage_error(first >= argc ? "backup: missing FILE"
                                                            : "backup: unexpected argument \"%s\"",
                                              argv[argc - 1]));
    if (ctl_client(o, &c) < 0)
        return CTL_EXIT_USAGE;
    const char *file = argv[first];
    if (ctl_download_to_file(c, "/api/v1/backup", file, &size, &e) < 0)
        return ctl_fail(&e);
    if (o->json) {
        _cleanup_(json_decrefp) json_t *doc =
            json_pack("{s:s, s:I}", "file", file, "size_bytes", (json_int_t)size);
        (void)output_json(doc);
    } else {
        char human[FORMAT_BYTES_MAX];
        printf("wrote a backup of the store (%s) to \"%s\"\n", format_bytes(size, human), file);
    }
    return CTL_EXIT_OK;
}

static const char daemons_usage[] =
    "usage: runtara-ctl daemons [--json]\n"
    "\n"
    "The daemons registered in the store (several may share a PostgreSQL database): id, host,\n"
    "pid, when each started, until when its lease runs and whether it still does, and how many\n"
    "unfinished instances each owns. * marks the daemon that answered. Needs an admin key.\n";

int ctl_daemons(int argc, char **argv, CtlOptions *o)
{
    static const struct option longopts[] = {CTL_COMMON_OPTIONS, {}};
    const CtlParser p = {
        .cmd = "daemons", .shortopts = "", .longopts = longopts, .usage = daemons_usage};
    _cleanup_(client_freep) Client *c = NULL;
    _cleanup_(json_decrefp) json_t *doc = NULL;
    Error e = ERROR_INIT;
    int first;

    int r = ctl_parse_options(&p, argc, argv, NULL, o, &first);
    if (r >= 0 && first < argc)
        r = ctl_usage_error("daemons: unexpected argument \"%s\"", argv[first]);
    if (r >= 0)
        r = ctl_client(o, &c);
    if (r < 0)
        return ctl_parse_exit(r);
    if (client_call(c, "GET", "/api/v1/daemons", NULL, &doc, &e) < 0)
        return ctl_fail(&e);
    const json_t *daemons = json_object_get(doc, "daemons");
    if (!json_is_array(daemons)) {
        error_set(&e, -EBADMSG, "unexpected answer from %s: no \"daemons\" list", client_url(c));
        return ctl_fail(&e);
    }
    if (o->json) {
        (void)output_json(doc);
        return CTL_EXIT_OK;
    }
    static const char *const headings[] = {"DAEMON",      "HOST", "PID",      "STARTED",
                                           "LEASE UNTIL", "LIVE", "INSTANCES"};
    _cleanup_(table_freep) Table *t = table_new(ELEMENTSOF(headings), headings);
    size_t i;
    json_t *d;
    json_array_foreach(daemons, i, d)
    {
        char started[40], until[40], pid[24], n[24];
        const char *id = json_string_value(json_object_get(d, "daemon_id"));
        _cleanup_free_ char *name =
            xasprintf("%s%s", id ? id : "-", json_is_true(json_object_get(d, "self")) ? " *" : "");
        snprintf(pid, sizeof pid, "%lld", (long long)json_integer_value(json_object_get(d, "pid")));
        snprintf(n, sizeof n, "%lld",
                 (long long)json_integer_value(json_object_get(d, "instances")));
        table_add_row(t, (const char *const[]){
                             name, json_string_value(json_object_get(d, "host")), pid,
                             format_time(json_string_value(json_object_get(d, "started_at")),
                                         started, sizeof started),
                             format_time(json_string_value(json_object_get(d, "lease_until")),
                                         until, sizeof until),
                             json_is_true(json_object_get(d, "live")) ? "yes" : "no", n});
    }
    table_print(t, stdout);
    return CTL_EXIT_OK;
}
