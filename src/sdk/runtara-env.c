/* What the runner injects into every launch (docs/instance-api.md, "What the runner injects"):
 * the instance's identity, the daemon's address and this launch's token. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "runtara-internal.h"

/* Workflow programs do not run setuid, but secure_getenv() costs nothing and keeps it so. */
static const char *env_get(const char *name)
{
    const char *v = secure_getenv(name);

    return v && *v ? v : NULL;
}

static int env_required(RuntaraClient *c, const char *name, const char **ret)
{
    const char *v = env_get(name);

    if (!v)
        return runtara__set_error(c, -EINVAL,
                                  "environment variable %s is not set (workflow programs are "
                                  "launched by runtara-environment, which sets it)",
                                  name);
    *ret = v;
    return 0;
}

static bool has_space_or_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f)
            return true;
    return false;
}

static int parse_attempt(RuntaraClient *c, const char *s)
{
    char *end = NULL;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v == 0 || v > UINT_MAX)
        return runtara__set_error(c, -EINVAL,
                                  "invalid RUNTARA_ATTEMPT \"%s\": expected a positive integer", s);
    c->attempt = (unsigned)v;
    return 0;
}

/* An optional unsigned setting: def when unset; -EINVAL naming it when malformed. */
static int env_uint(RuntaraClient *c, const char *name, unsigned def, unsigned *ret)
{
    const char *s = env_get(name);
    char *end = NULL;
    unsigned long v;

    if (!s) {
        *ret = def;
        return 0;
    }
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v > UINT_MAX)
        return runtara__set_error(c, -EINVAL, "invalid %s \"%s\": expected an unsigned integer",
                                  name, s);
    *ret = (unsigned)v;
    return 0;
}

/* "unix:/path" or an absolute path: a unix socket, addressed as http://localhost. */
static int parse_socket_addr(RuntaraClient *c, const char *path)
{
    if (!*path)
        return runtara__set_error(
            c, -EINVAL, "invalid RUNTARA_SERVER_ADDR \"%s\": the socket path is empty", c->addr);
    if (strlen(path) >= sizeof(((struct sockaddr_un *)NULL)->sun_path))
        return runtara__set_error(c, -ENAMETOOLONG,
                                  "invalid RUNTARA_SERVER_ADDR \"%s\": the socket path is longer "
                                  "than %zu bytes",
                                  c->addr, sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1);
    c->socket_path = runtara__xstrdup(path);
    return 0;
}

/* "host:port" (also "[v6]:port" and "http://host:port"): plain HTTP over TCP. */
static int parse_tcp_addr(RuntaraClient *c, const char *addr, const char **ret_hostport)
{
    const char *hp = strncmp(addr, "http://", 7) == 0 ? addr + 7 : addr;
    const char *colon = strrchr(hp, ':');
    size_t digits = colon ? strspn(colon + 1, "0123456789") : 0;

    if (!colon || colon == hp || digits == 0 || digits > 5 || colon[1 + digits] != '\0' ||
        strtoul(colon + 1, NULL, 10) > 65535 || strpbrk(hp, "/?#@\\"))
        return runtara__set_error(c, -EINVAL,
                                  "invalid RUNTARA_SERVER_ADDR \"%s\": expected "
                                  "\"unix:/path/to/socket\" or \"host:port\"",
                                  addr);
    /* the host as getaddrinfo() takes it: an IPv6 address without its brackets */
    size_t host_n = (size_t)(colon - hp);
    if (hp[0] == '[' && colon[-1] == ']')
        hp++, host_n -= 2;
    else if (hp[0] == '[' || memchr(hp, ':', host_n))
        return runtara__set_error(c, -EINVAL,
                                  "invalid RUNTARA_SERVER_ADDR \"%s\": an IPv6 address must be "
                                  "written in brackets, as in \"[::1]:8001\"",
                                  addr);
    c->tcp_host = runtara__xasprintf("%.*s", (int)host_n, hp);
    c->tcp_port = runtara__xstrdup(colon + 1);
    *ret_hostport = strncmp(addr, "http://", 7) == 0 ? addr + 7 : addr;
    return 0;
}

/* s with every byte but RFC 3986's unreserved ones percent-encoded, for a path segment. */
static char *path_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = runtara__xmalloc(strlen(s) * 3 + 1), *o = out;

    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~", *p)) {
            *o++ = (char)*p;
            continue;
        }
        *o++ = '%';
        *o++ = hex[*p >> 4];
        *o++ = hex[*p & 15];
    }
    *o = '\0';
    return out;
}

static int load_addr(RuntaraClient *c, const char *addr, const char *instance_id)
{
    const char *hostport = "localhost";
    int r;

    c->addr = runtara__xstrdup(addr);
    if (has_space_or_control(addr))
        return runtara__set_error(c, -EINVAL,
                                  "invalid RUNTARA_SERVER_ADDR \"%s\": it contains spaces or "
                                  "control characters",
                                  addr);
    if (strncmp(addr, "unix:", 5) == 0)
        r = parse_socket_addr(c, addr + 5);
    else if (addr[0] == '/')
        r = parse_socket_addr(c, addr);
    else
        r = parse_tcp_addr(c, addr, &hostport);
    if (r < 0)
        return r;

    _cleanup_free_ char *id = path_escape(instance_id);
    c->host_header = runtara__xstrdup(hostport);
    c->path_base = runtara__xasprintf("/api/v1/instances/%s", id);
    return 0;
}

/* The connection to the daemon that the runner made ahead of the launch (RUNTARA_SERVER_FD, fd
 * 3 under the native runner), so that the first request needs no connect(). It is taken once per
 * process, by the process it was given to (its parent is RUNTARA_SERVER_FD_PPID: a child that
 * inherited the variables and the descriptor leaves it alone), and only if it is a stream socket
 * connected to the very unix socket of RUNTARA_SERVER_ADDR, so a descriptor that is something
 * else by now is never sent the token. Anything else: the client connects as usual. */
static void take_server_fd(RuntaraClient *c)
{
    static atomic_bool taken;
    const char *fds = env_get("RUNTARA_SERVER_FD"), *ppids = env_get("RUNTARA_SERVER_FD_PPID");
    char *end = NULL, *end2 = NULL;
    struct sockaddr_un peer = {0};
    socklen_t len = sizeof peer - 1; /* a path of the longest length still ends in a NUL */
    int type = 0;
    socklen_t tlen = sizeof type;

    /* Only the first client of a process looks, whatever it finds: one that found nothing
     * usable connects itself and may get number fds, which must not pass for the runner's. */
    if (!fds || !ppids || !c->socket_path || atomic_exchange(&taken, true))
        return;
    errno = 0;
    long fd = strtol(fds, &end, 10), ppid = strtol(ppids, &end2, 10);
    if (errno != 0 || *end != '\0' || *end2 != '\0' || fd < 3 || fd > INT_MAX || ppid <= 0 ||
        ppid != (long)getppid())
        return;
    if (getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0 || type != SOCK_STREAM ||
        getpeername((int)fd, (struct sockaddr *)&peer, &len) < 0 || peer.sun_family != AF_UNIX ||
        strcmp(peer.sun_path, c->socket_path) != 0)
        return;
    int flags = fcntl((int)fd, F_GETFL);
    if (flags < 0 || fcntl((int)fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
        fcntl((int)fd, F_SETFD, FD_CLOEXEC) < 0) {
        (void)close((int)fd); /* the daemon's, unusable: not left for children to inherit */
        return;
    }
    c->fd = (int)fd;
}

/* The launch's token. The native runner passes it in a pipe (RUNTARA_INSTANCE_TOKEN_FD), never
 * in the environment, which any process of the same user can read (/proc/PID/environ); before
 * the SDK reads it, the process is made non-dumpable, so that no such process can read its
 * memory or trace it either. Read once per process, however many clients it makes; else
 * RUNTARA_INSTANCE_TOKEN (the OCI runner: a container's processes are its own). */
static int load_token(RuntaraClient *c, const char **ret)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static char token[256];
    static int read_errno = -1; /* -1: not read yet */
    const char *fds = env_get("RUNTARA_INSTANCE_TOKEN_FD");
    if (!fds)
        return env_required(c, "RUNTARA_INSTANCE_TOKEN", ret);

    pthread_mutex_lock(&lock);
    if (read_errno < 0) {
        char *end = NULL;
        errno = 0;
        long fd = strtol(fds, &end, 10);
        size_t n = 0;
        read_errno = errno != 0 || *end != '\0' || fd < 0 || fd > INT_MAX ? EINVAL : 0;
        if (read_errno == 0 && prctl(PR_SET_DUMPABLE, 0) < 0)
            read_errno = errno;
        while (read_errno == 0 && n < sizeof token - 1) {
            ssize_t k = read((int)fd, token + n, sizeof token - 1 - n);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                read_errno = k < 0 ? errno : 0;
                break;
            }
            n += (size_t)k;
        }
        token[n] = '\0';
        if (read_errno == 0 && n == 0)
            read_errno = ENODATA; /* read by someone else already, or never written */
        if (read_errno != EINVAL)
            (void)close((int)fd);
    }
    int err = read_errno;
    pthread_mutex_unlock(&lock);
    if (err != 0)
        return runtara__set_error(c, -err,
                                  "could not read the launch token from "
                                  "RUNTARA_INSTANCE_TOKEN_FD=%s: %s",
                                  fds, strerror(err));
    *ret = token;
    return 0;
}

int runtara__env_load(RuntaraClient *c)
{
    const char *id = NULL, *tenant = NULL, *addr = NULL, *token = NULL, *attempt = NULL;
    const char *checkpoint;
    int r;

    if ((r = env_required(c, "RUNTARA_INSTANCE_ID", &id)) < 0 ||
        (r = env_required(c, "RUNTARA_TENANT_ID", &tenant)) < 0 ||
        (r = env_required(c, "RUNTARA_SERVER_ADDR", &addr)) < 0 ||
        (r = load_token(c, &token)) < 0 || (r = env_required(c, "RUNTARA_ATTEMPT", &attempt)) < 0)
        return r;
    if (has_space_or_control(token))
        return runtara__set_error(c, -EINVAL,
                                  "invalid RUNTARA_INSTANCE_TOKEN: it contains spaces or control "
                                  "characters");
    if ((r = parse_attempt(c, attempt)) < 0 || (r = load_addr(c, addr, id)) < 0 ||
        (r = env_uint(c, "RUNTARA_RECONNECT_SECS", RUNTARA_RECONNECT_SECS_DEFAULT,
                      &c->reconnect_secs)) < 0 ||
        (r = env_uint(c, "RUNTARA_SLEEP_SUSPEND_MS", 1000, &c->sleep_suspend_ms)) < 0 ||
        (r = env_uint(c, "RUNTARA_HEARTBEAT_INTERVAL_MS", 0, &c->heartbeat_ms)) < 0)
        return r;

    c->instance_id = runtara__xstrdup(id);
    c->tenant_id = runtara__xstrdup(tenant);
    checkpoint = env_get("RUNTARA_CHECKPOINT_ID");
    c->checkpoint_id = checkpoint ? runtara__xstrdup(checkpoint) : NULL;
    c->auth_header = runtara__xasprintf("Authorization: Bearer %s", token);
    take_server_fd(c);
    return 0;
}
