/* A main() for fuzz targets in builds without libFuzzer (as systemd's fuzz-main.c and
 * PostgreSQL's STANDALONE_FUZZ_TARGET): runs every file named on the command line, or found in
 * a directory named there, once through LLVMFuzzerTestOneInput(). Normal CI replays each seed
 * corpus so, under every sanitizer the build has. One TAP line per input and a final
 * "N passed, N failed"; an input that finds a bug crashes the process, which fails the test. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static unsigned passed, failed;

static int read_file(const char *path, uint8_t **ret, size_t *ret_n)
{
    FILE *f = fopen(path, "rbe");
    if (!f)
        return -errno;
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 4096;
            buf = realloc(buf, cap);
            if (!buf)
                abort();
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0)
            break;
    }
    int r = ferror(f) ? -EIO : 0;
    fclose(f);
    if (r < 0) {
        free(buf);
        return r;
    }
    *ret = buf;
    *ret_n = n;
    return 0;
}

static void run_file(const char *path)
{
    uint8_t *data = NULL;
    size_t n = 0;
    int r = read_file(path, &data, &n);
    if (r < 0) {
        printf("not ok %u - %s: could not read: %s\n", passed + failed + 1, path, strerror(-r));
        failed++;
        return;
    }
    /* an exact-size copy, so that ASan sees a read past the end of the input */
    uint8_t *exact = malloc(n ? n : 1);
    if (!exact)
        abort();
    memcpy(exact, data, n);
    free(data);
    (void)LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    printf("ok %u - %s\n", ++passed + failed, path);
}

static int compare(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        printf("not ok %u - %s: could not open: %s\n", passed + failed + 1, path, strerror(errno));
        failed++;
        return;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        names = realloc(names, (n + 1) * sizeof *names);
        if (!names || asprintf(&names[n], "%s/%s", path, de->d_name) < 0)
            abort();
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof *names, compare);
    for (size_t i = 0; i < n; i++) {
        run_file(names[i]);
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv)
{
    (void)LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
            run_dir(argv[i]);
        else
            run_file(argv[i]);
    }
    printf("1..%u\n%u passed, %u failed\n", passed + failed, passed, failed);
    return failed ? 1 : 0;
}
