/* The wake heap: entries come out earliest first, only once due, each exactly once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/base/alloc.h"
#include "../../src/sched/wake-heap.h"
#include "../lib/tests.h"

TEST(empty_heap_has_nothing_due)
{
    WakeHeap *h = wake_heap_new();
    usec_t when = 0;
    ASSERT_EQ(wake_heap_next(h), USEC_INFINITY);
    ASSERT_NULL(wake_heap_pop_due(h, USEC_INFINITY - 1, &when));
    ASSERT_EQ(wake_heap_size(h), 0);
    h = wake_heap_free(h);
}

TEST(only_due_entries_come_out_earliest_first)
{
    WakeHeap *h = wake_heap_new();
    wake_heap_push(h, "c", 300);
    wake_heap_push(h, "a", 100);
    wake_heap_push(h, "b", 200);
    wake_heap_push(h, "a-again", 100); /* equal deadlines both come out */
    ASSERT_EQ(wake_heap_next(h), 100);
    usec_t when = 0;
    ASSERT_NULL(wake_heap_pop_due(h, 99, &when));
    char *first = wake_heap_pop_due(h, 150, &when);
    ASSERT_NOT_NULL(first);
    ASSERT_EQ(when, 100);
    char *second = wake_heap_pop_due(h, 150, &when);
    ASSERT_NOT_NULL(second);
    ASSERT_EQ(when, 100);
    ASSERT_TRUE(strcmp(first, second) != 0);
    ASSERT_NULL(wake_heap_pop_due(h, 150, &when));
    ASSERT_EQ(wake_heap_size(h), 2);
    free(first);
    free(second);
    char *b = wake_heap_pop_due(h, 1000, &when);
    ASSERT_STREQ(b, "b");
    free(b);
    h = wake_heap_free(h); /* frees what is left */
}

TEST(many_random_deadlines_come_out_sorted_each_once)
{
    enum { N = 20000 };
    WakeHeap *h = wake_heap_new();
    unsigned seed = 7;
    static bool seen[N];
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof id, "%d", i);
        wake_heap_push(h, id, (usec_t)(rand_r(&seed) % 5000));
    }
    ASSERT_EQ(wake_heap_size(h), N);
    usec_t last = 0, when = 0;
    size_t n = 0;
    /* in rounds, as the timer would fire: each round takes what is due by then */
    for (usec_t now = 0; now <= 5000; now += 250) {
        char *id;
        while ((id = wake_heap_pop_due(h, now, &when))) {
            ASSERT_TRUE(when >= last && when <= now);
            last = when;
            int k = atoi(id);
            ASSERT_FALSE(seen[k]);
            seen[k] = true;
            free(id);
            n++;
        }
    }
    ASSERT_EQ(n, N);
    ASSERT_EQ(wake_heap_size(h), 0);
    h = wake_heap_free(h);
}

TESTS_MAIN(T(empty_heap_has_nothing_due), T(only_due_entries_come_out_earliest_first),
           T(many_random_deadlines_come_out_sorted_each_once))
