/* The baseline of the start-latency benchmark: posix_spawn the probe and read the time of its
 * first syscall (it prints CLOCK_REALTIME), N times. Prints one latency (us) per line.
 *
 *   spawn-baseline PROBE N [INTERVAL_US]
 *
 * With INTERVAL_US, a spawn begins every INTERVAL_US at most (the rest of the interval is slept):
 * spawns back to back find the CPUs and their caches warm from the one before, and on this
 * guest run ~0.5 ms faster than spawns spaced like the daemon's starts
 * (docs/benchmarks.md, start_latency). */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: spawn-baseline PROBE N [INTERVAL_US]\n");
        return 2;
    }
    int n = atoi(argv[2]);
    long long interval = argc > 3 ? atoll(argv[3]) : 0;
    for (int i = 0; i < n; i++) {
        int p[2];
        char buf[64] = {0};
        struct timespec ts;
        posix_spawn_file_actions_t fa;
        pid_t pid;
        char *args[] = {argv[1], "stamp", NULL};

        if (pipe(p) < 0)
            return 1;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, p[1], 1);
        clock_gettime(CLOCK_REALTIME, &ts);
        long long t0 = (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
        if (posix_spawn(&pid, argv[1], &fa, NULL, args, environ) != 0)
            return 1;
        close(p[1]);
        ssize_t k = read(p[0], buf, sizeof buf - 1);
        close(p[0]);
        waitpid(pid, NULL, 0);
        posix_spawn_file_actions_destroy(&fa);
        if (k > 0)
            printf("%lld\n", atoll(buf) - t0);
        clock_gettime(CLOCK_REALTIME, &ts);
        long long left = t0 + interval - ((long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
        if (left > 0)
            usleep((useconds_t)left);
    }
    return 0;
}
