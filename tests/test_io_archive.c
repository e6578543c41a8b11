// test_io_archive: zip (deflate and store) and tar written by arc_writer and read back by
// arc_reader through real files; tar-in-tar through memory; a gzip-filtered tar; truncated
// zip and tar files, unsafe entry names, non-archives and missing files with their messages.
#include <archive.h>
#include <archive_entry.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/archive.h"
#include "io/fileio.h"
#include "nn/pl.h"
#include "test_util.h"

#define HAS(needle) (strstr(pl_last_error(), (needle)) != NULL)

static char g_dir[256];
static char g_files[64][512];
static int g_nfiles = 0;

static const char *tpath(const char *name) {
    PL_ASSERT(g_nfiles < 64);
    snprintf(g_files[g_nfiles], sizeof g_files[0], "%s/%s", g_dir, name);
    return g_files[g_nfiles++];
}

// Three entries: a short text, a 300 KB pseudo-random (incompressible) blob, an empty file.
enum { NENT = 3, BIG = 300000 };
static const char *ENT_NAMES[NENT] = {"Images_png/000001_01_01/001.txt", "Images_png/000001_01_01/big.bin",
                                      "empty.dat"};
static uint8_t *g_ent[NENT];
static size_t g_entlen[NENT];

static void make_entries(void) {
    static const char txt[] = "hello, archive\n";
    g_entlen[0] = sizeof txt - 1;
    g_ent[0] = malloc(g_entlen[0]);
    memcpy(g_ent[0], txt, g_entlen[0]);
    g_entlen[1] = BIG;
    g_ent[1] = malloc(BIG);
    pl_rng r;
    pl_rng_seed(&r, 7);
    for (size_t i = 0; i < BIG; i++) g_ent[1][i] = (uint8_t)(pl_rng_u64(&r) >> 56);
    g_entlen[2] = 0;
    g_ent[2] = malloc(1);
}

static int write_archive(const char *path, enum arc_format fmt) {
    arc_writer *w = NULL;
    int rc = arc_writer_open(&w, path, fmt);
    if (rc) return rc;
    for (int i = 0; i < NENT; i++) {
        rc = arc_writer_add(w, ENT_NAMES[i], g_ent[i], g_entlen[i]);
        if (rc) {
            arc_writer_abort(w);
            return rc;
        }
    }
    return arc_writer_close(w);
}

// Reads every entry and compares it with the originals; returns entries seen or <0.
static int read_and_compare(arc_reader *r, const char *what) {
    const char *name;
    int64_t size;
    int n = 0, rc;
    while ((rc = arc_next(r, &name, &size)) == 1) {
        CHECK(n < NENT, "%s: extra entry %s", what, name);
        if (n >= NENT) return -1;
        CHECK(strcmp(name, ENT_NAMES[n]) == 0, "%s: entry %d is '%s', expected '%s'", what, n, name, ENT_NAMES[n]);
        CHECK(size == (int64_t)g_entlen[n], "%s: entry %s size %lld, expected %zu", what, name, (long long)size,
              g_entlen[n]);
        uint8_t *buf = NULL;
        size_t len = 0;
        rc = arc_read_entry(r, &buf, &len);
        if (rc) return rc;
        CHECK(len == g_entlen[n] && (len == 0 || memcmp(buf, g_ent[n], len) == 0), "%s: entry %s content differs",
              what, name);
        free(buf);
        n++;
    }
    return rc < 0 ? rc : n;
}

static void test_round_trips(void) {
    const enum arc_format fmts[3] = {ARC_ZIP, ARC_ZIP_STORE, ARC_TAR};
    const char *names[3] = {"t.zip", "t_store.zip", "t.tar"};
    size_t sizes[3] = {0};
    for (int f = 0; f < 3; f++) {
        const char *p = tpath(names[f]);
        int rc = write_archive(p, fmts[f]);
        CHECK(rc == 0, "write %s: %s", p, pl_last_error());
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s.tmp", p);
        CHECK(!pl_path_exists(tmp), "%s left behind", tmp);
        uint8_t *all = NULL;
        CHECK(pl_read_file(p, &all, &sizes[f]) == 0, "%s", pl_last_error());
        free(all);
        arc_reader *r = NULL;
        rc = arc_open_file(&r, p);
        CHECK(rc == 0, "open %s: %s", p, pl_last_error());
        if (rc) continue;
        CHECK(strcmp(arc_label(r), p) == 0, "label '%s'", arc_label(r));
        rc = read_and_compare(r, p);
        CHECK(rc == NENT, "%s: %d entries (%s)", p, rc, pl_last_error());
        arc_close(r);
    }
    // Stored zip holds the incompressible blob whole; a tar is whole 512-byte blocks.
    CHECK(sizes[1] > BIG, "stored zip only %zu bytes", sizes[1]);
    CHECK(sizes[2] % 512 == 0 && sizes[2] >= BIG + 3 * 512, "tar size %zu", sizes[2]);
    printf("archive sizes: zip %zu, zip-store %zu, tar %zu bytes\n", sizes[0], sizes[1], sizes[2]);

    // Entries not read are skipped by arc_next: only count them.
    arc_reader *r = NULL;
    CHECK(arc_open_file(&r, g_files[0]) == 0, "%s", pl_last_error());
    const char *name;
    int64_t size;
    int n = 0;
    while (arc_next(r, &name, &size) == 1) n++;
    CHECK(n == NENT, "skipping read: %d entries", n);
    arc_close(r);
}

static void test_tar_in_tar(void) {
    // Two inner tars built in memory ("n01440764.tar" of JPEG-named entries), then an outer tar.
    const char *outer = tpath("outer.tar");
    arc_writer *ow = NULL;
    CHECK(arc_writer_open(&ow, outer, ARC_TAR) == 0, "%s", pl_last_error());
    for (int s = 0; s < 2; s++) {
        arc_writer *iw = NULL;
        CHECK(arc_writer_open_memory(&iw, ARC_TAR) == 0, "%s", pl_last_error());
        for (int k = 0; k < 3; k++) {
            char nm[64], body[64];
            snprintf(nm, sizeof nm, "n0144076%d_%d.JPEG", s, k);
            snprintf(body, sizeof body, "synset %d image %d", s, k);
            CHECK(arc_writer_add(iw, nm, body, strlen(body)) == 0, "%s", pl_last_error());
        }
        uint8_t *mem = NULL;
        size_t mlen = 0;
        CHECK(arc_writer_close_memory(iw, &mem, &mlen) == 0, "%s", pl_last_error());
        CHECK(mlen > 0 && mlen % 512 == 0, "inner tar %zu bytes", mlen);
        char inner[64];
        snprintf(inner, sizeof inner, "n0144076%d.tar", s);
        CHECK(arc_writer_add(ow, inner, mem, mlen) == 0, "%s", pl_last_error());
        free(mem);
    }
    CHECK(arc_writer_close(ow) == 0, "%s", pl_last_error());

    arc_reader *r = NULL;
    CHECK(arc_open_file(&r, outer) == 0, "%s", pl_last_error());
    if (!r) return;
    const char *name;
    int64_t size;
    int s = 0, total = 0;
    while (arc_next(r, &name, &size) == 1) {
        char want[64];
        snprintf(want, sizeof want, "n0144076%d.tar", s);
        CHECK(strcmp(name, want) == 0, "outer entry '%s'", name);
        uint8_t *mem = NULL;
        size_t mlen = 0;
        CHECK(arc_read_entry(r, &mem, &mlen) == 0, "%s", pl_last_error());
        char label[128];
        snprintf(label, sizeof label, "%s:%s", outer, name);
        arc_reader *ir = NULL;
        CHECK(arc_open_memory(&ir, mem, mlen, label) == 0, "%s", pl_last_error());
        const char *iname;
        int64_t isize;
        int k = 0;
        while (ir && arc_next(ir, &iname, &isize) == 1) {
            char wn[64], body[64];
            snprintf(wn, sizeof wn, "n0144076%d_%d.JPEG", s, k);
            snprintf(body, sizeof body, "synset %d image %d", s, k);
            uint8_t *b = NULL;
            size_t bl = 0;
            CHECK(strcmp(iname, wn) == 0, "inner entry '%s' want '%s'", iname, wn);
            CHECK(arc_read_entry(ir, &b, &bl) == 0 && bl == strlen(body) && memcmp(b, body, bl) == 0,
                  "inner content of %s", iname);
            free(b);
            k++;
            total++;
        }
        CHECK(k == 3, "inner %s has %d entries", name, k);
        CHECK(ir && strcmp(arc_label(ir), label) == 0, "inner label");
        arc_close(ir);
        free(mem);
        s++;
    }
    CHECK(s == 2 && total == 6, "tar-in-tar: %d inner tars, %d images", s, total);
    arc_close(r);
}

// Writes an archive with libarchive directly (for what arc_writer refuses to write).
static void raw_tar(const char *path, const char *const *names, int n, int gzip, int with_dir) {
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    if (gzip) archive_write_add_filter_gzip(a);
    PL_ASSERT(archive_write_open_filename(a, path) == ARCHIVE_OK);
    if (with_dir) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, "somedir/");
        archive_entry_set_filetype(e, AE_IFDIR);
        archive_entry_set_perm(e, 0755);
        archive_write_header(a, e);
        archive_entry_free(e);
    }
    for (int i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, names[i]);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, 4);
        archive_write_header(a, e);
        archive_write_data(a, "abcd", 4);
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
}

static void test_filters_dirs_unsafe(void) {
    // gzip-compressed tar with a folder entry: the folder is skipped.
    const char *tgz = tpath("t.tar.gz");
    const char *names[2] = {"somedir/a.txt", "b.txt"};
    raw_tar(tgz, names, 2, 1, 1);
    arc_reader *r = NULL;
    CHECK(arc_open_file(&r, tgz) == 0, "%s", pl_last_error());
    const char *name;
    int64_t size;
    int n = 0;
    while (r && arc_next(r, &name, &size) == 1) {
        CHECK(strcmp(name, names[n]) == 0, "tgz entry %d '%s'", n, name);
        uint8_t *b = NULL;
        size_t bl = 0;
        CHECK(arc_read_entry(r, &b, &bl) == 0 && bl == 4 && memcmp(b, "abcd", 4) == 0, "tgz content");
        free(b);
        n++;
    }
    CHECK(n == 2, "tgz entries %d", n);
    arc_close(r);

    // An unsafe name in an archive is skipped (logged with the name); the entries after it are read.
    const char *evil_names[3] = {"../../etc/passwd", "/abs/x", "a/../../b"};
    for (int i = 0; i < 3; i++) {
        char fn[32];
        snprintf(fn, sizeof fn, "evil%d.tar", i);
        const char *p = tpath(fn);
        const char *three[3] = {"ok.txt", evil_names[i], "after.txt"};
        raw_tar(p, three, 3, 0, 0);
        r = NULL;
        CHECK(arc_open_file(&r, p) == 0, "%s", pl_last_error());
        int rc = arc_next(r, &name, &size);
        CHECK(rc == 1 && strcmp(name, "ok.txt") == 0, "first entry");
        rc = arc_next(r, &name, &size);
        CHECK(rc == 1 && name && strcmp(name, "after.txt") == 0, "%s: the entry after '%s': rc %d name '%s'", fn,
              evil_names[i], rc, name ? name : "(null)");
        uint8_t *b = NULL;
        size_t bl = 0;
        CHECK(rc == 1 && arc_read_entry(r, &b, &bl) == 0 && bl == 4 && memcmp(b, "abcd", 4) == 0, "after.txt content");
        free(b);
        rc = arc_next(r, &name, &size);
        CHECK(rc == 0 && arc_unsafe_skipped(r) == 1, "%s: end rc %d, %d skipped", fn, rc, arc_unsafe_skipped(r));
        arc_close(r);
    }

    // The writer refuses them too.
    arc_writer *w = NULL;
    const char *p = tpath("refuse.zip");
    CHECK(arc_writer_open(&w, p, ARC_ZIP) == 0, "%s", pl_last_error());
    int rc = arc_writer_add(w, "../x", "a", 1);
    CHECK(rc == PL_EINVAL && HAS("'../x'") && HAS(p), "rc %d msg '%s'", rc, pl_last_error());
    CHECK(arc_writer_add(w, "", "a", 1) == PL_EINVAL, "empty name accepted");
    arc_writer_abort(w);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    CHECK(!pl_path_exists(tmp) && !pl_path_exists(p), "abort left a file");

    const struct { const char *n; int ok; } cases[] = {
        {"a.png", 1}, {"Images_png/000001_01_01/001.png", 1}, {"a..b/c", 1}, {"./a", 1},
        {"", 0}, {"/a", 0}, {"..", 0}, {"../a", 0}, {"a/..", 0}, {"a/../b", 0}, {"a\\b", 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(arc_name_ok(cases[i].n) == cases[i].ok, "arc_name_ok('%s') != %d", cases[i].n, cases[i].ok);
    CHECK(arc_name_ok(NULL) == 0, "NULL name");
}

// Copies the first `keep` bytes of `src` to a new file.
static const char *truncated_copy(const char *src, const char *name, double frac) {
    uint8_t *b = NULL;
    size_t len = 0;
    PL_ASSERT(pl_read_file(src, &b, &len) == 0);
    const char *p = tpath(name);
    PL_ASSERT(pl_write_file_atomic(p, b, (size_t)(len * frac)) == 0);
    free(b);
    return p;
}

// Reads all entries; returns the first error (or 0) and the number of entries fully read.
static int read_all(const char *path, int *nread) {
    arc_reader *r = NULL;
    *nread = 0;
    int rc = arc_open_file(&r, path);
    if (rc) return rc;
    const char *name;
    int64_t size;
    while ((rc = arc_next(r, &name, &size)) == 1) {
        uint8_t *b = NULL;
        size_t bl = 0;
        rc = arc_read_entry(r, &b, &bl);
        free(b);
        if (rc) break;
        (*nread)++;
    }
    arc_close(r);
    return rc;
}

static void test_truncated(void) {
    // Cut inside the 300 KB entry (the second one): the error names archive and that entry.
    const char *srcs[3] = {g_files[0], g_files[1], g_files[2]};   // zip, zip-store, tar
    const char *names[3] = {"trunc.zip", "trunc_store.zip", "trunc.tar"};
    for (int i = 0; i < 3; i++) {
        const char *p = truncated_copy(srcs[i], names[i], 0.5);
        int nread = -1;
        int rc = read_all(p, &nread);
        CHECK(rc < 0, "%s: truncated archive read without error (%d entries)", p, nread);
        CHECK(nread == 1, "%s: %d entries read before the error", p, nread);
        CHECK(HAS(p) && HAS(ENT_NAMES[1]) && HAS("truncated"), "%s: message '%s'", p, pl_last_error());
        printf("truncated %s -> %s: %s\n", names[i], pl_err_name(rc), pl_last_error());
    }
    // A tar cut inside the header of the third entry: names the last good entry.
    uint8_t *b = NULL;
    size_t len = 0;
    PL_ASSERT(pl_read_file(g_files[2], &b, &len) == 0);
    // header(512) + 15 bytes padded to 512, header(512) + BIG padded, then 100 bytes of the next header.
    size_t cut = 512 + 512 + 512 + ((BIG + 511) / 512) * 512 + 100;
    const char *p = tpath("trunc_hdr.tar");
    PL_ASSERT(pl_write_file_atomic(p, b, cut) == 0);
    free(b);
    int nread = -1;
    int rc = read_all(p, &nread);
    CHECK(rc < 0 && nread == 2 && HAS(p) && HAS(ENT_NAMES[1]), "header cut: rc %d nread %d msg '%s'", rc, nread,
          pl_last_error());
}

static void test_bad_inputs(void) {
    arc_reader *r = NULL;
    const char *missing = tpath("missing.zip");
    int rc = arc_open_file(&r, missing);
    CHECK(rc == PL_ENOTFOUND && r == NULL && HAS(missing), "rc %d msg '%s'", rc, pl_last_error());
    // Text is no archive.
    const char *txt = tpath("notes.zip");
    const char *body = "this is not a zip file, just some text that goes on for a while.\n";
    PL_ASSERT(pl_write_file_atomic(txt, body, strlen(body)) == 0);
    int nread = 0;
    rc = read_all(txt, &nread);
    CHECK(rc < 0 && HAS(txt) && nread == 0, "text as zip: rc %d msg '%s'", rc, pl_last_error());
    // Empty tar (only end-of-archive blocks): zero entries, no error.
    arc_writer *w = NULL;
    const char *empty = tpath("empty.tar");
    CHECK(arc_writer_open(&w, empty, ARC_TAR) == 0 && arc_writer_close(w) == 0, "%s", pl_last_error());
    rc = read_all(empty, &nread);
    CHECK(rc == 0 && nread == 0, "empty tar: rc %d n %d (%s)", rc, nread, pl_last_error());
    // Reading without a current entry.
    CHECK(arc_open_file(&r, empty) == 0, "%s", pl_last_error());
    uint8_t *buf = NULL;
    size_t len = 0;
    rc = arc_read_entry(r, &buf, &len);
    CHECK(rc == PL_EINVAL && HAS(empty), "rc %d msg '%s'", rc, pl_last_error());
    arc_close(r);
    arc_close(NULL);
    CHECK(arc_writer_close(NULL) == 0, "close NULL");
    arc_writer_abort(NULL);
}

int main(void) {
    pl_quiet_begin();
    snprintf(g_dir, sizeof g_dir, "tmp_io_archive_%ld", (long)getpid());
    PL_ASSERT(pl_mkdir_p(g_dir) == 0);
    double t0 = pl_time();
    make_entries();
    test_round_trips();
    test_tar_in_tar();
    test_filters_dirs_unsafe();
    test_truncated();
    test_bad_inputs();
    for (int i = 0; i < g_nfiles; i++) unlink(g_files[i]);
    rmdir(g_dir);
    for (int i = 0; i < NENT; i++) free(g_ent[i]);
    printf("test_io_archive: %.2f s\n", pl_time() - t0);
    if (g_fail) fprintf(stderr, "test_io_archive: %d failures\n", g_fail);
    else printf("test_io_archive: all checks passed\n");
    return g_fail ? 1 : 0;
}
