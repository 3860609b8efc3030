/* The API keys file (RUNTARA_API_KEYS_FILE), as the daemon reads it at start-up and on SIGHUP.
 * Besides not crashing: every key parsed is formatted back to a line that parses to the same
 * key, as runtara-ctl keys rewrites the file. */
#include <stdlib.h>
#include <string.h>

#include "../../src/base/apikey.h"
#include "fuzz.h"

static bool same(const ApiKey *a, const ApiKey *b)
{
    return strcmp(a->hash, b->hash) == 0 && a->admin == b->admin &&
           strcmp(a->tenant, b->tenant) == 0 && strcmp(a->name, b->name) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_strndup(data, size);
    ApiKey *keys = NULL;
    size_t n = 0;
    Error e = ERROR_INIT;

    if (apikey_parse(text, &keys, &n, &e) >= 0) {
        for (size_t i = 0; i < n; i++) {
            char *line = apikey_format(&keys[i]);
            ApiKey *again = NULL;
            size_t m = 0;
            if (apikey_parse(line, &again, &m, NULL) < 0 || m != 1 || !same(&again[0], &keys[i]))
                abort();
            free(again);
            free(line);
        }
        free(keys);
    } else if (!error_message(&e)[0])
        abort(); /* a refusal always says why */
    error_done(&e);
    free(text);
    return 0;
}
