#include <errno.h>
#include <stdlib.h>

#include "api-error.h"

ApiErrorKind api_error_kind(int errno_code)
{
    switch (abs(errno_code)) {
    case ENOENT:
        return (ApiErrorKind){404, "not_found"};
    case EEXIST:
    case EBUSY:
    case ESTALE:
        return (ApiErrorKind){409, "conflict"};
    case EINVAL:
        return (ApiErrorKind){400, "invalid_argument"};
    case EBADMSG:
        return (ApiErrorKind){400, "invalid_json"};
    case EFBIG:
        return (ApiErrorKind){413, "payload_too_large"};
    case EACCES:
        return (ApiErrorKind){401, "unauthorized"};
    case EPERM:
        return (ApiErrorKind){403, "forbidden"};
    case EPROTONOSUPPORT:
        return (ApiErrorKind){415, "unsupported_media_type"};
    case EOPNOTSUPP:
        return (ApiErrorKind){405, "method_not_allowed"};
    case ESHUTDOWN:
    case ECONNRESET:   /* the database's connection broke (PostgreSQL) */
    case ECONNREFUSED: /* or it cannot be reached */
    case ETIMEDOUT:    /* or it did not answer in time */
        return (ApiErrorKind){503, "unavailable"};
    case ENOSPC:
        return (ApiErrorKind){507, "insufficient_storage"};
    case ENOSYS: /* what this daemon's configuration does not offer (a PostgreSQL backup) */
        return (ApiErrorKind){501, "not_implemented"};
    default:
        return (ApiErrorKind){500, "internal"};
    }
}
