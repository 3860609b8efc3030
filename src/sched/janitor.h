/* The janitor: the retention pass. Finished instances (completed, failed, cancelled) older than
 * the retention period are deleted with their checkpoints, events and signals and their run
 * directories, and image versions that nothing uses any more and a newer version supersedes are
 * deleted with their files. It works in small batches (one transaction each), a few per turn of
 * the event loop, so a large backlog never stalls the loop; it runs once at start-up and then
 * every interval. Loop thread only. */
#pragma once

#include <systemd/sd-event.h>

#include "../core/image-registry.h"
#include "../store/store.h"

typedef struct Janitor Janitor;

typedef struct JanitorSettings {
    const char *data_dir;
    usec_t keep;     /* retention period; 0 = keep forever (no janitor) */
    usec_t interval; /* between passes */
    unsigned batch;  /* rows per transaction */
    unsigned batches_per_turn;
} JanitorSettings;

/** Start the janitor; its first pass begins at once. */
int janitor_start(sd_event *loop, Store *store, ImageRegistry *images, const JanitorSettings *s,
                  Janitor **ret, Error *e);
/** Stop; NULL-safe. Returns NULL. */
Janitor *janitor_stop(Janitor *j);
