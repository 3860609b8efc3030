/* The memo of launch tokens (src/api/token-memo.h): a token's hash names its instance, for the
 * path's id only; forgotten tokens and the oldest past the capacity are gone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/api/token-memo.h"
#include "../lib/tests.h"

/* A 64-character token hash, different for each n. */
static const char *hash_of(unsigned n, char buf[static 65])
{
    snprintf(buf, 65, "%064x", n);
    return buf;
}

TEST(a_remembered_token_names_its_instance_for_its_id_only)
{
    TokenMemo *m = token_memo_new(8);
    char h[65];
    ASSERT_NULL(token_memo_get(m, hash_of(1, h), "i1"));
    token_memo_put(m, hash_of(1, h), "acme/i1", "i1");
    char *key = token_memo_get(m, hash_of(1, h), "i1");
    ASSERT_STREQ(key, "acme/i1");
    free(key);
    /* the same token on another instance's path, or another token: nothing */
    ASSERT_NULL(token_memo_get(m, hash_of(1, h), "i2"));
    ASSERT_NULL(token_memo_get(m, hash_of(2, h), "i1"));
    /* a second put of the token keeps the first entry */
    token_memo_put(m, hash_of(1, h), "other/i9", "i9");
    key = token_memo_get(m, hash_of(1, h), "i1");
    ASSERT_STREQ(key, "acme/i1");
    free(key);
    ASSERT_EQ(token_memo_size(m), 1);
    m = token_memo_free(m);
    ASSERT_NULL(token_memo_get(NULL, hash_of(1, h), "i1"));
}

TEST(a_forgotten_token_is_gone)
{
    TokenMemo *m = token_memo_new(8);
    char h[65];
    token_memo_put(m, hash_of(1, h), "acme/i1", "i1");
    token_memo_put(m, hash_of(2, h), "acme/i2", "i2");
    token_memo_forget(m, hash_of(1, h));
    token_memo_forget(m, hash_of(7, h)); /* never there */
    ASSERT_NULL(token_memo_get(m, hash_of(1, h), "i1"));
    char *key = token_memo_get(m, hash_of(2, h), "i2");
    ASSERT_STREQ(key, "acme/i2");
    free(key);
    ASSERT_EQ(token_memo_size(m), 1);
    token_memo_forget(NULL, hash_of(2, h));
    m = token_memo_free(m);
}

TEST(past_its_capacity_the_oldest_token_goes_first)
{
    enum { CAP = 4 };
    TokenMemo *m = token_memo_new(CAP);
    char h[65];
    for (unsigned i = 0; i < 3 * CAP; i++) {
        char key[32], id[16];
        snprintf(id, sizeof id, "i%u", i);
        snprintf(key, sizeof key, "acme/i%u", i);
        token_memo_put(m, hash_of(i, h), key, id);
        ASSERT_TRUE(token_memo_size(m) <= CAP);
        /* the newest CAP are there, every older one is gone */
        for (unsigned j = 0; j <= i; j++) {
            snprintf(id, sizeof id, "i%u", j);
            char *got = token_memo_get(m, hash_of(j, h), id);
            ASSERT_EQ(got != NULL, j + CAP > i);
            free(got);
        }
    }
    /* a forgotten token's slot is taken by the next put before any live one is dropped: the
     * three live ones stay */
    token_memo_forget(m, hash_of(3 * CAP - CAP, h)); /* the oldest */
    token_memo_put(m, hash_of(100, h), "acme/i100", "i100");
    for (unsigned j = 3 * CAP - CAP + 1; j < 3 * CAP; j++) {
        char id[16];
        snprintf(id, sizeof id, "i%u", j);
        char *got = token_memo_get(m, hash_of(j, h), id);
        ASSERT_NOT_NULL(got);
        free(got);
    }
    ASSERT_EQ(token_memo_size(m), CAP);
    m = token_memo_free(m);
}

TESTS_MAIN(T(a_remembered_token_names_its_instance_for_its_id_only), T(a_forgotten_token_is_gone),
           T(past_its_capacity_the_oldest_token_goes_first))
