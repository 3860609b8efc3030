/* runtara-ctl instances: what cmd-instances.c (start, list, get, wait, stop, resume, signal, send)
 * and cmd-instance-data.c (events, checkpoints, checkpoint, logs) share: the usage, one set of
 * options parsed into InstArgs for every subcommand, the positional arguments, and paging. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "../base/time-util.h"
#include "ctl.h"

#define INST_LIMIT_MAX 1000
#define INST_ITEMS_MAX 1000000 /* --all stops here rather than exhaust memory */

extern const char instances_usage[];

/* getopt_long values of the instance options (each subcommand lists the ones it takes). */
enum {
    ARG_IMAGE_ID = CTL_ARG_PRIVATE,
    ARG_IMAGE,
    ARG_ID,
    ARG_INPUT,
    ARG_INPUT_FILE,
    ARG_ENV,
    ARG_TIMEOUT,      /* start: the instance's timeout */
    ARG_WAIT_TIMEOUT, /* wait: how long to wait */
    ARG_WAIT,
    ARG_STATUS,
    ARG_CREATED_AFTER,
    ARG_CREATED_BEFORE,
    ARG_FINISHED_AFTER,
    ARG_FINISHED_BEFORE,
    ARG_LIMIT,
    ARG_GRACE,
    ARG_PAYLOAD,
    ARG_TYPE,
    ARG_SUBTYPE,
    ARG_TAIL,
};

/* Every option of every instance subcommand, validated as it is parsed. Strings are borrowed
 * from argv; JSON values are owned. */
typedef struct InstArgs {
    const char *cmd; /* "instances start", for messages */
    int argc;        /* the argv being parsed, for the separate value of --wait */
    char **argv;
    const char *image_id, *image, *tenant, *id;
    json_t *input;          /* --input, or --input-file once read */
    const char *input_file; /* read after parsing; "-" is stdin */
    json_t *env;            /* --env KEY=VALUE as an object, or NULL */
    unsigned timeout;       /* --timeout; 0 when not given */
    bool wait;              /* --wait given */
    usec_t wait_for;        /* its limit; 0 waits without one */
    const char *status, *created_after, *created_before, *finished_after, *finished_before;
    const char *limit; /* validated */
    bool all;
    int grace;       /* --grace; -1 when not given */
    json_t *payload; /* --payload */
    const char *type, *subtype;
    const char *output; /* -o FILE */
    const char *tail;   /* --tail, as a decimal number of bytes */
    char tail_buf[24];
    char *ref; /* INSTANCE_ID given as TENANT/ID: its copy, split in two (a->tenant, the id) */
} InstArgs;

#define INST_ARGS_INIT(name)                                                                       \
    {                                                                                              \
        .cmd = (name), .grace = -1                                                                 \
    }

/** The path of the instance id below /api/v1/instances (suffix "" or "/events", ...), with query
 *  (may be NULL: from client_query_add()) and the instance's tenant when one was named
 *  (TENANT/ID or --tenant): ids are per tenant, and an admin key names the tenant. */
char *inst_path(Client *c, const InstArgs *a, const char *id, const char *suffix,
                const char *query);

/** Free what InstArgs owns. */
void inst_args_done(InstArgs *a);

/** Parse the options of a subcommand (longopts must include CTL_COMMON_OPTIONS) into a, then
 *  demand exactly n positional arguments, named by names[] in messages ("INSTANCE_ID", ...); a
 *  positional named INSTANCE_ID must be a valid id. pos[] receives them (borrowed from argv).
 *  Returns 0, -ECANCELED after --help, or -EINVAL after a usage error. */
int inst_parse(InstArgs *a, const char *shortopts, const struct option *longopts, int argc,
               char **argv, CtlOptions *o, size_t n, const char *const *names, const char **pos);

typedef struct Client Client;

/** GET base + query (query may be NULL or "?..."), appending the items of the array field of each
 *  page to items; with all, follow next_cursor to the end. *ret_next is the cursor of the rest
 *  (NULL when none; owned); *ret_total the "total" of the first page, -1 if it has none. */
int inst_fetch_pages(Client *c, const char *base, const char *query, const char *field, bool all,
                     json_t *items, char **ret_next, json_int_t *ret_total, Error *e);

/** The string member key of obj, or NULL. */
const char *inst_str(const json_t *obj, const char *key);

/** The instance subcommands that read an instance's data (cmd-instance-data.c). */
int instances_events(int argc, char **argv, CtlOptions *o);
int instances_checkpoints(int argc, char **argv, CtlOptions *o);
int instances_checkpoint(int argc, char **argv, CtlOptions *o);
int instances_logs(int argc, char **argv, CtlOptions *o);
int instances_watch(int argc, char **argv, CtlOptions *o);
