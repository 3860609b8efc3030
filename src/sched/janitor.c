#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "../base/alloc.h"
#include "../base/fileio.h"
#include "../base/log.h"
#include "janitor.h"
#include "run-dir.h"

struct Janitor {
    sd_event_source *timer;
    Store *store;
    ImageRegistry *images;
    JanitorSettings s;
    char *data_dir;
    size_t instances, images_deleted; /* in the current pass */
};

/* Delete one batch of finished instances and their run directories; the number deleted. */
static int purge_instances(Janitor *j, usec_t before, size_t *ret_n, Error *e)
{
    StoreRef *refs = NULL;
    size_t n = 0;
    int k = store_instance_purge(j->store, before, j->s.batch, &refs, &n, e);
    if (k < 0)
        return k;
    for (size_t i = 0; i < n; i++) {
        _cleanup_free_ char *dir = run_dirs_tenant_path(j->data_dir, refs[i].tenant_id);
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0)
            (void)fileio_rm_rf_at(fd, refs[i].id);
    }
    store_refs_free(refs, n);
    *ret_n = n;
    return 0;
}

static int on_timer(sd_event_source *src, uint64_t usec, void *userdata)
{
    Janitor *j = userdata;
    usec_t before = now_usec(CLOCK_REALTIME) - j->s.keep;
    bool more = true;
    Error e = ERROR_INIT;
    (void)usec;

    for (unsigned turn = 0; more && turn < j->s.batches_per_turn; turn++) {
        size_t ni = 0, nm = 0;
        if (purge_instances(j, before, &ni, &e) < 0 ||
            image_registry_purge(j->images, before, j->s.batch, &nm, &e) < 0) {
            log_error("retention pass failed, trying again at the next: %s", error_message(&e));
            error_done(&e);
            more = false;
            break;
        }
        j->instances += ni;
        j->images_deleted += nm;
        more = ni == j->s.batch || nm == j->s.batch;
    }
    if (!more && j->instances + j->images_deleted > 0) {
        log_info("retention: deleted %zu finished instances and %zu unused images", j->instances,
                 j->images_deleted);
        j->instances = j->images_deleted = 0;
    }
    /* a backlog continues on the next turn of the loop, the rest after the interval */
    int k = sd_event_source_set_time_relative(src, more ? 0 : j->s.interval);
    if (k >= 0)
        k = sd_event_source_set_enabled(src, SD_EVENT_ONESHOT);
    if (k < 0)
        log_error("could not schedule the next retention pass: %s", strerror(-k));
    return 0;
}

int janitor_start(sd_event *loop, Store *store, ImageRegistry *images, const JanitorSettings *s,
                  Janitor **ret, Error *e)
{
    Janitor *j = xcalloc(1, sizeof *j);
    *j = (Janitor){.store = store, .images = images, .s = *s, .data_dir = xstrdup(s->data_dir)};
    int k = sd_event_add_time_relative(loop, &j->timer, CLOCK_MONOTONIC, 0, 100 * USEC_PER_MSEC,
                                       on_timer, j);
    if (k < 0) {
        janitor_stop(j);
        return error_set(e, k, "could not start the retention pass: %s", strerror(-k));
    }
    /* retention runs behind everything else the loop has to do */
    (void)sd_event_source_set_priority(j->timer, SD_EVENT_PRIORITY_IDLE);
    *ret = j;
    return 0;
}

Janitor *janitor_stop(Janitor *j)
{
    if (!j)
        return NULL;
    sd_event_source_disable_unref(j->timer);
    free(j->data_dir);
    free(j);
    return NULL;
}
