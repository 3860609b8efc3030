/* Image metadata rules: what a tenant, name, description, runner type and labels may be. */
#pragma once

#include <jansson.h>

#include "../base/error.h"

#define IMAGE_DESCRIPTION_MAX 1024
#define IMAGE_LABELS_MAX 32
#define IMAGE_LABEL_KEY_MAX 63
#define IMAGE_LABEL_VALUE_MAX 255

typedef struct ImageSpec {
    const char *tenant_id;
    const char *name;
    const char *description;     /* may be NULL */
    const char *runner_type;     /* "oci" or "native"; NULL = "oci" */
    const json_t *labels;        /* object of string values, or NULL */
    const char *expected_sha256; /* lower-case hex, or NULL */
} ImageSpec;

/** Check every field; the message names the field and the rule. */
int image_spec_validate(const ImageSpec *s, Error *e);
/** Add "key=value" to a labels object, checking the key, the value and the count. */
int image_labels_add(json_t *labels, const char *kv, Error *e);
