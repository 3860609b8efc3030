/* libruntara's side of the instance API: the daemon's replies as the SDK reads them (http-parser,
 * the Runtara-Signal header, the JSON bodies of each call). The first byte picks the call; the
 * rest is everything the "daemon" sends on the client's kept connection (one end of a socket
 * pair) before it closes it. A reconnect finds no daemon, and the client does not wait for one. */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../src/sdk/runtara-internal.h"
#include "fuzz-run-files.h"
#include "fuzz.h"

static RuntaraClient *client_new(int fd)
{
    RuntaraClient *c = runtara__xmalloc(sizeof *c);
    const char *dir = fuzz_scratch_dir();
    *c = (RuntaraClient){
        .instance_id = runtara__xstrdup("fuzz-1"),
        .tenant_id = runtara__xstrdup("acme"),
        .attempt = 1,
        .addr = runtara__xasprintf("unix:%s/none.sock", dir),
        .socket_path = runtara__xasprintf("%s/none.sock", dir),
        .host_header = runtara__xstrdup("localhost"),
        .path_base = runtara__xstrdup("/api/v1/instances/fuzz-1"),
        .auth_header = runtara__xstrdup("Authorization: Bearer rtt_fuzz"),
        .fd = fd,
        .signal = RUNTARA_SIGNAL_NONE,
        .reconnect_secs = 0,
        .sleep_suspend_ms = 1000,
    };
    return c;
}

static int step(void *userdata, void **ret_result, size_t *ret_n)
{
    (void)userdata;
    *ret_result = strdup("\"done\"");
    *ret_n = strlen("\"done\"");
    return 0;
}

static void call(RuntaraClient *c, unsigned op)
{
    char *text = NULL;
    void *data = NULL;
    size_t n = 0;
    RuntaraSignal s;

    switch (op % 13) {
    case 0:
        (void)runtara_input(c, &text);
        break;
    case 1:
        (void)runtara_checkpoint(c, "step-1", "{\"a\":1}", 7, &data, &n);
        break;
    case 2:
        (void)runtara_checkpoint_get(c, "step-1", &data, &n);
        break;
    case 3:
        (void)runtara_poll_signal(c, 0, &s);
        break;
    case 4:
        c->signal = RUNTARA_SIGNAL_CANCEL;
        (void)runtara_should_exit(c);
        break;
    case 5:
        (void)runtara_sleep(c, "nap", 60000);
        break;
    case 6:
        (void)runtara_wait_signal(c, "approval", 0, &text);
        break;
    case 7:
        (void)runtara_heartbeat(c);
        break;
    case 8:
        (void)runtara_event(c, "custom", "progress", "{\"n\":1}");
        break;
    case 9:
        (void)runtara_complete(c, "{\"ok\":true}");
        break;
    case 10:
        (void)runtara_fail(c, "it broke", NULL);
        break;
    case 11:
        (void)runtara_step(c, "step-2", step, NULL, &data, &n);
        break;
    case 12:
        c->signal = RUNTARA_SIGNAL_PAUSE;
        (void)runtara_should_exit(c);
        break;
    }
    free(text);
    free(data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    if (size < 1)
        return 0;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    /* what does not fit in the socket's buffer is left out: the input stays one reply stream */
    (void)!write(sv[1], data + 1, size - 1);
    (void)shutdown(sv[1], SHUT_WR);

    RuntaraClient *c = client_new(sv[0]);
    call(c, data[0]);
    runtara_close(c); /* closes sv[0] */
    close(sv[1]);
    return 0;
}
