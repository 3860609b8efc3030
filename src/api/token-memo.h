/* The launch tokens the instance API has seen running, by their SHA-256: which instance each
 * names. A launch's token is random and never given to another launch, so what its hash names
 * never changes; whether the launch is still the instance's current one does, and this memo does
 * not know it. A checkpoint save, whose transaction checks the token's hash and the status again
 * anyway, is admitted from the memo without reading the instance's row (api_core_admit()): 10 of
 * a 10-step workflow's 12 requests. Bounded: past its capacity the oldest entry goes, which costs
 * a later save of that launch only the read. Any thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef struct TokenMemo TokenMemo;

/** A memo of at most capacity tokens (> 0). */
TokenMemo *token_memo_new(size_t capacity);
/** NULL-safe. */
TokenMemo *token_memo_free(TokenMemo *m);

/** Remember that the token whose SHA-256 (64 hex characters) is token_hash names instance_key,
 *  whose id is instance_id. A token already there keeps its entry. */
void token_memo_put(TokenMemo *m, const char *token_hash, const char *instance_key,
                    const char *instance_id);
/** The instance key token_hash names, copied (caller frees), if it is remembered and names an
 *  instance whose id is instance_id; else NULL. NULL-safe (m NULL: NULL). */
char *token_memo_get(TokenMemo *m, const char *token_hash, const char *instance_id);
/** Forget token_hash (its launch ended); nothing if it is not there. NULL-safe. */
void token_memo_forget(TokenMemo *m, const char *token_hash);
/** How many tokens it holds. */
size_t token_memo_size(TokenMemo *m);
