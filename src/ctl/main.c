/* runtara-ctl: global options, then one command (ctl.h). Kept thin (STYLE R22). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/parse-util.h"
#include "client.h"
#include "ctl.h"

static const char usage[] =
    "usage: runtara-ctl [--url URL] [--api-key KEY] [--cacert FILE] [--json] COMMAND ...\n"
    "\n"
    "Operate a runtara-environment daemon through its management API.\n"
    "\n"
    "Commands:\n"
    "  health                                   is the daemon up and its store healthy?\n"
    "  backup FILE                              a consistent copy of the store (admin)\n"
    "  daemons                                  the daemons sharing the store (admin)\n"
    "  images register FILE --tenant T --name N [--description D] [--runner oci|native]\n"
    "                       [--label KEY=VALUE]...\n"
    "                                           upload an executable as a new image version\n"
    "  images list [--tenant T] [--name N] [--name-prefix P] [--limit N] [--all]\n"
    "  images get IMAGE_ID\n"
    "  images delete IMAGE_ID\n"
    "  instances start (--image-id ID | --image NAME) [--tenant T] [--id INSTANCE_ID]\n"
    "                  [--input JSON | --input-file PATH] [--env KEY=VALUE]...\n"
    "                  [--timeout SECS] [--wait [SECS]]\n"
    "                                           start an instance of an image\n"
    "  instances list [--tenant T] [--status S] [--image-id ID] [--created-after TIME]\n"
    "                 [--created-before TIME] [--limit N] [--all]\n"
    "  instances get INSTANCE_ID [--wait [SECS]]\n"
    "  instances wait INSTANCE_ID [--timeout SECS]\n"
    "                                           wait for the end; exit 0 if it completed\n"
    "  instances stop INSTANCE_ID [--grace SECS]\n"
    "  instances resume INSTANCE_ID\n"
    "  instances signal INSTANCE_ID cancel|pause|resume [--payload JSON]\n"
    "  instances send INSTANCE_ID WAIT_KEY [--payload JSON]\n"
    "                                           a custom signal\n"
    "  instances events INSTANCE_ID [--type T] [--subtype S] [--limit N] [--all]\n"
    "  instances checkpoints INSTANCE_ID [--limit N] [--all]\n"
    "  instances checkpoint INSTANCE_ID KEY [-o FILE]\n"
    "                                           one checkpoint's bytes\n"
    "  instances logs INSTANCE_ID [--tail BYTES]\n"
    "  instances watch INSTANCE_ID              follow its status and events until it ends\n"
    "  tenants metrics TENANT [--start TIME] [--end TIME] [--granularity hour|day]\n"
    "                                           per hour or day: how the tenant's instances ended\n"
    "  keys create --file PATH (--admin | --tenant T) [--name NAME]\n"
    "                                           add a key to an API keys file (local)\n"
    "  keys list --file PATH\n"
    "  keys revoke --file PATH NAME\n"
    "\n"
    "Options:\n"
    "  --url URL        management API (RUNTARA_URL; default " CTL_DEFAULT_URL ")\n"
    "  --api-key KEY    bearer key (RUNTARA_API_KEY; prefer the variable: argv is public)\n"
    "  --cacert FILE    CA certificates (PEM) that verify an https:// server (RUNTARA_CA_FILE;\n"
    "                   default the system's); RUNTARA_SKIP_CERT_VERIFICATION=true skips it\n"
    "  --json           print JSON documents instead of tables\n"
    "  -h, --help       show this help\n"
    "  --version        show the version\n"
    "\n"
    "Exit status: 0 success, 1 the server refused or could not be reached, 2 usage error.\n";

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv, CtlOptions *o);
} commands[] = {
    {"health", ctl_health},   {"backup", ctl_backup},       {"daemons", ctl_daemons},
    {"images", ctl_images},   {"instances", ctl_instances}, {"keys", ctl_keys},
    {"tenants", ctl_tenants},
};

enum {
    ARG_VERSION = CTL_ARG_PRIVATE,
};

static int global_option(int c, const char *arg, void *userdata)
{
    bool *version = userdata;

    (void)arg;
    if (c != ARG_VERSION)
        return ctl_usage_error("unexpected option");
    *version = true;
    return 0;
}

static int parse_global(int argc, char **argv, CtlOptions *o, int *ret_first)
{
    static const struct option longopts[] = {
        CTL_COMMON_OPTIONS,
        {"version", no_argument, NULL, ARG_VERSION},
        {},
    };
    /* "+": stop at the command, whose options are its own. */
    const CtlParser p = {CTL_PROGRAM, "+", longopts, global_option, usage};
    bool version = false;
    int first = 0;

    int r = ctl_parse_options(&p, argc, argv, &version, o, &first);
    if (r < 0)
        return r;
    if (version) {
        puts(CTL_PROGRAM " " RUNTARA_VERSION);
        return -ECANCELED;
    }
    if (first >= argc)
        return ctl_usage_error("missing command");
    *ret_first = first;
    return 0;
}

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

/* As the original reads it: 1, true, yes or on; anything else (or unset) keeps verifying. */
static bool env_truthy(const char *name)
{
    bool v = false;
    return parse_boolean(getenv(name), &v) >= 0 && v;
}

int main(int argc, char **argv)
{
    CtlOptions o = {
        .url = env_or("RUNTARA_URL", CTL_DEFAULT_URL),
        .api_key = env_or("RUNTARA_API_KEY", NULL),
        .ca_file = env_or("RUNTARA_CA_FILE", NULL),
        .skip_verify = env_truthy("RUNTARA_SKIP_CERT_VERIFICATION"),
    };
    int first = 0, status = -1;

    int r = parse_global(argc, argv, &o, &first);
    if (r < 0)
        return ctl_parse_exit(r);
    if (strcmp(argv[first], "help") == 0) {
        fputs(usage, stdout);
        return CTL_EXIT_OK;
    }
    if (client_global_init() < 0)
        return ctl_failf("could not initialise libcurl");
    for (size_t i = 0; i < ELEMENTSOF(commands); i++)
        if (strcmp(argv[first], commands[i].name) == 0)
            status = commands[i].fn(argc - first, argv + first, &o);
    if (status < 0)
        status = ctl_parse_exit(ctl_usage_error("unknown command \"%s\"", argv[first]));
    client_global_done();

    if (fflush(stdout) != 0 || ferror(stdout))
        return ctl_failf("could not write to standard output: %m");
    return status;
}
