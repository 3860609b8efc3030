/* The only place that maps error codes to HTTP statuses and stable JSON codes (STYLE R8). */
#pragma once

typedef struct ApiErrorKind {
    unsigned status;
    const char *code;
} ApiErrorKind;

/** -ENOENT → 404 not_found, -EEXIST/-EBUSY → 409 conflict, -EINVAL → 400 invalid_argument,
 *  -EFBIG → 413 payload_too_large, -EACCES → 401, -EPERM → 403, -EPROTONOSUPPORT → 415,
 *  -ESHUTDOWN → 503, anything else → 500 internal. */
ApiErrorKind api_error_kind(int errno_code);
