#include <openssl/evp.h>
#include <stdio.h>

#include "digest.h"
#include "macro.h"

struct Sha256 {
    EVP_MD_CTX *ctx;
};

Sha256 *sha256_new(void)
{
    Sha256 *h = malloc(sizeof *h);
    ASSERT_SE(h);
    h->ctx = EVP_MD_CTX_new();
    ASSERT_SE(h->ctx);
    ASSERT_SE(EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) == 1);
    return h;
}

void sha256_update(Sha256 *h, const void *data, size_t n)
{
    ASSERT_SE(EVP_DigestUpdate(h->ctx, data, n) == 1);
}

void sha256_final_hex(Sha256 *h, char hex[static SHA256_HEX_LEN + 1])
{
    unsigned char md[32];
    unsigned int len = 0;

    ASSERT_SE(EVP_DigestFinal_ex(h->ctx, md, &len) == 1 && len == 32);
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

Sha256 *sha256_free(Sha256 *h)
{
    if (h) {
        EVP_MD_CTX_free(h->ctx);
        free(h);
    }
    return NULL;
}

void sha256_raw(const void *data, size_t n, unsigned char out[static 32])
{
    unsigned int len = 0;
    ASSERT_SE(EVP_Digest(data, n, out, &len, EVP_sha256(), NULL) == 1 && len == 32);
}
