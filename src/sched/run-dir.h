/* Run directories: DATA_DIR/tenants/<tenant>/runs/<instance>/, an instance's working directory
 * for all of its launches, with input.json (its input, written at every launch) and what its
 * runner and program put there. Tenants live in a namespace of their own, so no tenant id can
 * ever name a file of the daemon's (images/, runtara.db, core.sock, ...).
 *
 * A new run directory is made ahead of the launch that needs it: creating a directory and its
 * files costs 0.3-0.6 ms on the reference machine's ext4, renaming one into place ~0.05 ms
 * (docs/benchmarks.md). So one spare, DATA_DIR/.spare-run/, waits with input.json and the
 * runner's files already created but empty (runner_ready_dir()), made when the event loop is
 * idle; the first launch of an instance renames it into place and writes input.json in it. A
 * directory that exists already (a relaunch) is used as it is. Instance and tenant ids cannot
 * begin with a dot, so the spare's name is no run directory's. Loop thread only, but for
 * run_dirs_path(). */
#pragma once

#include "../base/error.h"
#include "../runner/runner.h"

typedef struct RunDirs RunDirs;

/** Move run directories of the layout before DATA_DIR/tenants/ (DATA_DIR/<tenant>/runs/) into it,
 *  and mark DATA_DIR/tenants/ as done; nothing to do once marked. Safe to interrupt at any point
 *  and run again: each tenant moves by one rename, and processes running in a moved directory
 *  keep it (their working directory is the same inode). Call at start-up, with the data
 *  directory locked, before anything reads a run directory. *ret_moved is the number of tenants
 *  moved. Blocks on the file system. */
int run_dirs_upgrade_layout(const char *data_dir, unsigned *ret_moved, Error *e);
/** DATA_DIR/tenants/<tenant>/runs, the parent of the tenant's run directories (caller frees). Any
 *  thread. */
char *run_dirs_tenant_path(const char *data_dir, const char *tenant);

/** Run directories under data_dir, readied for runner (borrowed). Removes a spare an earlier
 *  daemon left. */
RunDirs *run_dirs_new(const char *data_dir, Runner *runner);
RunDirs *run_dirs_free(RunDirs *d);

/** Make the spare if there is none. Blocks for a few file creations: call it when nothing more
 *  urgent waits. Once a rename into place has failed in a way that would repeat (the data
 *  directory spans file systems, or its file system has no RENAME_NOREPLACE), no spare is made
 *  any more. */
int run_dirs_ready(RunDirs *d, Error *e);

/** The path of the run directory of instance id of tenant (caller frees); it may not exist. Any
 *  thread: it reads only the data directory, fixed at run_dirs_new(). */
char *run_dirs_path(const RunDirs *d, const char *tenant, const char *id);

/** The run directory of instance id of tenant, with input.json holding input: the spare renamed
 *  into place if the directory does not exist yet (else a new one is created), or the existing
 *  one with input.json replaced atomically. *ret_path is its absolute path (caller frees). */
int run_dirs_prepare(RunDirs *d, const char *tenant, const char *id, const char *input,
                     char **ret_path, Error *e);

/* What a program may leave in its run directory as its output, in bytes. */
#define RUN_DIRS_OUTPUT_MAX (1 << 20)

/** The output a program left in its run directory dir (output.json) as compact JSON text (caller
 *  frees), or NULL if there is none, it is larger than RUN_DIRS_OUTPUT_MAX or it is not JSON.
 *  The file is the program's to write, so anything may be in it. Any thread; reads the file. */
char *run_dirs_read_output(const char *dir);
