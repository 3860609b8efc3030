/* The JSON body of each endpoint that takes one, sent in a well-formed request with valid
 * credentials so that every input reaches the handler's own checks. The first byte picks the
 * endpoint (and, for the management API, the admin or the tenant key); the rest is the body.
 * The instance API calls act as the running instance FUZZ_INSTANCE; one that ends it leaves the
 * later ones to find it ended, as a real program's would. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-api.h"
#include "fuzz.h"

static const struct {
    FuzzServer server;
    const char *path;
} endpoints[] = {
    {FUZZ_MANAGEMENT, "/api/v1/instances"},
    {FUZZ_MANAGEMENT, "/api/v1/instances/fz-2/stop"},
    {FUZZ_MANAGEMENT, "/api/v1/instances/fz-2/signals"},
    {FUZZ_MANAGEMENT, "/api/v1/instances/fz-2/signals/custom"},
    {FUZZ_CORE, "/api/v1/instances/" FUZZ_INSTANCE "/events"},
    {FUZZ_CORE, "/api/v1/instances/" FUZZ_INSTANCE "/signals/ack"},
    {FUZZ_CORE, "/api/v1/instances/" FUZZ_INSTANCE "/sleep"},
    {FUZZ_CORE, "/api/v1/instances/" FUZZ_INSTANCE "/wait"},
    {FUZZ_CORE, "/api/v1/instances/" FUZZ_INSTANCE "/completed"},
    {FUZZ_CORE, "/api/v1/instances/" FUZZ_INSTANCE "/failed"},
};
#define N_ENDPOINTS (sizeof endpoints / sizeof endpoints[0])

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_api_start();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (64 << 10))
        return 0;
    unsigned which = (data[0] & 0x7f) % N_ENDPOINTS;
    const char *cred = endpoints[which].server == FUZZ_CORE ? FUZZ_INSTANCE_TOKEN
                       : data[0] & 0x80                     ? FUZZ_TENANT_KEY
                                                            : FUZZ_ADMIN_KEY;
    char head[512];
    int n = snprintf(head, sizeof head,
                     "POST %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     endpoints[which].path, cred, size - 1);
    char *raw = malloc((size_t)n + size);
    if (!raw)
        abort();
    memcpy(raw, head, (size_t)n);
    memcpy(raw + n, data + 1, size - 1);
    (void)fuzz_api_send(endpoints[which].server, raw, (size_t)n + size - 1, NULL, 0);
    free(raw);
    return 0;
}
