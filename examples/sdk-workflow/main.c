/* The complete example of docs/sdk.md: a workflow program written with libruntara.
 *
 * Input: {"name": "ada", "steps": 3, "step_ms": 0}. It runs `steps` checkpointed steps; each one
 * waits step_ms milliseconds, appends "step K" to steps.log in the working directory (a side
 * effect a replayed step must not repeat) and reports its progress. Between steps it gives way to
 * a cancel or pause. Output: {"greeting": "hello ada", "steps": 3, "attempts": [1, 1, 2]}, where
 * attempts[K-1] is the launch that ran step K: a relaunched instance replays the steps that
 * already ran, so their attempt numbers are the ones saved then.
 *
 * Optional, after the steps: "sleep_ms": N sleeps durably for N ms (a long sleep suspends the
 * instance and the program exits; the daemon relaunches it at the deadline), and "wait_key": K
 * with "wait_ms": T waits up to T ms (0: forever) for the custom signal K, whose payload becomes
 * the output's "signal" (or "timed_out": true).
 *
 * Build: cc main.c $(pkg-config --cflags --libs runtara jansson) -o sdk-workflow */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <runtara.h>

#define MAX_STEPS 1000

typedef struct Input {
    char *name;
    int steps;
    long step_ms;
    unsigned long long sleep_ms;
    char *wait_key; /* NULL: no wait */
    unsigned long long wait_ms;
} Input;

/* What one step needs; the step's callback gets it as userdata. */
typedef struct Step {
    RuntaraClient *client;
    int k;
    long ms;
} Step;

/* Read and check the input. Invalid input ends the instance as failed, saying why. */
static int read_input(RuntaraClient *c, Input *ret)
{
    const char *name = "world";
    const char *wait_key = NULL;
    json_int_t steps = 3, step_ms = 0, sleep_ms = 0, wait_ms = 0;
    json_error_t err = {0};
    char *text = NULL;

    int r = runtara_input(c, &text);
    if (r < 0)
        return r;

    json_t *doc = json_loads(text, 0, &err);
    free(text);
    if (!doc ||
        json_unpack_ex(doc, &err, 0, "{s?s, s?I, s?I, s?I, s?s, s?I}", "name", &name, "steps",
                       &steps, "step_ms", &step_ms, "sleep_ms", &sleep_ms, "wait_key", &wait_key,
                       "wait_ms", &wait_ms) < 0 ||
        steps < 0 || steps > MAX_STEPS || step_ms < 0 || step_ms > 3600 * 1000 || sleep_ms < 0 ||
        wait_ms < 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "invalid input: %s",
                 !doc || err.text[0] ? err.text : "steps or step_ms out of range");
        fprintf(stderr, "sdk-workflow: %s\n", msg);
        (void)runtara_fail(c, msg, NULL);
        json_decref(doc);
        return -EINVAL;
    }
    *ret = (Input){.name = strdup(name),
                   .steps = (int)steps,
                   .step_ms = (long)step_ms,
                   .sleep_ms = (unsigned long long)sleep_ms,
                   .wait_key = wait_key ? strdup(wait_key) : NULL,
                   .wait_ms = (unsigned long long)wait_ms};
    json_decref(doc);
    return ret->name ? 0 : -ENOMEM;
}

/* Wait `ms` milliseconds in slices of at most one second. Between slices, tell the daemon we are
 * alive; its reply says whether a cancel or pause arrived, and then the step stops early. */
static int wait_ms(RuntaraClient *c, long ms)
{
    while (ms > 0) {
        long slice = ms < 1000 ? ms : 1000;
        struct timespec ts = {.tv_sec = slice / 1000, .tv_nsec = slice % 1000 * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        ms -= slice;
        if (ms > 0 && runtara_heartbeat(c) >= 0 && runtara_signal(c) != RUNTARA_SIGNAL_NONE &&
            runtara_signal(c) != RUNTARA_SIGNAL_RESUME)
            return -ECANCELED;
    }
    return 0;
}

/* The work of step K (a runtara_step_cb): the side effect, then the result to save. */
static int run_step(void *userdata, void **ret_result, size_t *ret_n)
{
    const Step *s = userdata;
    FILE *f;
    char *result;

    int r = wait_ms(s->client, s->ms);
    if (r < 0)
        return r;
    if (!(f = fopen("steps.log", "ae")))
        return -errno;
    fprintf(f, "step %d\n", s->k);
    if (fclose(f) != 0)
        return -errno;

    if (!(result = malloc(64)))
        return -ENOMEM;
    int n = snprintf(result, 64, "{\"step\":%d,\"attempt\":%u}", s->k, runtara_attempt(s->client));
    *ret_result = result;
    *ret_n = (size_t)n;
    return 0;
}

/* Step K's result says which launch ran it; collect that into `attempts`. */
static void note_attempt(json_t *attempts, const void *result, size_t n)
{
    json_t *doc = json_loadb(result, n, 0, NULL);

    json_array_append_new(attempts, json_incref(json_object_get(doc, "attempt")));
    json_decref(doc);
}

static int report_progress(RuntaraClient *c, int k, int of)
{
    char payload[64];

    snprintf(payload, sizeof payload, "{\"step\":%d,\"of\":%d}", k, of);
    return runtara_event(c, "progress", "step", payload);
}

/* Run the steps. Returns 0 when all are done, the signal (> 0) when the program must stop, or a
 * negative errno. */
static int run_steps(RuntaraClient *c, const Input *in, json_t *attempts)
{
    for (int k = 1; k <= in->steps;) {
        Step step = {.client = c, .k = k, .ms = in->step_ms};
        char key[32];
        void *result = NULL;
        size_t n = 0;

        int r = runtara_should_exit(c);
        if (r != 0)
            return r;

        snprintf(key, sizeof key, "step-%d", k);
        r = runtara_step(c, key, run_step, &step, &result, &n);
        if (r == -ECANCELED)
            continue; /* not run: a cancel or pause is pending; runtara_should_exit() acts on it */
        if (r < 0)
            return r;

        note_attempt(attempts, result, n);
        free(result);
        if (r == 0 && (r = report_progress(c, k, in->steps)) < 0)
            return r;
        k++;
    }
    return 0;
}

/* The durable sleep and the signal wait of the input, if any. Returns 0 to go on, RUNTARA_SUSPENDED
 * when the program must exit for now, or a negative errno. */
static int sleep_and_wait(RuntaraClient *c, const Input *in, json_t *out)
{
    int r = 0;
    if (in->sleep_ms > 0 && (r = runtara_sleep(c, "nap", in->sleep_ms)) != 0)
        return r;
    if (!in->wait_key)
        return 0;
    char *payload = NULL;
    r = runtara_wait_signal(c, in->wait_key, in->wait_ms, &payload);
    if (r == -ETIMEDOUT) {
        json_object_set_new(out, "timed_out", json_true());
        return 0;
    }
    if (r != 0)
        return r;
    json_object_set_new(out, "signal", json_loads(payload, JSON_DECODE_ANY, NULL));
    free(payload);
    return 0;
}

static int finish(RuntaraClient *c, const Input *in, json_t *attempts)
{
    json_t *out = json_pack("{s:s+, s:i, s:O}", "greeting", "hello ", in->name, "steps", in->steps,
                            "attempts", attempts);
    int s = sleep_and_wait(c, in, out);
    if (s != 0) {
        if (s == RUNTARA_SUSPENDED)
            fprintf(stderr, "sdk-workflow: suspended until the deadline or the signal\n");
        json_decref(out);
        return s == RUNTARA_SUSPENDED ? 0 : s;
    }
    char *text = json_dumps(out, JSON_COMPACT);
    int r = text ? runtara_complete(c, text) : -ENOMEM;

    free(text);
    json_decref(out);
    return r;
}

/* The workflow. Returns 0 when the program should exit with status 0 (completed, or stopping for
 * a cancel or pause), else a negative errno. */
static int run(RuntaraClient *c)
{
    Input in = {0};
    json_t *attempts = json_array();

    int r = read_input(c, &in);
    if (r >= 0)
        r = run_steps(c, &in, attempts);
    if (r > 0) {
        fprintf(stderr, "sdk-workflow: %s requested, stopping\n", runtara_signal_to_string(r));
        r = 0;
    } else if (r == 0) {
        r = finish(c, &in, attempts);
    } else if (in.name && r != -EALREADY) {
        /* A step failed: end the instance as failed. (-EALREADY: the instance was stopped or
         * has ended meanwhile, and there is nothing left to report.) */
        (void)runtara_fail(c, runtara_last_error(c), NULL);
    }
    free(in.name);
    free(in.wait_key);
    json_decref(attempts);
    return r;
}

int main(void)
{
    RuntaraClient *c = NULL;

    if (runtara_open(&c) < 0) {
        fprintf(stderr, "sdk-workflow: %s\n", runtara_open_error());
        return EXIT_FAILURE;
    }
    fprintf(stderr, "sdk-workflow: instance %s, attempt %u, last checkpoint %s\n",
            runtara_instance_id(c), runtara_attempt(c),
            runtara_checkpoint_id(c) ? runtara_checkpoint_id(c) : "none");

    int r = run(c);
    if (r < 0)
        fprintf(stderr, "sdk-workflow: %s\n",
                *runtara_last_error(c) ? runtara_last_error(c) : strerror(-r));
    runtara_close(c);
    return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
