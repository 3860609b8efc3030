#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "metrics.h"

#define MAX_SERIES 256

static const double buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                 0.1,    0.25,  0.5,    1,     2.5,  10};
#define N_BUCKETS (sizeof buckets / sizeof buckets[0])

typedef struct Series {
    const char *route; /* static: from the route table */
    unsigned status;
    atomic_uint_fast64_t count;
} Series;

/* Counting is lock-free: every HTTP thread counts every request, and a shared mutex there was a
 * contention point. Only adding a new (route, status) series takes the lock; a series is
 * published by the release store of n_series after it is filled in, and never removed. */
static pthread_mutex_t series_lock = PTHREAD_MUTEX_INITIALIZER;
static Series series[MAX_SERIES];
static atomic_size_t n_series;
static atomic_uint_fast64_t hist[N_BUCKETS + 1];
static atomic_uint_fast64_t duration_usec_sum, request_bytes, images_registered, image_bytes;
static atomic_uint_fast64_t refused[_METRICS_REFUSAL_MAX];
static atomic_int_fast64_t connections_waiting;
static const char *const refusal_names[_METRICS_REFUSAL_MAX] = {
    [METRICS_REFUSED_PER_ADDRESS] = "per_address",
    [METRICS_REFUSED_HEADER_TIMEOUT] = "header_timeout",
    [METRICS_REFUSED_GATE_FULL] = "gate_full",
    [METRICS_REFUSED_SERVER_FULL] = "server_full",
    [METRICS_REFUSED_NOT_HTTP] = "not_http",
};

static Series *series_find(const char *route, unsigned status, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (series[i].status == status && strcmp(series[i].route, route) == 0)
            return &series[i];
    return NULL;
}

static Series *series_get(const char *route, unsigned status)
{
    Series *s = series_find(route, status, atomic_load_explicit(&n_series, memory_order_acquire));
    if (s)
        return s;
    pthread_mutex_lock(&series_lock);
    size_t n = atomic_load_explicit(&n_series, memory_order_relaxed);
    s = series_find(route, status, n);
    if (!s && n < MAX_SERIES) {
        s = &series[n];
        s->route = route;
        s->status = status;
        atomic_store_explicit(&n_series, n + 1, memory_order_release);
    }
    pthread_mutex_unlock(&series_lock);
    return s; /* NULL only when every series is taken */
}

static void add(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static unsigned long long get(atomic_uint_fast64_t *c)
{
    return (unsigned long long)atomic_load_explicit(c, memory_order_relaxed);
}

void metrics_observe_request(const char *route, unsigned status, usec_t duration, uint64_t bytes_in)
{
    double secs = (double)duration / 1e6;
    size_t b = 0;
    while (b < N_BUCKETS && secs > buckets[b])
        b++;

    Series *s = series_get(route, status);
    if (s)
        add(&s->count, 1);
    add(&hist[b], 1);
    add(&duration_usec_sum, duration);
    add(&request_bytes, bytes_in);
}

void metrics_connection_refused(MetricsRefusal why)
{
    if (why >= 0 && why < _METRICS_REFUSAL_MAX)
        add(&refused[why], 1);
}

void metrics_connections_waiting_add(int delta)
{
    atomic_fetch_add_explicit(&connections_waiting, delta, memory_order_relaxed);
}

void metrics_image_registered(uint64_t bytes)
{
    add(&images_registered, 1);
    add(&image_bytes, bytes);
}

static long rss_bytes(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "re");
    if (!f)
        return -1;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
        rss = -1;
    fclose(f);
    return rss < 0 ? -1 : rss * sysconf(_SC_PAGESIZE);
}

void metrics_render(StrBuf *b, usec_t uptime, int64_t images, int64_t waiting)
{
    strbuf_printf(b,
                  "# HELP runtara_build_info Build information.\n"
                  "# TYPE runtara_build_info gauge\n"
                  "runtara_build_info{version=\"%s\"} 1\n",
                  RUNTARA_VERSION);
    strbuf_printf(b,
                  "# HELP runtara_uptime_seconds Seconds since the daemon started.\n"
                  "# TYPE runtara_uptime_seconds gauge\n"
                  "runtara_uptime_seconds %.3f\n",
                  (double)uptime / 1e6);
    long rss = rss_bytes();
    if (rss >= 0)
        strbuf_printf(b,
                      "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                      "# TYPE process_resident_memory_bytes gauge\n"
                      "process_resident_memory_bytes %ld\n",
                      rss);
    if (images >= 0)
        strbuf_printf(b,
                      "# HELP runtara_images Registered image versions.\n"
                      "# TYPE runtara_images gauge\n"
                      "runtara_images %lld\n",
                      (long long)images);
    if (waiting >= 0)
        strbuf_printf(b,
                      "# HELP runtara_long_polls_waiting Requests parked in a long poll "
                      "(?wait=).\n"
                      "# TYPE runtara_long_polls_waiting gauge\n"
                      "runtara_long_polls_waiting %lld\n",
                      (long long)waiting);

    strbuf_printf(b,
                  "# HELP runtara_images_registered_total Images registered since start.\n"
                  "# TYPE runtara_images_registered_total counter\n"
                  "runtara_images_registered_total %llu\n"
                  "# HELP runtara_image_upload_bytes_total Bytes of registered images.\n"
                  "# TYPE runtara_image_upload_bytes_total counter\n"
                  "runtara_image_upload_bytes_total %llu\n",
                  get(&images_registered), get(&image_bytes));
    strbuf_printf(b,
                  "# HELP runtara_http_connections_waiting Connections waiting for their request "
                  "headers, holding no HTTP connection yet.\n"
                  "# TYPE runtara_http_connections_waiting gauge\n"
                  "runtara_http_connections_waiting %lld\n",
                  (long long)atomic_load_explicit(&connections_waiting, memory_order_relaxed));
    strbuf_puts(b, "# HELP runtara_http_connections_refused_total HTTP connections closed before "
                   "they were served, by reason.\n"
                   "# TYPE runtara_http_connections_refused_total counter\n");
    for (size_t i = 0; i < _METRICS_REFUSAL_MAX; i++)
        strbuf_printf(b, "runtara_http_connections_refused_total{reason=\"%s\"} %llu\n",
                      refusal_names[i], get(&refused[i]));
    strbuf_puts(b, "# HELP runtara_http_requests_total HTTP requests by route and status.\n"
                   "# TYPE runtara_http_requests_total counter\n");
    size_t n = atomic_load_explicit(&n_series, memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        strbuf_printf(b, "runtara_http_requests_total{route=\"%s\",code=\"%u\"} %llu\n",
                      series[i].route, series[i].status, get(&series[i].count));
    strbuf_puts(b, "# HELP runtara_http_request_duration_seconds HTTP request latency.\n"
                   "# TYPE runtara_http_request_duration_seconds histogram\n");
    /* Read without a lock, the buckets may be a request apart from each other and from the sum;
     * each stays monotonic, which is what Prometheus needs. */
    unsigned long long cum = 0;
    for (size_t i = 0; i < N_BUCKETS; i++) {
        cum += get(&hist[i]);
        strbuf_printf(b, "runtara_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
                      buckets[i], cum);
    }
    cum += get(&hist[N_BUCKETS]);
    strbuf_printf(b,
                  "runtara_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
                  "runtara_http_request_duration_seconds_sum %.6f\n"
                  "runtara_http_request_duration_seconds_count %llu\n"
                  "# HELP runtara_http_request_bytes_total Request body bytes received.\n"
                  "# TYPE runtara_http_request_bytes_total counter\n"
                  "runtara_http_request_bytes_total %llu\n",
                  cum, (double)get(&duration_usec_sum) / 1e6, cum, get(&request_bytes));
}
