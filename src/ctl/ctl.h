/* runtara-ctl: the operator CLI. main.c parses the global options and dispatches to one
 * ctl_<command>() per top-level command; each command parses its own options with getopt_long,
 * prints its own messages (it is the layer that decides, STYLE R9) and returns the process exit
 * status. Only src/ctl and src/base may be included here (scripts/check-layers.py). */
#pragma once

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#include "../base/error.h"
#include "../base/macro.h"

#define CTL_PROGRAM "runtara-ctl"
#define CTL_DEFAULT_URL "http://127.0.0.1:8002"

/* Exit statuses, documented in docs/cli.md. */
enum {
    CTL_EXIT_OK = 0,
    CTL_EXIT_FAILURE = 1, /* the server refused, could not be reached, or a local step failed */
    CTL_EXIT_USAGE = 2,   /* unknown command or option, missing or malformed argument */
};

/* Settings shared by every command: from the environment, then the command line. */
typedef struct CtlOptions {
    const char *url;     /* base URL of the management API; never NULL; borrowed */
    const char *api_key; /* NULL when none was given; borrowed */
    const char *ca_file; /* CA certificates for an https:// URL; NULL = the system's; borrowed */
    bool skip_verify;    /* RUNTARA_SKIP_CERT_VERIFICATION: accept any certificate */
    bool json;           /* print JSON documents instead of tables */
} CtlOptions;

/* getopt_long values of the options every parser accepts, so `runtara-ctl images list --json`
 * works as well as `runtara-ctl --json images list`. */
enum {
    CTL_ARG_URL = 0x100,
    CTL_ARG_API_KEY,
    CTL_ARG_JSON,
    CTL_ARG_CACERT,
    CTL_ARG_PRIVATE, /* first value free for a command's own long-only options */
};

#define CTL_COMMON_OPTIONS                                                                         \
    {"url", required_argument, NULL, CTL_ARG_URL},                                                 \
        {"api-key", required_argument, NULL, CTL_ARG_API_KEY},                                     \
        {"json", no_argument, NULL, CTL_ARG_JSON},                                                 \
        {"cacert", required_argument, NULL, CTL_ARG_CACERT},                                       \
    {                                                                                              \
        "help", no_argument, NULL, 'h'                                                             \
    }

/* How one command parses its options. */
typedef struct CtlParser {
    const char *cmd;       /* "images list": names the command in messages */
    const char *shortopts; /* without ':' and 'h'; a leading '+' stops at the first argument */
    const struct option *longopts; /* must include CTL_COMMON_OPTIONS; zero-terminated */
    /* One option that is not a common one. Returns 0, or -EINVAL after ctl_usage_error(). */
    int (*handle)(int c, const char *arg, void *userdata);
    const char *usage; /* printed for --help */
} CtlParser;

/** Parse argv (argv[0] is the command's name) with getopt_long, applying the common options to o
 *  and calling p->handle for every other option. Permutes argv so the positional arguments end up
 *  at argv[*ret_first..argc-1].
 *  Returns 0 to go on; -ECANCELED when --help printed the usage (exit 0); -EINVAL after printing a
 *  usage error (unknown option, missing value, or an error returned by p->handle). */
int ctl_parse_options(const CtlParser *p, int argc, char **argv, void *userdata, CtlOptions *o,
                      int *ret_first);

/** Map a ctl_parse_options() result to an exit status (-ECANCELED → 0, otherwise 2). */
int ctl_parse_exit(int r);

/** Print "runtara-ctl: <message>" and "hint: see runtara-ctl --help" on stderr. Returns -EINVAL so
 *  option handlers can `return ctl_usage_error(...)`. */
int ctl_usage_error(const char *fmt, ...) _printf_(1, 2);

/** Print e on stderr as "runtara-ctl: <message>", followed by a hint for a server that could not
 *  be reached (code -ECONNREFUSED) or whose certificate could not be verified (-EKEYREJECTED),
 *  then free its message. Returns CTL_EXIT_FAILURE. */
int ctl_fail(Error *e);

/** Print "runtara-ctl: <message>" on stderr. Returns CTL_EXIT_FAILURE. */
int ctl_failf(const char *fmt, ...) _printf_(1, 2);

typedef struct Client Client;

/** A Client (client.h) for o->url and o->api_key. Returns 0, or -EINVAL after printing a usage
 *  error for a malformed URL or key. */
int ctl_client(const CtlOptions *o, Client **ret);

/** The commands. argv[0] is the command name; each returns the exit status. May block on the
 *  network (connect timeout 10 s) or the disk. */
/** Download path into file: a regular file is written under a temporary name next to it, fsynced
 *  and renamed over it once complete, so a failed download leaves what was there; anything else
 *  (a FIFO, /dev/null) is written in place. *ret_size (may be NULL) is the size. */
int ctl_download_to_file(Client *c, const char *path, const char *file, uint64_t *ret_size,
                         Error *e);

int ctl_health(int argc, char **argv, CtlOptions *o);
int ctl_backup(int argc, char **argv, CtlOptions *o);
int ctl_daemons(int argc, char **argv, CtlOptions *o);
int ctl_images(int argc, char **argv, CtlOptions *o);
int ctl_keys(int argc, char **argv, CtlOptions *o);
int ctl_instances(int argc, char **argv, CtlOptions *o);
int ctl_tenants(int argc, char **argv, CtlOptions *o);
