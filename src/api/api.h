/* The management API: routes, authentication and the handlers of /api/v1. */
#pragma once

#include <stdatomic.h>

#include "../base/time-util.h"
#include "../core/image-registry.h"
#include "../sched/supervisor.h"
#include "../store/store.h"
#include "auth.h"
#include "http.h"
#include "token-memo.h"
#include "waiters.h"

typedef struct ApiLimits {
    size_t max_checkpoint;    /* bytes of one checkpoint */
    size_t max_output;        /* bytes of an instance's output JSON */
    unsigned default_timeout; /* seconds, when a start names none */
    unsigned stop_grace;      /* seconds, when a stop names none */
    size_t log_tail_max;      /* bytes of stderr.log one request may read */
} ApiLimits;

typedef struct ApiContext {
    Store *store;
    ImageRegistry *images;
    Auth *auth;
    Supervisor *sv;
    Waiters *waiters;
    TokenMemo *tokens; /* launch tokens seen running (token-memo.h); NULL keeps none */
    const char *data_dir;
    const char *daemon_id;      /* DATA_DIR/daemon-id: this daemon in the store and in health */
    const char *default_runner; /* the runner_type of images registered without one */
    const char *bundles_dir;    /* the OCI runner's image root file systems (BUNDLES_DIR) */
    const char *native_tenants; /* RUNTARA_NATIVE_TENANTS: comma-separated, "*", or NULL */
    ApiLimits limits;
    usec_t started;       /* CLOCK_MONOTONIC */
    atomic_bool draining; /* SIGTERM received: no new starts or resumes */
} ApiContext;

/** The management route table. */
const HttpRoute *api_management_routes(size_t *ret_n);
/** The instance API ("core") route table, for the unix socket. */
const HttpRoute *api_core_routes(size_t *ret_n);
/** Apply the settings that shape the instance API routes (the checkpoint size). Start-up only. */
void api_core_routes_set_limits(const ApiLimits *l);
/** The admit callback of the instance API: the per-launch token of the addressed instance. */
int api_core_admit(HttpRequest *req, void *userdata, Error *e);
/** While the daemon drains: reply 503 (with Retry-After) and return true. */
bool api_refuse_while_draining(HttpRequest *req, ApiContext *ctx);
/** Something changed about an instance: wake long-polls waiting on it (status polls wait for it
 *  to leave pending and running: a change between those two need not call this, only
 *  api_events_appended()). */
void api_instance_changed(ApiContext *ctx, const char *instance_key);
/** The long-poll key of an instance's signal polls ("sig:<id>"); caller frees. */
char *api_signal_key(const char *instance_key);
/** The long-poll key of an instance's event polls ("ev:<id>"); caller frees. */
char *api_events_key(const char *instance_key);
/** Events were recorded for an instance (api_instance_changed() counts as one): wake its event
 *  polls. */
void api_events_appended(ApiContext *ctx, const char *instance_key);
/** A signal (control or custom) was sent to an instance: wake its signal polls. */
void api_signal_sent(ApiContext *ctx, const char *instance_key);
/** Stored JSON text as a value (a new reference): null for NULL or text that does not parse. */
json_t *api_json_or_null(const char *text);
/** The admit callback for management routes: authenticates and records the principal. */
int api_admit(HttpRequest *req, void *userdata, Error *e);
/** The caller of an admitted request (admin in open mode). */
const Principal *api_principal(HttpRequest *req);
/** Resolve which tenant a request acts for: the given tenant_id, or the key's own tenant.
 *  -EPERM if a tenant key names another tenant. *ret is NULL for an admin without tenant_id. */
int api_scope_tenant(HttpRequest *req, const char *requested, const char **ret, Error *e);
/** Whether the caller may register or start a native image for tenant: admin keys may, tenant keys
 *  only for a tenant RUNTARA_NATIVE_TENANTS names. 0, or -EPERM with a message. */
int api_may_run_native(HttpRequest *req, const char *tenant, Error *e);
/** Reply with the error. */
void api_reply_error(HttpRequest *req, Error *e);
/** Reply with the error, log it if it is the daemon's fault (5xx), and free its message. */
void api_fail(HttpRequest *req, Error *e);
/** Check that every query argument is one of allowed (NULL-terminated); 400 otherwise. */
int api_check_query(HttpRequest *req, const char *const *allowed, Error *e);
/** The query argument name as an RFC 3339 UTC time into *ret, left as it is when absent; -EINVAL
 *  with a message naming it otherwise. */
int api_query_time(HttpRequest *req, const char *name, usec_t *ret, Error *e);

/** The JSON form of an image (a new reference). */
json_t *api_image_json(const ImageRecord *r);

/* handlers, one file per resource */
void api_health(HttpRequest *req);
void api_metrics(HttpRequest *req);
void api_backup(HttpRequest *req);
void api_daemons(HttpRequest *req);
/* Backups are written into DATA_DIR under this prefix while they are streamed. */
#define API_BACKUP_PREFIX ".backup-"
/** Remove what a backup interrupted by a crash left in data_dir; returns how many or -errno. */
int api_backup_sweep(const char *data_dir);
void api_images_list(HttpRequest *req);
void api_images_get(HttpRequest *req);
void api_images_delete(HttpRequest *req);
extern const HttpStreamOps api_images_upload;

void api_instances_start(HttpRequest *req);
void api_instances_list(HttpRequest *req);
void api_instances_get(HttpRequest *req);
void api_instances_stop(HttpRequest *req);
void api_instances_resume(HttpRequest *req);
void api_instances_signal(HttpRequest *req);
void api_instances_custom_signal(HttpRequest *req);
void api_instances_checkpoints(HttpRequest *req);
void api_instances_checkpoint(HttpRequest *req);
void api_instances_events(HttpRequest *req);
void api_instances_logs(HttpRequest *req);
void api_tenants_metrics(HttpRequest *req);
void api_ui(HttpRequest *req);

void api_core_register(HttpRequest *req);
void api_core_input(HttpRequest *req);
void api_core_checkpoint_put(HttpRequest *req);
void api_core_checkpoint_get(HttpRequest *req);
void api_core_heartbeat(HttpRequest *req);
void api_core_event(HttpRequest *req);
void api_core_signals(HttpRequest *req);
void api_core_signal_ack(HttpRequest *req);
void api_core_completed(HttpRequest *req);
void api_core_failed(HttpRequest *req);
void api_core_sleep(HttpRequest *req);
void api_core_wait(HttpRequest *req);

/** The JSON form of an instance (a new reference). */
json_t *api_instance_json(const InstanceRecord *r);
/** Check a JSON body against the allowed member names; 400 naming the first unknown one. */
int api_check_fields(json_t *body, const char *const *allowed, Error *e);
#define API_LIST_LIMIT_DEFAULT 100
#define API_LIST_LIMIT_MAX 1000

/** The paging parameters every list shares: ?limit= (1..1000, default 100) and ?cursor= (a
 *  next_cursor from an earlier page; 0 when absent). 400 with a message otherwise. */
int api_parse_page(HttpRequest *req, unsigned *ret_limit, int64_t *ret_cursor, Error *e);
/** next_cursor of a page: the last row's position while more rows follow, else null. */
json_t *api_cursor_json(bool more, int64_t last);
/** "30s", "500ms", "2m" or plain seconds → microseconds, at most max. */
int api_parse_wait(const char *s, usec_t max, usec_t *ret, Error *e);
