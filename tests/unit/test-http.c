/* The HTTP layer on its own: a server on an ephemeral loopback port with a test route table,
 * driven by raw requests, so the JSON body rules, routing and refusals are checked without the
 * rest of the daemon. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <pthread.h>

#include "../../src/api/http.h"
#include "../../src/api/waiters.h"
#include "../../src/base/alloc.h"
#include "../../src/base/log.h"
#include "../../src/base/strbuf.h"
#include "../lib/tests.h"

static void echo(HttpRequest *req)
{
    /* reply with the parsed body and the {} capture, to prove what the handler saw */
    json_t *body = json_deep_copy(http_request_json(req));
    json_object_set_new(body, "_param", json_string(http_request_param(req, 0)));
    http_reply_json(req, 200, body);
}

static void hello(HttpRequest *req)
{
    http_reply_data(req, 200, "text/plain", "hi", 2);
}

static int deny_secret(HttpRequest *req, void *userdata, Error *e)
{
    (void)userdata;
    if (strcmp(http_request_path(req), "/secret") == 0)
        return error_set(e, -EACCES, "missing API key");
    return 0;
}

static Waiters *waiters;

static void resumed(HttpRequest *req)
{
    http_reply_data(req, 200, "text/plain", "resumed", 7);
}

/* park under the captured key for ?ms= milliseconds; ?race=1 releases itself at once, as a
 * handler does that finds its condition met right after parking */
static void park(HttpRequest *req)
{
    const char *ms = http_request_query(req, "ms");
    usec_t deadline = now_usec(CLOCK_MONOTONIC) + (usec_t)atoi(ms ? ms : "5000") * 1000;
    if (waiters_park(waiters, http_request_param(req, 0), req, deadline, resumed) < 0) {
        http_reply_error(req, -EBUSY, "too many waiters", NULL);
        return;
    }
    if (http_request_query(req, "race"))
        waiters_release(waiters, req);
}

static void wake(HttpRequest *req)
{
    waiters_wake(waiters, http_request_param(req, 0));
    http_reply_data(req, 204, NULL, "", 0);
}

static const HttpRoute routes[] = {
    HTTP_ROUTE("GET", "/park/{}", "park", HTTP_BODY_NONE, park),
    HTTP_ROUTE("POST", "/wake/{}", "wake", HTTP_BODY_NONE, wake),
    HTTP_ROUTE("POST", "/echo/{}", "echo", HTTP_BODY_JSON, echo),
    HTTP_ROUTE("GET", "/hello", "hello", HTTP_BODY_NONE, hello),
    HTTP_ROUTE("GET", "/secret", "secret", HTTP_BODY_NONE, hello),
};

static HttpServer *server;

static HttpServer *start(void)
{
    HttpServerSettings s = {
        .bind = "127.0.0.1",
        .port = 0,
        .listen_fd = -1,
        .threads = 2,
        .max_connections = 16,
        .idle_timeout_secs = 5,
        .header_limit = 16384,
        .max_json_body = 1024,
        .routes = routes,
        .n_routes = sizeof routes / sizeof routes[0],
        .admit = deny_secret,
    };
    HttpServer *srv = NULL;
    Error e = ERROR_INIT;
    if (http_server_start(&s, &srv, &e) < 0)
        printf("# http_server_start: %s\n", error_message(&e));
    error_done(&e);
    return srv;
}

/* Send a raw request and read until the server closes; returns the reply. half_close shuts the
 * sending side after the request, as some clients do. */
static char *roundtrip_ex(const char *raw, size_t n, bool half_close)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(http_server_port(server))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_SE(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    ASSERT_SE(write(fd, raw, n) == (ssize_t)n);
    if (half_close)
        shutdown(fd, SHUT_WR);
    StrBuf b = STRBUF_INIT;
    char buf[4096];
    ssize_t k;
    while ((k = read(fd, buf, sizeof buf)) > 0)
        strbuf_put(&b, buf, (size_t)k);
    close(fd);
    return strbuf_steal(&b);
}

static char *roundtrip(const char *raw, size_t n)
{
    return roundtrip_ex(raw, n, true);
}

static char *post_json(const char *path, const char *ctype, const char *body)
{
    _cleanup_free_ char *raw = xasprintf("POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: %s\r\n"
                                         "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                                         path, ctype, strlen(body), body);
    return roundtrip(raw, strlen(raw));
}

#define ASSERT_REPLY(reply, status, needle)                                                        \
    do {                                                                                           \
        if (strncmp((reply), "HTTP/1.1 " status, 12) != 0 || !strstr((reply), (needle)))           \
            TEST_FAIL("expected %s with \"%s\", got:\n%s", status, needle, reply);                 \
    } while (0)

TEST(json_body_reaches_the_handler)
{
    _cleanup_free_ char *r =
        post_json("/echo/abc", "application/json; charset=utf-8", "{\"n\": 9007199254740993}");
    ASSERT_REPLY(r, "200", "\"n\":9007199254740993");
    ASSERT_TRUE(strstr(r, "\"_param\":\"abc\"") != NULL);
    ASSERT_TRUE(strstr(r, "X-Request-Id: ") != NULL);
}

TEST(malformed_json_is_400_with_position)
{
    _cleanup_free_ char *r = post_json("/echo/x", "application/json", "{\"a\": 1,\n \"b\": tru}");
    ASSERT_REPLY(r, "400", "\"code\":\"invalid_json\"");
    ASSERT_TRUE(strstr(r, "line 2") != NULL);
}

TEST(non_object_duplicate_keys_and_empty_are_refused)
{
    _cleanup_free_ char *a = post_json("/echo/x", "application/json", "[1,2]");
    ASSERT_REPLY(a, "400", "must be a JSON object");
    _cleanup_free_ char *b = post_json("/echo/x", "application/json", "{\"k\":1,\"k\":2}");
    ASSERT_REPLY(b, "400", "duplicate object key");
    _cleanup_free_ char *c = post_json("/echo/x", "application/json", "");
    ASSERT_REPLY(c, "400", "request body is empty");
}

TEST(wrong_content_type_is_415)
{
    _cleanup_free_ char *r = post_json("/echo/x", "text/plain", "{}");
    ASSERT_REPLY(r, "415", "must be application/json");
}

TEST(oversized_body_is_413_before_it_is_read)
{
    StrBuf big = STRBUF_INIT;
    strbuf_puts(&big, "{\"pad\":\"");
    for (int i = 0; i < 2000; i++)
        strbuf_putc(&big, 'x');
    strbuf_puts(&big, "\"}");
    _cleanup_free_ char *r = post_json("/echo/x", "application/json", big.buf);
    strbuf_done(&big);
    ASSERT_REPLY(r, "413", "exceeds the limit of 1024 bytes");
    ASSERT_TRUE(strstr(r, "Connection: close") != NULL);
}

TEST(chunked_body_over_the_limit_is_413)
{
    StrBuf raw = STRBUF_INIT;
    strbuf_puts(&raw, "POST /echo/x HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        strbuf_puts(&raw, "200\r\n");
        for (int j = 0; j < 0x200; j++)
            strbuf_putc(&raw, ' ');
        strbuf_puts(&raw, "\r\n");
    }
    strbuf_puts(&raw, "0\r\n\r\n");
    _cleanup_free_ char *r = roundtrip(raw.buf, raw.len);
    strbuf_done(&raw);
    ASSERT_REPLY(r, "413", "exceeds the limit");
}

TEST(routing_404_405_and_admission)
{
    static const char get_nothing[] =
        "GET /nothing HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    static const char put_hello[] = "PUT /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n"
                                    "Connection: close\r\n\r\n";
    static const char get_secret[] = "GET /secret HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    static const char nul_param[] = "POST /echo/a%00b HTTP/1.1\r\nHost: t\r\n"
                                    "Content-Type: application/json\r\nContent-Length: 2\r\n"
                                    "Connection: close\r\n\r\n{}";
    _cleanup_free_ char *a = roundtrip(get_nothing, sizeof get_nothing - 1);
    ASSERT_REPLY(a, "404", "no endpoint GET /nothing");
    _cleanup_free_ char *b = roundtrip(put_hello, sizeof put_hello - 1);
    ASSERT_REPLY(b, "405", "method PUT is not allowed on /hello");
    ASSERT_TRUE(strstr(b, "\r\nAllow: GET\r\n") != NULL);
    _cleanup_free_ char *c = roundtrip(get_secret, sizeof get_secret - 1);
    ASSERT_REPLY(c, "401", "missing API key");
    ASSERT_TRUE(strstr(c, "WWW-Authenticate: Bearer") != NULL);
    /* %00 must not truncate the capture: the handler sees a\x01b, not "a" */
    _cleanup_free_ char *d = roundtrip(nul_param, sizeof nul_param - 1);
    ASSERT_REPLY(d, "200", "\"_param\":\"a\\u0001b\"");
}

TEST(keep_alive_serves_two_requests_on_one_connection)
{
    static const char two[] = "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
                              "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    _cleanup_free_ char *r = roundtrip(two, sizeof two - 1);
    const char *second = strstr(r + 1, "HTTP/1.1 200");
    ASSERT_NOT_NULL(second);
    /* the first response must not have closed the connection */
    ASSERT_TRUE(strstr(r, "Connection: close") == NULL || strstr(r, "Connection: close") > second);
}

static usec_t ms_since(usec_t t0)
{
    return (now_usec(CLOCK_MONOTONIC) - t0) / USEC_PER_MSEC;
}

static char *get(const char *path)
{
    _cleanup_free_ char *raw = xasprintf("%s HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n"
                                         "Connection: close\r\n\r\n",
                                         path);
    return roundtrip_ex(raw, strlen(raw), false);
}

static void *park_in_thread(void *arg)
{
    return get(arg);
}

TEST(a_parked_request_is_woken_by_its_key)
{
    pthread_t t;
    usec_t t0 = now_usec(CLOCK_MONOTONIC);
    pthread_create(&t, NULL, park_in_thread, (void *)"GET /park/k1?ms=10000");
    while (waiters_count(waiters) == 0 && ms_since(t0) < 5000)
        usleep(1000);
    ASSERT_EQ(waiters_count(waiters), 1);
    _cleanup_free_ char *other = get("POST /wake/k2"); /* another key: stays parked */
    ASSERT_EQ(waiters_count(waiters), 1);
    _cleanup_free_ char *w = get("POST /wake/k1");
    ASSERT_REPLY(w, "204", "");
    char *reply = NULL;
    pthread_join(t, (void **)&reply);
    ASSERT_NOT_NULL(reply);
    ASSERT_TRUE(strstr(reply, "resumed") != NULL);
    ASSERT_TRUE(ms_since(t0) < 5000);
    ASSERT_EQ(waiters_count(waiters), 0);
    free(reply);
}

TEST(a_parked_request_ends_at_its_deadline)
{
    usec_t t0 = now_usec(CLOCK_MONOTONIC);
    _cleanup_free_ char *r = get("GET /park/k3?ms=200");
    usec_t took = ms_since(t0);
    ASSERT_REPLY(r, "200", "resumed");
    ASSERT_TRUE(took >= 190 && took < 2000);
}

TEST(a_release_racing_the_suspend_is_not_lost)
{
    for (int i = 0; i < 50; i++) {
        _cleanup_free_ char *r = get("GET /park/k4?ms=10000&race=1");
        ASSERT_REPLY(r, "200", "resumed");
    }
    ASSERT_EQ(waiters_count(waiters), 0);
}

/* Send request from n threads (t) and wait until all n are parked. */
static void park_from_threads(pthread_t *t, int n, const char *request)
{
    for (int i = 0; i < n; i++)
        pthread_create(&t[i], NULL, park_in_thread, (void *)request);
    usec_t t0 = now_usec(CLOCK_MONOTONIC);
    while (waiters_count(waiters) < (unsigned)n && ms_since(t0) < 5000)
        usleep(1000);
    ASSERT_EQ(waiters_count(waiters), n);
}

/* Each of the n threads got the resumed reply. */
static void join_resumed(pthread_t *t, int n)
{
    for (int i = 0; i < n; i++) {
        char *reply = NULL;
        pthread_join(t[i], (void **)&reply);
        if (!reply || !strstr(reply, "resumed"))
            TEST_FAIL("reply %d: %s", i, reply ? reply : "(null)");
        free(reply);
    }
}

TEST(many_parked_requests_hold_no_threads)
{
    /* more parked requests than server threads (2): the server still answers */
    pthread_t t[6];
    park_from_threads(t, 6, "GET /park/many?ms=10000");
    _cleanup_free_ char *h = get("GET /hello");
    ASSERT_REPLY(h, "200", "hi");
    waiters_wake(waiters, "many");
    join_resumed(t, 6);
}

TEST(a_client_gone_while_parked_is_forgotten)
{
    /* the half-closed connection ends while parked; its entry must go with it */
    _cleanup_free_ char *raw = xstrdup("GET /park/gone?ms=300 HTTP/1.1\r\nHost: t\r\n"
                                       "Content-Length: 0\r\n\r\n");
    _cleanup_free_ char *r = roundtrip_ex(raw, strlen(raw), true);
    usec_t t0 = now_usec(CLOCK_MONOTONIC);
    while (waiters_count(waiters) > 0 && ms_since(t0) < 5000)
        usleep(1000);
    ASSERT_EQ(waiters_count(waiters), 0);
    waiters_wake(waiters, "gone"); /* nothing left to resume */
}

/* Last: closing is for good. */
TEST(closing_resumes_the_parked_and_parks_no_more)
{
    pthread_t t[3];
    park_from_threads(t, 3, "GET /park/closing?ms=10000");
    waiters_close(waiters);
    join_resumed(t, 3);
    /* a handler that would park now is answered at once */
    _cleanup_free_ char *r = get("GET /park/late?ms=10000");
    ASSERT_REPLY(r, "409", "too many waiters");
    ASSERT_EQ(waiters_count(waiters), 0);
}

int main(int argc, char **argv)
{
    static const TestCase tests[] = {
        T(json_body_reaches_the_handler),
        T(malformed_json_is_400_with_position),
        T(non_object_duplicate_keys_and_empty_are_refused),
        T(wrong_content_type_is_415),
        T(oversized_body_is_413_before_it_is_read),
        T(chunked_body_over_the_limit_is_413),
        T(routing_404_405_and_admission),
        T(keep_alive_serves_two_requests_on_one_connection),
        T(a_parked_request_is_woken_by_its_key),
        T(a_parked_request_ends_at_its_deadline),
        T(a_release_racing_the_suspend_is_not_lost),
        T(many_parked_requests_hold_no_threads),
        T(a_client_gone_while_parked_is_forgotten),
        T(closing_resumes_the_parked_and_parks_no_more),
    };
    log_max_level = getenv("TEST_DEBUG") ? LOG_DEBUG : LOG_WARNING;
    if (waiters_new(16, &waiters) < 0)
        return 1;
    server = start();
    if (!server) {
        printf("0 passed, 1 failed\n");
        return 1;
    }
    int r = tests_run(tests, sizeof tests / sizeof tests[0], argc, argv);
    server = http_server_stop(server);
    waiters = waiters_free(waiters); /* after the server: a request's end reports here */
    return r;
}
