#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "../../src/base/alloc.h"
#include "../../src/base/fileio.h"
#include "tests.h"

bool test_failed;
const char *test_skip_reason;

static char *tmpdirs[64];
static size_t n_tmpdirs;

char *tests_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char *t = xasprintf("%s/runtara-test-XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(t)) {
        perror("mkdtemp");
        abort();
    }
    if (n_tmpdirs < sizeof tmpdirs / sizeof tmpdirs[0])
        tmpdirs[n_tmpdirs++] = xstrdup(t);
    return t;
}

static bool selected(const char *name, int argc, char **argv)
{
    if (argc <= 1)
        return true;
    for (int i = 1; i < argc; i++)
        if (strstr(name, argv[i]))
            return true;
    return false;
}

int tests_run(const TestCase *tests, size_t n, int argc, char **argv)
{
    unsigned passed = 0, failed = 0, skipped = 0, num = 0;

    setvbuf(stdout, NULL, _IOLBF, 0);
    for (size_t i = 0; i < n; i++)
        if (selected(tests[i].name, argc, argv))
            num++;
    printf("1..%u\n", num);
    num = 0;
    for (size_t i = 0; i < n; i++) {
        if (!selected(tests[i].name, argc, argv))
            continue;
        num++;
        test_failed = false;
        test_skip_reason = NULL;
        tests[i].fn();
        if (test_failed) {
            printf("not ok %u - %s\n", num, tests[i].name);
            failed++;
        } else if (test_skip_reason) {
            printf("ok %u - %s # SKIP %s\n", num, tests[i].name, test_skip_reason);
            skipped++;
        } else {
            printf("ok %u - %s\n", num, tests[i].name);
            passed++;
        }
    }
    for (size_t i = 0; i < n_tmpdirs; i++) {
        (void)fileio_rm_rf_at(AT_FDCWD, tmpdirs[i]);
        free(tmpdirs[i]);
    }
    printf("%u passed, %u failed\n", passed, failed);
    if (failed)
        return 1;
    return passed == 0 && skipped > 0 ? 77 : 0;
}
