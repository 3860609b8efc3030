/* The daemon's HTTP servers inside the fuzzing process (fuzz-api.h), assembled as main.c does. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <sqlite3.h>

#include "../../src/api/api.h"
#include "../../src/base/apikey.h"
#include "../../src/base/log.h"
#include "fuzz-api.h"
#include "fuzz-run-files.h"

/* After the whole input went out, a server silent for this long waits for more (a request that
 * announced a longer body than it has): the client then goes away, as a real one would. The
 * server sees the end of the input only if it arrives in its own read (libmicrohttpd's epoll is
 * edge-triggered), so it cannot always tell by itself. */
#define FUZZ_SILENCE_MS 100

static ApiContext ctx;
static sd_event *loop;
static Runner *runner;
static HttpServer *servers[2];
static char socket_paths[2][256];

static void die(const char *what, const Error *e)
{
    fprintf(stderr, "fuzz-api: %s: %s\n", what, e ? error_message(e) : "failed");
    abort();
}

static int listen_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        die("socket path too long", NULL);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 64) < 0)
        die("could not listen on a unix socket", NULL);
    return fd;
}

static void on_change(const char *instance_id, SupervisorChange what, void *userdata)
{
    if (what == SUPERVISOR_CHANGED_SIGNAL)
        api_signal_sent(userdata, instance_id);
    else
        api_instance_changed(userdata, instance_id);
}

static void *run_loop(void *arg)
{
    (void)arg;
    (void)sd_event_loop(loop);
    return NULL;
}

static void write_keys(const char *path)
{
    char h1[65], h2[65];
    apikey_hash(FUZZ_ADMIN_KEY, h1);
    apikey_hash(FUZZ_TENANT_KEY, h2);
    FILE *f = fopen(path, "we");
    if (!f)
        die("could not write the keys file", NULL);
    fprintf(f, "%s admin fuzz-admin\n%s tenant:acme fuzz-acme\n", h1, h2);
    fclose(f);
}

static void start_server(FuzzServer which, const char *dir, const char *name)
{
    size_t n;
    const HttpRoute *routes = which == FUZZ_CORE ? api_core_routes(&n) : api_management_routes(&n);
    snprintf(socket_paths[which], sizeof socket_paths[which], "%s/%s", dir, name);
    HttpServerSettings s = {
        .listen_fd = listen_unix(socket_paths[which]),
        .threads = 2,
        .max_connections = 64,
        .idle_timeout_secs = 10,
        .header_limit = 16384,
        .max_json_body = 64 << 10,
        .routes = routes,
        .n_routes = n,
        .admit = which == FUZZ_CORE ? api_core_admit : api_admit,
        .userdata = &ctx,
    };
    Error e = ERROR_INIT;
    if (http_server_start(&s, &servers[which], &e) < 0)
        die("could not start an HTTP server", &e);
}

/* Through the API as a client would: an image, and an instance that "runs" for a day. */
static void request(FuzzServer which, const char *raw, char *reply, size_t max)
{
    size_t n = fuzz_api_send(which, raw, strlen(raw), reply, max - 1);
    reply[n < max ? n : max - 1] = '\0';
}

static void start_instance(const char *id, char *reply, size_t max)
{
    char body[256], raw[1024];
    snprintf(body, sizeof body,
             "{\"image\":\"fz\",\"tenant_id\":\"acme\",\"instance_id\":\"%s\","
             "\"env\":{\"MOCK_DELAY_MS\":\"86400000\"}}",
             id);
    snprintf(raw, sizeof raw,
             "POST /api/v1/instances HTTP/1.1\r\nHost: x\r\n"
             "Authorization: Bearer " FUZZ_ADMIN_KEY "\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    request(FUZZ_MANAGEMENT, raw, reply, max);
}

static void make_instance(const char *dir)
{
    char reply[8192], raw[1024];
    static const char program[] = "#!/bin/sh\nexit 0\n";
    snprintf(raw, sizeof raw,
             "POST /api/v1/images?name=fz&tenant_id=acme HTTP/1.1\r\nHost: x\r\n"
             "Authorization: Bearer " FUZZ_ADMIN_KEY "\r\n"
             "Content-Type: application/octet-stream\r\nContent-Length: %zu\r\n\r\n%s",
             sizeof program - 1, program);
    request(FUZZ_MANAGEMENT, raw, reply, sizeof reply);
    start_instance(FUZZ_INSTANCE, reply, sizeof reply);
    if (!strstr(reply, "HTTP/1.1 201"))
        die("could not start the fuzzing instance", NULL);
    start_instance("fz-2", reply, sizeof reply);
    if (!strstr(reply, "HTTP/1.1 201"))
        die("could not start the second fuzzing instance", NULL);
    /* its launch is recorded within launch_record_ms; the long-poll does not return on it (it
     * waits for an end), so ask until it says running, a bounded number of times */
    for (int i = 0; i < 1000 && !strstr(reply, "\"status\":\"running\""); i++)
        request(FUZZ_MANAGEMENT,
                "GET /api/v1/instances/" FUZZ_INSTANCE " HTTP/1.1\r\nHost: x\r\n"
                "Authorization: Bearer " FUZZ_ADMIN_KEY "\r\n\r\n",
                reply, sizeof reply);
    if (!strstr(reply, "\"status\":\"running\""))
        die("the fuzzing instance does not run", NULL);
    /* the launch token is the mock process's alone: give the row one the fuzzer knows */
    char hash[65], path[4200], *sql;
    apikey_hash(FUZZ_INSTANCE_TOKEN, hash);
    snprintf(path, sizeof path, "%s/runtara.db", dir);
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        die("could not open the store", NULL);
    sqlite3_busy_timeout(db, 10000);
    sql = sqlite3_mprintf("UPDATE instances SET token_hash = %Q WHERE instance_id = %Q", hash,
                          FUZZ_INSTANCE);
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK || sqlite3_changes(db) != 1)
        die("could not set the instance's token", NULL);
    sqlite3_free(sql);
    sqlite3_close(db);
}

void fuzz_api_start(void)
{
    const char *dir = fuzz_scratch_dir();
    char db[4200], keys[4200];
    Error e = ERROR_INIT;

    signal(SIGPIPE, SIG_IGN);
    log_max_level = getenv("FUZZ_LOG") ? LOG_DEBUG : LOG_EMERG;
    snprintf(db, sizeof db, "sqlite:%s/runtara.db", dir);
    snprintf(keys, sizeof keys, "%s/keys", dir);
    write_keys(keys);
    if (sd_event_new(&loop) < 0 || store_open(db, &ctx.store, &e) < 0 ||
        image_registry_open(dir, ctx.store, 1 << 20, &ctx.images, NULL, &e) < 0 ||
        runner_mock_new(&runner) < 0 || waiters_new(64, &ctx.waiters) < 0 ||
        auth_new(keys, &ctx.auth, &e) < 0)
        die("could not set up", &e);
    ctx.data_dir = dir;
    ctx.limits = (ApiLimits){.max_checkpoint = 64 << 10,
                             .max_output = 64 << 10,
                             .default_timeout = 86400,
                             .stop_grace = 1,
                             .log_tail_max = 64 << 10};
    SupervisorSettings ss = {
        .data_dir = dir,
        .log_limit = 4096,
        .stop_grace_secs = 1,
        .cancel_grace_secs = 1,
        .sleep_suspend_ms = 1000,
        .launch_record_ms = 1,
    };
    SupervisorRunners runners = {0};
    for (RunnerType t = 0; t < _RUNNER_TYPE_MAX; t++)
        runners.runners[t] = runner;
    if (supervisor_new(loop, &runners, ctx.store, &ss, on_change, &ctx, &ctx.sv, &e) < 0)
        die("could not start the supervisor", &e);
    api_core_routes_set_limits(&ctx.limits);
    ctx.started = now_usec(CLOCK_MONOTONIC);
    start_server(FUZZ_MANAGEMENT, dir, "api.sock");
    start_server(FUZZ_CORE, dir, "core.sock");
    pthread_t t;
    if (pthread_create(&t, NULL, run_loop, NULL) != 0)
        die("could not start the event loop thread", NULL);
    pthread_detach(t);
    make_instance(dir);
}

/* Whether the server has read everything sent on fd, or given up waiting for that. */
static bool taken(int fd, unsigned *tries)
{
    int queued = 0;
    return ioctl(fd, SIOCOUTQ, &queued) < 0 || queued == 0 || ++*tries > 100;
}

size_t fuzz_api_send(FuzzServer server, const void *data, size_t n, char *reply, size_t reply_max)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, socket_paths[server], strlen(socket_paths[server]) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("could not connect", NULL);
    /* The server reads while it answers: send and read by turns so neither side blocks. The
     * sending side is closed only once the server has read all of the input, so that the end of
     * the input arrives on its own and the server sees it. */
    size_t off = 0, got = 0;
    unsigned tries = 0;
    bool sent = false, closed = false;
    for (;;) {
        if (sent && !closed && taken(fd, &tries)) {
            (void)shutdown(fd, SHUT_WR);
            closed = true;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN | (sent ? 0 : POLLOUT)};
        int r = poll(&p, 1, closed ? FUZZ_SILENCE_MS : sent ? 1 : 10000);
        if (r == 0 && closed)
            break; /* it waits for more than the input holds (a body cut short): go away */
        if (r == 0 && !sent)
            die("the server took nothing of the request for 10 s", NULL);
        if (r <= 0)
            continue;
        if (p.revents & POLLIN) {
            char buf[16384];
            ssize_t k = read(fd, buf, sizeof buf);
            if (k <= 0)
                break;
            if (reply && got < reply_max)
                memcpy(reply + got, buf, (size_t)k < reply_max - got ? (size_t)k : reply_max - got);
            got += (size_t)k;
        } else if (p.revents & (POLLHUP | POLLERR) && sent)
            break;
        if (!sent && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t k =
                n == 0 ? 0
                       : send(fd, (const char *)data + off, n - off, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (k < 0) { /* the server closed first: what it sent is still to be read */
                sent = true;
                continue;
            }
            off += (size_t)k;
            sent = off == n;
        }
    }
    close(fd);
    return got;
}
