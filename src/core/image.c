#include <string.h>

#include "../base/digest.h"
#include "../base/id.h"
#include "../base/utf8.h"
#include "image.h"

static bool label_key_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > IMAGE_LABEL_KEY_MAX)
        return false;
    for (const char *p = k; *p; p++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/", *p))
            return false;
    return true;
}

static bool sha256_ok(const char *s)
{
    return strlen(s) == SHA256_HEX_LEN && strspn(s, "0123456789abcdef") == SHA256_HEX_LEN;
}

int image_spec_validate(const ImageSpec *s, Error *e)
{
    if (!s->tenant_id)
        return error_set(e, -EINVAL, "tenant_id is required");
    if (!id_is_valid(s->tenant_id))
        return error_set(e, -EINVAL, "invalid tenant_id: %s", ID_RULE);
    if (!s->name)
        return error_set(e, -EINVAL, "name is required");
    if (!id_is_valid(s->name))
        return error_set(e, -EINVAL, "invalid name: %s", ID_RULE);
    if (s->description &&
        (strlen(s->description) > IMAGE_DESCRIPTION_MAX || !utf8_is_text(s->description)))
        return error_set(e, -EINVAL,
                         "invalid description: must be UTF-8 text without control characters, "
                         "at most %d bytes",
                         IMAGE_DESCRIPTION_MAX);
    if (s->runner_type && strcmp(s->runner_type, "oci") != 0 &&
        strcmp(s->runner_type, "native") != 0)
        return error_set(e, -EINVAL, "invalid runner_type \"%s\": must be oci or native",
                         s->runner_type);
    if (s->expected_sha256 && !sha256_ok(s->expected_sha256))
        return error_set(e, -EINVAL, "invalid sha256: must be 64 lower-case hex characters");
    return 0;
}

int image_labels_add(json_t *labels, const char *kv, Error *e)
{
    const char *eq = strchr(kv, '=');
    if (!eq)
        return error_set(e, -EINVAL, "invalid label \"%s\": expected key=value", kv);

    char key[IMAGE_LABEL_KEY_MAX + 1];
    size_t kn = (size_t)(eq - kv);
    if (kn == 0 || kn > IMAGE_LABEL_KEY_MAX)
        return error_set(e, -EINVAL, "invalid label key: must be 1-%d characters",
                         IMAGE_LABEL_KEY_MAX);
    memcpy(key, kv, kn);
    key[kn] = '\0';
    if (!label_key_ok(key))
        return error_set(e, -EINVAL, "invalid label key \"%s\": allowed are [A-Za-z0-9._/-]", key);
    if (strlen(eq + 1) > IMAGE_LABEL_VALUE_MAX || !utf8_is_text(eq + 1))
        return error_set(e, -EINVAL,
                         "invalid value for label \"%s\": must be UTF-8 text without control "
                         "characters, at most %d bytes",
                         key, IMAGE_LABEL_VALUE_MAX);
    if (json_object_get(labels, key))
        return error_set(e, -EINVAL, "label \"%s\" given twice", key);
    if (json_object_size(labels) >= IMAGE_LABELS_MAX)
        return error_set(e, -EINVAL, "too many labels: at most %d", IMAGE_LABELS_MAX);
    json_object_set_new(labels, key, json_string(eq + 1));
    return 0;
}
