/* Settings: one declarative table (DESIGN §7, STYLE R19) drives parsing from the environment,
 * validation, --help and --print-config. The result is an immutable Config passed down. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "../base/error.h"

typedef struct Config {
    char *data_dir;     /* absolute */
    char *database_url; /* as given, or "sqlite:<data_dir>/runtara.db" */
    char *bind;
    uint64_t http_port;
    char *api_keys_file; /* NULL = no keys */
    char *tls_cert_file; /* NULL = plain HTTP; set together with tls_key_file */
    char *tls_key_file;
    bool allow_plaintext_http; /* a non-loopback bind without TLS is allowed */
    uint64_t max_image_size;
    uint64_t max_json_body;
    uint64_t http_threads;
    uint64_t http_max_connections;
    uint64_t http_idle_timeout_secs;
    uint64_t http_header_limit;
    uint64_t http_header_timeout_secs;
    uint64_t http_max_connections_per_address;
    uint64_t http_reserved_connections;
    uint64_t http_max_pending_connections;
    char *log_level;
    char *log_format;
    char *core_socket; /* absolute; default <data_dir>/core.sock */
    char *core_addr;   /* optional host:port */
    char *runner;
    char *native_tenants;
    uint64_t execution_timeout_secs;
    uint64_t quic_port;
    char *bundles_dir;
    bool use_systemd_cgroup;
    char *oci_runtime;
    char *oci_mounts; /* RUNTARA_OCI_MOUNTS, parsed by oci_mounts_parse() */
    char *network_mode;
    uint64_t oci_memory_bytes;
    uint64_t oci_cpu_millis;
    uint64_t oci_pids_max;
    uint64_t oci_uid;
    bool skip_cert_verification;
    uint64_t max_checkpoint_size;
    uint64_t max_output_size;
    uint64_t stop_grace_secs;
    uint64_t cancel_grace_secs;
    uint64_t instance_log_limit;
    uint64_t instance_memory_limit;
    uint64_t instance_cpu_limit_secs;
    uint64_t instance_open_files;
    uint64_t core_threads;
    uint64_t max_waiters;
    uint64_t max_auto_restarts;
    uint64_t sleep_suspend_ms;
    uint64_t launch_record_ms;
    uint64_t heartbeat_timeout_secs;
    uint64_t lease_secs;
    uint64_t database_timeout_secs;
    uint64_t shutdown_grace_secs;
    uint64_t launch_retries;
    uint64_t retention_secs;
    uint64_t retention_interval_secs;
} Config;

/* Looks up one variable; secure_getenv in the daemon, a table in tests. */
typedef const char *(*ConfigLookup)(const char *name, void *userdata);

/** Fill ret from the settings table. On failure returns -EINVAL with a message naming the variable,
 *  the value and what it accepts (or the two settings that must come together); ret is untouched
 *  then. */
int config_load(ConfigLookup lookup, void *userdata, Config *ret, Error *reterr);
/* A settings file (/etc/runtara/environment): NAME=value lines of the settings above, as in
 * systemd's EnvironmentFile= (blank lines and lines starting with # or ; are skipped, a value may
 * stand in one pair of quotes). Every name must be a setting. */
typedef struct ConfigFile ConfigFile;
#define CONFIG_FILE_DEFAULT "/etc/runtara/environment"
#define CONFIG_FILE_MAX (64 * 1024)
/** Parse the text of the settings file at path (named in messages). -EINVAL naming the line of a
 *  malformed line or an unknown name, -EFBIG beyond CONFIG_FILE_MAX. */
int config_file_parse(const char *path, const char *text, size_t n, ConfigFile **ret, Error *e);
/** Read and parse the settings file at path. A missing file is *ret = NULL unless required. */
int config_file_load(const char *path, bool required, ConfigFile **ret, Error *e);
/** NULL-safe; returns NULL. */
ConfigFile *config_file_free(ConfigFile *f);
/** config_load() with file (may be NULL) between the environment, which wins, and the defaults;
 *  a bad value from the file is reported with its file and line. */
int config_load_from(ConfigLookup lookup, void *userdata, const ConfigFile *file, Config *ret,
                     Error *reterr);
/** config_print() saying which settings came from file. */
void config_print_from(const Config *c, ConfigLookup lookup, void *userdata, const ConfigFile *file,
                       FILE *f);

/** Free the strings of a loaded Config. */
void config_done(Config *c);
/** The --help text for every setting. */
void config_print_help(FILE *f);
/** NAME=value lines for every setting of a loaded Config, with "# default" or "# from environment".
 */
void config_print(const Config *c, ConfigLookup lookup, void *userdata, FILE *f);
/** True if the address string names a loopback interface (127.0.0.0/8, ::1, localhost). */
bool config_bind_is_loopback(const char *bind);
