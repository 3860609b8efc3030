/* e2e-workflow: the workflow of the end-to-end benchmark, built on libruntara.
 *
 *   e2e-workflow                as an instance: runtara_open(), STEPS checkpointed steps with
 *                               runtara_step(), runtara_complete()
 *   e2e-workflow plain N        the baseline: the same steps as a plain loop in this process, N
 *                               workflows one after another; prints each workflow's time (ns)
 *
 * A step is small real work: a checksum (FNV-1a) over 4 KiB that depends on the step, and a
 * result of about 60 bytes of JSON, which the instance saves as the step's checkpoint. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <runtara.h>

#define STEPS 10
#define STEP_BYTES 4096
#define RESULT_MAX 96

typedef struct Step {
    int k;
    uint64_t carry; /* the previous step's checksum: each step depends on the one before */
} Step;

static uint64_t checksum(const Step *s)
{
    uint64_t h = 1469598103934665603ULL ^ s->carry;

    for (int i = 0; i < STEP_BYTES; i++) {
        h ^= (uint64_t)((i * 31 + s->k) & 0xff);
        h *= 1099511628211ULL;
    }
    return h;
}

/* The work of one step, as a runtara_step_cb: the result is malloc()ed JSON text. */
static int run_step(void *userdata, void **ret_result, size_t *ret_n)
{
    const Step *s = userdata;
    char *result = malloc(RESULT_MAX);
    if (!result)
        return -ENOMEM;

    int n = snprintf(result, RESULT_MAX, "{\"step\":%d,\"sum\":\"%016llx\"}", s->k,
                     (unsigned long long)checksum(s));
    *ret_result = result;
    *ret_n = (size_t)n;
    return 0;
}

/* The carry of the next step, read back from a step's result. */
static uint64_t carry_of(const void *result)
{
    const char *sum = strstr(result, "\"sum\":\"");
    return sum ? strtoull(sum + 7, NULL, 16) : 0;
}

static long long mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The baseline: the same steps, results and carries, without the SDK or the daemon. */
static int run_plain(int n)
{
    uint64_t sink = 0;

    for (int w = 0; w < n; w++) {
        long long t0 = mono_ns();
        Step s = {0};
        for (s.k = 1; s.k <= STEPS; s.k++) {
            void *result = NULL;
            size_t len = 0;
            int r = run_step(&s, &result, &len);
            if (r < 0)
                return r;
            s.carry = carry_of(result);
            free(result);
        }
        sink ^= s.carry;
        printf("%lld\n", mono_ns() - t0);
    }
    return sink == 1 ? 1 : 0; /* keeps the loop from being optimised away; never 1 in practice */
}

static int run_instance(RuntaraClient *c)
{
    Step s = {0};
    char key[32];

    for (s.k = 1; s.k <= STEPS; s.k++) {
        void *result = NULL;
        size_t n = 0;

        snprintf(key, sizeof key, "step-%d", s.k);
        int r = runtara_step(c, key, run_step, &s, &result, &n);
        if (r < 0)
            return r;
        s.carry = carry_of(result);
        free(result);
    }
    char out[64];
    snprintf(out, sizeof out, "{\"sum\":\"%016llx\"}", (unsigned long long)s.carry);
    return runtara_complete(c, out);
}

int main(int argc, char **argv)
{
    RuntaraClient *c = NULL;

    if (argc == 3 && strcmp(argv[1], "plain") == 0)
        return run_plain(atoi(argv[2])) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
    if (runtara_open(&c) < 0) {
        fprintf(stderr, "e2e-workflow: %s\n", runtara_open_error());
        return EXIT_FAILURE;
    }
    int r = run_instance(c);
    if (r < 0)
        fprintf(stderr, "e2e-workflow: %s\n", runtara_last_error(c));
    runtara_close(c);
    return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
