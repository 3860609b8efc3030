/* The HTTP client of runtara-ctl: JSON requests, streamed uploads and streamed downloads to the
 * management API over libcurl, with the error body {"error":{"code","message","detail"}} turned
 * into an Error. Every call blocks until the server answers or a timeout passes: connecting may
 * take 10 s; a transfer is abandoned when it moves less than 1 byte/s for 120 s, and a request
 * without a body after 300 s (a download, client_download(), has no such limit). Responses over
 * CLIENT_RESPONSE_MAX bytes are refused, except those streamed by client_download().
 *
 * An https:// server's certificate is verified against the system's CAs, or those of a CA file,
 * unless verification is skipped.
 *
 * Error codes: -ECONNREFUSED when the server could not be reached at all (the message says
 * "could not connect to <url>: <reason>"), -EKEYREJECTED when its certificate could not be
 * verified, -ENOKEY when the CA file could not be used, -EPROTO when no TLS connection could be
 * made, -ETIMEDOUT, -EIO for other transport failures, -EFBIG
 * for an oversized response, -EBADMSG for a 2xx answer that is not JSON, and for client_call() a
 * code derived from the HTTP status (404 → -ENOENT, 409 → -EBUSY, 401 → -EACCES, 403 → -EPERM,
 * 400 → -EINVAL, 413 → -EFBIG, otherwise -EPROTO). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "../base/error.h"
#include "../base/strbuf.h"

#define CLIENT_RESPONSE_MAX ((size_t)64 << 20)

typedef struct Client Client;

/* A request body streamed from a file descriptor, never held in memory. */
typedef struct ClientUpload {
    int fd;            /* borrowed; read from its current offset */
    uint64_t size;     /* exactly this many bytes are sent (Content-Length) */
    const char *name;  /* the file's name, for messages; borrowed */
    const char *ctype; /* Content-Type; borrowed */
    bool progress;     /* draw a progress bar on stderr while sending */
} ClientUpload;

/** Initialise libcurl; call once from main() before any other client function. Returns 0 or
 *  -ENOMEM. */
int client_global_init(void);
/** Undo client_global_init(). */
void client_global_done(void);

/* How an https:// server is checked. */
typedef struct ClientTls {
    const char *ca_file; /* PEM CA certificates to verify with instead of the system's; or NULL */
    bool skip_verify;    /* accept any certificate and host name */
} ClientTls;

/** A client for base_url ("http://" or "https://", trailing slashes ignored) that sends api_key
 *  (may be NULL) as a bearer token and checks an https:// server as tls says (NULL: against the
 *  system's CAs). The strings are copied. Returns 0, or -EINVAL with a message for a malformed
 *  URL or key, or -ENOMEM. Does not connect. */
int client_new(const char *base_url, const char *api_key, const ClientTls *tls, Client **ret,
               Error *e);
/** Free the client and close its connections. NULL-safe; returns NULL. */
Client *client_free(Client *c);
/** The base URL, without trailing slash. */
const char *client_url(const Client *c);

/** Append "?key=value" (first parameter) or "&key=value" to q, percent-encoding value. A NULL
 *  value appends nothing. */
void client_query_add(Client *c, StrBuf *q, const char *key, const char *value);

/** Send method (GET, POST, DELETE) to base URL + path (which starts with "/" and carries its
 *  query), with an optional body from upload. Returns 0 once the server answered, whatever the
 *  status: *ret_status is the HTTP status and *ret_body the parsed JSON body (NULL when empty or
 *  not JSON; the caller owns the reference). Returns a negative code (see above) otherwise;
 *  nothing is written to the ret_ parameters then. */
int client_request(Client *c, const char *method, const char *path, const ClientUpload *upload,
                   long *ret_status, json_t **ret_body, Error *e);

/** client_request() that also treats every non-2xx status as an error. Its message is the
 *  server's "<message> (HTTP <status>)", followed by a "detail: ..." line when the server sent
 *  one. ret_body may be NULL; *ret_body is NULL for an empty 2xx answer (204). */
int client_call(Client *c, const char *method, const char *path, const ClientUpload *upload,
                json_t **ret_body, Error *e);

/** client_call() with a JSON request body (Content-Type: application/json), sent compact; body
 *  may be NULL for none (an empty POST). */
int client_call_json(Client *c, const char *method, const char *path, const json_t *body,
                     json_t **ret_body, Error *e);

/* Where client_download() puts the body of a 2xx answer, chunk by chunk as it arrives. */
typedef struct ClientSink {
    /* Take n bytes. Returns 0, or a negative errno that aborts the transfer. */
    int (*write)(const void *data, size_t n, void *userdata);
    void *userdata;
    const char *name; /* where the bytes go, for messages: "standard output", "\"f.bin\"" */
} ClientSink;

/** GET path and stream the body of a 2xx answer (any type: JSON or raw bytes) to sink, never
 *  holding it whole; there is no overall time limit, only the stall timeout. *ret_size (may be
 *  NULL) is the number of bytes written. A non-2xx status is an error as in client_call(), and
 *  its body never reaches the sink; a failing sink is "could not write to <name>: <reason>". */
int client_download(Client *c, const char *path, const ClientSink *sink, uint64_t *ret_size,
                    Error *e);

/** The Error for an answer with a non-2xx status, as client_call() makes it. body may be NULL.
 *  Returns the (negative) code. */
int client_reply_error(long status, const json_t *body, Error *e);

DEFINE_TRIVIAL_CLEANUP_FUNC(Client *, client_free);
