/* The entry points of a fuzz target (libFuzzer's interface). Each tests/fuzz/fuzz-<name>.c defines
 * LLVMFuzzerTestOneInput() and, if it needs set-up once per process, LLVMFuzzerInitialize(). In a
 * build with -Dfuzz=true they link against libFuzzer; otherwise against fuzz-main.c, which replays
 * the files it is given (the seed corpus, crashers) once each. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/** Run one input. Returns 0; a bug shows as a crash, a sanitizer report or an abort. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/** Optional, once before the first input. */
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A copy of an input with a NUL after it, for parsers of C strings; caller frees. */
char *fuzz_strndup(const uint8_t *data, size_t size);
