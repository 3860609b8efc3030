/* runtara-ctl images register|list|get|delete: the image registry over /api/v1/images. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/alloc.h"
#include "../base/digest.h"
#include "../base/id.h"
#include "../base/parse-util.h"
#include "../base/strbuf.h"
#include "client.h"
#include "ctl.h"
#include "output.h"

#define HASH_CHUNK ((size_t)256 << 10)
#define LIST_LIMIT_MAX 1000
#define LIST_IMAGES_MAX 1000000 /* --all stops here rather than exhaust memory */

static const char usage[] =
    "usage: runtara-ctl images register FILE --tenant T --name N [--description D]\n"
    "                                   [--runner oci|native] [--label KEY=VALUE]...\n"
    "       runtara-ctl images list [--tenant T] [--name N] [--name-prefix P] [--limit N] [--all]\n"
    "       runtara-ctl images get IMAGE_ID\n"
    "       runtara-ctl images delete IMAGE_ID\n"
    "\n"
    "register streams FILE to the daemon with its SHA-256, which the daemon verifies; with a\n"
    "tenant key, --tenant defaults to the key's tenant. list --all follows every page.\n"
    "Every command also takes --url URL, --api-key KEY and --json.\n";

enum {
    ARG_RUNNER = CTL_ARG_PRIVATE,
    ARG_NAME_PREFIX,
    ARG_LIMIT,
};

/* ---- output --------------------------------------------------------------------------------- */

static const char *str_of(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

static long long int_of(const json_t *obj, const char *key)
{
    return (long long)json_integer_value(json_object_get(obj, key));
}

static void print_image(const json_t *img)
{
    char size[FORMAT_BYTES_MAX];

    output_field("image_id", str_of(img, "image_id"));
    output_field("tenant_id", str_of(img, "tenant_id"));
    output_field("name", str_of(img, "name"));
    output_fieldf("version", "%lld", int_of(img, "version"));
    output_field("description", str_of(img, "description"));
    output_field("runner_type", str_of(img, "runner_type"));
    output_field_pairs("labels", json_object_get(img, "labels"));
    output_fieldf("size_bytes", "%lld (%s)", int_of(img, "size_bytes"),
                  format_bytes((uint64_t)int_of(img, "size_bytes"), size));
    output_field("sha256", str_of(img, "sha256"));
    output_field("created_at", str_of(img, "created_at"));
}

static void print_image_table(const json_t *images)
{
    static const char *const headings[] = {"IMAGE ID", "TENANT", "NAME",   "VERSION",
                                           "RUNNER",   "SIZE",   "CREATED"};
    _cleanup_(table_freep) Table *t = table_new(ELEMENTSOF(headings), headings);
    size_t i;
    json_t *img;

    json_array_foreach(images, i, img)
    {
        char version[24], size[FORMAT_BYTES_MAX], created[40];
        snprintf(version, sizeof version, "%lld", int_of(img, "version"));
        table_add_row(t, (const char *const[]){
                             str_of(img, "image_id"), str_of(img, "tenant_id"), str_of(img, "name"),
                             version, str_of(img, "runner_type"),
                             format_bytes((uint64_t)int_of(img, "size_bytes"), size),
                             format_time(str_of(img, "created_at"), created, sizeof created)});
    }
    table_print(t, stdout);
}

/* ---- register ------------------------------------------------------------------------------- */

typedef struct RegisterArgs {
    const char *tenant, *name, *description, *runner;
    const char **labels; /* borrowed from argv; the array is owned */
    size_t n_labels;
} RegisterArgs;

static int register_option(int c, const char *arg, void *userdata)
{
    RegisterArgs *a = userdata;

    switch (c) {
    case 't':
        a->tenant = arg;
        return 0;
    case 'n':
        a->name = arg;
        return 0;
    case 'd':
        a->description = arg;
        return 0;
    case ARG_RUNNER:
        if (strcmp(arg, "oci") != 0 && strcmp(arg, "native") != 0)
            return ctl_usage_error("images register: invalid runner \"%s\": expected oci or native",
                                   arg);
        a->runner = arg;
        return 0;
    case 'l':
        if (arg[0] == '=' || !strchr(arg, '='))
            return ctl_usage_error("images register: invalid label \"%s\": expected KEY=VALUE",
                                   arg);
        a->labels = xrealloc(a->labels, (a->n_labels + 1) * sizeof *a->labels);
        a->labels[a->n_labels++] = arg;
        return 0;
    default:
        return ctl_usage_error("images register: unexpected option");
    }
}

/* Open the file to upload: a readable, non-empty regular file, refused before any request. */
static int open_image(const char *path, int *ret_fd, uint64_t *ret_size, Error *e)
{
    /* O_NONBLOCK: a FIFO must not hang the open; it has no effect on a regular file. */
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat st;

    if (fd < 0)
        return error_set(e, -errno, "could not open image file \"%s\": %m", path);
    if (fstat(fd, &st) < 0)
        return error_set(e, -errno, "could not stat image file \"%s\": %m", path);
    if (S_ISDIR(st.st_mode))
        return error_set(e, -EISDIR, "cannot register \"%s\": it is a directory", path);
    if (!S_ISREG(st.st_mode))
        return error_set(e, -EINVAL, "cannot register \"%s\": it is not a regular file", path);
    if (st.st_size == 0)
        return error_set(e, -EINVAL, "cannot register \"%s\": the file is empty", path);
    *ret_fd = TAKE_FD(fd);
    *ret_size = (uint64_t)st.st_size;
    return 0;
}

/* SHA-256 of the first size bytes of fd, read in chunks, then rewind for the upload. */
static int hash_file(int fd, const char *path, uint64_t size, char hex[static SHA256_HEX_LEN + 1],
                     Error *e)
{
    _cleanup_free_ char *buf = xmalloc(HASH_CHUNK);
    Sha256 *h = sha256_new();
    uint64_t done = 0;
    int r = 0;

    while (done < size) {
        ssize_t k = read(fd, buf, (size_t)MIN((uint64_t)HASH_CHUNK, size - done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            r = error_set(e, -errno, "could not read image file \"%s\": %m", path);
            break;
        }
        if (k == 0) {
            r = error_set(e, -EIO, "could not read image file \"%s\": it shrank while being read",
                          path);
            break;
        }
        sha256_update(h, buf, (size_t)k);
        done += (uint64_t)k;
    }
    if (r >= 0 && lseek(fd, 0, SEEK_SET) < 0)
        r = error_set(e, -errno, "could not rewind image file \"%s\": %m", path);
    if (r >= 0)
        sha256_final_hex(h, hex);
    sha256_free(h);
    return r;
}

static char *register_path(Client *c, const RegisterArgs *a, const char *sha256)
{
    StrBuf q = STRBUF_INIT;

    client_query_add(c, &q, "tenant_id", a->tenant);
    client_query_add(c, &q, "name", a->name);
    client_query_add(c, &q, "description", a->description);
    client_query_add(c, &q, "runner_type", a->runner);
    for (size_t i = 0; i < a->n_labels; i++)
        client_query_add(c, &q, "label", a->labels[i]);
    client_query_add(c, &q, "sha256", sha256);
    char *path = xasprintf("/api/v1/images%s", q.buf);
    strbuf_done(&q);
    return path;
}

static int upload_image(Client *c, const RegisterArgs *a, const char *file, json_t **ret, Error *e)
{
    _cleanup_close_ int fd = -EBADF;
    char sha256[SHA256_HEX_LEN + 1];
    uint64_t size = 0;

    int r = open_image(file, &fd, &size, e);
    if (r < 0)
        return r;
    r = hash_file(fd, file, size, sha256, e);
    if (r < 0)
        return r;

    _cleanup_free_ char *path = register_path(c, a, sha256);
    ClientUpload up = {
        .fd = fd,
        .size = size,
        .name = file,
        .ctype = "application/octet-stream",
        .progress = isatty(STDERR_FILENO) == 1,
    };
    return client_call(c, "POST", path, &up, ret, e);
}

static int images_register(int argc, char **argv, CtlOptions *o)
{
    static const struct option longopts[] = {
        CTL_COMMON_OPTIONS,
        {"tenant", required_argument, NULL, 't'},
        {"name", required_argument, NULL, 'n'},
        {"description", required_argument, NULL, 'd'},
        {"runner", required_argument, NULL, ARG_RUNNER},
        {"label", required_argument, NULL, 'l'},
        {},
    };
    const CtlParser p = {"images register", "t:n:d:l:", longopts, register_option, usage};
    _cleanup_(client_freep) Client *c = NULL;
    _cleanup_(json_decrefp) json_t *img = NULL;
    RegisterArgs a = {};
    Error e = ERROR_INIT;
    int first;

    int r = ctl_parse_options(&p, argc, argv, &a, o, &first);
    if (r >= 0 && first >= argc)
        r = ctl_usage_error("images register: missing the FILE to register");
    else if (r >= 0 && first + 1 < argc)
        r = ctl_usage_error("images register: unexpected argument \"%s\"", argv[first + 1]);
    else if (r >= 0 && !a.name)
        r = ctl_usage_error("images register: missing required option --name");
    if (r >= 0)
        r = ctl_client(o, &c);
    if (r < 0) {
        free(a.labels);
        return ctl_parse_exit(r);
    }

    r = upload_image(c, &a, argv[first], &img, &e);
    free(a.labels);
    if (r < 0)
        return ctl_fail(&e);
    if (o->json)
        (void)output_json(img);
    else
        print_image(img);
    return CTL_EXIT_OK;
}

typedef struct ListArgs {
    const char *tenant, *name, *prefix;
    const char *limit; /* validated */
    bool all;
} ListArgs;

static int list_option(int c, const char *arg, void *userdata)
{
    ListArgs *a = userdata;
    uint64_t n;

    switch (c) {
    case 't':
        a->tenant = arg;
        return 0;
    case 'n':
        a->name = arg;
        return 0;
    case ARG_NAME_PREFIX:
        a->prefix = arg;
        return 0;
    case ARG_LIMIT:
        if (parse_uint64(arg, &n) < 0 || n < 1 || n > LIST_LIMIT_MAX)
            return ctl_usage_error("images list: invalid limit \"%s\": must be between 1 and %d",
                                   arg, LIST_LIMIT_MAX);
        a->limit = arg;
        return 0;
    case 'a':
        a->all = true;
        return 0;
    default:
        return ctl_usage_error("images list: unexpected option");
    }
}

/* One page: its images are appended to all; *ret_next is the next cursor or NULL. */
static int list_page(Client *c, const ListArgs *a, const char *cursor, json_t *all, char **ret_next,
                     Error *e)
{
    _cleanup_(json_decrefp) json_t *page = NULL;
    StrBuf q = STRBUF_INIT;

    client_query_add(c, &q, "tenant_id", a->tenant);
    client_query_add(c, &q, "name", a->name);
    client_query_add(c, &q, "name_prefix", a->prefix);
    client_query_add(c, &q, "limit", a->limit);
    client_query_add(c, &q, "cursor", cursor);
    _cleanup_free_ char *path = xasprintf("/api/v1/images%s", q.buf ? q.buf : "");
    strbuf_done(&q);

    int r = client_call(c, "GET", path, NULL, &page, e);
    if (r < 0)
        return r;
    json_t *images = json_object_get(page, "images");
    json_t *next = json_object_get(page, "next_cursor");
    if (!json_is_array(images) || !(json_is_null(next) || json_is_string(next)))
        return error_set(e, -EBADMSG, "unexpected answer from %s: no \"images\" list",
                         client_url(c));
    json_array_extend(all, images);
    *ret_next = json_is_string(next) ? xstrdup(json_string_value(next)) : NULL;
    return 0;
}

/* All the pages (--all) or the first one; *ret_next is the cursor of the rest, if any. */
static int list_images(Client *c, const ListArgs *a, json_t *all, char **ret_next, Error *e)
{
    _cleanup_free_ char *cursor = NULL;

    for (;;) {
        char *next = NULL;
        int r = list_page(c, a, cursor, all, &next, e);
        if (r < 0)
            return r;
        if (!next || !a->all) {
            *ret_next = next;
            return 0;
        }
        if (cursor && strcmp(cursor, next) == 0) {
            free(next);
            return error_set(e, -EBADMSG, "the server sent cursor \"%s\" twice", cursor);
        }
        free(cursor);
        cursor = next;
        if (json_array_size(all) >= LIST_IMAGES_MAX)
            return error_set(e, -E2BIG, "more than %d images: narrow the listing", LIST_IMAGES_MAX);
    }
}

static int images_list(int argc, char **argv, CtlOptions *o)
{
    static const struct option longopts[] = {
        CTL_COMMON_OPTIONS,
        {"tenant", required_argument, NULL, 't'},
        {"name", required_argument, NULL, 'n'},
        {"name-prefix", required_argument, NULL, ARG_NAME_PREFIX},
        {"limit", required_argument, NULL, ARG_LIMIT},
        {"all", no_argument, NULL, 'a'},
        {},
    };
    const CtlParser p = {"images list", "t:n:a", longopts, list_option, usage};
    _cleanup_(client_freep) Client *c = NULL;
    _cleanup_(json_decrefp) json_t *all = json_array();
    _cleanup_free_ char *next = NULL;
    ListArgs a = {};
    Error e = ERROR_INIT;
    int first;

    int r = ctl_parse_options(&p, argc, argv, &a, o, &first);
    if (r >= 0 && first < argc)
        r = ctl_usage_error("images list: unexpected argument \"%s\"", argv[first]);
    if (r >= 0)
        r = ctl_client(o, &c);
    if (r < 0)
        return ctl_parse_exit(r);

    if (list_images(c, &a, all, &next, &e) < 0)
        return ctl_fail(&e);
    if (o->json) {
        _cleanup_(json_decrefp) json_t *doc =
            json_pack("{s:O, s:s?}", "images", all, "next_cursor", next);
        (void)output_json(doc);
        return CTL_EXIT_OK;
    }
    if (json_array_size(all) == 0)
        fputs("no images found\n", stderr);
    else
        print_image_table(all);
    if (next)
        fputs("note: more images exist; use --all to list them all\n", stderr);
    return CTL_EXIT_OK;
}

/* Parse the options of "images get|delete IMAGE_ID"; *ret_id points into argv. */
static int parse_image_id(const char *cmd, int argc, char **argv, CtlOptions *o,
                          const char **ret_id)
{
    static const struct option longopts[] = {CTL_COMMON_OPTIONS, {}};
    const CtlParser p = {cmd, "", longopts, NULL, usage};
    int first;

    int r = ctl_parse_options(&p, argc, argv, NULL, o, &first);
    if (r < 0)
        return r;
    if (first >= argc)
        return ctl_usage_error("%s: missing the IMAGE_ID", cmd);
    if (first + 1 < argc)
        return ctl_usage_error("%s: unexpected argument \"%s\"", cmd, argv[first + 1]);
    if (!id_is_valid(argv[first]))
        return ctl_usage_error("%s: invalid image id \"%s\"", cmd, argv[first]);
    *ret_id = argv[first];
    return 0;
}

static int images_get(int argc, char **argv, CtlOptions *o)
{
    _cleanup_(client_freep) Client *c = NULL;
    _cleanup_(json_decrefp) json_t *img = NULL;
    Error e = ERROR_INIT;
    const char *id = NULL;

    int r = parse_image_id("images get", argc, argv, o, &id);
    if (r >= 0)
        r = ctl_client(o, &c);
    if (r < 0)
        return ctl_parse_exit(r);

    _cleanup_free_ char *path = xasprintf("/api/v1/images/%s", id);
    if (client_call(c, "GET", path, NULL, &img, &e) < 0)
        return ctl_fail(&e);
    if (o->json)
        (void)output_json(img);
    else
        print_image(img);
    return CTL_EXIT_OK;
}

static int images_delete(int argc, char **argv, CtlOptions *o)
{
    _cleanup_(client_freep) Client *c = NULL;
    Error e = ERROR_INIT;
    const char *id = NULL;

    int r = parse_image_id("images delete", argc, argv, o, &id);
    if (r >= 0)
        r = ctl_client(o, &c);
    if (r < 0)
        return ctl_parse_exit(r);

    _cleanup_free_ char *path = xasprintf("/api/v1/images/%s", id);
    if (client_call(c, "DELETE", path, NULL, NULL, &e) < 0)
        return ctl_fail(&e);
    if (o->json) {
        _cleanup_(json_decrefp) json_t *doc = json_pack("{s:s, s:b}", "image_id", id, "deleted", 1);
        (void)output_json(doc);
    } else
        printf("deleted image \"%s\"\n", id);
    return CTL_EXIT_OK;
}

int ctl_images(int argc, char **argv, CtlOptions *o)
{
    static const struct {
        const char *name;
        int (*fn)(int argc, char **argv, CtlOptions *o);
    } verbs[] = {
        {"register", images_register},
        {"list", images_list},
        {"get", images_get},
        {"delete", images_delete},
    };

    if (argc < 2)
        return ctl_parse_exit(
            ctl_usage_error("images: missing subcommand: register, list, get or delete"));
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage, stdout);
        return CTL_EXIT_OK;
    }
    for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
        if (strcmp(argv[1], verbs[i].name) == 0)
            return verbs[i].fn(argc - 1, argv + 1, o);
    return ctl_parse_exit(ctl_usage_error("images: unknown subcommand \"%s\"", argv[1]));
}
