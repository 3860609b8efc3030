/* Everything a client can send to the daemon's HTTP servers, as raw bytes on one connection:
 * the request line, headers, percent-decoding of the path and query, routing (404, 405 with
 * Allow), admission (API keys, launch tokens), body framing and limits, the JSON bodies, the
 * query parameters of every endpoint and what each handler makes of them. The first byte picks
 * the server (even: management API, odd: instance API); the rest is sent as it is. */
#include "fuzz-api.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_api_start();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    (void)fuzz_api_send(data[0] & 1 ? FUZZ_CORE : FUZZ_MANAGEMENT, data + 1, size - 1, NULL, 0);
    return 0;
}
