#pragma once
// strbuf: the one growing text buffer (provenance text, CSV/JSON/HTML/SVG documents, archive
// listings). Appends keep the text NUL-terminated; the first failed allocation is kept in `err`
// and later appends do nothing, so a builder checks once at the end. No formats, no files.

#include <stddef.h>

typedef struct {
    char *p;        // (cap) the text, NUL-terminated; NULL until the first append
    size_t n, cap;  // length without the NUL, allocated bytes
    int err;        // 0, or PL_ENOMEM after a failed allocation (sticky)
} strbuf;

void sb_put(strbuf *b, const char *s, size_t n);
void sb_puts(strbuf *b, const char *s);
// printf-style append; returns b->err (0 or PL_ENOMEM).
int sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_free(strbuf *b);   // frees the text and zeroes the buffer
