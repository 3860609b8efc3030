/* Who is calling: API keys from RUNTARA_API_KEYS_FILE, checked on every management request. An
 * admin key sees everything; a tenant key sees and changes only its own tenant. Without a keys file
 * every caller is admin (the daemon allows that only on loopback). */
#pragma once

#include <stdbool.h>

#include "../base/apikey.h"
#include "../base/error.h"

typedef struct Auth Auth;

typedef struct Principal {
    bool admin;
    char tenant[ID_MAX_LEN + 1]; /* set for tenant keys */
    char key_name[APIKEY_NAME_MAX + 1];
} Principal;

/** Load the keys file (path NULL = open mode). */
int auth_new(const char *path, Auth **ret, Error *e);
Auth *auth_free(Auth *a);
/** Re-read the keys file; on error the old keys stay in force. Thread-safe. */
int auth_reload(Auth *a, Error *e);
bool auth_is_open(Auth *a);
size_t auth_count(Auth *a);
/** Check an Authorization header value ("Bearer <key>"). -EACCES with a message if missing or
 *  unknown. Thread-safe. */
int auth_check(Auth *a, const char *authorization, Principal *ret, Error *e);
