/*
 * evs_buf: the growable byte buffer the encoders append to. Keeps the
 * bytes NUL-terminated so text output can be printed directly. Grows by
 * doubling; a failed growth leaves the buffer as it was.
 */
#include "evs_internal.h"

int evs_buf_reserve(evs_buf *b, size_t extra)
{
    if (b == NULL)
        return EVS_EINVAL;
    if (extra > SIZE_MAX / 2 - b->len)
        return EVS_ENOMEM;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    char *p = evs__realloc(b->data, cap);
    if (p == NULL)
        return EVS_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int evs_buf_append(evs_buf *b, const void *p, size_t len)
{
    int rc = evs_buf_reserve(b, len);
    if (rc != 0)
        return rc;
    if (len > 0)
        memcpy(b->data + b->len, p, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

void evs_buf_reset(evs_buf *b)
{
    if (b == NULL)
        return;
    b->len = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

void evs_buf_free(evs_buf *b)
{
    if (b == NULL)
        return;
    evs__free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
