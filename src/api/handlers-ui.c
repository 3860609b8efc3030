/* GET /ui and /ui/{file}: the web console, served from the binary (ui.h). It is a client of
 * the public management API only; these routes are public, since the files hold no data (the
 * console asks for an API key and sends it with each API call). The Content-Security-Policy lets
 * the page load nothing but its own files and talk to nothing but this daemon. */
#include <string.h>

#include "api.h"
#include "ui.h"

#define UI_CSP                                                                                     \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

static const UiAsset *ui_find(const char *name)
{
    for (size_t i = 0; i < ui_assets_n; i++)
        if (strcmp(ui_assets[i].name, name) == 0)
            return &ui_assets[i];
    return NULL;
}

void api_ui(HttpRequest *req)
{
    const char *file =
        strcmp(http_request_route(req), "ui.file") == 0 ? http_request_param(req, 0) : "index.html";
    const UiAsset *a = ui_find(file);
    if (!a) {
        http_reply_error(req, -ENOENT, "no such file of the console", NULL);
        return;
    }
    http_reply_header(req, "Content-Security-Policy", UI_CSP);
    http_reply_header(req, "X-Content-Type-Options", "nosniff");
    http_reply_header(req, "Referrer-Policy", "no-referrer");
    http_reply_header(req, "Cache-Control", "no-cache");
    http_reply_header(req, "ETag", a->etag);
    const char *known = http_request_header(req, "If-None-Match");
    if (known && strcmp(known, a->etag) == 0) {
        http_reply_data(req, 304, a->content_type, "", 0);
        return;
    }
    http_reply_data(req, 200, a->content_type, a->data, a->size);
}
