/* The hand-over of a launch to an idle runtara-shim (runner-native.c → shim.c).
 *
 * The native runner starts `runtara-shim --launch-fd 3` ahead of time with one end of a stream
 * socket pair as fd 3. The shim waits on it; the runner sends one launch: a ShimLaunchHeader
 * carrying the run directory's fd (SCM_RIGHTS), then `len` bytes of NUL-terminated strings:
 * the shim's argv as for a start by hand (argv[0], the options, "--", the program), an empty
 * string, then the program's environment. The shim acts only on a complete launch; if the
 * socket closes first (the daemon stopped or died), it exits without touching anything. */
#pragma once

#include <stdint.h>

#define SHIM_LAUNCH_FD 3
#define SHIM_LAUNCH_MAGIC 0x31534c52u /* "RLS1" */
/* bounds what a shim accepts: the API caps the environment far below this */
#define SHIM_LAUNCH_MAX (4u << 20)

typedef struct ShimLaunchHeader {
    uint32_t magic;
    uint32_t len; /* bytes of strings that follow */
} ShimLaunchHeader;
