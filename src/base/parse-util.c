#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "parse-util.h"

int parse_uint64(const char *s, uint64_t *ret)
{
    if (!s || *s < '0' || *s > '9')
        return -EINVAL;

    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    *ret = v;
    return 0;
}

int parse_size(const char *s, uint64_t *ret)
{
    static const struct {
        const char *suffix;
        uint64_t factor;
    } table[] = {
        {"", 1},
        {"K", 1ULL << 10},
        {"KiB", 1ULL << 10},
        {"M", 1ULL << 20},
        {"MiB", 1ULL << 20},
        {"G", 1ULL << 30},
        {"GiB", 1ULL << 30},
        {"T", 1ULL << 40},
        {"TiB", 1ULL << 40},
    };
    size_t n = 0;

    if (!s)
        return -EINVAL;
    while (s[n] >= '0' && s[n] <= '9')
        n++;
    if (n == 0 || n > 20)
        return -EINVAL;

    char digits[21];
    memcpy(digits, s, n);
    digits[n] = '\0';
    uint64_t v;
    int r = parse_uint64(digits, &v);
    if (r < 0)
        return r;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(s + n, table[i].suffix) != 0)
            continue;
        if (v > UINT64_MAX / table[i].factor)
            return -ERANGE;
        *ret = v * table[i].factor;
        return 0;
    }
    return -EINVAL;
}

int parse_boolean(const char *s, bool *ret)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};

    for (size_t i = 0; s && i < 4; i++) {
        if (strcmp(s, yes[i]) == 0) {
            *ret = true;
            return 0;
        }
        if (strcmp(s, no[i]) == 0) {
            *ret = false;
            return 0;
        }
    }
    return -EINVAL;
}

char *format_uint64(char buf[static 21], uint64_t v)
{
    char tmp[21], *p = tmp + sizeof tmp;
    *--p = '\0';
    do
        *--p = (char)('0' + v % 10);
    while ((v /= 10) > 0);
    memcpy(buf, p, (size_t)(tmp + sizeof tmp - p));
    return buf;
}

int parse_name(const char *const *names, int n, const char *s)
{
    for (int i = 0; s && i < n; i++)
        if (names[i] && strcmp(s, names[i]) == 0)
            return i;
    return -EINVAL;
}
