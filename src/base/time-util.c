#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "time-util.h"

usec_t now_usec(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (usec_t)ts.tv_sec * USEC_PER_SEC + (usec_t)ts.tv_nsec / 1000;
}

/* Put v as exactly `digits` decimal digits at p; returns the end. */
static char *put_digits(char *p, unsigned v, int digits)
{
    for (int i = digits - 1; i >= 0; i--, v /= 10)
        p[i] = (char)('0' + v % 10);
    return p + digits;
}

char *format_rfc3339(char *buf, size_t n, usec_t t)
{
    /* Every API reply carries several of these, so no gmtime_r and strftime: the civil date from
     * the day count (H. Hinnant's days-to-civil, proleptic Gregorian, exact for these years). */
    uint64_t sec = t / USEC_PER_SEC, days = sec / 86400, s = sec % 86400;
    uint64_t z = days + 719468, era = z / 146097, doe = z - era * 146097;
    uint64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    uint64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    unsigned d = (unsigned)(doy - (153 * mp + 2) / 5 + 1),
             m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    uint64_t y = yoe + era * 400 + (m <= 2);

    char tmp[32], *p = tmp;
    if (y > 9999) /* not a time this daemon stores; still well-formed */
        y = 9999;
    p = put_digits(p, (unsigned)y, 4);
    *p++ = '-';
    p = put_digits(p, m, 2);
    *p++ = '-';
    p = put_digits(p, d, 2);
    *p++ = 'T';
    p = put_digits(p, (unsigned)(s / 3600), 2);
    *p++ = ':';
    p = put_digits(p, (unsigned)(s / 60 % 60), 2);
    *p++ = ':';
    p = put_digits(p, (unsigned)(s % 60), 2);
    *p++ = '.';
    p = put_digits(p, (unsigned)(t % USEC_PER_SEC / USEC_PER_MSEC), 3);
    *p++ = 'Z';
    *p = '\0';
    if (n > 0) { /* truncated to the buffer, as snprintf would */
        size_t l = (size_t)(p - tmp) < n - 1 ? (size_t)(p - tmp) : n - 1;
        memcpy(buf, tmp, l);
        buf[l] = '\0';
    }
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
