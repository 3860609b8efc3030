/* SHA-256 on GnuTLS's hash API. GnuTLS is mapped into the daemon anyway (Debian's libmicrohttpd
 * links it), so hashing through it costs no memory of its own; libcrypto, used before, added
 * 1.4 MiB of RSS for SHA-256 alone (docs/benchmarks.md, memory). */
#include <gnutls/crypto.h>
#include <stdio.h>
#include <stdlib.h>

#include "alloc.h"
#include "digest.h"
#include "macro.h"

struct Sha256 {
    gnutls_hash_hd_t hd;
};

Sha256 *sha256_new(void)
{
    Sha256 *h = xcalloc(1, sizeof *h);
    ASSERT_SE(gnutls_hash_init(&h->hd, GNUTLS_DIG_SHA256) == 0);
    return h;
}

void sha256_update(Sha256 *h, const void *data, size_t n)
{
    if (n > 0)
        ASSERT_SE(gnutls_hash(h->hd, data, n) == 0);
}

void sha256_final_hex(Sha256 *h, char hex[static SHA256_HEX_LEN + 1])
{
    unsigned char md[32];
    gnutls_hash_output(h->hd, md);
    for (size_t i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

Sha256 *sha256_free(Sha256 *h)
{
    if (h) {
        gnutls_hash_deinit(h->hd, NULL);
        free(h);
    }
    return NULL;
}

void sha256_raw(const void *data, size_t n, unsigned char out[static 32])
{
    ASSERT_SE(gnutls_hash_fast(GNUTLS_DIG_SHA256, data, n, out) == 0);
}
