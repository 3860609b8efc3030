#include <stdlib.h>

#include "../base/alloc.h"
#include "wake-heap.h"

typedef struct Entry {
    usec_t when;
    char *id;
} Entry;

struct WakeHeap {
    Entry *a;
    size_t n, cap;
};

WakeHeap *wake_heap_new(void)
{
    return xcalloc(1, sizeof(WakeHeap));
}

WakeHeap *wake_heap_free(WakeHeap *h)
{
    if (!h)
        return NULL;
    for (size_t i = 0; i < h->n; i++)
        free(h->a[i].id);
    free(h->a);
    free(h);
    return NULL;
}

static void swap(Entry *a, Entry *b)
{
    Entry t = *a;
    *a = *b;
    *b = t;
}

void wake_heap_push(WakeHeap *h, const char *id, usec_t when)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        h->a = xrealloc(h->a, h->cap * sizeof *h->a);
    }
    size_t i = h->n++;
    h->a[i] = (Entry){.when = when, .id = xstrdup(id)};
    while (i > 0 && h->a[(i - 1) / 2].when > h->a[i].when) {
        swap(&h->a[(i - 1) / 2], &h->a[i]);
        i = (i - 1) / 2;
    }
}

usec_t wake_heap_next(const WakeHeap *h)
{
    return h->n > 0 ? h->a[0].when : USEC_INFINITY;
}

char *wake_heap_pop_due(WakeHeap *h, usec_t now, usec_t *ret_when)
{
    if (h->n == 0 || h->a[0].when > now)
        return NULL;
    Entry top = h->a[0];
    h->a[0] = h->a[--h->n];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && h->a[l].when < h->a[m].when)
            m = l;
        if (r < h->n && h->a[r].when < h->a[m].when)
            m = r;
        if (m == i)
            break;
        swap(&h->a[i], &h->a[m]);
        i = m;
    }
    /* give memory back after a burst of wakes */
    if (h->cap > 64 && h->n < h->cap / 4) {
        h->cap /= 2;
        h->a = xrealloc(h->a, h->cap * sizeof *h->a);
    }
    *ret_when = top.when;
    return top.id;
}

size_t wake_heap_size(const WakeHeap *h)
{
    return h->n;
}
