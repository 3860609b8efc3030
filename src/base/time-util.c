#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "time-util.h"

usec_t now_usec(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (usec_t)ts.tv_sec * USEC_PER_SEC + (usec_t)ts.tv_nsec / 1000;
}

char *format_rfc3339(char *buf, size_t n, usec_t t)
{
    time_t sec = (time_t)(t / USEC_PER_SEC);
    struct tm tm;

    gmtime_r(&sec, &tm);
    size_t l = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + l, n - l, ".%03uZ", (unsigned)(t % USEC_PER_SEC / USEC_PER_MSEC));
    return buf;
}

int parse_rfc3339(const char *s, usec_t *ret)
{
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    usec_t frac = 0;

    if (!p)
        return -EINVAL;
    if (*p == '.') {
        usec_t scale = 100000;
        p++;
        if (*p < '0' || *p > '9')
            return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++) {
            frac += (usec_t)(*p - '0') * scale;
            scale /= 10;
        }
    }
    if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0)
        return -EINVAL;
    time_t sec = timegm(&tm);
    if (sec < 0)
        return -EINVAL;
    *ret = (usec_t)sec * USEC_PER_SEC + frac;
    return 0;
}
