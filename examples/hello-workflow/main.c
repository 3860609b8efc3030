/* The demo workflow: three steps that each print their progress and a final JSON result. It is
 * what `make run` registers as an image. It reads its input from input.json in the working
 * directory (the run directory the daemon prepares) and writes output.json there. */
#include <stdio.h>
#include <stdlib.h>

static int step(int n, const char *what)
{
    printf("step %d: %s\n", n, what);
    return fflush(stdout) == 0 ? 0 : -1;
}

int main(void)
{
    if (step(1, "greet") < 0 || step(2, "count") < 0 || step(3, "finish") < 0)
        return EXIT_FAILURE;

    FILE *out = fopen("output.json", "we");
    if (!out) {
        perror("could not create output.json");
        return EXIT_FAILURE;
    }
    fputs("{\"greeting\":\"hello from runtara\",\"steps\":3}\n", out);
    return fclose(out) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
