/* runtara-environment: parse settings, open the store, start the APIs, run the event loop until
 * SIGTERM or SIGINT. SIGHUP re-reads the API keys file. Exit status: 0 after a clean stop, 1 when
 * start-up fails, 2 for bad usage or settings. */
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "../api/api.h"
#include "../api/tls.h"
#include "../base/alloc.h"
#include "../base/fileio.h"
#include "../base/id.h"
#include "../base/log.h"
#include "../runner/oci-bundle.h"
#include "../runner/oci-runtime.h"
#include "../runner/oci-seccomp.h"
#include "../runner/oci-spec.h"
#include "../sched/janitor.h"
#include "../sched/run-dir.h"
#include "config.h"

static const char *env_lookup(const char *name, void *userdata)
{
    (void)userdata;
    return secure_getenv(name);
}

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: runtara-environment [--help] [--version] [--print-config]\n"
            "       runtara-environment migrate\n\n"
            "The Runtara Environment daemon: image registry, instance runner and durable\n"
            "timers behind an HTTP management API. Configured by environment variables, and\n"
            "by the same NAME=value lines in the settings file " CONFIG_FILE_DEFAULT " (or\n"
            "RUNTARA_SETTINGS_FILE; empty: none), the environment winning.\n\n"
            "migrate brings the schema of RUNTARA_DATABASE_URL up to date and exits (the daemon\n"
            "also does at start-up).\n\n");
    config_print_help(f);
}

/* Returns -1 to continue starting, else the exit status. */
static int parse_args(int argc, char **argv, bool *print_config, bool *migrate)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"print-config", no_argument, NULL, 'p'},
        {},
    };
    int c;
    while ((c = getopt_long(argc, argv, "hV", opts, NULL)) >= 0) {
        switch (c) {
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("runtara-environment %s\n", RUNTARA_VERSION);
            return 0;
        case 'p':
            *print_config = true;
            break;
        default:
            fprintf(stderr, "hint: see runtara-environment --help\n");
            return 2;
        }
    }
    if (optind < argc && strcmp(argv[optind], "migrate") == 0) {
        *migrate = true;
        optind++;
    }
    if (optind < argc) {
        fprintf(stderr,
                "runtara-environment: unexpected argument \"%s\"\n"
                "hint: settings are environment variables; see --help\n",
                argv[optind]);
        return 2;
    }
    return -1;
}

/* runtara-environment migrate: 0, or 1 with the reason on stderr. */
static int run_migrate(Config *cfg)
{
    Error e = ERROR_INIT;
    StoreInfo info;
    int r = store_migrate(cfg->database_url, &info, &e);
    if (r < 0)
        fprintf(stderr, "runtara-environment: could not migrate the database: %s\n",
                error_message(&e));
    else
        printf("%s schema at version %d of %d\n", info.backend, info.schema_version,
               info.schema_latest);
    error_done(&e);
    config_done(cfg);
    return r < 0 ? 1 : 0;
}

static int on_reload(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
    ApiContext *ctx = userdata;
    Error e = ERROR_INIT;
    (void)s;
    (void)si;
    if (auth_reload(ctx->auth, &e) < 0)
        log_error("could not reload API keys, keeping the previous ones: %s", error_message(&e));
    else
        log_notice("reloaded API keys: %zu keys", auth_count(ctx->auth));
    error_done(&e);
    return 0;
}

/* Beyond loopback the management API needs API keys, and TLS unless RUNTARA_ALLOW_PLAINTEXT_HTTP
 * waives it (a proxy in front terminates TLS): keys and data would cross the network in clear. */
static bool bind_allowed(const Config *c)
{
    if (config_bind_is_loopback(c->bind))
        return true;
    if (!c->api_keys_file) {
        fprintf(stderr,
                "runtara-environment: refusing to listen on \"%s\" without API keys\n"
                "hint: set RUNTARA_API_KEYS_FILE (create keys with \"runtara-ctl keys create\"), "
                "or bind to 127.0.0.1\n",
                c->bind);
        return false;
    }
    if (c->tls_cert_file)
        return true;
    if (!c->allow_plaintext_http) {
        fprintf(stderr,
                "runtara-environment: refusing to listen on \"%s\" without TLS\n"
                "hint: set RUNTARA_TLS_CERT_FILE and RUNTARA_TLS_KEY_FILE, or bind to 127.0.0.1; "
                "behind a proxy that terminates TLS, set RUNTARA_ALLOW_PLAINTEXT_HTTP=true\n",
                c->bind);
        return false;
    }
    log_warning("RUNTARA_ALLOW_PLAINTEXT_HTTP=true: the management API listens on \"%s\" "
                "WITHOUT TLS; API keys, inputs and outputs cross the network in clear text, so "
                "only a proxy that terminates TLS should reach it",
                c->bind);
    return true;
}

/* Everything the daemon owns while it runs. */
typedef struct Daemon {
    Config cfg;
    ApiContext api;
    TlsFiles tls;         /* the management API's certificate and key; empty = plain HTTP */
    HttpServer *http;     /* management API */
    HttpServer *core;     /* instance API on the unix socket */
    HttpServer *core_tcp; /* instance API on RUNTARA_CORE_ADDR, if set */
    Runner *runners[_RUNNER_TYPE_MAX]; /* by type; the mock serves every type (tests) */
    Janitor *janitor;
    sd_event *loop;
    int lock_fd; /* DATA_DIR/runtara.lock, write-locked while this daemon runs; -1 = none */
    char daemon_id[STORE_DAEMON_ID_MAX + 1]; /* DATA_DIR/daemon-id: this daemon in the store */
    char host[256];
    bool registered; /* in the store's daemons, until a clean stop unregisters it */
} Daemon;

static void on_drained(void *userdata)
{
    Daemon *d = userdata;
    log_notice("drained; stopping");
    (void)sd_event_exit(d->loop, 0);
}

/* The first SIGTERM or SIGINT drains: no new starts, running instances suspend at their next
 * checkpoint, for up to RUNTARA_SHUTDOWN_GRACE_SECS. A second one stops at once. Either way what
 * still runs at the end is killed and suspended, and relaunched at the next start. */
static int on_stop(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
    Daemon *d = userdata;
    (void)sd_notify(false, "STOPPING=1\nSTATUS=stopping");
    if (atomic_load(&d->api.draining) || !d->api.sv || d->cfg.shutdown_grace_secs == 0 ||
        supervisor_running(d->api.sv) == 0) {
        log_notice("received %s, stopping", strsignal((int)si->ssi_signo));
        return sd_event_exit(sd_event_source_get_event(s), 0);
    }
    log_notice("received %s, draining for up to %u s (send it again to stop at once)",
               strsignal((int)si->ssi_signo), (unsigned)d->cfg.shutdown_grace_secs);
    atomic_store(&d->api.draining, true);
    supervisor_drain(d->api.sv, (unsigned)d->cfg.shutdown_grace_secs, on_drained, d);
    return 0;
}

/* The unix socket of the instance API: a stale socket file from an earlier run is replaced, any
 * other file at that path is left alone and refused. */
static int listen_unix(const char *path, Error *e)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    if (strlen(path) >= sizeof sa.sun_path)
        return error_set(e, -ENAMETOOLONG, "socket path \"%s\" is too long (RUNTARA_CORE_SOCKET)",
                         path);
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return error_set(e, -EEXIST, "\"%s\" exists and is not a socket (RUNTARA_CORE_SOCKET)",
                             path);
        (void)unlink(path);
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return error_set(e, -errno, "could not create a unix socket: %m");
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || chmod(path, 0660) < 0 ||
        listen(fd, 512) < 0) {
        int r = -errno;
        (void)close(fd);
        return error_set(e, r, "could not listen on \"%s\": %s", path, strerror(-r));
    }
    return fd;
}

static void on_instance_change(const char *instance_key, SupervisorChange what, void *userdata)
{
    if (what == SUPERVISOR_CHANGED_SIGNAL)
        api_signal_sent(userdata, instance_key);
    else
        api_instance_changed(userdata, instance_key);
}

static HttpServerSettings core_settings(Daemon *d, int fd, const char *bind, uint16_t port)
{
    size_t n;
    const HttpRoute *routes = api_core_routes(&n);
    return (HttpServerSettings){
        .bind = bind,
        .port = port,
        .listen_fd = fd,
        .threads = (unsigned)d->cfg.core_threads,
        .max_connections = (unsigned)d->cfg.http_max_connections,
        .idle_timeout_secs = (unsigned)d->cfg.http_idle_timeout_secs,
        .header_limit = d->cfg.http_header_limit,
        .max_json_body = MAX(d->cfg.max_json_body, d->cfg.max_output_size + 1024),
        .routes = routes,
        .n_routes = n,
        .admit = api_core_admit,
        .userdata = &d->api,
        /* The gate (http-gate.h) accepts for the server: a new connection wakes one thread, not
         * each of the server's (libmicrohttpd's workers all watch a listening socket it owns, and
         * all but one find nothing to accept: ~9 wasted wake-ups per launch with 16 threads),
         * and a program that opens connections and sends nothing holds none of its slots. No
         * per-address limit or reserve: every program comes from the same local address. (On a
         * unix connection it did not accept, libmicrohttpd 0.9.75 tries TCP_NODELAY and TCP_CORK
         * at each reply and fails: two cheap system calls, against the wake-ups saved.) */
        .header_timeout_secs = (unsigned)d->cfg.http_header_timeout_secs,
        .max_pending = (unsigned)d->cfg.http_max_pending_connections,
    };
}

/* The OCI runner, if its runtime really runs a container on this host: the check runs the tiny
 * static runtara-oci-check with a launch's isolation. If it cannot, the runner is unavailable,
 * with the check's message (what failed, the runtime's words, a hint) as the reason every launch
 * of an oci image gives; with RUNTARA_RUNNER=oci the daemon does not start. */
typedef struct Mounts {
    OciMount *m;
    size_t n;
} Mounts;

static void mounts_done(Mounts *m)
{
    oci_mounts_free(m->m, m->n);
}

static int start_oci(Daemon *d, const RunnerSettings *rs, SupervisorRunners *runners, char *why,
                     size_t why_size, Error *e)
{
    _cleanup_free_ char *root = xasprintf("%s/oci", d->cfg.data_dir);
    _cleanup_free_ char *state = xasprintf("%s/state", root);
    _cleanup_free_ char *launches = xasprintf("%s/launches", root);
    _cleanup_free_ char *socket_dir = xasprintf("%s/socket", root);
    _cleanup_free_ char *check = oci_find_check_program(), *bpf = NULL;
    Error ce = ERROR_INIT;
    /* the operator's mounts, never over what is the daemon's */
    const char *private_paths[5] = {d->cfg.data_dir, d->cfg.bundles_dir};
    size_t n_private = 2;
    if (d->cfg.api_keys_file)
        private_paths[n_private++] = d->cfg.api_keys_file;
    if (d->cfg.tls_key_file)
        private_paths[n_private++] = d->cfg.tls_key_file;
    _cleanup_(mounts_done) Mounts mounts = {0};
    int k = oci_mounts_parse(d->cfg.oci_mounts, private_paths, &mounts.m, &mounts.n, e);
    if (k < 0)
        return k;
    /* crun takes the seccomp filter compiled once; without it, it compiles one at each start */
    if (oci_runtime_is_crun(d->cfg.oci_runtime) && oci_seccomp_compile(&bpf, &ce) < 0) {
        log_warning("%s; crun compiles it at each start instead", error_message(&ce));
        error_done(&ce);
    }
    OciRuntime rt = {.path = d->cfg.oci_runtime,
                     .root = state,
                     .systemd_cgroup = d->cfg.use_systemd_cgroup,
                     .seccomp_bpf = bpf};
    usec_t took = 0;
    k = fileio_mkdir_p(root, 0711);
    if (k < 0)
        return error_set(e, k, "could not create \"%s\": %s", root, strerror(-k));
    (void)oci_bundle_sweep(d->cfg.bundles_dir);
    k = check ? oci_runtime_check(&rt, d->cfg.bundles_dir, check, 0, &took, &ce)
              : error_set(&ce, -ENOENT, "could not find runtara-oci-check");
    if (k < 0) {
        snprintf(why, why_size, "%s", error_message(&ce));
        runners->unavailable[RUNNER_OCI] = why;
        log_full(strcmp(d->cfg.runner, "oci") == 0 ? LOG_DEBUG : LOG_WARNING,
                 "the oci runner is not available: %s", why);
        error_done(&ce);
        return 0;
    }
    log_info("oci runner: %s runs containers here (check: %.1f ms)", d->cfg.oci_runtime,
             (double)took / 1000.0);
    RunnerOciSettings os = {.runtime = d->cfg.oci_runtime,
                            .state_dir = state,
                            .bundles_dir = d->cfg.bundles_dir,
                            .launches_dir = launches,
                            .socket_dir = socket_dir,
                            .systemd_cgroup = d->cfg.use_systemd_cgroup,
                            .uid = (uint32_t)d->cfg.oci_uid,
                            .gid = (uint32_t)getegid(),
                            .seccomp_bpf = bpf,
                            .mounts = mounts.m,
                            .n_mounts = mounts.n};
    k = runner_oci_new(rs, &os, &d->runners[RUNNER_OCI], e);
    if (k < 0)
        return k;
    runners->runners[RUNNER_OCI] = d->runners[RUNNER_OCI];
    return 0;
}

/* The runner, the supervisor and the instance API. */
static int start_instances(Daemon *d, Error *e)
{
    int r = 0;
    SupervisorRunners runners = {0};
    char oci_why[1024] = "";
    _cleanup_free_ char *shim = runner_find_shim();
    RunnerSettings rs = {.shim_path = shim, .server_socket = d->cfg.core_socket};
    RunnerType deflt = runner_type_from_string(d->cfg.runner);
    if (deflt == RUNNER_MOCK) {
        log_warning("RUNTARA_RUNNER=mock: instances are not executed (for tests only)");
        r = runner_mock_new(&d->runners[RUNNER_MOCK]);
        for (RunnerType t = 0; t < _RUNNER_TYPE_MAX; t++)
            runners.runners[t] = d->runners[RUNNER_MOCK];
    } else {
        r = runner_native_new(&rs, &d->runners[RUNNER_NATIVE], e);
        runners.runners[RUNNER_NATIVE] = d->runners[RUNNER_NATIVE];
        if (r >= 0)
            r = start_oci(d, &rs, &runners, oci_why, sizeof oci_why, e);
        if (r >= 0 && !runners.runners[deflt])
            r = error_set(e, -EOPNOTSUPP,
                          "the default runner (RUNTARA_RUNNER=%s) is not available here: %s",
                          d->cfg.runner, runners.unavailable[deflt]);
    }
    if (r < 0)
        return r;
    r = waiters_new((unsigned)d->cfg.max_waiters, &d->api.waiters);
    if (r < 0)
        return error_set(e, r, "could not start the long-poll timer: %s", strerror(-r));
    /* a launch's saves are admitted from it (token-memo.h); past this many launches the oldest
     * is dropped, at ~200 bytes each */
    d->api.tokens = token_memo_new(4096);
    SupervisorSettings ss = {
        .data_dir = d->cfg.data_dir,
        .network =
            strcmp(d->cfg.network_mode, "host") == 0 ? RUNNER_NETWORK_HOST : RUNNER_NETWORK_NONE,
        .log_limit = d->cfg.instance_log_limit,
        .limits = {.memory_bytes = d->cfg.oci_memory_bytes,
                   .cpu_millis = d->cfg.oci_cpu_millis,
                   .pids = d->cfg.oci_pids_max,
                   .address_space_bytes = d->cfg.instance_memory_limit,
                   .cpu_secs = d->cfg.instance_cpu_limit_secs,
                   .open_files = d->cfg.instance_open_files},
        .stop_grace_secs = (unsigned)d->cfg.stop_grace_secs,
        .cancel_grace_secs = (unsigned)d->cfg.cancel_grace_secs,
        .max_auto_restarts = (unsigned)d->cfg.max_auto_restarts,
        .sleep_suspend_ms = (unsigned)d->cfg.sleep_suspend_ms,
        .launch_record_ms = (unsigned)d->cfg.launch_record_ms,
        .heartbeat_timeout_secs = (unsigned)d->cfg.heartbeat_timeout_secs,
        .launch_retries = (unsigned)d->cfg.launch_retries,
        .skip_cert_verification = d->cfg.skip_cert_verification,
        .daemon_id = d->daemon_id,
        .host = d->host,
        .lease_secs = (unsigned)d->cfg.lease_secs,
    };
    r = supervisor_new(d->loop, &runners, d->api.store, &ss, on_instance_change, &d->api,
                       &d->api.sv, e);
    if (r < 0)
        return r;
    supervisor_recover(d->api.sv);
    if (d->runners[RUNNER_OCI]) {
        Error se = ERROR_INIT;
        int left = runner_oci_sweep(d->runners[RUNNER_OCI], &se);
        if (left < 0)
            log_warning("could not look for containers left by a crash: %s", error_message(&se));
        else if (left > 0)
            log_notice("removed %d containers left by a crash", left);
        error_done(&se);
    }
    api_core_routes_set_limits(&d->api.limits);
    int fd = listen_unix(d->cfg.core_socket, e);
    if (fd < 0)
        return fd;
    /* a new socket: the containers of instances still running reach it from now on */
    if (d->runners[RUNNER_OCI] && runner_oci_server_ready(d->runners[RUNNER_OCI], e) < 0) {
        (void)close(fd);
        return e->code;
    }
    HttpServerSettings cs = core_settings(d, fd, NULL, 0);
    r = http_server_start(&cs, &d->core, e);
    if (r < 0)
        return r;
    if (d->cfg.core_addr) {
        _cleanup_free_ char *host = xstrdup(d->cfg.core_addr);
        char *colon = strrchr(host, ':');
        *colon = '\0';
        cs = core_settings(d, -1, host, (uint16_t)atoi(colon + 1));
        r = http_server_start(&cs, &d->core_tcp, e);
        if (r < 0)
            return r;
    }
    log_info("instance API listening on unix:%s%s%s (default runner %s)", d->cfg.core_socket,
             d->cfg.core_addr ? " and " : "", d->cfg.core_addr ? d->cfg.core_addr : "",
             d->cfg.runner);
    return 0;
}

/* One daemon per data directory, as PostgreSQL's postmaster.pid: a second one would supervise the
 * same run directories, claim the same wake-ups and replace the first one's instance socket.
 * The lock is a POSIX record lock on DATA_DIR/runtara.lock, so it goes with the process however
 * it ends (also kill -9); the file holds the owner's pid for people. Instances' shims never hold
 * it: record locks are not inherited, and the descriptor is close-on-exec. */
static int lock_data_dir(Daemon *d, Error *e)
{
    _cleanup_free_ char *path = xasprintf("%s/runtara.lock", d->cfg.data_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0)
        return error_set(e, -errno, "could not open \"%s\": %m", path);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_SETLK, &fl) < 0) {
        int r = -errno;
        struct flock held = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        char owner[32] = "";
        if ((r == -EAGAIN || r == -EACCES) && fcntl(fd, F_GETLK, &held) == 0 &&
            held.l_type != F_UNLCK)
            snprintf(owner, sizeof owner, " (pid %d)", (int)held.l_pid);
        (void)close(fd);
        if (r == -EAGAIN || r == -EACCES)
            return error_set(e, -EBUSY,
                             "data directory \"%s\" is in use by another runtara-environment%s; "
                             "stop that one first, or give this one its own DATA_DIR",
                             d->cfg.data_dir, owner);
        return error_set(e, r, "could not lock \"%s\": %s", path, strerror(-r));
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
        log_warning_errno(-errno, "could not write the pid to \"%s\": %m", path);
    d->lock_fd = fd;
    return 0;
}

/* Who this daemon is in the store (src/sched/README.md, "Several daemons on one database"): an id
 * made once per data directory and kept in DATA_DIR/daemon-id, so a restarted daemon finds its
 * instances (and their processes) again. Then its registration, with a lease. */
static int identify(Daemon *d, Error *e)
{
    _cleanup_free_ char *path = xasprintf("%s/daemon-id", d->cfg.data_dir);
    _cleanup_free_ char *text = NULL;
    size_t n = 0;
    int r = fileio_read_all(path, 128, &text, &n);
    if (r == -ENOENT) {
        char hex[17];
        r = id_random_hex(hex, 8);
        if (r < 0)
            return error_set(e, r, "could not make a daemon id: %s", strerror(-r));
        snprintf(d->daemon_id, sizeof d->daemon_id, "d-%s", hex);
        _cleanup_free_ char *line = xasprintf("%s\n", d->daemon_id);
        _cleanup_close_ int dirfd = open(d->cfg.data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        r = dirfd < 0 ? -errno : fileio_write_atomic(dirfd, "daemon-id", line, strlen(line), 0640);
        if (r < 0)
            return error_set(e, r, "could not write \"%s\": %s", path, strerror(-r));
    } else if (r < 0)
        return error_set(e, r, "could not read \"%s\": %s", path, strerror(-r));
    else {
        text[strcspn(text, "\n")] = '\0';
        if (!id_is_valid(text) || strlen(text) > STORE_DAEMON_ID_MAX)
            return error_set(e, -EINVAL,
                             "\"%s\" does not hold a daemon id; hint: remove it, and a new one "
                             "is made (the instances of the old one are taken over after "
                             "RUNTARA_LEASE_SECS)",
                             path);
        snprintf(d->daemon_id, sizeof d->daemon_id, "%s", text);
    }
    if (gethostname(d->host, sizeof d->host - 1) < 0)
        snprintf(d->host, sizeof d->host, "localhost");
    store_set_owner(d->api.store, d->daemon_id);
    r = store_daemon_register(d->api.store, d->host, (int)getpid(),
                              d->cfg.lease_secs * USEC_PER_SEC, e);
    if (r < 0)
        return error_prefix(e, "could not register this daemon in the store");
    d->registered = true;
    log_info("daemon \"%s\" on host \"%s\" registered (lease %llu s)", d->daemon_id, d->host,
             (unsigned long long)d->cfg.lease_secs);
    return 0;
}

/* Every connection, held by the gate or served, is a descriptor: take the soft limit up to the
 * hard one, and say when even that is short of what the HTTP limits may hold at once (the gate
 * then drops its oldest waiting connections to make room). */
static void raise_open_files(const Config *c)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        log_warning_errno(-errno, "could not read the open files limit, ignoring: %m");
        return;
    }
    rlim_t was = rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            log_warning_errno(-errno, "could not raise the open files limit, ignoring: %m");
            rl.rlim_cur = was;
        }
    }
    uint64_t need = 2 * c->http_max_connections + c->http_reserved_connections + 256 +
                    (c->http_header_timeout_secs > 0 ? c->http_max_pending_connections : 0);
    if (rl.rlim_cur < need)
        log_warning("open files limit is %llu, below the %llu descriptors the HTTP limits may "
                    "hold at once; raise the hard limit (LimitNOFILE=) or lower "
                    "RUNTARA_HTTP_MAX_PENDING_CONNECTIONS",
                    (unsigned long long)rl.rlim_cur, (unsigned long long)need);
    else if (was < rl.rlim_cur)
        log_info("open files limit raised from %llu to %llu", (unsigned long long)was,
                 (unsigned long long)rl.rlim_cur);
    else
        log_info("open files limit %llu", (unsigned long long)rl.rlim_cur);
}

static int daemon_start(Daemon *d, Error *e)
{
    int r = sd_event_default(&d->loop);
    if (r < 0)
        return error_set(e, r, "could not create the event loop: %s", strerror(-r));
    if (d->cfg.tls_cert_file) { /* first: a bad file stops the start before any work */
        r = tls_files_load(d->cfg.tls_cert_file, d->cfg.tls_key_file, &d->tls, e);
        if (r < 0)
            return r;
    }
    raise_open_files(&d->cfg);
    r = fileio_mkdir_p(d->cfg.data_dir, 0750);
    if (r < 0)
        return error_set(e, r, "could not create data directory \"%s\": %s", d->cfg.data_dir,
                         strerror(-r));
    r = lock_data_dir(d, e);
    if (r < 0)
        return r;
    unsigned moved = 0;
    r = run_dirs_upgrade_layout(d->cfg.data_dir, &moved, e);
    if (r < 0)
        return error_prefix(e, "could not move run directories to the layout of this version");
    if (moved > 0)
        log_notice("moved the run directories of %u tenants to \"%s/tenants/\"", moved,
                   d->cfg.data_dir);
    r = store_open(d->cfg.database_url, &d->api.store, e);
    if (r < 0)
        return r;
    store_set_timeout(d->api.store, d->cfg.database_timeout_secs * USEC_PER_SEC);
    r = identify(d, e);
    if (r < 0)
        return r;
    unsigned swept = 0;
    r = image_registry_open(d->cfg.data_dir, d->api.store, d->cfg.max_image_size, &d->api.images,
                            &swept, e);
    if (r < 0)
        return r;
    if (swept > 0)
        log_notice("removed %u leftovers of interrupted image uploads or deletes", swept);
    int left = api_backup_sweep(d->cfg.data_dir);
    if (left > 0)
        log_notice("removed %d leftovers of interrupted backups", left);
    d->api.data_dir = d->cfg.data_dir;
    d->api.daemon_id = d->daemon_id;
    /* with the mock runner (tests), images are native and the mock runs them */
    d->api.default_runner = strcmp(d->cfg.runner, "mock") == 0 ? "native" : d->cfg.runner;
    d->api.native_tenants = d->cfg.native_tenants;
    d->api.bundles_dir = d->cfg.bundles_dir;
    d->api.limits = (ApiLimits){
        .max_checkpoint = d->cfg.max_checkpoint_size,
        .max_output = d->cfg.max_output_size,
        .default_timeout = (unsigned)d->cfg.execution_timeout_secs,
        .stop_grace = (unsigned)d->cfg.stop_grace_secs,
        .log_tail_max = 10 << 20,
    };
    r = start_instances(d, e);
    if (r < 0)
        return r;
    if (d->cfg.retention_secs > 0) {
        JanitorSettings js = {
            .data_dir = d->cfg.data_dir,
            .keep = d->cfg.retention_secs * USEC_PER_SEC,
            .interval = d->cfg.retention_interval_secs * USEC_PER_SEC,
            .batch = 100,
            .batches_per_turn = 4,
        };
        r = janitor_start(d->loop, d->api.store, d->api.images, &js, &d->janitor, e);
        if (r < 0)
            return r;
    }
    r = auth_new(d->cfg.api_keys_file, &d->api.auth, e);
    if (r < 0)
        return r;
    if (auth_is_open(d->api.auth))
        log_warning("no API keys configured (RUNTARA_API_KEYS_FILE): every local client is "
                    "admin; allowed only because the API listens on loopback");
    else
        log_info("loaded %zu API keys from \"%s\"", auth_count(d->api.auth), d->cfg.api_keys_file);

    size_t n_routes;
    const HttpRoute *routes = api_management_routes(&n_routes);
    HttpServerSettings hs = {
        .bind = d->cfg.bind,
        .port = (uint16_t)d->cfg.http_port,
        .listen_fd = -1,
        .threads = (unsigned)d->cfg.http_threads,
        .max_connections = (unsigned)d->cfg.http_max_connections,
        .idle_timeout_secs = (unsigned)d->cfg.http_idle_timeout_secs,
        .header_limit = d->cfg.http_header_limit,
        .max_json_body = d->cfg.max_json_body,
        .routes = routes,
        .n_routes = n_routes,
        .admit = api_admit,
        .userdata = &d->api,
        .tls_cert = d->tls.cert,
        .tls_key = d->tls.key,
        .header_timeout_secs = (unsigned)d->cfg.http_header_timeout_secs,
        .per_address_limit = (unsigned)d->cfg.http_max_connections_per_address,
        .reserved_connections = (unsigned)d->cfg.http_reserved_connections,
        .max_pending = (unsigned)d->cfg.http_max_pending_connections,
    };
    d->api.started = now_usec(CLOCK_MONOTONIC);
    r = http_server_start(&hs, &d->http, e);
    if (r < 0)
        return r;
    StoreInfo info;
    store_info(d->api.store, &info);
    log_notice("runtara-environment %s listening on %s://%s:%u (store %s, schema %d, data "
               "\"%s\")",
               RUNTARA_VERSION, d->tls.cert ? "https" : "http", d->cfg.bind,
               http_server_port(d->http), info.backend, info.schema_version, d->cfg.data_dir);
    return 0;
}

static void daemon_stop(Daemon *d)
{
    if (d->api.sv)
        supervisor_shutdown(d->api.sv);
    if (d->registered) {
        /* what it leaves (suspended by the shutdown) is for the other daemons to take at once */
        Error e = ERROR_INIT;
        if (store_daemon_unregister(d->api.store, &e) < 0)
            log_warning("could not unregister this daemon: %s", error_message(&e));
        error_done(&e);
    }
    if (d->api.waiters)
        waiters_close(d->api.waiters);
    /* Checkpoint saves in flight hold suspended requests, and libmicrohttpd must not stop with
     * one suspended: let their commits finish and resume them first. Saves that arrive later
     * are made while their thread waits. */
    if (d->api.store)
        store_quiesce(d->api.store);
    d->core_tcp = http_server_stop(d->core_tcp);
    d->core = http_server_stop(d->core);
    d->http = http_server_stop(d->http);
    tls_files_done(&d->tls);
    /* after every server: a request resumed by waiters_close() reports its end to the waiters
     * when it completes, which may be while its server stops */
    d->api.waiters = waiters_free(d->api.waiters);
    d->api.tokens = token_memo_free(d->api.tokens);
    d->api.sv = supervisor_free(d->api.sv);
    d->janitor = janitor_stop(d->janitor);
    for (RunnerType t = 0; t < _RUNNER_TYPE_MAX; t++)
        d->runners[t] = runner_free(d->runners[t]);
    d->api.auth = auth_free(d->api.auth);
    d->api.images = image_registry_free(d->api.images);
    d->api.store = store_close(d->api.store);
    if (d->lock_fd >= 0) /* last: a successor may start once the store is closed */
        (void)close(d->lock_fd);
    d->lock_fd = -1;
    d->loop = sd_event_unref(d->loop);
    config_done(&d->cfg);
}

static int run_loop(Daemon *d)
{
    /* a stop or reload is handled before routine work queued on the loop (a backlog of exits
     * must not delay SIGTERM); the sources are owned by the loop */
    static const struct {
        int sig;
        sd_event_signal_handler_t fn;
    } sigs[] = {{SIGTERM, on_stop}, {SIGINT, on_stop}, {SIGHUP, on_reload}};
    for (size_t i = 0; i < ELEMENTSOF(sigs); i++) {
        sd_event_source *src = NULL;
        int r = sd_event_add_signal(d->loop, &src, sigs[i].sig, sigs[i].fn,
                                    sigs[i].sig == SIGHUP ? (void *)&d->api : (void *)d);
        if (r >= 0)
            r = sd_event_source_set_priority(src, SD_EVENT_PRIORITY_IMPORTANT);
        if (r >= 0)
            r = sd_event_source_set_floating(src, true);
        sd_event_source_unref(src);
        if (r < 0)
            return log_error_errno(r, "could not set up the event loop: %m");
    }
    return sd_event_loop(d->loop);
}

/* Memory freed at the top of the heap is kept up to this much instead of being handed back to
 * the kernel at once. With glibc's default (128 KiB, adjusted upwards only after large mmap'd
 * blocks are freed) every status change in a write batch gave back the ~100 KiB SQLite had just
 * allocated for a temporary b-tree and faulted it in again on the next: 100,000 wake-ups took
 * 55 s of claims instead of 10 s (perf: 46 % of the time in page faults, 11 % in systrim). */
#define HEAP_TRIM_THRESHOLD (1 << 20)

int main(int argc, char **argv)
{
    Daemon d = {.lock_fd = -1};
    Error e = ERROR_INIT;
    bool print_config = false, migrate = false;

    (void)mallopt(M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD);

    int r = parse_args(argc, argv, &print_config, &migrate);
    if (r >= 0)
        return r;
    /* the settings file: the default one if it exists, or the one named (which must) */
    const char *settings_file = secure_getenv("RUNTARA_SETTINGS_FILE");
    ConfigFile *file = NULL;
    if ((settings_file && !*settings_file) ||
        config_file_load(settings_file ? settings_file : CONFIG_FILE_DEFAULT, settings_file, &file,
                         &e) >= 0)
        r = config_load_from(env_lookup, NULL, file, &d.cfg, &e);
    else
        r = -EINVAL;
    if (r < 0) {
        fprintf(stderr, "runtara-environment: %s\nhint: see runtara-environment --help\n",
                error_message(&e));
        error_done(&e);
        config_file_free(file);
        return 2;
    }
    if (print_config) {
        config_print_from(&d.cfg, env_lookup, NULL, file, stdout);
        config_file_free(file);
        config_done(&d.cfg);
        return 0;
    }
    file = config_file_free(file);
    log_max_level = log_level_from_string(d.cfg.log_level);
    log_set_format(log_format_from_string(d.cfg.log_format));
    if (migrate)
        return run_migrate(&d.cfg);

    if (!bind_allowed(&d.cfg)) {
        config_done(&d.cfg);
        return 2;
    }

    /* Block the handled signals before any thread starts, so only the loop's signalfd sees them. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    r = log_buffer_start(); /* the access log: one line per request, written in batches */
    if (r < 0)
        log_warning_errno(r, "could not start the log writer, writing each line directly: %m");

    r = daemon_start(&d, &e);
    if (r < 0) {
        log_error("could not start: %s", error_message(&e));
        error_done(&e);
        daemon_stop(&d);
        log_buffer_stop();
        return 1;
    }
    /* systemd (Type=notify): serving from here on; with WatchdogSec=, the loop pings it, so a loop
     * that stalls gets the daemon restarted */
    r = sd_event_set_watchdog(d.loop, true);
    if (r < 0)
        log_warning_errno(r, "could not start pinging systemd's watchdog: %m");
    (void)sd_notifyf(false, "READY=1\nSTATUS=serving on %s:%llu", d.cfg.bind,
                     (unsigned long long)d.cfg.http_port);
    r = run_loop(&d);
    daemon_stop(&d);
    log_notice("stopped");
    log_buffer_stop();
    return r < 0 ? 1 : 0;
}
