#include <pthread.h>
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
    uint64_t count;
} Series;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static Series series[MAX_SERIES];
static size_t n_series;
static uint64_t hist[N_BUCKETS + 1];
static double duration_sum;
static uint64_t request_bytes, images_registered, image_bytes;

void metrics_observe_request(const char *route, unsigned status, usec_t duration, uint64_t bytes_in)
{
    double secs = (double)duration / 1e6;
    size_t b = 0;
    while (b < N_BUCKETS && secs > buckets[b])
        b++;

    pthread_mutex_lock(&lock);
    size_t i = 0;
    for (; i < n_series; i++)
        if (series[i].status == status && strcmp(series[i].route, route) == 0)
            break;
    if (i == n_series && n_series < MAX_SERIES)
        series[n_series++] = (Series){.route = route, .status = status};
    if (i < n_series)
        series[i].count++;
    hist[b]++;
    duration_sum += secs;
    request_bytes += bytes_in;
    pthread_mutex_unlock(&lock);
}

void metrics_image_registered(uint64_t bytes)
{
    pthread_mutex_lock(&lock);
    images_registered++;
    image_bytes += bytes;
    pthread_mutex_unlock(&lock);
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

void metrics_render(StrBuf *b, usec_t uptime, int64_t images)
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

    pthread_mutex_lock(&lock);
    strbuf_printf(b,
                  "# HELP runtara_images_registered_total Images registered since start.\n"
                  "# TYPE runtara_images_registered_total counter\n"
                  "runtara_images_registered_total %llu\n"
                  "# HELP runtara_image_upload_bytes_total Bytes of registered images.\n"
                  "# TYPE runtara_image_upload_bytes_total counter\n"
                  "runtara_image_upload_bytes_total %llu\n",
                  (unsigned long long)images_registered, (unsigned long long)image_bytes);
    strbuf_puts(b, "# HELP runtara_http_requests_total HTTP requests by route and status.\n"
                   "# TYPE runtara_http_requests_total counter\n");
    for (size_t i = 0; i < n_series; i++)
        strbuf_printf(b, "runtara_http_requests_total{route=\"%s\",code=\"%u\"} %llu\n",
                      series[i].route, series[i].status, (unsigned long long)series[i].count);
    strbuf_puts(b, "# HELP runtara_http_request_duration_seconds HTTP request latency.\n"
                   "# TYPE runtara_http_request_duration_seconds histogram\n");
    uint64_t cum = 0;
    for (size_t i = 0; i < N_BUCKETS; i++) {
        cum += hist[i];
        strbuf_printf(b, "runtara_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
                      buckets[i], (unsigned long long)cum);
    }
    cum += hist[N_BUCKETS];
    strbuf_printf(b,
                  "runtara_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
                  "runtara_http_request_duration_seconds_sum %.6f\n"
                  "runtara_http_request_duration_seconds_count %llu\n"
                  "# HELP runtara_http_request_bytes_total Request body bytes received.\n"
                  "# TYPE runtara_http_request_bytes_total counter\n"
                  "runtara_http_request_bytes_total %llu\n",
                  (unsigned long long)cum, duration_sum, (unsigned long long)cum,
                  (unsigned long long)request_bytes);
    pthread_mutex_unlock(&lock);
}
