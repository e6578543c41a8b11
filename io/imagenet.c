// imagenet: synset list, val solution CSV and entry-name helpers for the ILSVRC2012 layout.
#include "io/imagenet.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/fileio.h"
#include "nn/pl.h"

int inet_wnid_ok(const char *w) {
    if (!w || w[0] != 'n') return 0;
    for (int i = 1; i <= 8; i++)
        if (!isdigit((unsigned char)w[i])) return 0;
    return w[9] == 0;
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

// Next line [*b, *e) of text (without \r\n); returns 0 at the end.
static int next_line(const char *t, size_t len, size_t *pos, const char **b, const char **e) {
    if (*pos >= len) return 0;
    size_t p = *pos, q = p;
    while (q < len && t[q] != '\n') q++;
    *pos = q < len ? q + 1 : q;
    size_t r = q;
    if (r > p && t[r - 1] == '\r') r--;
    *b = t + p;
    *e = t + r;
    return 1;
}

typedef struct {
    char wnid[16];
    int label;
} wnid_label;

static int cmp_wnid(const void *a, const void *b) {
    return strcmp(((const wnid_label *)a)->wnid, ((const wnid_label *)b)->wnid);
}

void inet_synsets_free(inet_synsets *s) {
    if (!s) return;
    free(s->syn);
    free(s->by_wnid);
    memset(s, 0, sizeof *s);
}

int inet_synsets_parse(inet_synsets *s, const char *text, size_t len, const char *label) {
    memset(s, 0, sizeof *s);
    int cap = 0, lineno = 0, rc = 0;
    size_t pos = 0;
    const char *b, *e;
    if (len >= 3 && (uint8_t)text[0] == 0xEF && (uint8_t)text[1] == 0xBB && (uint8_t)text[2] == 0xBF) pos = 3;
    while (next_line(text, len, &pos, &b, &e)) {
        lineno++;
        if (b == e) continue;   // blank (e.g. the final newline)
        const char *sp = b;
        while (sp < e && *sp != ' ' && *sp != '\t') sp++;
        char w[16];
        size_t wl = (size_t)(sp - b);
        if (wl >= sizeof w) wl = sizeof w - 1;
        memcpy(w, b, wl);
        w[wl] = 0;
        if (!inet_wnid_ok(w)) {
            rc = pl_fail(PL_EFORMAT, "%s:%d: '%.*s' does not start with a synset id (n + 8 digits)", label, lineno,
                         (int)PL_MIN(e - b, 60), b);
            goto fail;
        }
        if (s->n == cap) {
            int nc = cap ? cap * 2 : 1024;
            inet_synset *ns = pl_realloc(s->syn, sizeof(inet_synset) * (size_t)nc, "synsets");
            if (!ns) {
                rc = PL_ENOMEM;
                goto fail;
            }
            s->syn = ns;
            cap = nc;
        }
        inet_synset *y = &s->syn[s->n++];
        strcpy(y->wnid, w);
        while (sp < e && (*sp == ' ' || *sp == '\t')) sp++;
        snprintf(y->desc, sizeof y->desc, "%.*s", (int)(e - sp), sp);
    }
    if (s->n == 0) {
        rc = pl_fail(PL_EFORMAT, "%s: no synsets (empty file)", label);
        goto fail;
    }
    s->by_wnid = pl_malloc(sizeof(int) * (size_t)s->n, "synset index");
    if (!s->by_wnid) {
        rc = PL_ENOMEM;
        goto fail;
    }
    wnid_label *tmp = pl_malloc(sizeof(wnid_label) * (size_t)s->n, "synset sort");
    if (!tmp) {
        rc = PL_ENOMEM;
        goto fail;
    }
    for (int i = 0; i < s->n; i++) {
        strcpy(tmp[i].wnid, s->syn[i].wnid);
        tmp[i].label = i;
    }
    qsort(tmp, (size_t)s->n, sizeof *tmp, cmp_wnid);
    for (int i = 0; i < s->n; i++) s->by_wnid[i] = tmp[i].label;
    free(tmp);
    for (int i = 1; i < s->n; i++) {
        int a = s->by_wnid[i - 1], c = s->by_wnid[i];
        if (strcmp(s->syn[a].wnid, s->syn[c].wnid) == 0) {
            rc = pl_fail(PL_EFORMAT, "%s: synset %s listed twice (lines %d and %d)", label, s->syn[c].wnid,
                         PL_MIN(a, c) + 1, PL_MAX(a, c) + 1);
            goto fail;
        }
    }
    return 0;
fail:
    inet_synsets_free(s);
    return rc;
}

int inet_synsets_read(inet_synsets *s, const char *path) {
    memset(s, 0, sizeof *s);
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = pl_read_file(path, &buf, &len);
    if (rc) return rc;
    rc = inet_synsets_parse(s, (const char *)buf, len, path);
    free(buf);
    return rc;
}

int inet_label_of(const inet_synsets *s, const char *wnid) {
    int lo = 0, hi = s->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(s->syn[s->by_wnid[mid]].wnid, wnid);
        if (c == 0) return s->by_wnid[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

void inet_val_free(inet_val *v) {
    if (!v) return;
    free(v->rows);
    free(v->bad);
    memset(v, 0, sizeof *v);
}

static int val_bad(inet_val *v, int64_t *cap, int line, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int val_bad(inet_val *v, int64_t *cap, int line, const char *fmt, ...) {
    if (v->nbad == *cap) {
        int64_t nc = *cap ? *cap * 2 : 16;
        inet_bad_row *nb = pl_realloc(v->bad, sizeof(inet_bad_row) * (size_t)nc, "val bad rows");
        if (!nb) return PL_ENOMEM;
        v->bad = nb;
        *cap = nc;
    }
    inet_bad_row *r = &v->bad[v->nbad++];
    r->line = line;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
    return 0;
}

static int cmp_val(const void *a, const void *b) {
    return strcmp(((const inet_val_row *)a)->image_id, ((const inet_val_row *)b)->image_id);
}

int inet_val_parse(inet_val *v, const inet_synsets *s, const char *text, size_t len, const char *label) {
    memset(v, 0, sizeof *v);
    size_t pos = 0;
    const char *b, *e;
    int lineno = 1, rc = 0;
    int64_t cap = 0, bcap = 0;
    if (len >= 3 && (uint8_t)text[0] == 0xEF && (uint8_t)text[1] == 0xBB && (uint8_t)text[2] == 0xBF) pos = 3;
    if (!next_line(text, len, &pos, &b, &e)) return pl_fail(PL_EFORMAT, "%s: empty file (no header line)", label);
    static const char hdr[] = "ImageId,PredictionString";
    if ((size_t)(e - b) != sizeof hdr - 1 || memcmp(b, hdr, sizeof hdr - 1) != 0)
        return pl_fail(PL_EFORMAT, "%s:1: header is '%.*s', expected '%s'", label, (int)PL_MIN(e - b, 80), b, hdr);
    while (next_line(text, len, &pos, &b, &e)) {
        lineno++;
        if (b == e) continue;
        const char *comma = memchr(b, ',', (size_t)(e - b));
        int n = (int)PL_MIN(e - b, 80);
#define VBAD(...)                                                      \
    do {                                                               \
        if (val_bad(v, &bcap, lineno, __VA_ARGS__)) { rc = PL_ENOMEM; goto fail; } \
        goto next;                                                     \
    } while (0)
        if (!comma) VBAD("%s:%d: '%.*s' has no comma (expected ImageId,PredictionString)", label, lineno, n, b);
        size_t idl = (size_t)(comma - b);
        if (idl == 0 || idl >= sizeof v->rows[0].image_id)
            VBAD("%s:%d: ImageId '%.*s' is empty or too long", label, lineno, (int)PL_MIN(idl, 60), b);
        const char *p = comma + 1;
        while (p < e && *p == ' ') p++;
        const char *q = p;
        while (q < e && *q != ' ') q++;
        char w[16];
        size_t wl = (size_t)(q - p);
        if (wl == 0 || wl >= sizeof w)
            VBAD("%s:%d: PredictionString '%.*s' does not start with a synset id", label, lineno, (int)PL_MIN(e - comma - 1, 60), comma + 1);
        memcpy(w, p, wl);
        w[wl] = 0;
        if (!inet_wnid_ok(w)) VBAD("%s:%d: '%s' is not a synset id (n + 8 digits)", label, lineno, w);
        int lab = inet_label_of(s, w);
        if (lab < 0) VBAD("%s:%d: synset '%s' is not in the synset list", label, lineno, w);
        if (v->n == cap) {
            int64_t nc = cap ? cap * 2 : 4096;
            inet_val_row *nr = pl_realloc(v->rows, sizeof(inet_val_row) * (size_t)nc, "val rows");
            if (!nr) {
                rc = PL_ENOMEM;
                goto fail;
            }
            v->rows = nr;
            cap = nc;
        }
        inet_val_row *r = &v->rows[v->n++];
        memcpy(r->image_id, b, idl);
        r->image_id[idl] = 0;
        r->label = lab;
    next:;
#undef VBAD
    }
    qsort(v->rows, (size_t)v->n, sizeof *v->rows, cmp_val);
    for (int64_t i = 1; i < v->n; i++)
        if (strcmp(v->rows[i].image_id, v->rows[i - 1].image_id) == 0) {
            rc = pl_fail(PL_EFORMAT, "%s: ImageId %s listed twice", label, v->rows[i].image_id);
            goto fail;
        }
    return 0;
fail:
    inet_val_free(v);
    return rc;
}

int inet_val_read(inet_val *v, const inet_synsets *s, const char *path) {
    memset(v, 0, sizeof *v);
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = pl_read_file(path, &buf, &len);
    if (rc) return rc;
    rc = inet_val_parse(v, s, (const char *)buf, len, path);
    free(buf);
    return rc;
}

int inet_val_label(const inet_val *v, const char *image_id) {
    int64_t lo = 0, hi = v->n - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(v->rows[mid].image_id, image_id);
        if (c == 0) return v->rows[mid].label;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

int inet_synset_from_tar_name(char wnid[16], const char *entry) {
    wnid[0] = 0;
    const char *b = base_name(entry);
    size_t n = strlen(b);
    if (n != 13 || strcmp(b + 9, ".tar") != 0)
        return pl_fail(PL_EFORMAT, "'%s' is not a synset tar name (expected like n01440764.tar)", entry);
    char w[16];
    memcpy(w, b, 9);
    w[9] = 0;
    if (!inet_wnid_ok(w))
        return pl_fail(PL_EFORMAT, "'%s' is not a synset tar name (expected like n01440764.tar)", entry);
    strcpy(wnid, w);
    return 0;
}

int inet_synset_from_image_name(char wnid[16], const char *entry) {
    wnid[0] = 0;
    const char *b = base_name(entry);
    char w[16];
    if (strlen(b) < 11 || b[9] != '_')
        return pl_fail(PL_EFORMAT, "'%s' is not a train image name (expected like n01440764_10026.JPEG)", entry);
    memcpy(w, b, 9);
    w[9] = 0;
    if (!inet_wnid_ok(w))
        return pl_fail(PL_EFORMAT, "'%s' is not a train image name (expected like n01440764_10026.JPEG)", entry);
    strcpy(wnid, w);
    return 0;
}

int inet_image_id(char *out, size_t cap, const char *entry) {
    const char *b = base_name(entry);
    const char *dot = strrchr(b, '.');
    size_t n = dot ? (size_t)(dot - b) : strlen(b);
    if (n == 0) {
        if (cap) out[0] = 0;
        return pl_fail(PL_EFORMAT, "'%s' has an empty image name", entry);
    }
    if (n >= cap) {
        if (cap) out[0] = 0;
        return pl_fail(PL_ERANGE, "'%s': image id longer than %zu chars", entry, cap ? cap - 1 : 0);
    }
    memcpy(out, b, n);
    out[n] = 0;
    return 0;
}
