/* API keys and the keys file. A key is "rtk_" + 48 hex characters; the file stores only its
 * SHA-256, one key per line:
 *
 *     # comment
 *     <sha256 hex of the key>  admin          [name]
 *     <sha256 hex of the key>  tenant:<id>    [name]
 *
 * The daemon reads it at start-up and on SIGHUP; runtara-ctl keys writes it atomically. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "error.h"
#include "id.h"

#define APIKEY_PREFIX "rtk_"
#define APIKEY_LEN (4 + 48)
#define APIKEY_NAME_MAX 64
#define APIKEYS_MAX 10000

typedef struct ApiKey {
    char hash[65];
    bool admin;
    char tenant[ID_MAX_LEN + 1]; /* empty for admin keys */
    char name[APIKEY_NAME_MAX + 1];
} ApiKey;

/** A new random key (APIKEY_LEN chars + NUL). */
int apikey_generate(char key[static APIKEY_LEN + 1]);
/** SHA-256 of a presented key, as hex. */
void apikey_hash(const char *key, char hex[static 65]);
/** Parse a keys file. *ret is a new array (free()). Errors name the line. */
int apikey_parse(const char *text, ApiKey **ret, size_t *ret_n, Error *e);
/** One line for the file, without newline; caller frees. */
char *apikey_format(const ApiKey *k);
