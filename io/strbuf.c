#include "io/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/pl.h"

static const size_t k_first_cap = 4096;

void sb_put(strbuf *b, const char *s, size_t n) {
    if (b->err) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : k_first_cap;
        while (nc < b->n + n + 1) nc *= 2;
        char *np = pl_realloc(b->p, nc, "text buffer");
        if (!np) {
            b->err = PL_ENOMEM;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void sb_puts(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

int sb_printf(strbuf *b, const char *fmt, ...) {
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return b->err;
    if ((size_t)n < sizeof tmp) {
        sb_put(b, tmp, (size_t)n);
        return b->err;
    }
    char *big = pl_malloc((size_t)n + 1, "text line");
    if (!big) {
        b->err = PL_ENOMEM;
        return b->err;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_put(b, big, (size_t)n);
    free(big);
    return b->err;
}

void sb_free(strbuf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}
