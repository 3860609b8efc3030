/* GET /api/v1/health and GET /metrics: public, cheap, never write. GET /api/v1/backup: the store,
 * for operators. */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/alloc.h"
#include "../base/fileio.h"
#include "../base/id.h"
#include "../base/log.h"
#include "../base/parse-util.h"
#include "../base/strbuf.h"
#include "api.h"
#include "metrics.h"

void api_health(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    Error e = ERROR_INIT;
    StoreInfo info;
    usec_t uptime = now_usec(CLOCK_MONOTONIC) - ctx->started;

    store_info(ctx->store, &info);
    int r = store_ping(ctx->store, &e);
    json_t *store = json_pack("{s:s, s:s, s:i}", "backend", info.backend, "status",
                              r < 0 ? "unavailable" : "ok", "schema_version", info.schema_version);
    if (r < 0) {
        json_object_set_new(store, "error", json_string(error_message(&e)));
        log_warning("health check: store unavailable: %s", error_message(&e));
    }
    bool draining = atomic_load(&ctx->draining);
    http_reply_json(req, r < 0 || draining ? 503 : 200,
                    json_pack("{s:s, s:s, s:I, s:s, s:o}", "status",
                              r < 0      ? "degraded"
                              : draining ? "draining"
                                         : "ok",
                              "version", RUNTARA_VERSION, "uptime_ms",
                              (json_int_t)(uptime / USEC_PER_MSEC), "daemon",
                              ctx->daemon_id ? ctx->daemon_id : "", "store", store));
    error_done(&e);
}

void api_metrics(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    StrBuf b = STRBUF_INIT;
    uint64_t images = 0;
    int r = store_image_count(ctx->store, &images, NULL);

    metrics_render(&b, now_usec(CLOCK_MONOTONIC) - ctx->started, r < 0 ? -1 : (int64_t)images,
                   ctx->waiters ? (int64_t)waiters_count(ctx->waiters) : -1);
    http_reply_data(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.buf, b.len);
    strbuf_done(&b);
}

/* GET /api/v1/backup: a consistent copy of the whole store, for an admin key only (it holds every
 * tenant's data). The store writes it into DATA_DIR under a hidden name (the same filesystem as
 * the database, so no space elsewhere is assumed), the name is removed before the first byte is
 * sent and the reply streams the open file; a daemon that dies mid-backup leaves that file,
 * which the next start removes (api_backup_sweep). The copy runs on this HTTP thread: one
 * read transaction on one read connection, while writes go on. */
void api_backup(HttpRequest *req)
{
    ApiContext *ctx = http_request_userdata(req);
    if (!api_principal(req)->admin) {
        http_reply_error(req, -EPERM, "a backup holds every tenant's data: it needs an admin key",
                         NULL);
        return;
    }
    char id[37];
    int r = id_new_uuid(id);
    if (r < 0) {
        http_reply_error(req, r, "could not name the backup", strerror(-r));
        return;
    }
    _cleanup_free_ char *path = xasprintf("%s/" API_BACKUP_PREFIX "%s.db", ctx->data_dir, id);
    Error e = ERROR_INIT;
    /* not durable: it is read back at once and removed; runtara-ctl makes its copy durable */
    if (store_backup(ctx->store, path, 0, &e) < 0) {
        log_error("backup: %s", error_message(&e));
        api_reply_error(req, &e);
        error_done(&e);
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    r = fd < 0 || fstat(fd, &st) < 0 ? -errno : 0;
    (void)unlink(path);
    if (r < 0) {
        if (fd >= 0)
            (void)close(fd);
        http_reply_error(req, r, "could not read the backup back", strerror(-r));
        return;
    }
    char disposition[96], size[21];
    snprintf(disposition, sizeof disposition, "attachment; filename=\"runtara-backup-%s.db\"", id);
    http_reply_header(req, "Content-Disposition", disposition);
    http_request_log_field(req, "backup_bytes", format_uint64(size, (uint64_t)st.st_size));
    http_reply_fd(req, 200, "application/vnd.sqlite3", fd, (uint64_t)st.st_size);
}

int api_backup_sweep(const char *data_dir)
{
    _cleanup_close_ int fd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    return fileio_sweep_prefix(fd, API_BACKUP_PREFIX);
}

/* GET /api/v1/daemons: the daemons registered in the store (several may share a PostgreSQL
 * database), for an admin key only: hosts and pids are the operator's business. */
void api_daemons(HttpRequest *req)
{
    static const char *const allowed[] = {NULL};
    ApiContext *ctx = http_request_userdata(req);
    Error e = ERROR_INIT;
    DaemonRecord *d = NULL;
    size_t n = 0;

    if (!api_principal(req)->admin) {
        http_reply_error(req, -EPERM, "the daemons are listed for an admin key only", NULL);
        return;
    }
    if (api_check_query(req, allowed, &e) < 0 || store_daemon_list(ctx->store, &d, &n, &e) < 0) {
        api_fail(req, &e);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        char started[32], until[32];
        json_array_append_new(
            arr, json_pack("{s:s, s:s, s:i, s:s, s:s, s:b, s:I, s:b}", "daemon_id", d[i].id, "host",
                           d[i].host, "pid", d[i].pid, "started_at",
                           format_rfc3339(started, sizeof started, d[i].started_at), "lease_until",
                           format_rfc3339(until, sizeof until, d[i].lease_until), "live", d[i].live,
                           "instances", (json_int_t)d[i].instances, "self",
                           ctx->daemon_id && strcmp(ctx->daemon_id, d[i].id) == 0));
    }
    daemon_records_free(d, n);
    http_reply_json(req, 200, json_pack("{s:o}", "daemons", arr));
}
