#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "apikey.h"
#include "digest.h"
#include "strbuf.h"

int apikey_generate(char key[static APIKEY_LEN + 1])
{
    memcpy(key, APIKEY_PREFIX, 4);
    return id_random_hex(key + 4, 24);
}

void apikey_hash(const char *key, char hex[static 65])
{
    unsigned char md[32];
    sha256_raw(key, strlen(key), md);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

static bool is_hex64(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!strchr("0123456789abcdef", s[n]))
            return false;
    return n == 64;
}

static int parse_line(char *line, unsigned lineno, ApiKey *k, Error *e)
{
    char *save = NULL;
    char *hash = strtok_r(line, " \t", &save);
    char *role = strtok_r(NULL, " \t", &save);
    char *name = strtok_r(NULL, " \t", &save);
    char *extra = strtok_r(NULL, " \t", &save);

    *k = (ApiKey){0};
    if (!hash || !is_hex64(hash))
        return error_set(e, -EINVAL, "line %u: expected the SHA-256 of a key (64 hex characters)",
                         lineno);
    memcpy(k->hash, hash, 65);
    if (!role)
        return error_set(e, -EINVAL, "line %u: missing role (admin or tenant:<id>)", lineno);
    if (strcmp(role, "admin") == 0)
        k->admin = true;
    else if (strncmp(role, "tenant:", 7) == 0 && id_is_valid(role + 7))
        snprintf(k->tenant, sizeof k->tenant, "%s", role + 7);
    else
        return error_set(e, -EINVAL, "line %u: invalid role \"%s\": expected admin or tenant:<id>",
                         lineno, role);
    if (name) {
        if (strlen(name) > APIKEY_NAME_MAX || !id_is_valid(name))
            return error_set(e, -EINVAL, "line %u: invalid key name \"%s\"", lineno, name);
        snprintf(k->name, sizeof k->name, "%s", name);
    }
    if (extra)
        return error_set(e, -EINVAL, "line %u: unexpected text after the key name", lineno);
    return 0;
}

int apikey_parse(const char *text, ApiKey **ret, size_t *ret_n, Error *e)
{
    _cleanup_free_ char *copy = xstrdup(text);
    _cleanup_free_ ApiKey *keys = NULL;
    size_t n = 0;
    unsigned lineno = 0;
    char *save = NULL;

    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        line += strspn(line, " \t\r");
        line[strcspn(line, "\r")] = '\0';
        if (*line == '\0' || *line == '#')
            continue;
        if (n >= APIKEYS_MAX)
            return error_set(e, -E2BIG, "more than %d keys", APIKEYS_MAX);
        keys = xrealloc(keys, (n + 1) * sizeof *keys);
        int r = parse_line(line, lineno, &keys[n], e);
        if (r < 0)
            return r;
        for (size_t i = 0; i < n; i++)
            if (strcmp(keys[i].hash, keys[n].hash) == 0)
                return error_set(e, -EINVAL, "line %u: the same key appears twice", lineno);
        n++;
    }
    *ret = TAKE_PTR(keys);
    *ret_n = n;
    return 0;
}

char *apikey_format(const ApiKey *k)
{
    StrBuf b = STRBUF_INIT;
    strbuf_printf(&b, "%s %s%s", k->hash,
                  k->admin ? "admin" : "tenant:", k->admin ? "" : k->tenant);
    if (k->name[0])
        strbuf_printf(&b, " %s", k->name);
    return strbuf_steal(&b);
}
