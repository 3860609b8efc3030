/* The baseline of the OCI scenario (bench/scenarios/oci.py): the bare runtime running, N times,
 * the container the OCI runner would run, and the time from the runtime's invocation to the
 * program's first action. Prints one latency (us) per line.
 *
 *   oci-baseline RUNTIME WORK_DIR BUNDLES_DIR IMAGE_ID PROGRAM N INTERVAL_US \
 *                MEMORY_BYTES CPU_MILLIS PIDS OPEN_FILES [run | create-start]
 *
 * Each run's bundle is made, before its clock starts, by the OCI runner's own code
 * (runner__oci_prepare(), as a launch of the daemon makes it): the image's rootfs in BUNDLES_DIR
 * (the daemon's, already built from PROGRAM), a config.json with the daemon's isolation and the
 * given limits, a run directory of its own (WORK_DIR/run/<n>) and the socket's link. The program
 * is bench-probe-static, which with BENCH_STAMP=1 prints CLOCK_REALTIME and exits. The clock
 * starts just before `RUNTIME --root WORK_DIR/state run --bundle BUNDLE ID` is spawned (the
 * runtime creates, starts, waits for and deletes the container in one process) and stops at the
 * probe's stamp. With INTERVAL_US, a run begins every INTERVAL_US at most (the daemon's pace, as
 * spawn-baseline keeps it).
 *
 * create-start drives the runtime as runtara-shim does (shim-oci.c), without the daemon: `RUNTIME
 * --root S --log L --log-format json create --bundle B --pid-file P ID`, waited for, then `...
 * start ID`; the clock runs from the first invocation to the stamp, and the container is reaped
 * (this process is a subreaper, as the shim is) and deleted after it. */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../src/base/fileio.h"
#include "../src/runner/oci-seccomp.h"
#include "../src/runner/runner-internal.h"

extern char **environ;

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* A unix socket bound at path, for the runner to link into the containers' socket directory (the
 * probe in its stamp mode never connects). */
/* Spawn args with stdin from /dev/null and stdout (and stderr, if err) to out; its pid or -1. The
 * container's init inherits them. */
static pid_t spawn(const char *const *args, int out, bool err)
{
    posix_spawn_file_actions_t fa;
    pid_t pid;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out, STDOUT_FILENO);
    if (err)
        posix_spawn_file_actions_adddup2(&fa, out, STDERR_FILENO);
    int r = posix_spawnp(&pid, args[0], &fa, NULL, (char *const *)args, environ);
    posix_spawn_file_actions_destroy(&fa);
    return r == 0 ? pid : -1;
}

static int wait_ok(pid_t pid)
{
    int status;
    if (pid <= 0)
        return -1;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static int bind_socket(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return -1;
    strcpy(sa.sun_path, path);
    (void)unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    return fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ? -1 : fd;
}

int main(int argc, char **argv)
{
    if (argc != 12 && argc != 13) {
        fprintf(stderr, "usage: oci-baseline RUNTIME WORK_DIR BUNDLES_DIR IMAGE_ID PROGRAM N "
                        "INTERVAL_US MEMORY_BYTES CPU_MILLIS PIDS OPEN_FILES [run|create-start]\n");
        return 2;
    }
    bool create_start = argc == 13 && strcmp(argv[12], "create-start") == 0;
    pid_t pid = -1;
    if (create_start && prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        return 1;
    const char *runtime = argv[1], *work = argv[2];
    int n = atoi(argv[6]);
    long long interval = atoll(argv[7]);
    char state[4096], launches[4096], sockets[4096], runs[4096], api[4096];
    snprintf(state, sizeof state, "%s/state", work);
    snprintf(launches, sizeof launches, "%s/launches", work);
    snprintf(sockets, sizeof sockets, "%s/socket", work);
    snprintf(runs, sizeof runs, "%s/run", work);
    snprintf(api, sizeof api, "%s/api.sock", work);
    if (fileio_mkdir_p(runs, 0755) < 0 || bind_socket(api) < 0) {
        fprintf(stderr, "oci-baseline: could not set up %s: %m\n", work);
        return 1;
    }
    /* the filter the daemon gives crun (daemon/main.c), so that the config is the daemon's */
    _cleanup_free_ char *bpf = NULL;
    Error se = ERROR_INIT;
    if (oci_runtime_is_crun(runtime) && oci_seccomp_compile(&bpf, &se) < 0) {
        fprintf(stderr, "oci-baseline: %s\n", error_message(&se));
        return 1;
    }
    RunnerOciSettings o = {.runtime = runtime,
                           .state_dir = state,
                           .bundles_dir = argv[3],
                           .launches_dir = launches,
                           .socket_dir = sockets,
                           .uid = 65534,
                           .gid = (uint32_t)getegid(),
                           .seccomp_bpf = bpf};
    Error le = ERROR_INIT;
    if (runner__oci_link_socket(&o, api, &le) < 0) { /* what the daemon does when it listens */
        fprintf(stderr, "oci-baseline: %s\n", error_message(&le));
        return 1;
    }
    RunnerLimits limits = {.memory_bytes = strtoull(argv[8], NULL, 10),
                           .cpu_millis = strtoull(argv[9], NULL, 10),
                           .pids = strtoull(argv[10], NULL, 10),
                           .open_files = strtoull(argv[11], NULL, 10)};
    for (int i = 0; i < n; i++) {
        char key[64], id[32], run_dir[4200], attempt[32];
        snprintf(id, sizeof id, "bare%d-%lld", i, now_us() % 1000000000);
        snprintf(key, sizeof key, "bench/%s", id);
        snprintf(run_dir, sizeof run_dir, "%s/%s", runs, id);
        snprintf(attempt, sizeof attempt, "RUNTARA_ATTEMPT=%d", 1);
        char env_id[64], env_tenant[] = "RUNTARA_TENANT_ID=bench";
        snprintf(env_id, sizeof env_id, "RUNTARA_INSTANCE_ID=%s", id);
        /* the variables of a daemon's launch (supervisor-launch.c), and the probe's mode */
        const char *const envp[] = {
            "BENCH_STAMP=1", env_id, env_tenant, attempt, "RUNTARA_SLEEP_SUSPEND_MS=1000", NULL};
        RunnerLaunch l = {.instance_key = key,
                          .tenant_id = "bench",
                          .instance_id = id,
                          .image_id = argv[4],
                          .executable = argv[5],
                          .run_dir = run_dir,
                          .attempt = 1,
                          .envp = envp,
                          .limits = limits,
                          .network = RUNNER_NETWORK_NONE};
        RunnerOciLaunch prep = {.cid = ""};
        Error e = ERROR_INIT;
        if (mkdir(run_dir, 0755) < 0 || runner__oci_prepare(&o, api, &l, &prep, &e) < 0) {
            fprintf(stderr, "oci-baseline: could not prepare the bundle: %s\n",
                    e.code ? error_message(&e) : strerror(errno));
            return 1;
        }

        int p[2];
        char buf[64] = {0}, log[4300], pid_file[4300];
        const char *bundle = prep.bundle, *cid = prep.cid;
        snprintf(log, sizeof log, "%s/runtime.log", bundle);
        snprintf(pid_file, sizeof pid_file, "%s/init.pid", bundle);
        const char *run[] = {runtime, "--root", state, "run", "--bundle", bundle, cid, NULL};
        const char *create[] = {runtime,        "--root", state,    "--log",    log,
                                "--log-format", "json",   "create", "--bundle", bundle,
                                "--pid-file",   pid_file, cid,      NULL};
        const char *start[] = {runtime,        "--root", state,   "--log", log,
                               "--log-format", "json",   "start", cid,     NULL};
        const char *del[] = {runtime, "--root", state, "delete", "--force", cid, NULL};
        if (pipe2(p, O_CLOEXEC) < 0)
            return 1;
        long long t0 = now_us();
        bool ok;
        if (create_start)
            ok =
                wait_ok(spawn(create, p[1], false)) == 0 && wait_ok(spawn(start, p[1], false)) == 0;
        else
            ok = (pid = spawn(run, p[1], false)) > 0;
        close(p[1]);
        ssize_t k, got = 0;
        while ((k = read(p[0], buf + got, sizeof buf - 1 - (size_t)got)) > 0)
            got += k;
        close(p[0]);
        if (create_start) { /* the container's init, reparented here */
            while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
                ;
            int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
            ok = wait_ok(spawn(del, devnull, true)) == 0 && ok;
            close(devnull);
        } else
            ok = ok && wait_ok(pid) == 0;
        if (got <= 0 || !ok) {
            fprintf(stderr, "oci-baseline: %s %s of %s failed (output \"%s\")\n", runtime,
                    create_start ? "create+start" : "run", cid, buf);
            return 1;
        }
        printf("%lld\n", atoll(buf) - t0);
        fflush(stdout);
        runner__oci_finish(&o, cid, false);
        (void)fileio_rm_rf_at(AT_FDCWD, run_dir);
        runner__oci_launch_done(&prep);
        long long left = t0 + interval - now_us();
        if (left > 0)
            usleep((useconds_t)left);
    }
    return 0;
}
