/* HTTP over libcurl for runtara-ctl. One easy handle per Client, reset before every request so
 * no option leaks from one request to the next, while its connection cache keeps the connection
 * alive across the pages of a listing. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>

#include "../base/alloc.h"
#include "../base/time-util.h"
#include "client.h"
#include "output.h"

#define CONNECT_TIMEOUT_S 10L
#define STALL_TIMEOUT_S 120L
#define REQUEST_TIMEOUT_S 300L

struct Client {
    CURL *curl;
    char *url;
    char *auth; /* "Authorization: Bearer <key>", or NULL */
    char *ca_file;
    bool skip_verify;
    char errbuf[CURL_ERROR_SIZE];
};

/* The state of one request, shared with the libcurl callbacks. */
typedef struct Transfer {
    const char *json; /* a JSON request body, or NULL */
    const ClientSink *sink;
    CURL *curl;
    bool sink_decided; /* the status is known: a 2xx body goes to the sink, another to body */
    bool to_sink;
    int sink_error; /* negative errno from the sink */
    uint64_t sunk;
    StrBuf body;
    bool too_big;
    const ClientUpload *upload;
    uint64_t remaining;
    int read_error; /* negative errno; -ENODATA when the file ended early */
    usec_t start;
    usec_t last_draw;
    bool drawn;
} Transfer;

int client_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -ENOMEM;
}

void client_global_done(void)
{
    curl_global_cleanup();
}

static bool has_control_chars(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

static bool is_http_url(const char *u)
{
    return (strncasecmp(u, "http://", 7) == 0 && u[7]) ||
           (strncasecmp(u, "https://", 8) == 0 && u[8]);
}

int client_new(const char *base_url, const char *api_key, const ClientTls *tls, Client **ret,
               Error *e)
{
    if (!is_http_url(base_url) || has_control_chars(base_url) || strpbrk(base_url, " ?#"))
        return error_set(e, -EINVAL,
                         "invalid server URL \"%s\": expected http://HOST[:PORT] or https://...",
                         base_url);
    if (api_key && (has_control_chars(api_key) || strchr(api_key, ' ')))
        return error_set(e, -EINVAL, "invalid API key: it contains spaces or control characters");

    Client *c = xcalloc(1, sizeof *c);
    c->curl = curl_easy_init();
    if (!c->curl) {
        free(c);
        return error_set(e, -ENOMEM, "could not initialise libcurl");
    }
    c->url = xstrdup(base_url);
    for (size_t n = strlen(c->url); n > 0 && c->url[n - 1] == '/'; n--)
        c->url[n - 1] = '\0';
    if (api_key && *api_key)
        c->auth = xasprintf("Authorization: Bearer %s", api_key);
    if (tls && tls->ca_file)
        c->ca_file = xstrdup(tls->ca_file);
    c->skip_verify = tls && tls->skip_verify;
    *ret = c;
    return 0;
}

Client *client_free(Client *c)
{
    if (!c)
        return NULL;
    curl_easy_cleanup(c->curl);
    free(c->url);
    if (c->auth)
        explicit_bzero(c->auth, strlen(c->auth));
    free(c->auth);
    free(c->ca_file);
    free(c);
    return NULL;
}

const char *client_url(const Client *c)
{
    return c->url;
}

void client_query_add(Client *c, StrBuf *q, const char *key, const char *value)
{
    if (!value)
        return;
    char *v = curl_easy_escape(c->curl, value, 0);
    if (!v)
        abort(); /* out of memory, as in xmalloc */
    strbuf_printf(q, "%s%s=%s", q->len == 0 ? "?" : "&", key, v);
    curl_free(v);
}

/* ---- libcurl callbacks ---------------------------------------------------------------------- */

static size_t write_cb(char *data, size_t size, size_t nmemb, void *userdata)
{
    Transfer *t = userdata;
    size_t n = size * nmemb;

    if (t->sink && !t->sink_decided) {
        long status = 0;
        (void)curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
        t->to_sink = status / 100 == 2;
        t->sink_decided = true;
    }
    if (t->to_sink) {
        int r = t->sink->write(data, n, t->sink->userdata);
        if (r < 0) {
            t->sink_error = r;
            return 0; /* fails the transfer with CURLE_WRITE_ERROR */
        }
        t->sunk += n;
        return n;
    }

    if (n > CLIENT_RESPONSE_MAX - t->body.len) {
        t->too_big = true;
        return 0; /* fails the transfer with CURLE_WRITE_ERROR */
    }
    strbuf_put(&t->body, data, n);
    return n;
}

static size_t read_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
    Transfer *t = userdata;
    size_t want = (size_t)MIN((uint64_t)(size * nitems), t->remaining);
    ssize_t k;

    if (want == 0)
        return 0;
    do
        k = read(t->upload->fd, buf, want);
    while (k < 0 && errno == EINTR);
    if (k <= 0) {
        t->read_error = k < 0 ? -errno : -ENODATA;
        return CURL_READFUNC_ABORT;
    }
    t->remaining -= (uint64_t)k;
    return (size_t)k;
}

static int progress_cb(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    Transfer *t = userdata;
    usec_t now = now_usec(CLOCK_MONOTONIC);

    (void)dltotal, (void)dlnow, (void)ultotal;
    if (t->drawn && now - t->last_draw < 100 * USEC_PER_MSEC)
        return 0;
    output_progress((uint64_t)ulnow, t->upload->size, now - t->start, false);
    t->last_draw = now;
    t->drawn = true;
    return 0;
}

/* ---- requests ------------------------------------------------------------------------------- */

static struct curl_slist *headers_for(const Client *c, const Transfer *t)
{
    struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
    _cleanup_free_ char *ctype = NULL;

    if (h && c->auth)
        h = curl_slist_append(h, c->auth);
    if (h && (t->upload || t->json)) {
        ctype = xasprintf("Content-Type: %s", t->upload ? t->upload->ctype : "application/json");
        h = curl_slist_append(h, ctype);
    }
    if (!h)
        abort(); /* out of memory, as in xmalloc */
    return h;
}

static void setup(Client *c, const char *method, const char *url, struct curl_slist *headers,
                  Transfer *t)
{
    CURL *h = c->curl;

    curl_easy_reset(h);
    c->errbuf[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "runtara-ctl/" RUNTARA_VERSION);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, STALL_TIMEOUT_S);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, t);
    if (c->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    if (c->skip_verify) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }

    if (t->upload) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, read_cb);
        curl_easy_setopt(h, CURLOPT_READDATA, t);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)t->upload->size);
        if (t->upload->progress) {
            curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
            curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, progress_cb);
            curl_easy_setopt(h, CURLOPT_XFERINFODATA, t);
        }
    } else if (t->json) {
        curl_easy_setopt(h, CURLOPT_TIMEOUT, REQUEST_TIMEOUT_S);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, t->json);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(t->json));
    } else if (!t->sink) { /* a download may take as long as it keeps moving */
        curl_easy_setopt(h, CURLOPT_TIMEOUT, REQUEST_TIMEOUT_S);
        if (strcmp(method, "POST") == 0) {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
        }
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
}

/* Turn a failed curl_easy_perform() into an Error naming what went wrong. */
static int transport_error(Client *c, CURLcode code, const Transfer *t, Error *e)
{
    const char *why = c->errbuf[0] ? c->errbuf : curl_easy_strerror(code);
    curl_off_t connected = 0;

    if (t->read_error == -ENODATA)
        return error_set(e, -EIO, "could not read \"%s\": the file shrank while it was being sent",
                         t->upload->name);
    if (t->read_error < 0)
        return error_set(e, t->read_error, "could not read \"%s\": %s", t->upload->name,
                         strerror(-t->read_error));
    if (t->sink_error < 0)
        return error_set(e, t->sink_error, "could not write to %s: %s", t->sink->name,
                         strerror(-t->sink_error));
    if (t->too_big)
        return error_set(e, -EFBIG, "the answer of %s is larger than %zu MiB", c->url,
                         CLIENT_RESPONSE_MAX >> 20);
    (void)curl_easy_getinfo(c->curl, CURLINFO_CONNECT_TIME_T, &connected);
    switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        return error_set(e, -ECONNREFUSED, "could not connect to %s: %s", c->url, why);
    case CURLE_OPERATION_TIMEDOUT:
        if (connected == 0)
            return error_set(e, -ECONNREFUSED, "could not connect to %s: %s", c->url, why);
        return error_set(e, -ETIMEDOUT, "request to %s timed out: %s", c->url, why);
    case CURLE_PEER_FAILED_VERIFICATION:
        return error_set(e, -EKEYREJECTED, "could not verify the certificate of %s: %s", c->url,
                         why);
    case CURLE_SSL_CACERT_BADFILE:
        return error_set(e, -ENOKEY, "could not load the CA certificates in \"%s\": %s",
                         c->ca_file ? c->ca_file : "(system default)", why);
    case CURLE_SSL_CONNECT_ERROR:
        return error_set(e, -EPROTO,
                         "could not make a TLS connection to %s: %s (does the server serve "
                         "HTTPS? a daemon without RUNTARA_TLS_CERT_FILE speaks http://)",
                         c->url, why);
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
        if (strncasecmp(c->url, "http://", 7) == 0)
            return error_set(e, -EIO,
                             "request to %s failed: %s (if the server serves HTTPS, use an "
                             "https:// URL)",
                             c->url, why);
        return error_set(e, -EIO, "request to %s failed: %s", c->url, why);
    default:
        return error_set(e, -EIO, "request to %s failed: %s", c->url, why);
    }
}

/* One request; on success *ret_status and the raw body in t->body (the caller frees it). */
static int perform(Client *c, const char *method, const char *path, Transfer *t, long *ret_status,
                   Error *e)
{
    _cleanup_free_ char *url = xasprintf("%s%s", c->url, path);
    struct curl_slist *headers = headers_for(c, t);
    long status = 0;
    int r = 0;

    t->curl = c->curl;
    t->remaining = t->upload ? t->upload->size : 0;
    t->start = now_usec(CLOCK_MONOTONIC);
    setup(c, method, url, headers, t);
    CURLcode code = curl_easy_perform(c->curl);
    if (t->drawn)
        output_progress(t->upload->size - t->remaining, t->upload->size,
                        now_usec(CLOCK_MONOTONIC) - t->start, true);
    if (code != CURLE_OK)
        r = transport_error(c, code, t, e);
    else
        (void)curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(headers);
    if (r >= 0)
        *ret_status = status;
    return r;
}

/* perform() with the answer parsed as JSON (NULL when empty, or not JSON outside 2xx). */
static int perform_json(Client *c, const char *method, const char *path, Transfer *t,
                        long *ret_status, json_t **ret_body, Error *e)
{
    json_t *body = NULL;
    long status = 0;

    int r = perform(c, method, path, t, &status, e);
    if (r >= 0 && t->body.len > 0)
        body = json_loadb(t->body.buf, t->body.len, 0, NULL);
    if (r >= 0 && !body && t->body.len > 0 && status / 100 == 2)
        r = error_set(e, -EBADMSG, "the answer of %s is not JSON (HTTP %ld)", c->url, status);
    else if (r >= 0) {
        *ret_status = status;
        *ret_body = body;
    }
    strbuf_done(&t->body);
    return r;
}

int client_request(Client *c, const char *method, const char *path, const ClientUpload *upload,
                   long *ret_status, json_t **ret_body, Error *e)
{
    Transfer t = {.upload = upload};

    return perform_json(c, method, path, &t, ret_status, ret_body, e);
}

static int status_to_errno(long status)
{
    switch (status) {
    case 400:
        return -EINVAL;
    case 401:
        return -EACCES;
    case 403:
        return -EPERM;
    case 404:
        return -ENOENT;
    case 409:
        return -EBUSY;
    case 413:
        return -EFBIG;
    default:
        return -EPROTO;
    }
}

int client_reply_error(long status, const json_t *body, Error *e)
{
    const char *msg = NULL, *detail = NULL;

    (void)json_unpack((json_t *)body, "{s:{s:s, s?s}}", "error", "message", &msg, "detail",
                      &detail);
    if (!msg)
        return error_set(e, status_to_errno(status),
                         "the server answered HTTP %ld without an error message", status);
    return error_set(e, status_to_errno(status), "%s (HTTP %ld)%s%s", msg, status,
                     detail ? "\ndetail: " : "", detail ? detail : "");
}

int client_call(Client *c, const char *method, const char *path, const ClientUpload *upload,
                json_t **ret_body, Error *e)
{
    _cleanup_(json_decrefp) json_t *body = NULL;
    long status = 0;

    int r = client_request(c, method, path, upload, &status, &body, e);
    if (r < 0)
        return r;
    if (status / 100 != 2)
        return client_reply_error(status, body, e);
    if (ret_body)
        *ret_body = TAKE_PTR(body);
    return 0;
}

int client_call_json(Client *c, const char *method, const char *path, const json_t *body,
                     json_t **ret_body, Error *e)
{
    _cleanup_free_ char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    _cleanup_(json_decrefp) json_t *answer = NULL;
    Transfer t = {.json = text};
    long status = 0;

    if (body && !text)
        abort(); /* out of memory, as in xmalloc (a json_t always serialises) */
    int r = perform_json(c, method, path, &t, &status, &answer, e);
    if (r < 0)
        return r;
    if (status / 100 != 2)
        return client_reply_error(status, answer, e);
    if (ret_body)
        *ret_body = TAKE_PTR(answer);
    return 0;
}

int client_download(Client *c, const char *path, const ClientSink *sink, uint64_t *ret_size,
                    Error *e)
{
    Transfer t = {.sink = sink};
    long status = 0;

    int r = perform(c, "GET", path, &t, &status, e);
    if (r >= 0 && status / 100 != 2) {
        _cleanup_(json_decrefp) json_t *body =
            t.body.len > 0 ? json_loadb(t.body.buf, t.body.len, 0, NULL) : NULL;
        r = client_reply_error(status, body, e);
    }
    strbuf_done(&t.body);
    if (r >= 0 && ret_size)
        *ret_size = t.sunk;
    return r;
}
