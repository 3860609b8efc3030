#include <arpa/inet.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../base/alloc.h"
#include "../base/fileio.h"
#include "../base/log.h"
#include "../base/parse-util.h"
#include "../base/strbuf.h"
#include "../store/store.h"
#include "config.h"

typedef enum SettingType {
    SETTING_STRING,
    SETTING_PATH, /* made absolute against the working directory */
    SETTING_UINT, /* min..max */
    SETTING_SIZE, /* bytes with optional K/M/G suffix, min..max */
    SETTING_BOOL,
    SETTING_CHOICE, /* one of choices, "|"-separated */
    SETTING_DBURL,  /* sqlite:PATH or postgres(ql)://... */
    SETTING_ADDR,   /* host:port */
} SettingType;

typedef struct Setting {
    const char *name;
    SettingType type;
    size_t offset;
    const char *def; /* NULL = unset by default */
    uint64_t min, max;
    const char *choices;
    const char *help;
} Setting;

#define F(field) offsetof(Config, field)

/* The settings table. Seed names (DATA_DIR, RUNTARA_DATABASE_URL, ...) are kept as they were. */
static const Setting settings[] = {
    {"DATA_DIR", SETTING_PATH, F(data_dir), ".data", 0, 0, NULL,
     "data directory: images, run directories, the SQLite database"},
    {"RUNTARA_DATABASE_URL", SETTING_DBURL, F(database_url), NULL, 0, 0, NULL,
     "store: sqlite:PATH or postgres://...; unset = sqlite:$DATA_DIR/runtara.db"},
    {"RUNTARA_DATABASE_TIMEOUT_SECS", SETTING_UINT, F(database_timeout_secs), "10", 1, 600, NULL,
     "PostgreSQL: the longest wait for one answer of the server (or one reconnect); past it the "
     "connection is given up, the request answered 503, and the daemon reconnects"},
    {"RUNTARA_ENV_BIND", SETTING_STRING, F(bind), "127.0.0.1", 0, 0, NULL,
     "address the management API listens on"},
    {"RUNTARA_ENV_HTTP_PORT", SETTING_UINT, F(http_port), "8002", 1, 65535, NULL,
     "port of the management API"},
    {"RUNTARA_API_KEYS_FILE", SETTING_PATH, F(api_keys_file), NULL, 0, 0, NULL,
     "API keys file (see runtara-ctl keys); unset = no authentication, loopback only"},
    {"RUNTARA_TLS_CERT_FILE", SETTING_PATH, F(tls_cert_file), NULL, 0, 0, NULL,
     "PEM certificate (then any intermediates) of the management API; with RUNTARA_TLS_KEY_FILE "
     "it serves HTTPS; unset = plain HTTP"},
    {"RUNTARA_TLS_KEY_FILE", SETTING_PATH, F(tls_key_file), NULL, 0, 0, NULL,
     "PEM private key (unencrypted) of RUNTARA_TLS_CERT_FILE"},
    {"RUNTARA_ALLOW_PLAINTEXT_HTTP", SETTING_BOOL, F(allow_plaintext_http), "false", 0, 0, NULL,
     "allow the management API on a non-loopback address without TLS (e.g. behind a proxy that "
     "terminates it)"},
    {"RUNTARA_MAX_IMAGE_SIZE", SETTING_SIZE, F(max_image_size), "1G", 1, 1ULL << 40, NULL,
     "largest image executable accepted, in bytes (K, M, G suffixes)"},
    {"RUNTARA_MAX_JSON_BODY", SETTING_SIZE, F(max_json_body), "1M", 1024, 64ULL << 20, NULL,
     "largest JSON request body accepted"},
    {"RUNTARA_HTTP_THREADS", SETTING_UINT, F(http_threads), "4", 1, 256, NULL,
     "threads serving HTTP requests"},
    {"RUNTARA_HTTP_MAX_CONNECTIONS", SETTING_UINT, F(http_max_connections), "1024", 1, 65536, NULL,
     "concurrent HTTP connections"},
    {"RUNTARA_HTTP_IDLE_TIMEOUT_SECS", SETTING_UINT, F(http_idle_timeout_secs), "60", 1, 86400,
     NULL, "seconds an idle keep-alive connection is kept open"},
    {"RUNTARA_HTTP_HEADER_LIMIT", SETTING_SIZE, F(http_header_limit), "32K", 4096, 1ULL << 20, NULL,
     "memory per connection for the request line and headers"},
    {"RUNTARA_HTTP_HEADER_TIMEOUT_SECS", SETTING_UINT, F(http_header_timeout_secs), "10", 0, 3600,
     NULL,
     "seconds from a connection's accept to the end of its request headers, however the bytes "
     "trickle in; until then it holds no HTTP connection; 0 = no gate (and none of its limits)"},
    {"RUNTARA_HTTP_MAX_CONNECTIONS_PER_ADDRESS", SETTING_UINT, F(http_max_connections_per_address),
     "128", 0, 65536, NULL,
     "connections one client address may hold, served or waiting for their headers; 0 = no limit"},
    {"RUNTARA_HTTP_RESERVED_CONNECTIONS", SETTING_UINT, F(http_reserved_connections), "32", 0, 4096,
     NULL, "connections beyond RUNTARA_HTTP_MAX_CONNECTIONS kept for health and metrics requests"},
    {"RUNTARA_HTTP_MAX_PENDING_CONNECTIONS", SETTING_UINT, F(http_max_pending_connections), "4096",
     1, 1048576, NULL,
     "connections that may wait for their request headers at once; when full, the oldest is "
     "closed"},
    {"RUNTARA_LOG_LEVEL", SETTING_CHOICE, F(log_level), "info", 0, 0,
     "error|warning|notice|info|debug", "log level"},
    {"RUNTARA_LOG_FORMAT", SETTING_CHOICE, F(log_format), "text", 0, 0, "text|json",
     "log format on stderr: logfmt text or JSON lines"},
    {"RUNTARA_CORE_SOCKET", SETTING_PATH, F(core_socket), NULL, 0, 0, NULL,
     "unix socket of the instance API; unset = $DATA_DIR/core.sock"},
    {"RUNTARA_CORE_ADDR", SETTING_ADDR, F(core_addr), NULL, 0, 0, NULL,
     "optional TCP host:port for the instance API"},
    {"RUNTARA_RUNNER", SETTING_CHOICE, F(runner), "oci", 0, 0, "oci|native|mock",
     "the runner of images registered without a runner_type"},
    {"RUNTARA_NATIVE_TENANTS", SETTING_STRING, F(native_tenants), NULL, 0, 0, NULL,
     "tenants whose API keys may register and start native images (comma-separated, or *); "
     "unset = none (admin keys always may)"},
    {"EXECUTION_TIMEOUT_SECS", SETTING_UINT, F(execution_timeout_secs), "300", 1, 31536000, NULL,
     "default per-instance timeout in seconds"},
    {"RUNTARA_ENV_QUIC_PORT", SETTING_UINT, F(quic_port), "8002", 1, 65535, NULL,
     "accepted for compatibility; there is no QUIC listener (use RUNTARA_ENV_HTTP_PORT)"},
    {"BUNDLES_DIR", SETTING_PATH, F(bundles_dir), NULL, 0, 0, NULL,
     "OCI bundle directory; unset = $DATA_DIR/bundles"},
    {"RUNTARA_OCI_RUNTIME", SETTING_STRING, F(oci_runtime), "crun", 0, 0, NULL,
     "the OCI runtime of the oci runner: crun, runc, or a path to either"},
    {"RUNTARA_NETWORK_MODE", SETTING_CHOICE, F(network_mode), "none", 0, 0, "none|host",
     "containers' network: none (loopback only) or the host's"},
    {"RUNTARA_OCI_MEMORY_BYTES", SETTING_SIZE, F(oci_memory_bytes), "512M", 0, 1ULL << 44, NULL,
     "memory of a container, swap included (an OOM kill beyond); 0 = no limit"},
    {"RUNTARA_OCI_CPU_MILLIS", SETTING_UINT, F(oci_cpu_millis), "500", 0, 1000000, NULL,
     "thousandths of a CPU a container may use; 0 = no limit"},
    {"RUNTARA_OCI_PIDS_MAX", SETTING_UINT, F(oci_pids_max), "64", 0, 1000000, NULL,
     "processes and threads per container; 0 = no limit"},
    {"RUNTARA_OCI_MOUNTS", SETTING_STRING, F(oci_mounts), NULL, 0, 0, NULL,
     "host paths bound into every container, comma-separated SOURCE[:DESTINATION][:ro|rw]; "
     "read-only unless :rw (docs/operations.md#isolation)"},
    {"RUNTARA_OCI_UID", SETTING_UINT, F(oci_uid), "65534", 1, 4294967294, NULL,
     "the user containers run as (never root)"},
    {"USE_SYSTEMD_CGROUP", SETTING_BOOL, F(use_systemd_cgroup), "false", 0, 0, NULL,
     "let the OCI runtime manage cgroups through systemd"},
    {"RUNTARA_SKIP_CERT_VERIFICATION", SETTING_BOOL, F(skip_cert_verification), "false", 0, 0, NULL,
     "when true, instances get RUNTARA_SKIP_CERT_VERIFICATION=true (runtara-ctl reads it too)"},
    {"RUNTARA_MAX_CHECKPOINT_SIZE", SETTING_SIZE, F(max_checkpoint_size), "16M", 1, 1ULL << 30,
     NULL, "largest checkpoint an instance may save"},
    {"RUNTARA_MAX_OUTPUT_SIZE", SETTING_SIZE, F(max_output_size), "1M", 16, 64ULL << 20, NULL,
     "largest output an instance may report"},
    {"RUNTARA_STOP_GRACE_SECS", SETTING_UINT, F(stop_grace_secs), "10", 0, 3600, NULL,
     "seconds between SIGTERM and SIGKILL when a stop names no grace, and for timeouts"},
    {"RUNTARA_CANCEL_GRACE_SECS", SETTING_UINT, F(cancel_grace_secs), "30", 0, 86400, NULL,
     "seconds a running instance has to act on a cancel signal before it is stopped"},
    {"RUNTARA_INSTANCE_LOG_LIMIT", SETTING_SIZE, F(instance_log_limit), "10M", 0, 1ULL << 34, NULL,
     "bytes of an instance's output kept in stderr.log per launch"},
    {"RUNTARA_INSTANCE_MEMORY_LIMIT", SETTING_SIZE, F(instance_memory_limit), "0", 0, 1ULL << 44,
     NULL, "address-space limit of an instance process (native runner); 0 = none"},
    {"RUNTARA_INSTANCE_CPU_LIMIT_SECS", SETTING_UINT, F(instance_cpu_limit_secs), "0", 0, 31536000,
     NULL, "CPU seconds an instance process may use (native runner); 0 = none"},
    {"RUNTARA_INSTANCE_OPEN_FILES", SETTING_UINT, F(instance_open_files), "1024", 16, 1048576, NULL,
     "open files an instance process may hold"},
    {"RUNTARA_CORE_THREADS", SETTING_UINT, F(core_threads), "16", 1, 256, NULL,
     "threads serving the instance API"},
    {"RUNTARA_MAX_WAITERS", SETTING_UINT, F(max_waiters), "10000", 16, 1000000, NULL,
     "long-poll requests that may wait at once"},
    {"RUNTARA_MAX_AUTO_RESTARTS", SETTING_UINT, F(max_auto_restarts), "3", 0, 1000, NULL,
     "relaunches of an instance found dead after a crash, without a new checkpoint in between"},
    {"RUNTARA_SLEEP_SUSPEND_MS", SETTING_UINT, F(sleep_suspend_ms), "1000", 0, 86400000, NULL,
     "durable sleeps at least this long suspend the instance; shorter ones sleep in the process"},
    {"RUNTARA_LAUNCH_RECORD_MS", SETTING_UINT, F(launch_record_ms), "50", 0, 60000, NULL,
     "a started process whose program has not called the instance API within this long has its "
     "launch recorded (running) by the daemon; one that calls sooner has it recorded with that "
     "call, in one commit; 0 = at once"},
    {"RUNTARA_HEARTBEAT_TIMEOUT_SECS", SETTING_UINT, F(heartbeat_timeout_secs), "0", 0, 86400, NULL,
     "an instance silent this long is killed (heartbeat_timeout); 0 = off"},
    {"RUNTARA_LEASE_SECS", SETTING_UINT, F(lease_secs), "10", 2, 3600, NULL,
     "several daemons on one PostgreSQL database: a daemon silent this long (renewing every "
     "quarter of it) is taken for dead, and the others take over its instances"},
    {"RUNTARA_SHUTDOWN_GRACE_SECS", SETTING_UINT, F(shutdown_grace_secs), "10", 0, 3600, NULL,
     "at SIGTERM, seconds running instances have to suspend at a checkpoint before they are "
     "killed"},
    {"RUNTARA_LAUNCH_RETRIES", SETTING_UINT, F(launch_retries), "3", 0, 100, NULL,
     "retries (with backoff) of a failed relaunch of a woken or restarted instance"},
    {"RUNTARA_RETENTION_SECS", SETTING_UINT, F(retention_secs), "604800", 0, 315360000, NULL,
     "finished instances older than this are deleted with their data; 0 = keep forever"},
    {"RUNTARA_RETENTION_INTERVAL_SECS", SETTING_UINT, F(retention_interval_secs), "3600", 1, 86400,
     NULL, "seconds between retention passes (one also runs at start-up)"},
};

static char *make_absolute(const char *p)
{
    if (p[0] == '/')
        return xstrdup(p);
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd))
        return xstrdup(p);
    return xasprintf("%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, p);
}

static bool choice_ok(const char *choices, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = choices; p && *p;) {
        const char *end = strchrnul(p, '|');
        if ((size_t)(end - p) == n && strncmp(p, v, n) == 0)
            return true;
        p = *end ? end + 1 : end;
    }
    return false;
}

static int parse_addr(const char *v)
{
    const char *colon = strrchr(v, ':');
    uint64_t port;
    if (!colon || colon == v || parse_uint64(colon + 1, &port) < 0 || port == 0 || port > 65535)
        return -EINVAL;
    return 0;
}

static int bad(Error *e, const Setting *s, const char *v, const char *accepts)
{
    return error_set(e, -EINVAL, "invalid value \"%s\" for %s: %s", v, s->name, accepts);
}

/* Parse one value into the Config field; on error set a message naming what is accepted. */
static int setting_parse(const Setting *s, const char *v, Config *c, Error *e)
{
    void *field = (char *)c + s->offset;
    uint64_t n;
    int r;

    switch (s->type) {
    case SETTING_STRING:
        if (!*v)
            return bad(e, s, v, "must not be empty");
        *(char **)field = xstrdup(v);
        return 0;
    case SETTING_PATH:
        if (!*v)
            return bad(e, s, v, "must be a path");
        *(char **)field = make_absolute(v);
        return 0;
    case SETTING_UINT:
    case SETTING_SIZE:
        r = s->type == SETTING_UINT ? parse_uint64(v, &n) : parse_size(v, &n);
        if (r < 0 || n < s->min || n > s->max) {
            char accepts[160];
            snprintf(accepts, sizeof accepts, "must be %s between %llu and %llu",
                     s->type == SETTING_UINT ? "an integer" : "a size (K, M, G suffixes)",
                     (unsigned long long)s->min, (unsigned long long)s->max);
            return bad(e, s, v, accepts);
        }
        *(uint64_t *)field = n;
        return 0;
    case SETTING_BOOL:
        if (parse_boolean(v, (bool *)field) < 0)
            return bad(e, s, v, "must be one of true, false, yes, no, on, off, 1, 0");
        return 0;
    case SETTING_CHOICE:
        if (!choice_ok(s->choices, v)) {
            StrBuf b = STRBUF_INIT;
            strbuf_puts(&b, "must be one of ");
            for (const char *p = s->choices; *p; p++)
                strbuf_puts(&b, *p == '|' ? ", " : (char[]){*p, '\0'});
            r = bad(e, s, v, b.buf);
            strbuf_done(&b);
            return r;
        }
        *(char **)field = xstrdup(v);
        return 0;
    case SETTING_DBURL: {
        Error why = ERROR_INIT;
        if (store_url_parse(v, NULL, &why) < 0) { /* (not quoted: it may hold a password) */
            r = error_set(e, -EINVAL, "invalid %s: %s", s->name, error_message(&why));
            error_done(&why);
            return r;
        }
        *(char **)field = xstrdup(v);
        return 0;
    }
    case SETTING_ADDR:
        if (parse_addr(v) < 0)
            return bad(e, s, v, "must be host:port with a port between 1 and 65535");
        *(char **)field = xstrdup(v);
        return 0;
    }
    return -EINVAL;
}

/* ---- the settings file ---------------------------------------------------------------------- */

struct ConfigFile {
    char *path;
    size_t n;
    struct ConfigFileEntry {
        const Setting *setting;
        char *value;
        unsigned line;
    } * entries;
};

static const Setting *setting_find(const char *name, size_t len)
{
    for (size_t i = 0; i < ELEMENTSOF(settings); i++)
        if (strlen(settings[i].name) == len && strncmp(settings[i].name, name, len) == 0)
            return &settings[i];
    return NULL;
}

ConfigFile *config_file_free(ConfigFile *f)
{
    if (!f)
        return NULL;
    for (size_t i = 0; i < f->n; i++)
        free(f->entries[i].value);
    free(f->entries);
    free(f->path);
    free(f);
    return NULL;
}

int config_file_parse(const char *path, const char *text, size_t size, ConfigFile **ret, Error *e)
{
    if (size > CONFIG_FILE_MAX)
        return error_set(e, -EFBIG, "settings file \"%s\" is larger than %d bytes", path,
                         CONFIG_FILE_MAX);
    if (memchr(text, '\0', size))
        return error_set(e, -EINVAL, "settings file \"%s\" is not text (it holds a NUL byte)",
                         path);
    ConfigFile *f = xcalloc(1, sizeof *f);
    f->path = xstrdup(path);
    unsigned line = 0;
    for (const char *p = text, *end = text + size; p < end;) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        line++;
        const char *s = p, *t = eol;
        p = eol + 1;
        while (s < t && (*s == ' ' || *s == '\t'))
            s++;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t' || t[-1] == '\r'))
            t--;
        if (s == t || *s == '#' || *s == ';')
            continue;
        const char *eq = memchr(s, '=', (size_t)(t - s));
        const char *name_end = eq;
        while (name_end && name_end > s && (name_end[-1] == ' ' || name_end[-1] == '\t'))
            name_end--;
        if (!eq || name_end == s) {
            config_file_free(f);
            return error_set(e, -EINVAL,
                             "%s, line %u: expected NAME=value; hint: a comment starts with #",
                             path, line);
        }
        const Setting *setting = setting_find(s, (size_t)(name_end - s));
        if (!setting) {
            int r = error_set(e, -EINVAL,
                              "%s, line %u: unknown setting \"%.*s\"; hint: "
                              "runtara-environment --help lists them",
                              path, line, (int)MIN(name_end - s, 64), s);
            config_file_free(f);
            return r;
        }
        const char *v = eq + 1;
        while (v < t && (*v == ' ' || *v == '\t'))
            v++;
        if (t - v >= 2 && (*v == '"' || *v == '\'') && t[-1] == *v) {
            v++; /* one pair of quotes around the whole value, as in systemd's files */
            t--;
        }
        f->entries = xrealloc(f->entries, (f->n + 1) * sizeof *f->entries);
        f->entries[f->n++] = (struct ConfigFileEntry){setting, xstrndup(v, (size_t)(t - v)), line};
    }
    *ret = f;
    return 0;
}

int config_file_load(const char *path, bool required, ConfigFile **ret, Error *e)
{
    char *text = NULL;
    size_t n = 0;
    int r = fileio_read_all(path, CONFIG_FILE_MAX, &text, &n);
    if (r == -EFBIG)
        return error_set(e, r, "settings file \"%s\" is larger than %d bytes", path,
                         CONFIG_FILE_MAX);
    if (r == -ENOENT && !required) {
        *ret = NULL;
        return 0;
    }
    if (r < 0)
        return error_set(e, r, "could not read the settings file \"%s\": %s", path, strerror(-r));
    r = config_file_parse(path, text, n, ret, e);
    free(text);
    return r;
}

/* The last value f gives the setting s (NULL: none), and its line. */
static const char *file_value(const ConfigFile *f, const Setting *s, unsigned *ret_line)
{
    for (size_t i = f ? f->n : 0; i > 0; i--)
        if (f->entries[i - 1].setting == s) {
            *ret_line = f->entries[i - 1].line;
            return f->entries[i - 1].value;
        }
    return NULL;
}

int config_load_from(ConfigLookup lookup, void *userdata, const ConfigFile *file, Config *ret,
                     Error *reterr)
{
    Config c = {0};

    for (size_t i = 0; i < ELEMENTSOF(settings); i++) {
        const Setting *s = &settings[i];
        unsigned line = 0;
        const char *v = lookup(s->name, userdata);
        if (!v)
            v = file_value(file, s, &line);
        if (!v)
            v = s->def;
        if (!v)
            continue;
        int r = setting_parse(s, v, &c, reterr);
        if (r < 0) {
            if (line > 0)
                error_prefix(reterr, "%s, line %u", file->path, line);
            config_done(&c);
            return r;
        }
    }
    if (!c.tls_cert_file != !c.tls_key_file) {
        bool cert = c.tls_cert_file;
        config_done(&c);
        return error_set(reterr, -EINVAL, "%s is set but %s is not: TLS needs both",
                         cert ? "RUNTARA_TLS_CERT_FILE" : "RUNTARA_TLS_KEY_FILE",
                         cert ? "RUNTARA_TLS_KEY_FILE" : "RUNTARA_TLS_CERT_FILE");
    }
    /* defaults that derive from other settings */
    if (!c.database_url)
        c.database_url = xasprintf("sqlite:%s/runtara.db", c.data_dir);
    if (!c.core_socket)
        c.core_socket = xasprintf("%s/core.sock", c.data_dir);
    if (!c.bundles_dir)
        c.bundles_dir = xasprintf("%s/bundles", c.data_dir);
    *ret = c;
    return 0;
}

int config_load(ConfigLookup lookup, void *userdata, Config *ret, Error *reterr)
{
    return config_load_from(lookup, userdata, NULL, ret, reterr);
}

void config_done(Config *c)
{
    for (size_t i = 0; i < ELEMENTSOF(settings); i++) {
        SettingType t = settings[i].type;
        if (t == SETTING_STRING || t == SETTING_PATH || t == SETTING_CHOICE || t == SETTING_DBURL ||
            t == SETTING_ADDR) {
            char **p = (char **)((char *)c + settings[i].offset);
            free(*p);
            *p = NULL;
        }
    }
}

void config_print_help(FILE *f)
{
    fprintf(f, "Settings (environment variables):\n");
    for (size_t i = 0; i < ELEMENTSOF(settings); i++) {
        const Setting *s = &settings[i];
        fprintf(f, "  %-32s %s", s->name, s->help);
        if (s->def)
            fprintf(f, " [default: %s]", s->def);
        fputc('\n', f);
    }
}

void config_print(const Config *c, ConfigLookup lookup, void *userdata, FILE *f)
{
    config_print_from(c, lookup, userdata, NULL, f);
}

void config_print_from(const Config *c, ConfigLookup lookup, void *userdata, const ConfigFile *file,
                       FILE *f)
{
    for (size_t i = 0; i < ELEMENTSOF(settings); i++) {
        const Setting *s = &settings[i];
        const void *field = (const char *)c + s->offset;
        unsigned line = 0;
        _cleanup_free_ char *from_file = NULL;
        if (!lookup(s->name, userdata) && file_value(file, s, &line))
            from_file = xasprintf("from %s, line %u", file->path, line);
        const char *origin = lookup(s->name, userdata) ? "from environment"
                             : from_file               ? from_file
                                                       : "default";

        fprintf(f, "%s=", s->name);
        switch (s->type) {
        case SETTING_UINT:
        case SETTING_SIZE:
            fprintf(f, "%llu", (unsigned long long)*(const uint64_t *)field);
            break;
        case SETTING_BOOL:
            fputs(*(const bool *)field ? "true" : "false", f);
            break;
        default: {
            const char *v = *(char *const *)field;
            fputs(v ? v : "", f);
        }
        }
        fprintf(f, "  # %s\n", origin);
    }
}

bool config_bind_is_loopback(const char *bind)
{
    struct in_addr a4;
    struct in6_addr a6;

    if (strcmp(bind, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, bind, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, bind, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}
