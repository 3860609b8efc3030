/* oci-prepare: makes one launch's OCI bundle the way the runner will, for tests that run
 * runtara-shim in OCI mode (tests/integration/test_oci.py): the image's rootfs
 * (oci_bundle_ensure()) and the launch's config.json (oci_spec_write()).
 *
 *   oci-prepare --bundles DIR --image ID --binary PATH --bundle DIR --run-dir DIR --id ID
 *               [--socket-dir DIR] [--network none|host] [--memory BYTES] [--pids N]
 *               [--cpu-quota US] [--systemd-cgroup] [--env KEY=VALUE]... [-- ARGS...]
 *
 * Prints the rootfs's path. */
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/runner/oci-bundle.h"
#include "../../src/runner/oci-runtime.h"
#include "../../src/runner/oci-spec.h"

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"bundles", required_argument, NULL, 'b'},    {"image", required_argument, NULL, 'i'},
        {"binary", required_argument, NULL, 'x'},     {"bundle", required_argument, NULL, 'B'},
        {"run-dir", required_argument, NULL, 'r'},    {"id", required_argument, NULL, 'I'},
        {"socket-dir", required_argument, NULL, 's'}, {"network", required_argument, NULL, 'n'},
        {"memory", required_argument, NULL, 'm'},     {"pids", required_argument, NULL, 'p'},
        {"cpu-quota", required_argument, NULL, 'c'},  {"systemd-cgroup", no_argument, NULL, 'S'},
        {"env", required_argument, NULL, 'e'},        {},
    };
    const char *bundles = NULL, *image = NULL, *binary = NULL, *bundle = NULL, *id = NULL;
    const char *envp[64] = {"PATH=/"};
    size_t n_env = 1;
    OciRuntime rt = {.path = "crun"};
    OciSpec s = {.uid = OCI_SPEC_NOBODY,
                 .gid = OCI_SPEC_NOBODY,
                 .network = OCI_NETWORK_NONE,
                 .memory_bytes = 512 << 20,
                 .cpu_quota_us = 50000,
                 .cpu_period_us = 100000,
                 .pids_limit = 64,
                 .rlimit_nofile = 1024};
    int c;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) >= 0) {
        switch (c) {
        case 'b':
            bundles = optarg;
            break;
        case 'i':
            image = optarg;
            break;
        case 'x':
            binary = optarg;
            break;
        case 'B':
            bundle = optarg;
            break;
        case 'r':
            s.run_dir = optarg;
            break;
        case 'I':
            id = optarg;
            break;
        case 's':
            s.socket_dir = optarg;
            break;
        case 'n':
            s.network = oci_network_from_string(optarg);
            break;
        case 'm':
            s.memory_bytes = strtoull(optarg, NULL, 10);
            break;
        case 'p':
            s.pids_limit = strtoll(optarg, NULL, 10);
            break;
        case 'c':
            s.cpu_quota_us = strtoull(optarg, NULL, 10);
            break;
        case 'S':
            rt.systemd_cgroup = true;
            break;
        case 'e':
            if (n_env < ELEMENTSOF(envp) - 1)
                envp[n_env++] = optarg;
            break;
        default:
            return 2;
        }
    }
    if (!bundles || !image || !binary || !bundle || !s.run_dir || !id) {
        fprintf(stderr, "oci-prepare: missing arguments\n");
        return 2;
    }
    const char *args[32] = {"/" OCI_BUNDLE_BINARY};
    for (int i = optind, k = 1; i < argc && k < 31; i++)
        args[k++] = argv[i];
    char *rootfs = NULL, *cg = oci_cgroups_path(&rt, id);
    Error e = ERROR_INIT;
    s.rootfs = NULL;
    s.args = args;
    s.envp = envp;
    s.cgroups_path = cg;
    int fd = open(bundle, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (oci_bundle_ensure(bundles, image, binary, &rootfs, &e) < 0 || fd < 0 ||
        (s.rootfs = rootfs, oci_spec_write(fd, "config.json", &s, &e)) < 0) {
        fprintf(stderr, "oci-prepare: %s\n", fd < 0 ? "cannot open the bundle" : error_message(&e));
        return 1;
    }
    printf("%s\n", rootfs);
    free(rootfs);
    free(cg);
    close(fd);
    return 0;
}
