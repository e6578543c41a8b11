// test_io_dlinfo: DL_info.csv parsing of a real release row (every field checked), byte-exact
// re-formatting, write -> read round trip through a file, RFC 4180 quoting, CRLF/BOM, and
// every malformed-row kind with its line, column and offending text.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/dlinfo.h"
#include "io/fileio.h"
#include "nn/pl.h"
#include "test_util.h"

#define HAS(needle) (strstr(pl_last_error(), (needle)) != NULL)

static const char HEADER[] =
    "File_name,Patient_index,Study_index,Series_ID,Key_slice_index,Measurement_coordinates,Bounding_boxes,"
    "Lesion_diameters_Pixel_,Normalized_lesion_location,Coarse_lesion_type,Possibly_noisy,Slice_range,"
    "Spacing_mm_px_,Image_size,DICOM_windows,Patient_gender,Patient_age,Train_Val_Test\n";
static const char ROW1[] =
    "000001_01_01_109.png,1,1,1,109,\"233.537, 95.0204, 234.057, 106.977, 231.169, 101.605, 236.252, 101.143\","
    "\"226.169, 90.0204, 241.252, 111.977\",\"11.9859, 5.0993\",\"0.44496, 0.21317, 0.676\",3,0,\"103, 115\","
    "\"0.78125, 0.78125, 5\",\"512, 512\",\"-175, 275\",F,62,3\n";
// A train row (type -1), noisy, empty gender and age.
static const char ROW2[] =
    "004321_02_03_007.png,4321,2,3,7,\"10, 20, 30, 40, 15, 25, 35, 45\",\"5, 15, 40, 50\",\"28.2843, 14.1421\","
    "\"0.1, 0.2, 0.3\",-1,1,\"1, 12\",\"0.6, 0.6, 2.5\",\"512, 512\",\"-1350, 150\",,,1\n";

static int near(double a, double b) { return fabs(a - b) <= 1e-12 * PL_MAX(1.0, fabs(b)); }

static void check_row1(const dl_lesion *l) {
    CHECK(strcmp(l->file_name, "000001_01_01_109.png") == 0, "file '%s'", l->file_name);
    CHECK(l->patient == 1 && l->study == 1 && l->series == 1 && l->key_slice == 109, "indices");
    const double rec[8] = {233.537, 95.0204, 234.057, 106.977, 231.169, 101.605, 236.252, 101.143};
    for (int i = 0; i < 8; i++) CHECK(near(l->recist[i], rec[i]), "recist[%d] %g", i, l->recist[i]);
    const double bb[4] = {226.169, 90.0204, 241.252, 111.977};
    for (int i = 0; i < 4; i++) CHECK(near(l->bbox[i], bb[i]), "bbox[%d] %g", i, l->bbox[i]);
    CHECK(near(l->diam_px[0], 11.9859) && near(l->diam_px[1], 5.0993), "diam");
    CHECK(near(l->norm_loc[0], 0.44496) && near(l->norm_loc[1], 0.21317) && near(l->norm_loc[2], 0.676), "loc");
    CHECK(l->type == 3 && l->noisy == 0, "type %d noisy %d", l->type, l->noisy);
    CHECK(l->slice_range[0] == 103 && l->slice_range[1] == 115, "slice range");
    CHECK(near(l->spacing[0], 0.78125) && near(l->spacing[1], 0.78125) && near(l->spacing[2], 5), "spacing");
    CHECK(l->image_size[0] == 512 && l->image_size[1] == 512, "size");
    CHECK(l->window[0] == -175 && l->window[1] == 275, "window");
    CHECK(l->gender == 'F' && l->age == 62 && l->split == 3, "gender %c age %g split %d", l->gender, l->age, l->split);
    char dir[32], ent[64];
    dlinfo_series_dir(l, dir, sizeof dir);
    dlinfo_slice_entry(l, 108, ent, sizeof ent);
    CHECK(strcmp(dir, "000001_01_01") == 0, "dir '%s'", dir);
    CHECK(strcmp(ent, "Images_png/000001_01_01/108.png") == 0, "entry '%s'", ent);
}

static void test_release_rows(const char *dir) {
    char text[4096];
    snprintf(text, sizeof text, "%s%s%s", HEADER, ROW1, ROW2);
    dl_table t;
    CHECK(dlinfo_parse(&t, text, strlen(text), "DL_info.csv") == 0, "%s", pl_last_error());
    CHECK(t.n == 2 && t.nbad == 0, "n %lld bad %lld", (long long)t.n, (long long)t.nbad);
    if (t.n != 2) return;
    check_row1(&t.rows[0]);
    CHECK(t.rows[0].line == 2 && t.rows[1].line == 3, "lines %d %d", t.rows[0].line, t.rows[1].line);
    const dl_lesion *b = &t.rows[1];
    CHECK(b->type == -1 && b->noisy == 1 && b->split == 1 && b->gender == '?' && isnan(b->age), "row2 fields");
    CHECK(b->window[0] == -1350 && b->spacing[2] == 2.5 && b->recist[7] == 45, "row2 numbers");

    // Formatting gives back the release text byte for byte.
    char *out = NULL;
    size_t len = 0;
    CHECK(dlinfo_format(&out, &len, t.rows, t.n) == 0, "%s", pl_last_error());
    CHECK(len == strlen(text) && memcmp(out, text, len) == 0, "format differs:\n%.*s", (int)len, out);
    free(out);

    // Write -> read through a file: identical fields.
    char path[512];
    snprintf(path, sizeof path, "%s/DL_info.csv", dir);
    CHECK(dlinfo_write(path, t.rows, t.n) == 0, "%s", pl_last_error());
    dl_table u;
    CHECK(dlinfo_read(&u, path) == 0, "%s", pl_last_error());
    CHECK(u.n == 2 && u.nbad == 0, "reread n %lld", (long long)u.n);
    if (u.n == 2) {
        check_row1(&u.rows[0]);
        CHECK(u.rows[1].gender == '?' && isnan(u.rows[1].age) && u.rows[1].type == -1, "reread row2");
    }
    dlinfo_free(&u);

    // Values that are not in %g's 6 digits come back within %g's relative precision.
    dl_lesion l = t.rows[0];
    l.recist[0] = 1.0 / 3.0;
    l.bbox[2] = 300.123456;   // (a box inside its 512x512 image)
    l.spacing[2] = 0.0001;
    l.age = NAN;
    l.gender = 'M';
    CHECK(dlinfo_write(path, &l, 1) == 0, "%s", pl_last_error());
    CHECK(dlinfo_read(&u, path) == 0 && u.n == 1, "%s", pl_last_error());
    if (u.n == 1) {
        CHECK(fabs(u.rows[0].recist[0] - 1.0 / 3.0) < 1e-6 && fabs(u.rows[0].bbox[2] - 300.123) < 1e-9 &&
                  u.rows[0].spacing[2] == 0.0001 && isnan(u.rows[0].age) && u.rows[0].gender == 'M',
              "%%g round trip: %.9g %.9g %.9g", u.rows[0].recist[0], u.rows[0].bbox[2], u.rows[0].spacing[2]);
    }
    dlinfo_free(&u);
    unlink(path);

    // CRLF line ends and a UTF-8 byte order mark are accepted; blank lines skipped.
    char crlf[4096];
    size_t k = 0;
    crlf[k++] = (char)0xEF;
    crlf[k++] = (char)0xBB;
    crlf[k++] = (char)0xBF;
    for (const char *p = text; *p; p++) {
        if (*p == '\n') crlf[k++] = '\r';
        crlf[k++] = *p;
    }
    crlf[k++] = '\r';
    crlf[k++] = '\n';
    CHECK(dlinfo_parse(&u, crlf, k, "crlf.csv") == 0 && u.n == 2 && u.nbad == 0, "crlf: n %lld bad %lld %s",
          (long long)u.n, (long long)u.nbad, pl_last_error());
    if (u.n == 2) check_row1(&u.rows[0]);
    dlinfo_free(&u);
    dlinfo_free(&t);
}

// Replaces field `col` (0-based) of ROW1 with `val` (raw CSV text, quotes included).
static void row1_with(char *out, size_t cap, int col, const char *val) {
    // Split ROW1 by unquoted commas.
    const char *s = ROW1;
    size_t n = strlen(s) - 1;   // without '\n'
    size_t starts[20], ends[20];
    int f = 0, q = 0;
    starts[0] = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"') q = !q;
        else if (s[i] == ',' && !q) {
            ends[f] = i;
            starts[++f] = i + 1;
        }
    }
    ends[f] = n;
    PL_ASSERT(f == 17);
    size_t k = 0;
    for (int i = 0; i < 18; i++) {
        k += (size_t)snprintf(out + k, cap - k, "%s", i ? "," : "");
        if (i == col) k += (size_t)snprintf(out + k, cap - k, "%s", val);
        else k += (size_t)snprintf(out + k, cap - k, "%.*s", (int)(ends[i] - starts[i]), s + starts[i]);
    }
    snprintf(out + k, cap - k, "\n");
}

static void test_malformed(void) {
    static const struct {
        int col;
        const char *val;
        const char *expect;   // substring of the bad-row message
    } cases[] = {
        {1, "x1", "column Patient_index: 'x1' is not a non-negative integer"},
        {4, "10.5", "column Key_slice_index: '10.5'"},
        {5, "\"1, 2, 3, 4, 5, 6, 7\"", "column Measurement_coordinates: '1, 2, 3, 4, 5, 6, 7' is not 8 numbers"},
        {6, "\"12, x, 4, 5\"", "column Bounding_boxes: '12, x, 4, 5' is not 4 numbers"},
        {6, "\"1, 2, 3, 4, 5\"", "column Bounding_boxes: '1, 2, 3, 4, 5' is not 4 numbers"},
        {6, "\"1, 2, , 4\"", "column Bounding_boxes: '1, 2, , 4'"},
        {9, "9", "column Coarse_lesion_type: '9' is not a lesion type (-1 or 1..8)"},
        {9, "0", "column Coarse_lesion_type: '0'"},
        {10, "2", "column Possibly_noisy: '2' is not 0 or 1"},
        {11, "\"103\"", "column Slice_range: '103' is not 2 integers"},
        {12, "\"0.7, 0.7, abc\"", "column Spacing_mm_px_: '0.7, 0.7, abc' is not 3 numbers"},
        {13, "\"512.5, 512\"", "column Image_size: '512.5, 512' is not 2 integers"},
        {14, "\"-175\"", "column DICOM_windows: '-175' is not 2 numbers"},
        {15, "X", "column Patient_gender: 'X' is not M, F or empty"},
        {16, "old", "column Patient_age: 'old'"},
        {17, "4", "column Train_Val_Test: '4' is not a split (1, 2 or 3)"},
        {17, "0", "column Train_Val_Test: '0'"},
        {0, "000001_01_01_110.png", "column File_name: '000001_01_01_110.png' does not match the indices (expected "
                                    "'000001_01_01_109.png')"},
        {0, "", "column File_name: ''"},
    };
    const int ncase = (int)(sizeof cases / sizeof cases[0]);
    // Text: header, a good row, then each bad row followed by a good row; then a row with a
    // quoted field that spans two lines (line counting), a short row and an unterminated quote.
    size_t cap = 65536, k = 0;
    char *text = malloc(cap);
    k += (size_t)snprintf(text + k, cap - k, "%s%s", HEADER, ROW1);
    char row[2048];
    for (int i = 0; i < ncase; i++) {
        row1_with(row, sizeof row, cases[i].col, cases[i].val);
        k += (size_t)snprintf(text + k, cap - k, "%s%s", row, ROW2);
    }
    int line_multi = 2 + 2 * ncase + 1;
    row1_with(row, sizeof row, 16, "\"6\n2\"");   // age "6\n2": bad, and the record spans 2 lines
    k += (size_t)snprintf(text + k, cap - k, "%s", row);
    int line_short = line_multi + 2;
    k += (size_t)snprintf(text + k, cap - k, "000001_01_01_109.png,1,1,1\n");
    k += (size_t)snprintf(text + k, cap - k, "%s", ROW2);   // line_short + 1, good
    int line_after = line_short + 1;
    int line_unterminated = line_short + 2;
    k += (size_t)snprintf(text + k, cap - k, "000001_01_01_109.png,1,1,1,109,\"1, 2\n");

    dl_table t;
    CHECK(dlinfo_parse(&t, text, k, "DL_info.csv") == 0, "%s", pl_last_error());
    CHECK(t.n == 1 + ncase + 1, "good rows %lld, expected %d", (long long)t.n, 1 + ncase + 1);
    CHECK(t.nbad == ncase + 3, "bad rows %lld, expected %d", (long long)t.nbad, ncase + 3);
    for (int i = 0; i < ncase && i < t.nbad; i++) {
        int want_line = 3 + 2 * i;
        char prefix[64];
        snprintf(prefix, sizeof prefix, "DL_info.csv:%d: ", want_line);
        CHECK(t.bad[i].line == want_line && strncmp(t.bad[i].msg, prefix, strlen(prefix)) == 0 &&
                  strstr(t.bad[i].msg, cases[i].expect) != NULL,
              "case %d: line %d msg '%s' (want line %d, '%s')", i, t.bad[i].line, t.bad[i].msg, want_line,
              cases[i].expect);
    }
    if (t.nbad == ncase + 3) {
        const dl_bad_row *b = &t.bad[ncase];
        CHECK(b->line == line_multi && strstr(b->msg, "column Patient_age: '6\n2'"), "multi-line: %d '%s'", b->line,
              b->msg);
        b = &t.bad[ncase + 1];
        CHECK(b->line == line_short && strstr(b->msg, "4 columns, expected 18"), "short: %d '%s'", b->line, b->msg);
        b = &t.bad[ncase + 2];
        CHECK(b->line == line_unterminated && strstr(b->msg, "malformed quoting"), "quote: %d '%s'", b->line, b->msg);
        printf("bad row examples:\n  %s\n  %s\n  %s\n", t.bad[3].msg, t.bad[ncase - 2].msg, b->msg);
    }
    // Good rows in between survived with the right line numbers.
    for (int i = 1; i <= ncase && i < t.n; i++)
        CHECK(t.rows[i].line == 2 + 2 * i && t.rows[i].patient == 4321, "good row %d at line %d", i, t.rows[i].line);
    if (t.n == ncase + 2) CHECK(t.rows[ncase + 1].line == line_after, "row after short at %d", t.rows[ncase + 1].line);
    dlinfo_free(&t);
    free(text);

    // Quotes doubled inside a quoted field are unescaped (and here make a bad file name).
    char q[4096];
    snprintf(q, sizeof q, "%s\"a\"\"b.png\",1,1,1,109%s", HEADER, strstr(ROW1, ",\"233.537"));
    CHECK(dlinfo_parse(&t, q, strlen(q), "q.csv") == 0 && t.nbad == 1 && strstr(t.bad[0].msg, "'a\"b.png'"),
          "doubled quote: %s", t.nbad ? t.bad[0].msg : "(no bad row)");
    dlinfo_free(&t);
}

static void test_file_errors(const char *dir) {
    dl_table t;
    char path[512];
    snprintf(path, sizeof path, "%s/missing.csv", dir);
    int rc = dlinfo_read(&t, path);
    CHECK(rc == PL_ENOTFOUND && HAS(path), "rc %d '%s'", rc, pl_last_error());
    // Wrong header: names the first wrong column.
    char text[2048];
    snprintf(text, sizeof text, "%s%s", HEADER, ROW1);
    char *p = strstr(text, "Study_index");
    memcpy(p, "Study_indey", 11);
    rc = dlinfo_parse(&t, text, strlen(text), "hdr.csv");
    CHECK(rc == PL_EFORMAT && HAS("hdr.csv:1: header column 3 is 'Study_indey', expected 'Study_index'"), "'%s'",
          pl_last_error());
    rc = dlinfo_parse(&t, "a,b,c\n", 6, "short.csv");
    CHECK(rc == PL_EFORMAT && HAS("short.csv:1: header has 3 columns, expected 18"), "'%s'", pl_last_error());
    rc = dlinfo_parse(&t, "", 0, "empty.csv");
    CHECK(rc == PL_EFORMAT && HAS("empty.csv: empty file"), "'%s'", pl_last_error());
    // Header only: no rows, no error.
    rc = dlinfo_parse(&t, HEADER, strlen(HEADER), "h.csv");
    CHECK(rc == 0 && t.n == 0 && t.nbad == 0, "header only");
    dlinfo_free(&t);
    dlinfo_free(NULL);
    // Writing into a missing folder.
    dl_lesion l;
    memset(&l, 0, sizeof l);
    snprintf(path, sizeof path, "%s/no/DL_info.csv", dir);
    rc = dlinfo_write(path, &l, 1);
    CHECK(rc == PL_EIO && HAS(path), "'%s'", pl_last_error());
}

int main(void) {
    pl_quiet_begin();
    char dir[256];
    snprintf(dir, sizeof dir, "tmp_io_dlinfo_%ld", (long)getpid());
    PL_ASSERT(pl_mkdir_p(dir) == 0);
    double t0 = pl_time();
    test_release_rows(dir);
    test_malformed();
    test_file_errors(dir);
    rmdir(dir);
    printf("test_io_dlinfo: %.2f s\n", pl_time() - t0);
    if (g_fail) fprintf(stderr, "test_io_dlinfo: %d failures\n", g_fail);
    else printf("test_io_dlinfo: all checks passed\n");
    return g_fail ? 1 : 0;
}
