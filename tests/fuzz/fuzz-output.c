/* output.json, which a workflow program writes into its run directory and the supervisor reads
 * when the program exits 0 (run_dirs_read_output()). Whatever it holds, the result is NULL or
 * JSON text that parses again. */
#include <jansson.h>
#include <stdlib.h>

#include "../../src/sched/run-dir.h"
#include "fuzz-run-files.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *dir = fuzz_scratch_dir();
    fuzz_write_file(dir, "output.json", data, size);
    char *out = run_dirs_read_output(dir);
    if (out) {
        json_t *again = json_loads(out, JSON_DECODE_ANY, NULL);
        if (!again)
            abort();
        json_decref(again);
    }
    free(out);
    return 0;
}
