/* The in-tree unit test harness (STYLE R23): TEST() functions in an explicit table, TAP output,
 * argv filters by name, a final "N passed, N failed" line, exit 77 when every test skipped. */
#pragma once

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct TestCase {
    const char *name;
    void (*fn)(void);
} TestCase;

#define TEST(n) static void test_##n(void)
#define T(n)                                                                                       \
    {                                                                                              \
#n, test_##n                                                                               \
    }

/* Set by a failed assertion; the current test stops at the first failure. */
extern bool test_failed;
extern const char *test_skip_reason;

#define TEST_FAIL(...)                                                                             \
    do {                                                                                           \
        printf("# %s:%d: ", __FILE__, __LINE__);                                                   \
        printf(__VA_ARGS__);                                                                       \
        printf("\n");                                                                              \
        test_failed = true;                                                                        \
        return;                                                                                    \
    } while (0)

#define TEST_SKIP(reason)                                                                          \
    do {                                                                                           \
        test_skip_reason = (reason);                                                               \
        return;                                                                                    \
    } while (0)

#define ASSERT_TRUE(e)                                                                             \
    do {                                                                                           \
        if (!(e))                                                                                  \
            TEST_FAIL("expected true: %s", #e);                                                    \
    } while (0)

#define ASSERT_FALSE(e)                                                                            \
    do {                                                                                           \
        if (e)                                                                                     \
            TEST_FAIL("expected false: %s", #e);                                                   \
    } while (0)

#define ASSERT_EQ(a, b)                                                                            \
    do {                                                                                           \
        intmax_t _a = (intmax_t)(a), _b = (intmax_t)(b);                                           \
        if (_a != _b)                                                                              \
            TEST_FAIL("%s == %s: %jd != %jd", #a, #b, _a, _b);                                     \
    } while (0)

#define ASSERT_OK(e)                                                                               \
    do {                                                                                           \
        intmax_t _r = (intmax_t)(e);                                                               \
        if (_r < 0)                                                                                \
            TEST_FAIL("%s failed: %jd (%s)", #e, _r, strerror((int)-_r));                          \
    } while (0)

#define ASSERT_STREQ(a, b)                                                                         \
    do {                                                                                           \
        const char *_a = (a), *_b = (b);                                                           \
        if (!_a || !_b || strcmp(_a, _b) != 0)                                                     \
            TEST_FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, _a ? _a : "(null)",                    \
                      _b ? _b : "(null)");                                                         \
    } while (0)

#define ASSERT_NULL(p)                                                                             \
    do {                                                                                           \
        if ((p) != NULL)                                                                           \
            TEST_FAIL("expected NULL: %s", #p);                                                    \
    } while (0)

#define ASSERT_NOT_NULL(p)                                                                         \
    do {                                                                                           \
        if ((p) == NULL)                                                                           \
            TEST_FAIL("expected non-NULL: %s", #p);                                                \
    } while (0)

/** Run the table; returns the process exit status. */
int tests_run(const TestCase *tests, size_t n, int argc, char **argv);
/** A fresh empty directory under $TMPDIR; the caller owns the string. Removed by tests_run at exit.
 */
char *tests_tmpdir(void);

#define TESTS_MAIN(...)                                                                            \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        static const TestCase _tests[] = {__VA_ARGS__};                                            \
        return tests_run(_tests, sizeof _tests / sizeof _tests[0], argc, argv);                    \
    }
