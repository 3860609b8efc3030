/* Scenario-driven calls into libruntara for tests/sdk/test_sdk.py, which runs this program
 * against tests/sdk/fake_core.py with the runner's environment variables set. `test-sdk-client
 * SCENARIO [ARG]` runs one scenario: it checks what it can itself (a failed CHECK prints the
 * expression and exits 1) and prints `key=value` lines for the Python side to check against what
 * the fake daemon recorded. A failed runtara_open() prints `open: errno=E message=M` and exits 2.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtara.h"

#define CHECK(expr)                                                                                \
    do {                                                                                           \
        if (!(expr)) {                                                                             \
            printf("CHECK failed at line %d: %s\n", __LINE__, #expr);                              \
            exit(EXIT_FAILURE);                                                                    \
        }                                                                                          \
    } while (0)

/* Check that a call returned `want`, printing both values and the client's error otherwise. */
#define CHECK_R(c, call, want)                                                                     \
    do {                                                                                           \
        int _r_ = (call);                                                                          \
        if (_r_ != (want)) {                                                                       \
            printf("CHECK failed at line %d: %s returned %d (%s), want %d: %s\n", __LINE__, #call, \
                   _r_, errname(_r_), (want), runtara_last_error(c));                              \
            exit(EXIT_FAILURE);                                                                    \
        }                                                                                          \
    } while (0)

static const char *errname(int r)
{
    const char *s = strerrorname_np(r < 0 ? -r : r);

    return s ? s : "0";
}

typedef struct Counter {
    int calls;
    int fail_with; /* < 0: the step fails with it */
    const char *result;
} Counter;

static int counting_step(void *userdata, void **ret_result, size_t *ret_n)
{
    Counter *k = userdata;

    k->calls++;
    if (k->fail_with < 0)
        return k->fail_with;
    if (k->result) {
        *ret_result = strdup(k->result);
        *ret_n = strlen(k->result);
    }
    return 0;
}

static RuntaraClient *open_or_exit(void)
{
    RuntaraClient *c = NULL;

    int r = runtara_open(&c);
    if (r < 0) {
        printf("open: errno=%s message=%s\n", errname(r), runtara_open_error());
        exit(2);
    }
    CHECK(*runtara_open_error() == '\0');
    return c;
}

static void scenario_open(RuntaraClient *c, const char *arg)
{
    (void)arg;
    printf("instance=%s\n", runtara_instance_id(c));
    printf("tenant=%s\n", runtara_tenant_id(c));
    printf("attempt=%u\n", runtara_attempt(c));
    printf("checkpoint=%s\n", runtara_checkpoint_id(c) ? runtara_checkpoint_id(c) : "(none)");
    printf("signal=%s\n", runtara_signal_to_string(runtara_signal(c)));
}

/* A second client beside the first, both used in turn: each must have a connection of its own. */
static void scenario_second_client(RuntaraClient *c, const char *arg)
{
    RuntaraClient *b = open_or_exit();

    (void)arg;
    for (int i = 0; i < 3; i++) {
        CHECK_R(c, runtara_heartbeat(c), 0);
        CHECK_R(b, runtara_heartbeat(b), 0);
    }
    runtara_close(b);
}

static void scenario_input(RuntaraClient *c, const char *arg)
{
    char *json = NULL;

    (void)arg;
    CHECK_R(c, runtara_input(c, &json), 0);
    printf("input=%s\n", json);
    free(json);
}

static void check_bytes(const void *got, size_t got_n, const void *want, size_t want_n)
{
    CHECK(got_n == want_n);
    CHECK(memcmp(got, want, want_n) == 0);
    CHECK(((const char *)got)[got_n] == '\0');
}

/* Checkpoints hold any bytes, NULs included; the first save wins. */
static void scenario_binary(RuntaraClient *c, const char *arg)
{
    unsigned char first[512], second[16] = {0};
    void *data = NULL;
    size_t n = 0;

    (void)arg;
    for (size_t i = 0; i < sizeof first; i++)
        first[i] = (unsigned char)(i * 7);
    CHECK_R(c, runtara_checkpoint(c, "bin", first, sizeof first, &data, &n), 0);
    check_bytes(data, n, first, sizeof first);
    free(data);
    CHECK_R(c, runtara_checkpoint(c, "bin", second, sizeof second, &data, &n), 1);
    check_bytes(data, n, first, sizeof first);
    free(data);
    CHECK_R(c, runtara_checkpoint_get(c, "bin", &data, &n), 0);
    check_bytes(data, n, first, sizeof first);
    free(data);

    CHECK_R(c, runtara_checkpoint(c, "empty", NULL, 0, NULL, NULL), 0);
    CHECK_R(c, runtara_checkpoint_get(c, "empty", &data, &n), 0);
    check_bytes(data, n, "", 0);
    free(data);
    CHECK_R(c, runtara_checkpoint_get(c, "missing", &data, &n), -ENOENT);
    printf("missing_error=%s\n", runtara_last_error(c));
}

/* A step runs once; a failing step saves nothing; an empty result is a result. */
static void scenario_step(RuntaraClient *c, const char *arg)
{
    Counter ok = {.result = "result-1"}, bad = {.fail_with = -EIO}, empty = {0};
    void *res = NULL;
    size_t n = 0;

    (void)arg;
    CHECK_R(c, runtara_step(c, "s1", counting_step, &ok, &res, &n), 0);
    check_bytes(res, n, "result-1", 8);
    free(res);
    CHECK(*runtara_last_error(c) == '\0');
    CHECK_R(c, runtara_step(c, "s1", counting_step, &ok, &res, &n), 1);
    check_bytes(res, n, "result-1", 8);
    free(res);
    CHECK(ok.calls == 1);

    CHECK_R(c, runtara_step(c, "s2", counting_step, &bad, &res, &n), -EIO);
    CHECK(bad.calls == 1);
    printf("step_error=%s\n", runtara_last_error(c));
    CHECK_R(c, runtara_checkpoint_get(c, "s2", &res, &n), -ENOENT);

    CHECK_R(c, runtara_step(c, "s3", counting_step, &empty, NULL, NULL), 0);
    CHECK_R(c, runtara_step(c, "s3", counting_step, &empty, &res, &n), 1);
    check_bytes(res, n, "", 0);
    free(res);
    CHECK(empty.calls == 1);
}

/* Two clients of one process, both registered before any save: a step one of them ran replays
 * in the other. */
static void scenario_two_clients_step(RuntaraClient *c, const char *arg)
{
    RuntaraClient *b = open_or_exit();
    Counter ok = {.result = "result-1"};
    void *res = NULL;
    size_t n = 0;

    (void)arg;
    CHECK_R(c, runtara_step(c, "shared", counting_step, &ok, &res, &n), 0);
    free(res);
    CHECK_R(b, runtara_step(b, "shared", counting_step, &ok, &res, &n), 1);
    check_bytes(res, n, "result-1", 8);
    free(res);
    CHECK(ok.calls == 1);
    runtara_close(b);
}

/* A step that is already stored replays from a previous launch; arg is its expected value. */
static void scenario_replay(RuntaraClient *c, const char *arg)
{
    Counter k = {.result = "new"};
    void *res = NULL;
    size_t n = 0;

    CHECK_R(c, runtara_step(c, "s1", counting_step, &k, &res, &n), 1);
    CHECK(k.calls == 0);
    check_bytes(res, n, arg, strlen(arg));
    free(res);
}

/* A cancel or pause (arg) is pending from the start: no step runs, and the program acks it. */
static void scenario_signal(RuntaraClient *c, const char *arg)
{
    Counter k = {.result = "x"};
    void *res = NULL;
    size_t n = 0;

    CHECK(runtara_signal(c) == runtara_signal_from_string(arg));
    CHECK(runtara_cancelled(c) == (strcmp(arg, "cancel") == 0));
    CHECK_R(c, runtara_step(c, "s1", counting_step, &k, &res, &n), -ECANCELED);
    CHECK(k.calls == 0);
    printf("step_error=%s\n", runtara_last_error(c));
    CHECK_R(c, runtara_should_exit(c), (int)runtara_signal_from_string(arg));
    CHECK(runtara_signal(c) == RUNTARA_SIGNAL_NONE);
    CHECK_R(c, runtara_should_exit(c), 0);
    printf("acked=%s\n", arg);
}

static void scenario_poll(RuntaraClient *c, const char *arg)
{
    RuntaraSignal s = RUNTARA_SIGNAL_NONE;

    CHECK_R(c, runtara_poll_signal(c, (unsigned)atoi(arg ? arg : "0"), &s), 0);
    CHECK(runtara_signal(c) == s);
    printf("signal=%s\n", runtara_signal_to_string(s));
}

/* Wait up to `arg` s for a control signal, as a program between steps does; a cancel or pause
 * is acknowledged and the program exits (the daemon then suspends or cancels the instance). */
static void scenario_poll_ack(RuntaraClient *c, const char *arg)
{
    RuntaraSignal s = RUNTARA_SIGNAL_NONE;

    CHECK_R(c, runtara_poll_signal(c, (unsigned)atoi(arg ? arg : "30"), &s), 0);
    printf("signal=%s\n", runtara_signal_to_string(s));
    if (runtara_should_exit(c) > 0)
        exit(EXIT_SUCCESS);
    CHECK_R(c, runtara_complete(c, "{\"polled\":true}"), 0);
}

/* The ack finds the signal gone (409): carry on. */
static void scenario_ack_gone(RuntaraClient *c, const char *arg)
{
    (void)arg;
    CHECK(runtara_signal(c) == RUNTARA_SIGNAL_PAUSE);
    CHECK_R(c, runtara_should_exit(c), 0);
    CHECK(runtara_signal(c) == RUNTARA_SIGNAL_NONE);
    CHECK(*runtara_last_error(c) == '\0');
}

static void scenario_events(RuntaraClient *c, const char *arg)
{
    (void)arg;
    CHECK_R(c, runtara_heartbeat(c), 0);
    CHECK_R(c, runtara_event(c, "progress", "step", "{\"step\": 1, \"ratio\": 0.10}"), 0);
    CHECK_R(c, runtara_event(c, "log", NULL, NULL), 0);
    CHECK_R(c, runtara_event(c, "custom", "x", "{\"broken\":"), -EINVAL);
    printf("local_error=%s\n", runtara_last_error(c));
    CHECK_R(c, runtara_event(c, "bogus", NULL, "1"), -EINVAL);
    printf("server_error=%s\n", runtara_last_error(c));
}

static void scenario_complete(RuntaraClient *c, const char *arg)
{
    CHECK_R(c, runtara_complete(c, arg ? arg : "{\"ok\": true}"), 0);
    CHECK_R(c, runtara_complete(c, "1"), -EALREADY);
    printf("complete_error=%s\n", runtara_last_error(c));
    CHECK_R(c, runtara_fail(c, "too late", NULL), -EALREADY);
    CHECK_R(c, runtara_complete(c, "{not json"), -EINVAL);
}

static void scenario_fail(RuntaraClient *c, const char *arg)
{
    (void)arg;
    CHECK_R(c, runtara_fail(c, "could not frobnicate \"x\"", "{\"code\": 7}"), 0);
}

static void scenario_keys(RuntaraClient *c, const char *arg)
{
    char longest[RUNTARA_KEY_MAX + 2];

    (void)arg;
    CHECK_R(c, runtara_checkpoint(c, "bad key", "x", 1, NULL, NULL), -EINVAL);
    printf("key_error=%s\n", runtara_last_error(c));
    CHECK_R(c, runtara_checkpoint(c, "", "x", 1, NULL, NULL), -EINVAL);
    CHECK_R(c, runtara_checkpoint(c, "a/b", "x", 1, NULL, NULL), -EINVAL);
    CHECK_R(c, runtara_step(c, "../x", counting_step, &(Counter){0}, NULL, NULL), -EINVAL);
    memset(longest, 'k', sizeof longest);
    longest[RUNTARA_KEY_MAX + 1] = '\0';
    CHECK_R(c, runtara_checkpoint(c, longest, "x", 1, NULL, NULL), -EINVAL);
    longest[RUNTARA_KEY_MAX] = '\0';
    CHECK_R(c, runtara_checkpoint(c, longest, "x", 1, NULL, NULL), 0);
    CHECK_R(c, runtara_checkpoint(c, "Az09_.:-", "x", 1, NULL, NULL), 0);
    /* a step's key used as a wait key: its bytes are no wait's outcome */
    char *payload = NULL;
    CHECK_R(c, runtara_checkpoint(c, "used", "plain text", 10, NULL, NULL), 0);
    CHECK_R(c, runtara_wait_signal(c, "used", 0, &payload), -EBADMSG);
    printf("wait_error=%s\n", runtara_last_error(c));
    CHECK(payload == NULL);
}

/* A checkpoint of arg bytes is refused (the fake's limit is lower). */
static void scenario_too_big(RuntaraClient *c, const char *arg)
{
    size_t n = (size_t)atol(arg);
    char *data = calloc(1, n);

    CHECK(data);
    CHECK_R(c, runtara_checkpoint(c, "big", data, n, NULL, NULL), -EFBIG);
    printf("big_error=%s\n", runtara_last_error(c));
    free(data);
}

/* The daemon went away after registration (the test stops the fake when told on stdout). */
static void scenario_gone(RuntaraClient *c, const char *arg)
{
    char line[16];

    (void)arg;
    printf("ready\n");
    fflush(stdout);
    CHECK(fgets(line, sizeof line, stdin));
    int r = runtara_heartbeat(c);
    CHECK(r == -ECONNREFUSED || r == -EIO);
    printf("gone_error=%s\n", runtara_last_error(c));
}

/* The daemon restarts after registration: the next call waits for it and succeeds. */
static void scenario_reconnect(RuntaraClient *c, const char *arg)
{
    char line[16];

    (void)arg;
    printf("ready\n");
    fflush(stdout);
    CHECK(fgets(line, sizeof line, stdin));
    int r = runtara_heartbeat(c);
    printf("heartbeat=%d\n", r);
    void *data = NULL;
    size_t n = 0;
    r = runtara_checkpoint(c, "after-restart", "x", 1, &data, &n);
    printf("checkpoint=%d\n", r);
    free(data);
}

/* One long step that makes no call at all for `arg` ms, then completion: alive only through the
 * background heartbeat. */
static void scenario_quiet(RuntaraClient *c, const char *arg)
{
    long ms = arg ? atol(arg) : 3000;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    int r = runtara_complete(c, "{\"quiet\":true}");
    printf("complete=%d\n", r);
}

typedef struct Scenario {
    const char *name;
    void (*fn)(RuntaraClient *c, const char *arg);
} Scenario;

static const Scenario scenarios[] = {
    {"open", scenario_open},
    {"input", scenario_input},
    {"binary", scenario_binary},
    {"step", scenario_step},
    {"replay", scenario_replay},
    {"signal", scenario_signal},
    {"poll", scenario_poll},
    {"ack-gone", scenario_ack_gone},
    {"events", scenario_events},
    {"complete", scenario_complete},
    {"fail", scenario_fail},
    {"keys", scenario_keys},
    {"too-big", scenario_too_big},
    {"gone", scenario_gone},
    {"reconnect", scenario_reconnect},
    {"quiet", scenario_quiet},
    {"poll-ack", scenario_poll_ack},
    {"second-client", scenario_second_client},
    {"two-clients-step", scenario_two_clients_step},
};

int main(int argc, char **argv)
{
    /* launched by the real daemon, which passes no arguments: the scenario comes from env */
    char *env_argv[] = {argv[0], getenv("TEST_SDK_SCENARIO"), getenv("TEST_SDK_ARG"), NULL};
    if (argc < 2 && env_argv[1]) {
        argv = env_argv;
        argc = env_argv[2] ? 3 : 2;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: test-sdk-client SCENARIO [ARG]\n");
        return EXIT_FAILURE;
    }
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++) {
        if (strcmp(argv[1], scenarios[i].name) != 0)
            continue;
        RuntaraClient *c = open_or_exit();
        scenarios[i].fn(c, argc > 2 ? argv[2] : NULL);
        runtara_close(c);
        printf("done\n");
        return EXIT_SUCCESS;
    }
    fprintf(stderr, "test-sdk-client: unknown scenario \"%s\"\n", argv[1]);
    return EXIT_FAILURE;
}
