/* The background heartbeat: when the daemon enforces a heartbeat timeout it injects
 * RUNTARA_HEARTBEAT_INTERVAL_MS, and runtara_open() starts a thread that sends POST /heartbeat
 * that often, so a long step (a computation, a blocking call) never makes the instance look dead.
 * The thread has its own connection: a client is used by one thread at a time, and the program's
 * own calls must not wait behind a heartbeat. It stops at runtara_close(), at once. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtara-internal.h"

struct RuntaraHeartbeat {
    RuntaraClient conn; /* a copy of the identity with its own connection; no retries */
    unsigned interval_ms;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* on CLOCK_MONOTONIC */
    bool started, stop;
};

static void *heartbeat_main(void *arg)
{
    RuntaraHeartbeat *h = arg;
    struct timespec next;

    clock_gettime(CLOCK_MONOTONIC, &next);
    pthread_mutex_lock(&h->lock);
    while (!h->stop) {
        next.tv_sec += h->interval_ms / 1000;
        next.tv_nsec += (long)(h->interval_ms % 1000) * 1000000L;
        if (next.tv_nsec >= 1000000000L) {
            next.tv_sec++;
            next.tv_nsec -= 1000000000L;
        }
        while (!h->stop && pthread_cond_timedwait(&h->cond, &h->lock, &next) != ETIMEDOUT)
            ;
        if (h->stop)
            break;
        pthread_mutex_unlock(&h->lock);
        RuntaraRequest rq = {.method = "POST", .path = "/heartbeat", .what = "send a heartbeat"};
        RuntaraReply reply;
        /* a missed heartbeat is not an error: the next one is due in one interval */
        if (runtara__request(&h->conn, &rq, &reply) >= 0)
            runtara__reply_done(&reply);
        pthread_mutex_lock(&h->lock);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

int runtara__heartbeat_start(RuntaraClient *c, unsigned interval_ms)
{
    RuntaraHeartbeat *h = runtara__xmalloc(sizeof *h);
    pthread_condattr_t attr;

    *h = (RuntaraHeartbeat){.interval_ms = interval_ms < 10 ? 10 : interval_ms};
    h->conn = (RuntaraClient){
        .instance_id = runtara__xstrdup(c->instance_id),
        .addr = runtara__xstrdup(c->addr),
        .socket_path = c->socket_path ? runtara__xstrdup(c->socket_path) : NULL,
        .tcp_host = c->tcp_host ? runtara__xstrdup(c->tcp_host) : NULL,
        .tcp_port = c->tcp_port ? runtara__xstrdup(c->tcp_port) : NULL,
        .host_header = runtara__xstrdup(c->host_header),
        .path_base = runtara__xstrdup(c->path_base),
        .auth_header = runtara__xstrdup(c->auth_header),
        .fd = -1,
    };
    pthread_mutex_init(&h->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cond, &attr);
    pthread_condattr_destroy(&attr);
    c->heartbeat = h;
    int r = pthread_create(&h->thread, NULL, heartbeat_main, h);
    if (r != 0) {
        runtara__heartbeat_stop(c);
        return runtara__set_error(c, -r, "could not start the heartbeat thread: %s", strerror(r));
    }
    h->started = true;
    return 0;
}

void runtara__heartbeat_stop(RuntaraClient *c)
{
    RuntaraHeartbeat *h = c->heartbeat;

    if (!h)
        return;
    c->heartbeat = NULL;
    if (h->started) {
        pthread_mutex_lock(&h->lock);
        h->stop = true;
        pthread_cond_signal(&h->cond);
        pthread_mutex_unlock(&h->lock);
        pthread_join(h->thread, NULL);
    }
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->lock);
    runtara__client_free_fields(&h->conn);
    free(h);
}
