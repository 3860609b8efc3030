/* The transport of libruntara: HTTP/1.1 over libcurl, on a unix socket or TCP. One easy handle
 * per client is reset before every request, so no option leaks from one request to the next,
 * while its connection cache keeps the connection to the daemon alive between requests. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "runtara-internal.h"

#define CONNECT_TIMEOUT_S 10L
#define STALL_TIMEOUT_S 60L /* the daemon sent nothing for this long: give up */

/* The state of one transfer, shared with the libcurl callbacks. */
typedef struct Transfer {
    char *body;
    size_t n, cap;
    bool too_big;
    bool has_signal;
    RuntaraSignal signal;
} Transfer;

static size_t write_cb(char *data, size_t size, size_t nmemb, void *userdata)
{
    Transfer *t = userdata;
    size_t n = size * nmemb;

    if (n > RUNTARA_REPLY_MAX - t->n) {
        t->too_big = true;
        return 0; /* fails the transfer with CURLE_WRITE_ERROR */
    }
    if (t->n + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->n + n + 1)
            cap *= 2;
        t->body = runtara__xrealloc(t->body, cap);
        t->cap = cap;
    }
    memcpy(t->body + t->n, data, n);
    t->n += n;
    t->body[t->n] = '\0';
    return n;
}

/* If the header line `line` (n bytes, with its CRLF) is `name: value`, return the value with
 * surrounding white space removed, as a NUL-terminated copy in buf. */
static const char *header_value(const char *line, size_t n, const char *name, char *buf,
                                size_t bufsize)
{
    size_t k = strlen(name);

    if (n <= k || line[k] != ':' || strncasecmp(line, name, k) != 0)
        return NULL;
    const char *v = line + k + 1, *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if ((size_t)(end - v) >= bufsize)
        return NULL;
    memcpy(buf, v, (size_t)(end - v));
    buf[end - v] = '\0';
    return buf;
}

static size_t header_cb(char *data, size_t size, size_t nitems, void *userdata)
{
    Transfer *t = userdata;
    size_t n = size * nitems;
    char buf[32];
    const char *v;

    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        t->has_signal = false; /* a new response, e.g. after "100 Continue" */
        return n;
    }
    v = header_value(data, n, "Runtara-Signal", buf, sizeof buf);
    if (v) {
        /* An unknown signal from a newer daemon is ignored, as if none were pending. */
        RuntaraSignal s = runtara_signal_from_string(v);
        t->has_signal = true;
        t->signal = s < 0 ? RUNTARA_SIGNAL_NONE : s;
    }
    return n;
}

static struct curl_slist *append_header(struct curl_slist *h, const char *line)
{
    struct curl_slist *n = curl_slist_append(h, line);

    if (!n)
        abort(); /* out of memory, as in runtara__xmalloc() */
    return n;
}

static struct curl_slist *headers_for(const RuntaraClient *c, const RuntaraRequest *rq)
{
    struct curl_slist *h = append_header(NULL, c->auth_header);

    h = append_header(h, "Accept: application/json, application/octet-stream");
    h = append_header(h, "Expect:"); /* no "100 Continue" round trip before large bodies */
    if (rq->ctype) {
        _cleanup_free_ char *ct = runtara__xasprintf("Content-Type: %s", rq->ctype);
        h = append_header(h, ct);
    }
    return h;
}

static void setup(RuntaraClient *c, const RuntaraRequest *rq, const char *url,
                  struct curl_slist *headers, Transfer *t)
{
    CURL *h = c->curl;

    curl_easy_reset(h);
    c->errbuf[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTP);
#endif
    curl_easy_setopt(h, CURLOPT_PROXY, ""); /* never through http_proxy from the environment */
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "libruntara/" RUNTARA_SDK_VERSION);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, STALL_TIMEOUT_S + (long)rq->wait_s);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, t);
    if (c->socket_path)
        curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->socket_path);

    if (strcmp(rq->method, "GET") == 0) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        return;
    }
    /* POST and PUT send their body from memory; "" keeps libcurl from reading stdin. */
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, rq->body ? rq->body : "");
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_n);
    if (strcmp(rq->method, "POST") != 0)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, rq->method);
}

/* Turn a failed curl_easy_perform() into the client's last error. */
static int transport_error(RuntaraClient *c, CURLcode code, const Transfer *t, const char *what)
{
    const char *why = c->errbuf[0] ? c->errbuf : curl_easy_strerror(code);
    curl_off_t connected = 0;
    long oserr = 0;

    if (t->too_big)
        return runtara__set_error(c, -EFBIG, "could not %s: the reply is larger than %zu MiB", what,
                                  RUNTARA_REPLY_MAX >> 20);
    (void)curl_easy_getinfo(c->curl, CURLINFO_CONNECT_TIME_T, &connected);
    (void)curl_easy_getinfo(c->curl, CURLINFO_OS_ERRNO, &oserr);
    switch (code) {
    case CURLE_COULDNT_CONNECT:
        if (oserr > 0)
            why = strerror((int)oserr);
        return runtara__set_error(c, -ECONNREFUSED, "could not %s: cannot connect to \"%s\": %s",
                                  what, c->addr, why);
    case CURLE_COULDNT_RESOLVE_HOST:
        return runtara__set_error(c, -ECONNREFUSED, "could not %s: cannot connect to \"%s\": %s",
                                  what, c->addr, why);
    case CURLE_OPERATION_TIMEDOUT:
        if (connected == 0)
            return runtara__set_error(
                c, -ECONNREFUSED, "could not %s: cannot connect to \"%s\": %s", what, c->addr, why);
        return runtara__set_error(c, -ETIMEDOUT, "could not %s: the daemon did not answer: %s",
                                  what, why);
    case CURLE_OUT_OF_MEMORY:
        return runtara__set_error(c, -ENOMEM, "could not %s: out of memory", what);
    default:
        return runtara__set_error(c, -EIO, "could not %s: %s", what, why);
    }
}

static int status_to_errno(long status)
{
    switch (status) {
    case 400:
        return -EINVAL;
    case 401:
    case 403:
        return -EACCES;
    case 404:
        return -ENOENT;
    case 409:
        return -EALREADY;
    case 413:
        return -EFBIG;
    default:
        return -EIO;
    }
}

/* Turn a non-2xx reply into the client's last error, with the daemon's message if it sent
 * {"error": {"message": ...}}. */
static int reply_error(RuntaraClient *c, long status, const Transfer *t, const char *what)
{
    json_t *doc = t->n > 0 ? json_loadb(t->body, t->n, 0, NULL) : NULL;
    const char *msg = NULL;
    int r;

    (void)json_unpack(doc, "{s:{s:s}}", "error", "message", &msg);
    if (msg)
        r = runtara__set_error(c, status_to_errno(status), "could not %s: %s", what, msg);
    else
        r = runtara__set_error(c, status_to_errno(status),
                               "could not %s: the daemon answered HTTP %ld", what, status);
    json_decref(doc);
    return r;
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The daemon is unreachable or went away mid-request: it is restarting (its instances keep
 * running), so the request is worth sending again. Every instance API call may be repeated:
 * checkpoints keep the first write, reads and heartbeats change nothing, a repeated signal wait
 * finds its delivery in its checkpoint (409, runtara_wait_signal reads it), an event report
 * carries its key (recorded once), and a repeated end report finds the instance already ended
 * (409). */
static bool daemon_gone(CURLcode code)
{
    return code == CURLE_COULDNT_CONNECT || code == CURLE_GOT_NOTHING || code == CURLE_SEND_ERROR ||
           code == CURLE_RECV_ERROR;
}

/* One attempt at the request: a curl code, and the HTTP status when it is CURLE_OK. */
static CURLcode perform(RuntaraClient *c, const RuntaraRequest *rq, const char *url, Transfer *t,
                        long *ret_status)
{
    struct curl_slist *headers = headers_for(c, rq);

    setup(c, rq, url, headers, t);
    CURLcode code = curl_easy_perform(c->curl);
    if (code == CURLE_OK)
        (void)curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, ret_status);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(headers);
    return code;
}

int runtara__request(RuntaraClient *c, const RuntaraRequest *rq, RuntaraReply *ret)
{
    _cleanup_free_ char *url = runtara__xasprintf("%s%s", c->base_url, rq->path);
    uint64_t deadline = now_ms() + (uint64_t)c->reconnect_secs * 1000, backoff = 20;
    Transfer t = {0};
    long status = 0;
    int r;

    CURLcode code = perform(c, rq, url, &t, &status);
    while (daemon_gone(code) && !t.too_big && now_ms() + backoff <= deadline) {
        struct timespec ts = {(time_t)(backoff / 1000), (long)(backoff % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
        free(t.body);
        t = (Transfer){0};
        code = perform(c, rq, url, &t, &status);
    }

    if (code != CURLE_OK)
        r = transport_error(c, code, &t, rq->what);
    else if (status / 100 != 2)
        r = reply_error(c, status, &t, rq->what);
    else {
        if (t.has_signal || rq->carries_signal)
            c->signal = t.has_signal ? t.signal : RUNTARA_SIGNAL_NONE;
        *ret = (RuntaraReply){
            .status = status,
            .body = t.body ? TAKE_PTR(t.body) : runtara__memdup_nul("", 0),
            .n = t.n,
        };
        return (int)status;
    }
    free(t.body);
    return r;
}

void runtara__reply_done(RuntaraReply *r)
{
    free(r->body);
    *r = (RuntaraReply){0};
}
