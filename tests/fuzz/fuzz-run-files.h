/* A scratch run directory for the targets that read files a program leaves there. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/** A new directory under $TMPDIR (or /tmp), removed at exit; its path (static). Aborts on
 *  failure. */
const char *fuzz_scratch_dir(void);
/** Replace dir/name with the input. Aborts on failure. */
void fuzz_write_file(const char *dir, const char *name, const uint8_t *data, size_t size);
