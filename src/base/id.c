#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "id.h"

static bool id_char(char c, bool first)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return !first && (c == '_' || c == '.' || c == '-');
}

bool id_is_valid(const char *s)
{
    size_t n = 0;

    if (!s)
        return false;
    for (; s[n]; n++)
        if (n >= ID_MAX_LEN || !id_char(s[n], n == 0))
            return false;
    return n > 0 && !strstr(s, "..");
}

static int fill_random(void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t k = getrandom((char *)buf + done, n - done, 0);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        done += (size_t)k;
    }
    return 0;
}

int id_new_uuid(char buf[static 37])
{
    unsigned char b[16];
    int r = fill_random(b, sizeof b);
    if (r < 0)
        return r;

    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
    return 0;
}

int id_random_hex(char *buf, size_t n)
{
    unsigned char b[64];
    if (n > sizeof b)
        return -EINVAL;

    int r = fill_random(b, n);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++)
        snprintf(buf + 2 * i, 3, "%02x", b[i]);
    return 0;
}
