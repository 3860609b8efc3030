/* Errors a user should see: a negative errno code plus an owned message (STYLE R8). */
#pragma once

#include "macro.h"

typedef struct Error {
    int code;  /* negative errno, 0 when unset */
    char *msg; /* owned, may be NULL */
} Error;

#define ERROR_INIT                                                                                 \
    {                                                                                              \
        0, NULL                                                                                    \
    }

/** Record code and message in e (which may be NULL). Replaces an earlier message.
 *  Returns code, so failure branches can `return error_set(...)`. */
int error_set(Error *e, int code, const char *fmt, ...) _printf_(3, 4);
/** Prefix the message with context: "ctx: old". Returns e->code (or -EIO if unset). */
int error_prefix(Error *e, const char *fmt, ...) _printf_(2, 3);
/** The message, or the errno text when no message was set. Never NULL. */
const char *error_message(const Error *e);
/** Free the message; NULL-safe. Leaves e reusable. */
void error_done(Error *e);
