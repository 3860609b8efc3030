/* The seccomp profile of every container: an allow-list of system calls, everything else failing
 * with ENOSYS. One definition, in two forms: the runtime-spec's JSON (linux.seccomp of config.json,
 * which every runtime reads and compiles at each start), and the BPF program compiled from it once
 * by libseccomp, as crun compiles it, handed to crun in the annotation run.oci.seccomp_bpf_data
 * (crun(1)) so that a start skips the compilation: 3.3 ms of CPU of a 10 ms `crun run` here
 * (docs/benchmarks.md#oci). crun then ignores the JSON form; runc always uses it. */
#pragma once

#include <jansson.h>

#include "../base/error.h"

/* the annotation crun loads a precompiled filter from (base64 of the BPF program) */
#define OCI_SECCOMP_BPF_ANNOTATION "run.oci.seccomp_bpf_data"

/** linux.seccomp of a config.json, as a new JSON object. */
json_t *oci_seccomp_json(void);

/** The profile of oci_seccomp_json() compiled with libseccomp, as base64 of the BPF program, in a
 *  new string (*ret). Takes milliseconds: do it once. -errno with a message in e on failure. */
int oci_seccomp_compile(char **ret, Error *e);
