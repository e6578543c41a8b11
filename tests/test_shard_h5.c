// test_shard_h5: collective HDF5 shard writer/reader at any rank count.
// Writes the same items with 1 rank, 2 ranks and all ranks (MPI_Comm_split) and checks that every
// dataset is byte-identical, that values equal what was added (sorted by key, bad items skipped),
// that raw data went through collective I/O, that ranks with nothing take part, that a failure on
// one rank leaves no file, that keys out of rank order are refused, and that a file without
// `complete` is refused by the reader. The direct writer (samples written in place into reserved
// slots) must give the same datasets, with and without empty slots to close up (in one write
// round and in rounds of 3 samples, across rank boundaries), and leave nothing behind on failure.
#define _GNU_SOURCE   // O_DIRECT
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/h5shard.h"
#include "io/worksplit.h"
#include "nn/pl.h"
#include "test_util.h"


enum { NITEMS = 23, D0 = 2, D1 = 3, D2 = 4, D0_BIG = 512 };
static int g_d0 = D0;   // first sample dim: D0, or D0_BIG (12288-byte samples, O_DIRECT's multiple of 4096)

static int is_bad(int64_t k) { return k == 7 || k == 13; }
static int64_t nrows_of(int64_t k) { return k % 3; }
static int16_t data_val(int64_t k, int i) { return (int16_t)(k * 100 - 50 + i); }
static double row_val(int64_t k, int64_t r, int j) { return (double)k + 0.25 * (double)r + 0.01 * j; }

static const shard_col g_cols[] = {{"name", SHARD_STR, 16}, {"pair", SHARD_I32, 2}};
static const shard_col g_rows[] = {{"boxes", SHARD_F64, 4}, {"label", SHARD_I32, 1}};

enum { SPOOL = 0, DIRECT_HOLES = 1, DIRECT_EXACT = 2 };
static int g_forward;   // 1: items added in key order (the spool's in-place write path)

// Writes items [0, nitems) split by byte size over comm into path; returns the finish code.
// DIRECT_HOLES reserves a slot for every item plus 2 at the end, so the bad items and the end
// leave empty slots; DIRECT_EXACT reserves one per good item.
static int write_items_mode(const char *path, MPI_Comm comm, int nitems, int fail_rank, int swap_keys, h5shard_stats *st, int mode) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int64_t bytes[NITEMS];
    for (int i = 0; i < nitems; i++) bytes[i] = 1000 + 137 * (i % 5);
    int64_t b0, b1;
    if (worksplit_range(&b0, &b1, bytes, nitems, rank, size)) return PL_EINVAL;
    shard_layout lay = {.data_name = "images", .data_type = SHARD_I16, .ndims = 3, .dims = {g_d0, D1, D2},
                        .cols = g_cols, .ncols = 2, .rows = g_rows, .nrows = 2, .rows_offsets = "box_offsets"};
    h5shard_writer *w = NULL;
    int ngood = 0;
    for (int k = 0; k < nitems; k++) ngood += !is_bad(k);
    if (mode == SPOOL && h5shard_writer_create(&w, path, &lay, rank)) return PL_EIO;
    if (mode != SPOOL) {
        int rc = h5shard_writer_create_direct(&w, path, &lay, mode == DIRECT_HOLES ? nitems + 2 : ngood, comm);
        if (rc) return rc;
    }
    // items added in reverse order: the writer must sort them by key (g_forward: in key order)
    for (int64_t it = 0; it < b1 - b0; it++) {
        int64_t k = g_forward ? b0 + it : b1 - 1 - it;
        if (is_bad(k)) continue;
        // from a 4096-aligned buffer for even keys, 8 bytes past it for odd ones (the writer copies those)
        static _Alignas(4096) int16_t databuf[D0_BIG * D1 * D2 + 4];
        int16_t *data = databuf + (k % 2 ? 4 : 0);
        for (int i = 0; i < g_d0 * D1 * D2; i++) data[i] = data_val(k, i);
        char name[16] = {0};
        snprintf(name, sizeof name, "s%03d", (int)(k % 1000));
        int32_t pair[2] = {(int32_t)k, (int32_t)(-k)};
        double boxes[3 * 4];
        int32_t labels[3];
        for (int64_t r = 0; r < nrows_of(k); r++) {
            for (int j = 0; j < 4; j++) boxes[r * 4 + j] = row_val(k, r, j);
            labels[r] = (int32_t)(k * 10 + r);
        }
        const void *cv[2] = {name, pair};
        const void *rv[2] = {boxes, labels};
        int64_t key = k;
        if (swap_keys && size > 1) key = rank == 0 ? 1000 + k : k;   // rank 0 holds the largest keys
        if (mode == DIRECT_EXACT)
            for (int j = 0; j < k; j++) key -= is_bad(j);
        int arc = mode == SPOOL ? h5shard_add(w, key, data, cv, nrows_of(k), rv) : h5shard_add_at(w, key, data, cv, nrows_of(k), rv);
        if (arc && mode == SPOOL) {
            h5shard_writer_abort(w);
            return PL_EIO;
        }
        if (arc) return h5shard_finish(w, comm, 0, st);   // a direct writer's file is open on every rank
    }
    double sp[3] = {0.8, 0.8, 2.5};
    int64_t ver = 7;
    h5shard_set_attr_str(w, "config", "preprocess.num_slices = 9;\nrun.seed = 1;\n");
    h5shard_set_attr_f64(w, "spacing", sp, 3);
    h5shard_set_attr_i64(w, "version_test", &ver, 1);
    return h5shard_finish(w, comm, rank != fail_rank, st);
}

static int write_items(const char *path, MPI_Comm comm, int nitems, int fail_rank, int swap_keys, h5shard_stats *st) {
    return write_items_mode(path, comm, nitems, fail_rank, swap_keys, st, SPOOL);
}

// Checks the content of a file holding items [0, nitems) minus the bad ones.
static void check_content(const char *path, int nitems) {
    h5shard_reader *r = NULL;
    int rc = h5shard_open(&r, path);
    CHECK(rc == 0, "%s: open rc %d", path, rc);
    if (rc) return;
    int64_t expect_n = 0, expect_m = 0;
    for (int k = 0; k < nitems; k++)
        if (!is_bad(k)) { expect_n++; expect_m += nrows_of(k); }
    int64_t dims[8];
    int nd = h5shard_shape(r, "images", dims, 8);
    CHECK(nd == 4 && dims[0] == expect_n && dims[1] == g_d0 && dims[2] == D1 && dims[3] == D2, "images shape nd %d n %lld", nd,
          (long long)dims[0]);
    int16_t *img = malloc(sizeof(int16_t) * (size_t)(expect_n * g_d0 * D1 * D2 + 1));
    char *names = malloc((size_t)expect_n * 16 + 1);
    int32_t *pair = malloc(sizeof(int32_t) * (size_t)(2 * expect_n + 1));
    int64_t *off = malloc(sizeof(int64_t) * (size_t)(expect_n + 1));
    double *boxes = malloc(sizeof(double) * (size_t)(4 * expect_m + 1));
    int32_t *labels = malloc(sizeof(int32_t) * (size_t)(expect_m + 1));
    CHECK(h5shard_read(r, "images", SHARD_I16, img, 0, expect_n) == 0, "read images");
    CHECK(h5shard_read(r, "name", SHARD_STR, names, 0, expect_n) == 0, "read name");
    CHECK(h5shard_read(r, "pair", SHARD_I32, pair, 0, expect_n) == 0, "read pair");
    CHECK(h5shard_read(r, "box_offsets", SHARD_I64, off, 0, expect_n + 1) == 0, "read offsets");
    CHECK(h5shard_read(r, "boxes", SHARD_F64, boxes, 0, expect_m) == 0, "read boxes");
    CHECK(h5shard_read(r, "label", SHARD_I32, labels, 0, expect_m) == 0, "read labels");
    int64_t i = 0, bad_vals = 0;
    for (int64_t k = 0; k < nitems; k++) {
        if (is_bad(k)) continue;
        for (int e = 0; e < g_d0 * D1 * D2; e++) bad_vals += img[i * g_d0 * D1 * D2 + e] != data_val(k, e);
        char want[16] = {0};
        snprintf(want, sizeof want, "s%03d", (int)(k % 1000));
        CHECK(memcmp(names + i * 16, want, 16) == 0, "name[%lld] = %.16s want %s", (long long)i, names + i * 16, want);
        CHECK(pair[2 * i] == k && pair[2 * i + 1] == -k, "pair[%lld] = %d,%d", (long long)i, pair[2 * i], pair[2 * i + 1]);
        CHECK(off[i + 1] - off[i] == nrows_of(k), "sample %lld has %lld rows, want %lld", (long long)i, (long long)(off[i + 1] - off[i]),
              (long long)nrows_of(k));
        for (int64_t rr = 0; rr < nrows_of(k) && off[i] + rr < expect_m; rr++) {
            for (int j = 0; j < 4; j++)
                CHECK(boxes[(off[i] + rr) * 4 + j] == row_val(k, rr, j), "box of key %lld row %lld", (long long)k, (long long)rr);
            CHECK(labels[off[i] + rr] == k * 10 + rr, "label of key %lld row %lld = %d", (long long)k, (long long)rr, labels[off[i] + rr]);
        }
        i++;
    }
    CHECK(bad_vals == 0, "%lld image values differ", (long long)bad_vals);
    CHECK(off[0] == 0 && off[expect_n] == expect_m, "offsets ends %lld %lld want 0 %lld", (long long)off[0], (long long)off[expect_n],
          (long long)expect_m);
    char *cfg = NULL;
    CHECK(h5shard_get_attr_str(r, "config", &cfg) == 0 && cfg && !strcmp(cfg, "preprocess.num_slices = 9;\nrun.seed = 1;\n"),
          "config attr '%s'", cfg ? cfg : "(null)");
    free(cfg);
    double sp[4];
    int nsp = 0;
    CHECK(h5shard_get_attr_f64(r, "spacing", sp, 4, &nsp) == 0 && nsp == 3 && sp[0] == 0.8 && sp[2] == 2.5, "spacing attr");
    double ns = 0;
    CHECK(h5shard_get_attr_f64(r, "num_samples", &ns, 1, &nsp) == 0 && ns == (double)expect_n, "num_samples attr %g", ns);
    free(img);
    free(names);
    free(pair);
    free(off);
    free(boxes);
    free(labels);
    h5shard_close(r);
}

// Every dataset of a and b byte-identical.
static void check_same(const char *a, const char *b) {
    h5shard_reader *ra = NULL, *rb = NULL;
    if (h5shard_open(&ra, a) || h5shard_open(&rb, b)) {
        CHECK(0, "open %s / %s", a, b);
        h5shard_close(ra);
        h5shard_close(rb);
        return;
    }
    char *na = NULL, *nb = NULL;
    int ca = 0, cb = 0;
    h5shard_list(ra, &na, &ca);
    h5shard_list(rb, &nb, &cb);
    CHECK(ca == cb && ca == 6, "%s has %d datasets, %s has %d (want 6)", a, ca, b, cb);
    const char *p = na;
    for (int i = 0; i < ca && i < cb; i++, p += strlen(p) + 1) {
        void *ba = NULL, *bb = NULL;
        size_t la = 0, lb = 0;
        h5shard_read_raw(ra, p, &ba, &la);
        h5shard_read_raw(rb, p, &bb, &lb);
        CHECK(la == lb && la > 0 && memcmp(ba, bb, la) == 0, "dataset %s differs between %s (%zu B) and %s (%zu B)", p, a, la, b, lb);
        free(ba);
        free(bb);
    }
    free(na);
    free(nb);
    h5shard_close(ra);
    h5shard_close(rb);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    pl_log_set_rank(rank);
    char dir[256];
    snprintf(dir, sizeof dir, "shard_h5_np%d", size);
    if (rank == 0) {  // outputs of an earlier run (an interrupted one leaves .tmp files) must not count
        mkdir(dir, 0755);
        const char *names[] = {"one", "two", "all", "forward", "big_spool", "big_direct_odirect", "big_direct_buffered", "direct_exact", "direct_holes", "direct_rounds", "direct_zero",
                               "direct_bad", "few", "zero", "bad", "order", "unfinished"};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            char q[300];
            snprintf(q, sizeof q, "%s/%s.h5", dir, names[i]);
            unlink(q);
            snprintf(q, sizeof q, "%s/%s.h5.tmp", dir, names[i]);
            unlink(q);
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);

    // 1 rank, 2 ranks (if available), all ranks
    char p1[300], p2[300], pa[300];
    snprintf(p1, sizeof p1, "%s/one.h5", dir);
    snprintf(p2, sizeof p2, "%s/two.h5", dir);
    snprintf(pa, sizeof pa, "%s/all.h5", dir);
    MPI_Comm c1, c2;
    MPI_Comm_split(MPI_COMM_WORLD, rank == 0 ? 0 : MPI_UNDEFINED, rank, &c1);
    MPI_Comm_split(MPI_COMM_WORLD, rank < 2 ? 0 : MPI_UNDEFINED, rank, &c2);
    h5shard_stats st = {0};
    // the spool: 1 rank all in its file, 2 ranks 2 samples (48 bytes each) in memory and the
    // rest in the file, all ranks all in memory (the default bound)
    setenv("MP3D_SHARD_SPOOL_MEMORY", "0", 1);
    if (c1 != MPI_COMM_NULL) CHECK(write_items(p1, c1, NITEMS, -1, 0, &st) == 0, "1-rank write");
    setenv("MP3D_SHARD_SPOOL_MEMORY", "96", 1);
    if (c2 != MPI_COMM_NULL) CHECK(write_items(p2, c2, NITEMS, -1, 0, &st) == 0, "2-rank write");
    unsetenv("MP3D_SHARD_SPOOL_MEMORY");
    CHECK(write_items(pa, MPI_COMM_WORLD, NITEMS, -1, 0, &st) == 0, "all-rank write");
    CHECK(st.n_total == NITEMS - 2 && st.rows_total > 0, "stats n %lld rows %lld", (long long)st.n_total, (long long)st.rows_total);
    CHECK(st.all_collective == 1, "raw data writes fell back to independent I/O");
    if (rank == 0) printf("np:%d samples:%lld rows:%lld collective:%d write_s:%.4f\n", size, (long long)st.n_total,
                          (long long)st.rows_total, st.all_collective, st.write_seconds);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        check_content(pa, NITEMS);
        check_same(p1, pa);
        if (size >= 2) check_same(p2, pa);
        char sp[400];
        snprintf(sp, sizeof sp, "%s.spool.0", pa);
        CHECK(access(sp, F_OK) != 0, "spool %s left behind", sp);
    }
    // items added in key order, held in memory: written in place, in rounds of 3 samples
    {
        char pf[300];
        snprintf(pf, sizeof pf, "%s/forward.h5", dir);
        g_forward = 1;
        setenv("MP3D_SHARD_ROUND_BYTES", "144", 1);
        h5shard_stats sf = {0};
        CHECK(write_items(pf, MPI_COMM_WORLD, NITEMS, -1, 0, &sf) == 0 && sf.n_total == NITEMS - 2, "forward write");
        unsetenv("MP3D_SHARD_ROUND_BYTES");
        g_forward = 0;
        MPI_Barrier(MPI_COMM_WORLD);
        if (rank == 0) {
            check_content(pf, NITEMS);
            check_same(pf, pa);
        }
    }

    // direct writer: the same datasets without empty slots, with them (one round), and with them
    // in rounds of 3 samples (the compaction crosses rank boundaries at 2 and 3 ranks)
    {
        const char *tag[3] = {"exact", "holes", "rounds"};
        int rc;
        for (int v = 0; v < 3; v++) {
            char pd[300];
            snprintf(pd, sizeof pd, "%s/direct_%s.h5", dir, tag[v]);
            if (v == 2) setenv("MP3D_SHARD_ROUND_BYTES", "144", 1);   // 3 samples of 48 bytes
            h5shard_stats sd = {0};
            rc = write_items_mode(pd, MPI_COMM_WORLD, NITEMS, -1, 0, &sd, v == 0 ? DIRECT_EXACT : DIRECT_HOLES);
            unsetenv("MP3D_SHARD_ROUND_BYTES");
            CHECK(rc == 0 && sd.n_total == NITEMS - 2, "direct %s write: rc %d n %lld", tag[v], rc, (long long)sd.n_total);
            // 48-byte samples: written at their chunks' addresses, buffered (not a multiple of 4096)
            CHECK(sd.hdf5_writes == 0 && sd.odirect_writes == 0 && sd.buffered_writes >= NITEMS - 2,
                  "direct %s: writes O_DIRECT %lld buffered %lld hdf5 %lld", tag[v], (long long)sd.odirect_writes,
                  (long long)sd.buffered_writes, (long long)sd.hdf5_writes);
            MPI_Barrier(MPI_COMM_WORLD);
            if (rank == 0) {
                check_content(pd, NITEMS);
                check_same(pd, pa);
                char pt[310];
                snprintf(pt, sizeof pt, "%s.tmp", pd);
                CHECK(access(pt, F_OK) != 0, "direct %s: %s left behind", tag[v], pt);
            }
        }
        // zero samples, and a failing rank: no file, no .tmp, the error on every rank
        char pd[300], pdt[310];
        snprintf(pd, sizeof pd, "%s/direct_zero.h5", dir);
        h5shard_stats sd = {0};
        CHECK(write_items_mode(pd, MPI_COMM_WORLD, 0, -1, 0, &sd, DIRECT_HOLES) == 0 && sd.n_total == 0, "direct: empty write");
        MPI_Barrier(MPI_COMM_WORLD);
        if (rank == 0) check_content(pd, 0);
        snprintf(pd, sizeof pd, "%s/direct_bad.h5", dir);
        snprintf(pdt, sizeof pdt, "%s.tmp", pd);
        pl_quiet_begin();
        rc = write_items_mode(pd, MPI_COMM_WORLD, NITEMS, size - 1, 0, NULL, DIRECT_HOLES);
        pl_quiet_end();
        CHECK(rc < 0, "direct, failing rank: rc %d", rc);
        MPI_Barrier(MPI_COMM_WORLD);
        CHECK(access(pd, F_OK) != 0 && access(pdt, F_OK) != 0, "failed direct write left %s or its .tmp", pd);
    }

    // 12288-byte samples: the direct writer writes them with O_DIRECT where the filesystem takes it
    // (probed here), buffered with MP3D_SHARD_DIRECT_IO=0; the datasets equal the spool's, with
    // empty slots closed up in rounds of 3 samples across rank boundaries
    {
        g_d0 = D0_BIG;
        char pbig[300], probe[300];
        snprintf(pbig, sizeof pbig, "%s/big_spool.h5", dir);
        snprintf(probe, sizeof probe, "%s/odirect_probe", dir);
        int odirect = 0;
        if (rank == 0) {
            int fd = open(probe, O_CREAT | O_WRONLY | O_TRUNC | O_DIRECT, 0600);
            odirect = fd >= 0;
            if (fd >= 0) close(fd);
            unlink(probe);
        }
        MPI_Bcast(&odirect, 1, MPI_INT, 0, MPI_COMM_WORLD);
        h5shard_stats sb = {0};
        CHECK(write_items(pbig, MPI_COMM_WORLD, NITEMS, -1, 0, &sb) == 0 && sb.n_total == NITEMS - 2, "big spool write");
        for (int v = 0; v < 2; v++) {
            char pd[300];
            snprintf(pd, sizeof pd, "%s/big_direct_%s.h5", dir, v ? "buffered" : "odirect");
            if (v) setenv("MP3D_SHARD_DIRECT_IO", "0", 1);
            setenv("MP3D_SHARD_ROUND_BYTES", "36864", 1);   // 3 samples
            h5shard_stats sd = {0};
            int rc = write_items_mode(pd, MPI_COMM_WORLD, NITEMS, -1, 0, &sd, DIRECT_HOLES);
            unsetenv("MP3D_SHARD_ROUND_BYTES");
            unsetenv("MP3D_SHARD_DIRECT_IO");
            CHECK(rc == 0 && sd.n_total == NITEMS - 2, "big direct write %d: rc %d n %lld", v, rc, (long long)sd.n_total);
            int64_t want_od = !v && odirect;
            CHECK(sd.hdf5_writes == 0 && (want_od ? sd.odirect_writes >= NITEMS - 2 && sd.buffered_writes == 0
                                                 : sd.odirect_writes == 0 && sd.buffered_writes >= NITEMS - 2),
                  "big direct %d (O_DIRECT %s here): writes O_DIRECT %lld buffered %lld hdf5 %lld", v, odirect ? "taken" : "refused",
                  (long long)sd.odirect_writes, (long long)sd.buffered_writes, (long long)sd.hdf5_writes);
            if (rank == 0 && v == 0) printf("big samples: O_DIRECT %s, writes O_DIRECT %lld buffered %lld\n", odirect ? "taken" : "refused",
                                            (long long)sd.odirect_writes, (long long)sd.buffered_writes);
            MPI_Barrier(MPI_COMM_WORLD);
            if (rank == 0) {
                check_content(pd, NITEMS);
                check_same(pd, pbig);
            }
        }
        g_d0 = D0;
    }

    // fewer items than ranks: some ranks add nothing and still take part
    char pf[300];
    snprintf(pf, sizeof pf, "%s/few.h5", dir);
    CHECK(write_items(pf, MPI_COMM_WORLD, 2, -1, 0, &st) == 0, "2-item write");
    CHECK(st.n_total == 2, "2-item file holds %lld samples", (long long)st.n_total);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) check_content(pf, 2);

    // zero samples
    char pz[300];
    snprintf(pz, sizeof pz, "%s/zero.h5", dir);
    CHECK(write_items(pz, MPI_COMM_WORLD, 0, -1, 0, &st) == 0 && st.n_total == 0, "empty write");
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) check_content(pz, 0);

    // failure on the last rank: nothing appears, every rank gets the error
    pl_quiet_begin();
    char pb[300], pbt[310];
    snprintf(pb, sizeof pb, "%s/bad.h5", dir);
    snprintf(pbt, sizeof pbt, "%s.tmp", pb);
    int rc = write_items(pb, MPI_COMM_WORLD, NITEMS, size - 1, 0, NULL);
    CHECK(rc < 0, "failing rank: rc %d", rc);
    MPI_Barrier(MPI_COMM_WORLD);
    CHECK(access(pb, F_OK) != 0 && access(pbt, F_OK) != 0, "failed write left %s or its .tmp", pb);

    // keys not in rank order are refused (only meaningful with >1 rank)
    if (size > 1) {
        char po[300];
        snprintf(po, sizeof po, "%s/order.h5", dir);
        rc = write_items(po, MPI_COMM_WORLD, NITEMS, -1, 1, NULL);
        CHECK(rc == PL_EINVAL, "keys out of rank order: rc %d", rc);
    }

    // a file without `complete` is refused
    if (rank == 0) {
        char pu[300];
        snprintf(pu, sizeof pu, "%s/unfinished.h5", dir);
        hid_t f = H5Fcreate(pu, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        H5Fclose(f);
        h5shard_reader *r = NULL;
        rc = h5shard_open(&r, pu);
        CHECK(rc == PL_ECORRUPT && r == NULL, "unfinished file: rc %d", rc);
        h5shard_close(r);
        FILE *out = fopen("/dev/null", "w");
        CHECK(h5shard_describe(pa, out) == 0, "describe");
        fclose(out);
    }
    pl_quiet_end();

    if (c1 != MPI_COMM_NULL) MPI_Comm_free(&c1);
    if (c2 != MPI_COMM_NULL) MPI_Comm_free(&c2);
    int fails = 0;
    MPI_Allreduce(&g_fail, &fails, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf("%s: %d failed checks\n", fails ? "FAIL" : "PASS", fails);
    MPI_Finalize();
    return fails ? 1 : 0;
}
