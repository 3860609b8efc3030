/* The web console's files (src/ui/), compiled into the daemon by scripts/embed-assets.py and
 * served at /ui by api_ui(): no files at run time, no fetch from anywhere else. */
#pragma once

#include <stddef.h>

typedef struct UiAsset {
    const char *name; /* "index.html", "app.js", ... */
    const char *content_type;
    size_t size;
    const char *etag; /* quoted, from the bytes */
    const char *data;
} UiAsset;

extern const UiAsset ui_assets[];
extern const size_t ui_assets_n;
