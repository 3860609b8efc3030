/* Option parsing and message helpers shared by the runtara-ctl commands. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../base/alloc.h"
#include "client.h"
#include "ctl.h"

static void vprint_error(const char *fmt, va_list ap)
{
    fputs(CTL_PROGRAM ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int ctl_usage_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprint_error(fmt, ap);
    va_end(ap);
    fputs("hint: see " CTL_PROGRAM " --help\n", stderr);
    return -EINVAL;
}

int ctl_failf(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprint_error(fmt, ap);
    va_end(ap);
    return CTL_EXIT_FAILURE;
}

int ctl_fail(Error *e)
{
    ctl_failf("%s", error_message(e));
    /* client.c reports every failure to reach the server as -ECONNREFUSED. */
    if (e->code == -ECONNREFUSED)
        fputs("hint: is runtara-environment running? Set RUNTARA_URL.\n", stderr);
    else if (e->code == -EKEYREJECTED)
        fputs("hint: name the CA that issued the daemon's certificate with --cacert or "
              "RUNTARA_CA_FILE (RUNTARA_SKIP_CERT_VERIFICATION=true skips the check)\n",
              stderr);
    error_done(e);
    return CTL_EXIT_FAILURE;
}

int ctl_parse_exit(int r)
{
    return r == -ECANCELED ? CTL_EXIT_OK : CTL_EXIT_USAGE;
}

/* getopt_long reports problems as '?' (unknown) or ':' (missing value); name the option. */
static int bad_option(const CtlParser *p, int c, char **argv)
{
    const char *arg = argv[optind - 1];

    if (c == ':')
        return ctl_usage_error("%s: option \"%s\" requires a value", p->cmd, arg);
    if (optopt && strncmp(arg, "--", 2) != 0)
        return ctl_usage_error("%s: unknown option \"-%c\"", p->cmd, optopt);
    return ctl_usage_error("%s: unknown option \"%s\"", p->cmd, arg);
}

int ctl_parse_options(const CtlParser *p, int argc, char **argv, void *userdata, CtlOptions *o,
                      int *ret_first)
{
    bool in_order = p->shortopts[0] == '+';
    _cleanup_free_ char *shortopts =
        xasprintf("%s:h%s", in_order ? "+" : "", p->shortopts + in_order);
    int c, r;

    optind = 0; /* glibc: a full reset, argv differs from the previous parse */
    opterr = 0;
    while ((c = getopt_long(argc, argv, shortopts, p->longopts, NULL)) >= 0) {
        switch (c) {
        case 'h':
            fputs(p->usage, stdout);
            return -ECANCELED;
        case CTL_ARG_URL:
            o->url = optarg;
            break;
        case CTL_ARG_API_KEY:
            o->api_key = optarg;
            break;
        case CTL_ARG_JSON:
            o->json = true;
            break;
        case CTL_ARG_CACERT:
            o->ca_file = optarg;
            break;
        case '?':
        case ':':
            return bad_option(p, c, argv);
        default:
            r = p->handle ? p->handle(c, optarg, userdata) : -EINVAL;
            if (r < 0)
                return r;
        }
    }
    *ret_first = optind;
    return 0;
}

int ctl_client(const CtlOptions *o, Client **ret)
{
    Error e = ERROR_INIT;

    const ClientTls tls = {.ca_file = o->ca_file, .skip_verify = o->skip_verify};

    int r = client_new(o->url, o->api_key, &tls, ret, &e);
    if (r < 0)
        (void)ctl_usage_error("%s", error_message(&e));
    error_done(&e);
    return r < 0 ? -EINVAL : 0;
}
