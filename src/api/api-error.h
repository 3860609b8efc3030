/* The only place that maps error codes to HTTP statuses and stable JSON codes (STYLE R8). */
#pragma once

typedef struct ApiErrorKind {
    unsigned status;
    const char *code;
} ApiErrorKind;

/** -EINVAL → 400 invalid_argument, -EBADMSG → 400 invalid_json, -EACCES → 401 unauthorized,
 *  -EPERM → 403 forbidden, -ENOENT → 404 not_found, -EOPNOTSUPP → 405 method_not_allowed,
 *  -EEXIST/-EBUSY → 409 conflict, -EFBIG → 413 payload_too_large, -EPROTONOSUPPORT → 415
 *  unsupported_media_type, -ESHUTDOWN → 503 unavailable, -ENOSPC → 507 insufficient_storage,
 *  anything else → 500 internal. */
ApiErrorKind api_error_kind(int errno_code);
