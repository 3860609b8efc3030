/* SHA-256 over a stream of chunks, on GnuTLS. */
#pragma once

#include <stddef.h>

typedef struct Sha256 Sha256;

#define SHA256_HEX_LEN 64

/** New hashing context. Aborts on allocation failure. */
Sha256 *sha256_new(void);
void sha256_update(Sha256 *h, const void *data, size_t n);
/** Write the lower-case hex digest (64 chars + NUL) and reset nothing: call once. */
void sha256_final_hex(Sha256 *h, char hex[static SHA256_HEX_LEN + 1]);
Sha256 *sha256_free(Sha256 *h);
/** One-shot digest of a buffer, as raw 32 bytes. */
void sha256_raw(const void *data, size_t n, unsigned char out[static 32]);
