#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../base/alloc.h"
#include "../store/store.h"
#include "waiters.h"

typedef struct Waiter {
    char key[STORE_INSTANCE_KEY_MAX + 16]; /* an instance key with a short prefix ("sig:") */
    HttpRequest *req;
    usec_t deadline;
} Waiter;

struct Waiters {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool stop;
    bool closed; /* waiters_close(): nothing parks any more */
    Waiter *v;   /* unordered; linear scans are fine at the sizes allowed */
    unsigned n, max;
};

/* Remove entry i (swap with the last) and resume its request. Called with the lock held; resuming
 * only schedules the request on a server thread, so holding the lock is safe. */
static void take(Waiters *w, unsigned i)
{
    HttpRequest *req = w->v[i].req;
    w->v[i] = w->v[--w->n];
    http_request_resume(req);
}

static void *timer_thread(void *arg)
{
    Waiters *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        usec_t now = now_usec(CLOCK_MONOTONIC), next = USEC_INFINITY;
        for (unsigned i = 0; i < w->n;) {
            if (w->v[i].deadline <= now) {
                take(w, i);
                continue;
            }
            next = MIN(next, w->v[i].deadline);
            i++;
        }
        if (next == USEC_INFINITY) {
            pthread_cond_wait(&w->cond, &w->lock);
            continue;
        }
        struct timespec ts = {(time_t)(next / USEC_PER_SEC), (long)(next % USEC_PER_SEC) * 1000};
        pthread_cond_timedwait(&w->cond, &w->lock, &ts);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int waiters_new(unsigned max, Waiters **ret)
{
    Waiters *w = xcalloc(1, sizeof *w);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&w->lock, NULL);
    w->max = max;
    w->v = xcalloc(max, sizeof *w->v);
    int r = -pthread_create(&w->thread, NULL, timer_thread, w);
    if (r < 0) {
        free(w->v);
        free(w);
        return r;
    }
    (void)pthread_setname_np(w->thread, "waiters");
    *ret = w;
    return 0;
}

Waiters *waiters_free(Waiters *w)
{
    if (!w)
        return NULL;
    pthread_mutex_lock(&w->lock);
    while (w->n > 0)
        take(w, 0);
    w->stop = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w->v);
    free(w);
    return NULL;
}

/* The request ended (normally after its resume, or the client went away while it was parked):
 * forget it, so nothing resumes a freed request. */
static void forget(HttpRequest *req, void *userdata)
{
    Waiters *w = userdata;
    pthread_mutex_lock(&w->lock);
    for (unsigned i = 0; i < w->n; i++)
        if (w->v[i].req == req) {
            w->v[i] = w->v[--w->n];
            break;
        }
    pthread_mutex_unlock(&w->lock);
}

int waiters_park(Waiters *w, const char *key, HttpRequest *req, usec_t deadline,
                 HttpResume_cb on_resume)
{
    if (strlen(key) >= sizeof w->v[0].key) /* cut short, it would never be woken */
        return -ENAMETOOLONG;
    pthread_mutex_lock(&w->lock);
    if (w->stop || w->closed || w->n >= w->max) {
        pthread_mutex_unlock(&w->lock);
        return -EBUSY;
    }
    http_request_suspend(req, on_resume);
    http_request_on_done(req, forget, w);
    Waiter *x = &w->v[w->n++];
    snprintf(x->key, sizeof x->key, "%s", key);
    x->req = req;
    x->deadline = deadline;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

void waiters_release(Waiters *w, HttpRequest *req)
{
    pthread_mutex_lock(&w->lock);
    for (unsigned i = 0; i < w->n; i++)
        if (w->v[i].req == req) {
            take(w, i);
            break;
        }
    pthread_mutex_unlock(&w->lock);
}

void waiters_wake(Waiters *w, const char *key)
{
    pthread_mutex_lock(&w->lock);
    for (unsigned i = 0; i < w->n;) {
        if (strcmp(w->v[i].key, key) == 0)
            take(w, i);
        else
            i++;
    }
    pthread_mutex_unlock(&w->lock);
}

void waiters_close(Waiters *w)
{
    pthread_mutex_lock(&w->lock);
    w->closed = true;
    while (w->n > 0)
        take(w, 0);
    pthread_mutex_unlock(&w->lock);
}

unsigned waiters_count(Waiters *w)
{
    pthread_mutex_lock(&w->lock);
    unsigned n = w->n;
    pthread_mutex_unlock(&w->lock);
    return n;
}
