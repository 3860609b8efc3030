/* The daemon's two HTTP servers in the fuzzing process: the management API and the instance API,
 * with their real route tables, admission and handlers, over a SQLite store in a scratch data
 * directory, the mock runner and a supervisor on its own event loop thread. Each input goes in
 * over a new unix socket connection, as a client's would. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef enum FuzzServer {
    FUZZ_MANAGEMENT,
    FUZZ_CORE,
} FuzzServer;

/* An admin key and a key of tenant "acme", from the keys file the management API loads. */
#define FUZZ_ADMIN_KEY "rtk_000000000000000000000000000000000000000000000001"
#define FUZZ_TENANT_KEY "rtk_000000000000000000000000000000000000000000000002"
/* A running instance of tenant acme and the launch token the instance API admits it with. */
#define FUZZ_INSTANCE "fz-1"
#define FUZZ_INSTANCE_TOKEN "0000000000000000000000000000000000000000000000000000000000000f22"

/** Start everything, once per process. Aborts on failure. */
void fuzz_api_start(void);
/** Send n bytes on a new connection to server, close the sending side and read the reply until
 *  the server closes, or stays silent for a while once the input is out. Returns the reply's
 *  size (at most reply_max bytes are kept in reply, which may be NULL). */
size_t fuzz_api_send(FuzzServer server, const void *data, size_t n, char *reply, size_t reply_max);
