/* The certificate and private key of the management API's TLS: read once at start, checked with
 * GnuTLS the way libmicrohttpd will use them (so a bad file is a clear start-up error naming the
 * file, not a server that fails to start), and kept in memory for the server's life. */
#pragma once

#include <stddef.h>

#include "../base/error.h"

/* The PEM texts, NUL-terminated, as MHD_OPTION_HTTPS_MEM_CERT and _KEY take them. */
typedef struct TlsFiles {
    char *cert; /* the certificate, then any intermediates (the chain clients are sent) */
    char *key;  /* the private key, unencrypted; wiped when freed */
} TlsFiles;

/** Read cert_path and key_path (each at most 1 MiB) and check that the first holds at least one
 *  X.509 certificate, the second an unencrypted private key, and that they belong together.
 *  Logs a warning for a certificate outside its validity period and for a key file that other
 *  users may read. On failure returns a negative errno with a message naming the file, what
 *  failed and why (-ENOENT, -EACCES, -EFBIG: reading; -EINVAL: contents, mismatch); ret is
 *  untouched then. Blocks on file I/O. */
int tls_files_load(const char *cert_path, const char *key_path, TlsFiles *ret, Error *e);
/** Free the texts, wiping the key first. NULL-safe on the fields. */
void tls_files_done(TlsFiles *t);
