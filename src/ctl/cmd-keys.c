/* runtara-ctl keys create|list|revoke: the API keys file (format in base/apikey.h), edited locally
 * without the server. Writers take an exclusive flock(2) on the file's directory, so two
 * runtara-ctl processes cannot lose each other's edit, and replace the file atomically: the daemon
 * (which re-reads it on SIGHUP) sees the old file or the new one, never a mix. Only key lines are
 * added or removed; comments and the order of the other lines are kept. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "../base/alloc.h"
#include "../base/apikey.h"
#include "../base/fileio.h"
#include "../base/id.h"
#include "../base/strbuf.h"
#include "ctl.h"
#include "output.h"

#define KEYS_FILE_MAX ((size_t)4 << 20) /* as the daemon reads it */
#define HASH_PREFIX_LEN 12

static const char usage[] =
    "usage: runtara-ctl keys create --file PATH (--admin | --tenant T) [--name NAME]\n"
    "       runtara-ctl keys list --file PATH\n"
    "       runtara-ctl keys revoke --file PATH NAME\n"
    "\n"
    "Edit the API keys file of runtara-environment (RUNTARA_API_KEYS_FILE). The file keeps only\n"
    "the SHA-256 of each key; create prints the key once. The daemon re-reads the file on "
    "SIGHUP.\n";

enum {
    ARG_ADMIN = CTL_ARG_PRIVATE,
};

typedef struct KeysFile {
    char *path;  /* as given, or the target of a symlink; owned */
    char *name;  /* the last component of path; points into path */
    int dirfd;   /* the directory holding it, flock()ed */
    bool exists; /* false: a new file will be created */
    struct stat st;
    char *text; /* the current contents; "" for a new file; owned */
    ApiKey *keys;
    size_t n;
} KeysFile;

#define KEYS_FILE_INIT                                                                             \
    {                                                                                              \
        .dirfd = -EBADF                                                                            \
    }

static void keys_file_done(KeysFile *f)
{
    free(f->path);
    if (f->dirfd >= 0)
        (void)close(f->dirfd); /* drops the lock */
    free(f->text);
    free(f->keys);
}

static const char *role_of(const ApiKey *k, char *buf, size_t n)
{
    if (k->admin)
        return "admin";
    snprintf(buf, n, "tenant:%s", k->tenant);
    return buf;
}

/* Open the directory of f->path and lock it. */
static int open_dir(KeysFile *f, bool write, Error *e)
{
    char *slash = strrchr(f->path, '/');
    _cleanup_free_ char *dir = NULL;

    if (slash) {
        dir = slash == f->path ? xstrdup("/") : xstrndup(f->path, (size_t)(slash - f->path));
        f->name = slash + 1;
    } else {
        dir = xstrdup(".");
        f->name = f->path;
    }
    if (!*f->name)
        return error_set(e, -EISDIR, "keys file \"%s\" is a directory", f->path);
    f->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (f->dirfd < 0)
        return error_set(e, -errno, "could not open directory \"%s\": %m", dir);
    if (flock(f->dirfd, write ? LOCK_EX : LOCK_SH) < 0)
        return error_set(e, -errno, "could not lock directory \"%s\": %m", dir);
    return 0;
}

typedef enum KeysOpen {
    KEYS_READ,   /* shared lock; the file must exist */
    KEYS_WRITE,  /* exclusive lock; the file must exist */
    KEYS_CREATE, /* exclusive lock; a missing file counts as empty */
} KeysOpen;

/* Lock the file's directory, then read and parse the file. */
static int keys_file_open(const char *path, KeysOpen how, KeysFile *f, Error *e)
{
    f->path = realpath(path, NULL);
    if (!f->path)
        f->path = xstrdup(path);
    int r = open_dir(f, how != KEYS_READ, e);
    if (r < 0)
        return r;

    r = fileio_read_all(f->path, KEYS_FILE_MAX, &f->text, NULL);
    if (r == -ENOENT && how == KEYS_CREATE) {
        f->text = xstrdup("");
        return 0;
    }
    if (r == -EBADFD)
        return error_set(e, r, "keys file \"%s\" is not a regular file", f->path);
    if (r == -EFBIG)
        return error_set(e, r, "keys file \"%s\" is larger than %zu MiB", f->path,
                         KEYS_FILE_MAX >> 20);
    if (r < 0)
        return error_set(e, r, "could not read keys file \"%s\": %s", f->path, strerror(-r));
    if (fstatat(f->dirfd, f->name, &f->st, 0) < 0)
        return error_set(e, -errno, "could not stat keys file \"%s\": %m", f->path);
    f->exists = true;

    r = apikey_parse(f->text, &f->keys, &f->n, e);
    if (r < 0)
        return error_prefix(e, "keys file \"%s\"", f->path);
    return 0;
}

/* Replace the file with text. An existing file keeps its owner and its user and group
 * permissions (never the world's), so a daemon running under a group can still read it. */
static int keys_file_write(KeysFile *f, const char *text, Error *e)
{
    mode_t mode = f->exists ? (f->st.st_mode & 0660) | 0600 : 0600;

    int r = fileio_write_atomic(f->dirfd, f->name, text, strlen(text), mode);
    if (r < 0)
        return error_set(e, r, "could not write keys file \"%s\": %s", f->path, strerror(-r));

    if (!f->exists)
        return 0;
    if (fchmodat(f->dirfd, f->name, mode, 0) < 0)
        fprintf(stderr, CTL_PROGRAM ": warning: could not set the mode of \"%s\": %m\n", f->path);
    if ((f->st.st_uid != geteuid() || f->st.st_gid != getegid()) &&
        fchownat(f->dirfd, f->name, f->st.st_uid, f->st.st_gid, AT_SYMLINK_NOFOLLOW) < 0)
        fprintf(stderr, CTL_PROGRAM ": warning: could not give \"%s\" back to user %u: %m\n",
                f->path, (unsigned)f->st.st_uid);
    return 0;
}

static const ApiKey *find_key(const KeysFile *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->keys[i].name, name) == 0)
            return &f->keys[i];
    return NULL;
}

static void print_reload_hint(void)
{
    fputs("hint: the daemon re-reads the keys file on SIGHUP: systemctl reload "
          "runtara-environment, or kill -HUP <pid>.\n",
          stderr);
}

/* ---- create --------------------------------------------------------------------------------- */

typedef struct KeysArgs {
    const char *file, *tenant, *name;
    bool admin;
} KeysArgs;

static int keys_option(int c, const char *arg, void *userdata)
{
    KeysArgs *a = userdata;

    switch (c) {
    case 'f':
        a->file = arg;
        return 0;
    case 't':
        if (!id_is_valid(arg))
            return ctl_usage_error("keys: invalid tenant id \"%s\"", arg);
        a->tenant = arg;
        return 0;
    case 'n':
        if (strlen(arg) > APIKEY_NAME_MAX || !id_is_valid(arg))
            return ctl_usage_error("keys: invalid key name \"%s\": use up to %d characters "
                                   "of [A-Za-z0-9_.-]",
                                   arg, APIKEY_NAME_MAX);
        a->name = arg;
        return 0;
    case ARG_ADMIN:
        a->admin = true;
        return 0;
    default:
        return ctl_usage_error("keys: unexpected option");
    }
}

static int parse_keys_args(const char *cmd, const char *shortopts, int argc, char **argv,
                           KeysArgs *a, CtlOptions *o, int *ret_first)
{
    static const struct option longopts[] = {
        CTL_COMMON_OPTIONS,
        {"file", required_argument, NULL, 'f'},
        {"tenant", required_argument, NULL, 't'},
        {"name", required_argument, NULL, 'n'},
        {"admin", no_argument, NULL, ARG_ADMIN},
        {},
    };
    const CtlParser p = {cmd, shortopts, longopts, keys_option, usage};

    int r = ctl_parse_options(&p, argc, argv, a, o, ret_first);
    if (r < 0)
        return r;
    if (!a->file)
        return ctl_usage_error("%s: missing required option --file", cmd);
    return 0;
}

/* The key line appended to text, with a header comment for a new file. */
static char *text_with(const KeysFile *f, const ApiKey *k)
{
    _cleanup_free_ char *line = apikey_format(k);
    StrBuf b = STRBUF_INIT;

    if (!f->exists)
        strbuf_puts(&b,
                    "# runtara-environment API keys: <sha256 of key> admin|tenant:<id> [name]\n"
                    "# Edited by runtara-ctl keys; reload the daemon (SIGHUP) after changes.\n");
    strbuf_puts(&b, f->text);
    if (b.len > 0 && b.buf[b.len - 1] != '\n')
        strbuf_putc(&b, '\n');
    strbuf_printf(&b, "%s\n", line);
    return strbuf_steal(&b);
}

static int create_key(const KeysArgs *a, KeysFile *f, char key[static APIKEY_LEN + 1], ApiKey *k,
                      Error *e)
{
    int r = keys_file_open(a->file, KEYS_CREATE, f, e);
    if (r < 0)
        return r;
    r = apikey_generate(key);
    if (r < 0)
        return error_set(e, r, "could not generate a key: %s", strerror(-r));

    *k = (ApiKey){.admin = a->admin};
    apikey_hash(key, k->hash);
    snprintf(k->tenant, sizeof k->tenant, "%s", a->tenant ? a->tenant : "");
    if (a->name)
        snprintf(k->name, sizeof k->name, "%s", a->name);
    else /* a name lets `keys revoke` find it */
        snprintf(k->name, sizeof k->name, "key-%.8s", k->hash);
    if (find_key(f, k->name))
        return error_set(e, -EEXIST, "a key named \"%s\" already exists in \"%s\"", k->name,
                         f->path);
    _cleanup_free_ char *text = text_with(f, k);
    return keys_file_write(f, text, e);
}

static int keys_create(int argc, char **argv, CtlOptions *o)
{
    _cleanup_(keys_file_done) KeysFile f = KEYS_FILE_INIT;
    char key[APIKEY_LEN + 1], role[ID_MAX_LEN + 8];
    KeysArgs a = {};
    Error e = ERROR_INIT;
    ApiKey k;
    int first;

    int r = parse_keys_args("keys create", "f:t:n:", argc, argv, &a, o, &first);
    if (r >= 0 && first < argc)
        r = ctl_usage_error("keys create: unexpected argument \"%s\"", argv[first]);
    else if (r >= 0 && a.admin == !!a.tenant)
        r = ctl_usage_error("keys create: give exactly one of --admin and --tenant");
    if (r < 0)
        return ctl_parse_exit(r);

    if (create_key(&a, &f, key, &k, &e) < 0)
        return ctl_fail(&e);
    if (o->json) {
        _cleanup_(json_decrefp) json_t *doc =
            json_pack("{s:s, s:s, s:s, s:s}", "name", k.name, "role",
                      role_of(&k, role, sizeof role), "key", key, "file", f.path);
        (void)output_json(doc);
    } else
        printf("%s\n", key);
    explicit_bzero(key, sizeof key);
    fprintf(stderr, "created API key \"%s\" (%s) in \"%s\"\n", k.name,
            role_of(&k, role, sizeof role), f.path);
    fputs("note: the key is shown only this once; the file keeps only its SHA-256.\n", stderr);
    print_reload_hint();
    return CTL_EXIT_OK;
}

/* ---- list ----------------------------------------------------------------------------------- */

static void print_keys(const KeysFile *f, bool json)
{
    static const char *const headings[] = {"NAME", "ROLE", "HASH-PREFIX"};
    _cleanup_(table_freep) Table *t = table_new(ELEMENTSOF(headings), headings);
    _cleanup_(json_decrefp) json_t *arr = json_array();
    char role[ID_MAX_LEN + 8], prefix[HASH_PREFIX_LEN + 1];

    for (size_t i = 0; i < f->n; i++) {
        const ApiKey *k = &f->keys[i];
        const char *r = role_of(k, role, sizeof role);
        snprintf(prefix, sizeof prefix, "%.*s", HASH_PREFIX_LEN, k->hash);
        table_add_row(t, (const char *const[]){k->name[0] ? k->name : NULL, r, prefix});
        json_array_append_new(arr,
                              json_pack("{s:s?, s:s, s:s}", "name", k->name[0] ? k->name : NULL,
                                        "role", r, "hash_prefix", prefix));
    }
    if (json) {
        _cleanup_(json_decrefp) json_t *doc = json_pack("{s:s, s:O}", "file", f->path, "keys", arr);
        (void)output_json(doc);
    } else if (f->n == 0)
        fprintf(stderr, "no keys in \"%s\"\n", f->path);
    else
        table_print(t, stdout);
}

static int keys_list(int argc, char **argv, CtlOptions *o)
{
    _cleanup_(keys_file_done) KeysFile f = KEYS_FILE_INIT;
    KeysArgs a = {};
    Error e = ERROR_INIT;
    int first;

    int r = parse_keys_args("keys list", "f:", argc, argv, &a, o, &first);
    if (r >= 0 && first < argc)
        r = ctl_usage_error("keys list: unexpected argument \"%s\"", argv[first]);
    if (r >= 0 && (a.admin || a.tenant || a.name))
        r = ctl_usage_error("keys list: only --file is accepted");
    if (r < 0)
        return ctl_parse_exit(r);

    if (keys_file_open(a.file, KEYS_READ, &f, &e) < 0)
        return ctl_fail(&e);
    print_keys(&f, o->json);
    return CTL_EXIT_OK;
}

/* ---- revoke --------------------------------------------------------------------------------- */

/* Whether one line of the file is the key line of the key named name. */
static bool is_line_of(const char *line, size_t len, const char *name)
{
    _cleanup_free_ char *copy = xstrndup(line, len);
    _cleanup_free_ ApiKey *k = NULL;
    size_t n = 0;

    return apikey_parse(copy, &k, &n, NULL) >= 0 && n == 1 && strcmp(k[0].name, name) == 0;
}

/* The file's text without the line of the key named name; every other byte is kept. */
static char *text_without(const char *text, const char *name)
{
    StrBuf b = STRBUF_INIT;

    for (const char *s = text; *s;) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) : strlen(s);
        if (!is_line_of(s, len, name))
            strbuf_put(&b, s, len + (nl ? 1 : 0));
        s += len + (nl ? 1 : 0);
    }
    return strbuf_steal(&b);
}

static int keys_revoke(int argc, char **argv, CtlOptions *o)
{
    _cleanup_(keys_file_done) KeysFile f = KEYS_FILE_INIT;
    KeysArgs a = {};
    Error e = ERROR_INIT;
    int first;

    int r = parse_keys_args("keys revoke", "f:", argc, argv, &a, o, &first);
    if (r >= 0 && (a.admin || a.tenant || a.name))
        r = ctl_usage_error("keys revoke: give the key's NAME as an argument, not an option");
    else if (r >= 0 && first >= argc)
        r = ctl_usage_error("keys revoke: missing the NAME of the key to revoke");
    else if (r >= 0 && first + 1 < argc)
        r = ctl_usage_error("keys revoke: unexpected argument \"%s\"", argv[first + 1]);
    if (r < 0)
        return ctl_parse_exit(r);

    const char *name = argv[first];
    r = keys_file_open(a.file, KEYS_WRITE, &f, &e);
    if (r >= 0 && !find_key(&f, name))
        r = error_set(&e, -ENOENT, "no key named \"%s\" in \"%s\"", name, f.path);
    if (r >= 0) {
        _cleanup_free_ char *text = text_without(f.text, name);
        r = keys_file_write(&f, text, &e);
    }
    if (r < 0)
        return ctl_fail(&e);
    if (o->json) {
        _cleanup_(json_decrefp) json_t *doc = json_pack("{s:s, s:b}", "name", name, "revoked", 1);
        (void)output_json(doc);
    } else
        printf("revoked API key \"%s\"\n", name);
    print_reload_hint();
    return CTL_EXIT_OK;
}

int ctl_keys(int argc, char **argv, CtlOptions *o)
{
    static const struct {
        const char *name;
        int (*fn)(int argc, char **argv, CtlOptions *o);
    } verbs[] = {
        {"create", keys_create},
        {"list", keys_list},
        {"revoke", keys_revoke},
    };

    if (argc < 2)
        return ctl_parse_exit(ctl_usage_error("keys: missing subcommand: create, list or revoke"));
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage, stdout);
        return CTL_EXIT_OK;
    }
    for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
        if (strcmp(argv[1], verbs[i].name) == 0)
            return verbs[i].fn(argc - 1, argv + 1, o);
    return ctl_parse_exit(ctl_usage_error("keys: unknown subcommand \"%s\"", argv[1]));
}
