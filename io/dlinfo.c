// dlinfo: DL_info.csv reader and writer. The CSV layer follows RFC 4180 (fields may be quoted,
// a quote inside a quoted field is doubled, quoted fields may hold commas and newlines, CRLF or
// LF line ends); the row layer types the 18 columns of the NIH release and reports the first
// offending column of a bad row. The writer reproduces the release's layout: multi-value
// fields quoted and ", "-separated, numbers in %g form ("233.537", "0.78125", "-175").
#include "io/dlinfo.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/fileio.h"
#include "io/strbuf.h"
#include "nn/pl.h"

static const char *const DL_COLS[DL_NCOLS] = {
    "File_name",        "Patient_index",   "Study_index",              "Series_ID",
    "Key_slice_index",  "Measurement_coordinates", "Bounding_boxes",   "Lesion_diameters_Pixel_",
    "Normalized_lesion_location", "Coarse_lesion_type", "Possibly_noisy", "Slice_range",
    "Spacing_mm_px_",   "Image_size",      "DICOM_windows",            "Patient_gender",
    "Patient_age",      "Train_Val_Test"};

enum { C_FILE, C_PAT, C_STUDY, C_SERIES, C_KEY, C_RECIST, C_BBOX, C_DIAM, C_LOC, C_TYPE, C_NOISY,
       C_SRANGE, C_SPACING, C_SIZE, C_WINDOW, C_GENDER, C_AGE, C_SPLIT };

// ---- CSV records --------------------------------------------------------------------------

typedef struct {
    char *buf;          // field texts, each NUL-terminated
    size_t cap;
    size_t *start;      // (nfields) offsets into buf
    int nfields, fcap;
    int line;           // line where the record starts (1-based)
    int bad_quote;      // unterminated quote or text after a closing quote
} csv_rec;

static int rec_push_char(csv_rec *r, size_t *n, char c) {
    if (*n + 1 >= r->cap) {
        size_t nc = r->cap ? r->cap * 2 : 1024;
        char *nb = pl_realloc(r->buf, nc, "csv record");
        if (!nb) return PL_ENOMEM;
        r->buf = nb;
        r->cap = nc;
    }
    r->buf[(*n)++] = c;
    return 0;
}

static int rec_new_field(csv_rec *r, size_t n) {
    if (r->nfields == r->fcap) {
        int nc = r->fcap ? r->fcap * 2 : 32;
        size_t *ns = pl_realloc(r->start, sizeof(size_t) * (size_t)nc, "csv fields");
        if (!ns) return PL_ENOMEM;
        r->start = ns;
        r->fcap = nc;
    }
    r->start[r->nfields++] = n;
    return 0;
}

// Reads one record starting at *pos; advances *pos and *line past it. Returns 1 if a record
// was read, 0 at the end of the text, <0 on allocation failure.
static int csv_next(csv_rec *r, const char *t, size_t len, size_t *pos, int *line) {
    size_t p = *pos;
    if (p >= len) return 0;
    r->nfields = 0;
    r->line = *line;
    r->bad_quote = 0;
    size_t n = 0;
    int rc = rec_new_field(r, 0);
    if (rc) return rc;
    int quoted = 0, after_quote = 0;
    for (;;) {
        if (p >= len) {
            if (quoted) r->bad_quote = 1;
            break;
        }
        char c = t[p++];
        if (quoted) {
            if (c == '"') {
                if (p < len && t[p] == '"') {
                    p++;
                    if ((rc = rec_push_char(r, &n, '"'))) return rc;
                } else {
                    quoted = 0;
                    after_quote = 1;
                }
            } else {
                if (c == '\n') (*line)++;
                if ((rc = rec_push_char(r, &n, c))) return rc;
            }
            continue;
        }
        if (c == ',') {
            if ((rc = rec_push_char(r, &n, 0))) return rc;
            if ((rc = rec_new_field(r, n))) return rc;
            after_quote = 0;
        } else if (c == '\n' || c == '\r') {
            if (c == '\r' && p < len && t[p] == '\n') p++;
            (*line)++;
            break;
        } else if (c == '"' && n == r->start[r->nfields - 1] && !after_quote) {
            quoted = 1;
        } else {
            if (after_quote) r->bad_quote = 1;
            if ((rc = rec_push_char(r, &n, c))) return rc;
        }
    }
    if ((rc = rec_push_char(r, &n, 0))) return rc;
    *pos = p;
    return 1;
}

static const char *rec_field(const csv_rec *r, int i) { return r->buf + r->start[i]; }

static void rec_free(csv_rec *r) {
    free(r->buf);
    free(r->start);
}

// ---- typed fields -------------------------------------------------------------------------

static const char *skip_ws(const char *s) {
    while (*s == ' ' || *s == '\t') s++;
    return s;
}

static int parse_double(const char *s, double *v) {
    s = skip_ws(s);
    if (!*s) return 0;
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (end == s || errno == ERANGE || !isfinite(x)) return 0;
    end = (char *)skip_ws(end);
    if (*end) return 0;
    *v = x;
    return 1;
}

static int parse_int(const char *s, int *v) {
    s = skip_ws(s);
    if (!*s) return 0;
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (end == s || errno == ERANGE || x < -2147483647L || x > 2147483647L) return 0;
    end = (char *)skip_ws(end);
    if (*end) return 0;
    *v = (int)x;
    return 1;
}

// Exactly n comma-separated numbers.
static int parse_doubles(const char *s, double *v, int n) {
    char tmp[512];
    if (strlen(s) >= sizeof tmp) return 0;
    int k = 0;
    const char *p = s;
    for (;;) {
        const char *q = strchr(p, ',');
        size_t m = q ? (size_t)(q - p) : strlen(p);
        if (k >= n) return 0;
        memcpy(tmp, p, m);
        tmp[m] = 0;
        if (!parse_double(tmp, &v[k])) return 0;
        k++;
        if (!q) break;
        p = q + 1;
    }
    return k == n;
}

static int parse_ints(const char *s, int *v, int n) {
    double d[8];
    if (n > 8 || !parse_doubles(s, d, n)) return 0;
    for (int i = 0; i < n; i++) {
        if (d[i] != floor(d[i]) || fabs(d[i]) > 2147483647.0) return 0;
        v[i] = (int)d[i];
    }
    return 1;
}

typedef struct {
    dl_bad_row *v;
    int64_t n, cap;
} bad_list;

static int bad_add(bad_list *b, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad_add(bad_list *b, int line, const char *fmt, ...) {
    if (b->n == b->cap) {
        int64_t nc = b->cap ? b->cap * 2 : 16;
        dl_bad_row *nv = pl_realloc(b->v, sizeof(dl_bad_row) * (size_t)nc, "dlinfo bad rows");
        if (!nv) return PL_ENOMEM;
        b->v = nv;
        b->cap = nc;
    }
    dl_bad_row *r = &b->v[b->n++];
    r->line = line;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
    return 0;
}

// Text shortened for a message.
static const char *clip(const char *s, char *buf, size_t cap) {
    size_t n = strlen(s);
    if (n < cap) return s;
    snprintf(buf, cap, "%.*s...", (int)(cap - 4), s);
    return buf;
}

// Plausibility limits of a DeepLesion row (the release: 512x512 images, 0.2-1 mm pixels,
// 0.6-5 mm slices); far beyond them a value is damage, not anatomy.
#define DL_MAX_SIDE 8192
#define DL_BOX_SLACK 20.0
#define DL_MAX_PIXEL_MM 10.0
#define DL_MAX_SLICE_MM 100.0

// Types one record. Returns 1 if good, 0 if bad (message added to `bad`), <0 on ENOMEM.
static int row_parse(dl_lesion *l, const csv_rec *r, const char *label, bad_list *bad) {
    memset(l, 0, sizeof *l);
    l->line = r->line;
    char cb[96];
#define BAD(...) return bad_add(bad, r->line, __VA_ARGS__) ? PL_ENOMEM : 0
    if (r->bad_quote) BAD("%s:%d: malformed quoting (unterminated quote or text after a closing quote)", label, r->line);
    if (r->nfields != DL_NCOLS) BAD("%s:%d: %d columns, expected %d", label, r->line, r->nfields, DL_NCOLS);
    const char *f;
#define COL(c) (f = rec_field(r, c), DL_COLS[c])
#define NOT(what) BAD("%s:%d: column %s: '%s' is not %s", label, r->line, DL_COLS[cur], clip(f, cb, sizeof cb), what)
    int cur;
    cur = C_FILE; COL(cur);
    if (!*f || strlen(f) >= sizeof l->file_name || strchr(f, '/')) NOT("a file name (1..63 chars, no '/')");
    strcpy(l->file_name, f);
    cur = C_PAT; COL(cur); if (!parse_int(f, &l->patient) || l->patient < 0) NOT("a non-negative integer");
    cur = C_STUDY; COL(cur); if (!parse_int(f, &l->study) || l->study < 0) NOT("a non-negative integer");
    cur = C_SERIES; COL(cur); if (!parse_int(f, &l->series) || l->series < 0) NOT("a non-negative integer");
    cur = C_KEY; COL(cur); if (!parse_int(f, &l->key_slice) || l->key_slice < 0) NOT("a non-negative integer");
    cur = C_RECIST; COL(cur); if (!parse_doubles(f, l->recist, 8)) NOT("8 numbers");
    cur = C_BBOX; COL(cur); if (!parse_doubles(f, l->bbox, 4)) NOT("4 numbers");
    cur = C_DIAM; COL(cur); if (!parse_doubles(f, l->diam_px, 2)) NOT("2 numbers");
    cur = C_LOC; COL(cur); if (!parse_doubles(f, l->norm_loc, 3)) NOT("3 numbers");
    cur = C_TYPE; COL(cur);
    if (!parse_int(f, &l->type) || !(l->type == -1 || (l->type >= 1 && l->type <= 8))) NOT("a lesion type (-1 or 1..8)");
    cur = C_NOISY; COL(cur); if (!parse_int(f, &l->noisy) || (l->noisy != 0 && l->noisy != 1)) NOT("0 or 1");
    cur = C_SRANGE; COL(cur); if (!parse_ints(f, l->slice_range, 2)) NOT("2 integers");
    cur = C_SPACING; COL(cur); if (!parse_doubles(f, l->spacing, 3)) NOT("3 numbers");
    cur = C_SIZE; COL(cur); if (!parse_ints(f, l->image_size, 2)) NOT("2 integers");
    cur = C_WINDOW; COL(cur); if (!parse_doubles(f, l->window, 2)) NOT("2 numbers");
    cur = C_GENDER; COL(cur);
    {
        const char *g = skip_ws(f);
        if (!*g) l->gender = '?';
        else if ((g[0] == 'M' || g[0] == 'F') && !*skip_ws(g + 1)) l->gender = g[0];
        else NOT("M, F or empty");
    }
    cur = C_AGE; COL(cur);
    if (!*skip_ws(f)) l->age = NAN;
    else if (!parse_double(f, &l->age) || l->age < 0) NOT("an age (number or empty)");
    cur = C_SPLIT; COL(cur); if (!parse_int(f, &l->split) || l->split < 1 || l->split > 3) NOT("a split (1, 2 or 3)");
    // File_name encodes the indices; the pipeline finds slices by the indices.
    char want[64];
    snprintf(want, sizeof want, "%06d_%02d_%02d_%03d.png", l->patient, l->study, l->series, l->key_slice);
    if (strcmp(want, l->file_name) != 0)
        BAD("%s:%d: column File_name: '%s' does not match the indices (expected '%s')", label, r->line,
            l->file_name, want);
    // Values that parse but cannot be right (issue 16): such a row would be stored as is and
    // fail training hours later, or make preprocess allocate absurd amounts.
    const int rows_ = l->image_size[0], cols_ = l->image_size[1];
    if (rows_ < 1 || cols_ < 1 || rows_ > DL_MAX_SIDE || cols_ > DL_MAX_SIDE)
        BAD("%s:%d: column Image_size: %d, %d is not a size of 1..%d pixels", label, r->line, rows_, cols_, DL_MAX_SIDE);
    const double *b = l->bbox;
    if (!(isfinite(b[0]) && isfinite(b[1]) && isfinite(b[2]) && isfinite(b[3])) || b[2] <= b[0] || b[3] <= b[1])
        BAD("%s:%d: column Bounding_boxes: %g, %g, %g, %g is not a box (need x1 < x2, y1 < y2)", label, r->line, b[0],
            b[1], b[2], b[3]);
    // 1-based pixels, padded by 5 px around the RECIST points: a box may reach a little past the
    // border, but not lie outside the image or be larger than it.
    if (b[2] < 1 || b[3] < 1 || b[0] > cols_ || b[1] > rows_ || b[2] - b[0] > cols_ + DL_BOX_SLACK ||
        b[3] - b[1] > rows_ + DL_BOX_SLACK)
        BAD("%s:%d: column Bounding_boxes: %g, %g, %g, %g lies outside the %dx%d image or is larger than it", label,
            r->line, b[0], b[1], b[2], b[3], cols_, rows_);
    if (l->slice_range[0] > l->slice_range[1] || l->key_slice < l->slice_range[0] || l->key_slice > l->slice_range[1])
        BAD("%s:%d: column Slice_range: %d, %d does not contain the key slice %d (need first <= key <= last)", label,
            r->line, l->slice_range[0], l->slice_range[1], l->key_slice);
    const double *sp = l->spacing;
    if (!(sp[0] > 0 && sp[0] <= DL_MAX_PIXEL_MM && sp[1] > 0 && sp[1] <= DL_MAX_PIXEL_MM && sp[2] > 0 &&
          sp[2] <= DL_MAX_SLICE_MM))
        BAD("%s:%d: column Spacing_mm_px_: %g, %g, %g is out of range (pixel 0..%g mm, slice interval 0..%g mm, "
            "both > 0)", label, r->line, sp[0], sp[1], sp[2], DL_MAX_PIXEL_MM, DL_MAX_SLICE_MM);
#undef NOT
#undef COL
#undef BAD
    return 1;
}

void dlinfo_free(dl_table *t) {
    if (!t) return;
    free(t->rows);
    free(t->bad);
    memset(t, 0, sizeof *t);
}

int dlinfo_parse(dl_table *t, const char *text, size_t len, const char *label) {
    memset(t, 0, sizeof *t);
    size_t pos = 0;
    int line = 1;
    if (len >= 3 && (uint8_t)text[0] == 0xEF && (uint8_t)text[1] == 0xBB && (uint8_t)text[2] == 0xBF) pos = 3;
    csv_rec r = {0};
    bad_list bad = {0};
    int64_t cap = 0;
    int rc = csv_next(&r, text, len, &pos, &line);
    if (rc <= 0) {
        rec_free(&r);
        return rc < 0 ? rc : pl_fail(PL_EFORMAT, "%s: empty file (no header line)", label);
    }
    if (r.nfields != DL_NCOLS) {
        rc = pl_fail(PL_EFORMAT, "%s:1: header has %d columns, expected %d (File_name,...,Train_Val_Test)", label,
                     r.nfields, DL_NCOLS);
        rec_free(&r);
        return rc;
    }
    for (int i = 0; i < DL_NCOLS; i++) {
        if (strcmp(rec_field(&r, i), DL_COLS[i]) != 0) {
            rc = pl_fail(PL_EFORMAT, "%s:1: header column %d is '%s', expected '%s'", label, i + 1,
                         rec_field(&r, i), DL_COLS[i]);
            rec_free(&r);
            return rc;
        }
    }
    for (;;) {
        rc = csv_next(&r, text, len, &pos, &line);
        if (rc < 0) goto fail;
        if (rc == 0) break;
        if (r.nfields == 1 && !*skip_ws(rec_field(&r, 0)) && !r.bad_quote) continue;   // blank line
        if (t->n == cap) {
            int64_t nc = cap ? cap * 2 : 1024;
            dl_lesion *nr = pl_realloc(t->rows, sizeof(dl_lesion) * (size_t)nc, "dlinfo rows");
            if (!nr) {
                rc = PL_ENOMEM;
                goto fail;
            }
            t->rows = nr;
            cap = nc;
        }
        rc = row_parse(&t->rows[t->n], &r, label, &bad);
        if (rc < 0) goto fail;
        if (rc == 1) t->n++;
    }
    rec_free(&r);
    t->bad = bad.v;
    t->nbad = bad.n;
    return 0;
fail:
    rec_free(&r);
    free(bad.v);
    dlinfo_free(t);
    return rc;
}

int dlinfo_read(dl_table *t, const char *path) {
    memset(t, 0, sizeof *t);
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = pl_read_file(path, &buf, &len);
    if (rc) return rc;
    rc = dlinfo_parse(t, (const char *)buf, len, path);
    free(buf);
    return rc;
}

// ---- writer -------------------------------------------------------------------------------

static void sb_list(strbuf *b, const double *v, int n) {
    sb_printf(b, ",\"");
    for (int i = 0; i < n; i++) sb_printf(b, i ? ", %g" : "%g", v[i]);
    sb_printf(b, "\"");
}

int dlinfo_format(char **text, size_t *len, const dl_lesion *rows, int64_t n) {
    *text = NULL;
    *len = 0;
    strbuf b = {0};
    for (int i = 0; i < DL_NCOLS; i++) sb_printf(&b, i ? ",%s" : "%s", DL_COLS[i]);
    sb_printf(&b, "\n");
    for (int64_t i = 0; i < n; i++) {
        const dl_lesion *l = &rows[i];
        if (strchr(l->file_name, ',') || strchr(l->file_name, '"') || strchr(l->file_name, '\n')) {
            free(b.p);
            return pl_fail(PL_EINVAL, "dlinfo write: row %lld: file name '%s' needs quoting", (long long)i,
                           l->file_name);
        }
        sb_printf(&b, "%s,%d,%d,%d,%d", l->file_name, l->patient, l->study, l->series, l->key_slice);
        sb_list(&b, l->recist, 8);
        sb_list(&b, l->bbox, 4);
        sb_list(&b, l->diam_px, 2);
        sb_list(&b, l->norm_loc, 3);
        sb_printf(&b, ",%d,%d,\"%d, %d\"", l->type, l->noisy, l->slice_range[0], l->slice_range[1]);
        sb_list(&b, l->spacing, 3);
        sb_printf(&b, ",\"%d, %d\"", l->image_size[0], l->image_size[1]);
        sb_list(&b, l->window, 2);
        if (l->gender == 'M' || l->gender == 'F') sb_printf(&b, ",%c", l->gender);
        else sb_printf(&b, ",");
        if (isnan(l->age)) sb_printf(&b, ",");
        else sb_printf(&b, ",%g", l->age);
        sb_printf(&b, ",%d\n", l->split);
    }
    if (b.err) {
        free(b.p);
        return pl_fail(PL_ENOMEM, "dlinfo write: out of memory formatting %lld rows", (long long)n);
    }
    *text = b.p;
    *len = b.n;
    return 0;
}

int dlinfo_write(const char *path, const dl_lesion *rows, int64_t n) {
    char *text = NULL;
    size_t len = 0;
    int rc = dlinfo_format(&text, &len, rows, n);
    if (rc) return rc;
    rc = pl_write_file_atomic(path, text, len);
    free(text);
    return rc;
}

void dlinfo_series_dir(const dl_lesion *l, char *out, int cap) {
    snprintf(out, (size_t)(cap > 0 ? cap : 0), "%06d_%02d_%02d", l->patient, l->study, l->series);
}

void dlinfo_slice_entry(const dl_lesion *l, int slice, char *out, int cap) {
    snprintf(out, (size_t)(cap > 0 ? cap : 0), "Images_png/%06d_%02d_%02d/%03d.png", l->patient, l->study,
             l->series, slice);
}
