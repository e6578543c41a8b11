// test_ckpt: parallel-HDF5 checkpoints (io/h5ckpt) under mpirun at 1, 2 and 3 ranks.
// Bit-exact round trips of odd shapes (fewer elements than ranks, scalar, empty, 1e6, a 4-d
// tensor whose rank boundaries fall mid-row), dotted names checked with h5ls, collective I/O
// mode, state/text round trip, keep-last-K, a stale .tmp ignored, a truncated newest file and a
// flipped data byte both detected with the previous checkpoint used, load-by-name reporting,
// and replicas that differ between ranks refused. Works in ckpt_test_np<size>/ (own folder).
#include <fcntl.h>
#include <hdf5.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/fileio.h"
#include "io/h5ckpt.h"
#include "nn/pl.h"
#include "test_util.h"

static int g_rank = 0, g_size = 1;

enum { NT = 7 };
typedef struct {
    ckpt_tensor t[NT];
    float *buf[NT];
} tset;

// The same tensors on every rank, values from a seeded RNG (including negative zero and NaN-free
// extremes so bit-exactness is really bits).
static void tset_make(tset *s, uint64_t seed, int fill) {
    static const struct { const char *name; int ndim; int64_t shape[4]; } spec[NT] = {
        {"tiny", 1, {2}},                          // fewer elements than 3 ranks
        {"one", 1, {1}},                           // 1 element
        {"num_batches_tracked", 0, {0}},          // scalar
        {"empty", 2, {0, 3}},                      // no elements
        {"layer1.0.conv1.weight", 4, {7, 11, 13, 301}},   // 301301: split mid-row at 2 and 3 ranks
        {"big", 2, {1000, 1000}},                  // 1e6
        {"bn1.running_var", 1, {64}},
    };
    pl_rng r;
    pl_rng_seed(&r, seed);
    for (int i = 0; i < NT; i++) {
        s->t[i] = (ckpt_tensor){.name = spec[i].name, .ndim = spec[i].ndim};
        memcpy(s->t[i].shape, spec[i].shape, sizeof spec[i].shape);
        int64_t n = ckpt_tensor_numel(&s->t[i]);
        s->buf[i] = malloc(sizeof(float) * (size_t)(n ? n : 1));
        for (int64_t k = 0; k < n; k++) {
            float v = (float)(pl_rng_uniform(&r) * 8.0 - 4.0);
            if (k % 997 == 5) v = -0.0f;
            if (k % 1009 == 7) v = 3.4e38f;
            s->buf[i][k] = fill ? v : 12345.0f;
        }
        s->t[i].data = s->buf[i];
    }
}
static void tset_free(tset *s) {
    for (int i = 0; i < NT; i++) free(s->buf[i]);
}
static int tset_equal(const tset *a, const tset *b, const char *what) {
    int ok = 1;
    for (int i = 0; i < NT; i++) {
        size_t n = (size_t)ckpt_tensor_numel(&a->t[i]);
        size_t diff = 0;
        for (size_t k = 0; k < n; k++) diff += memcmp(&a->buf[i][k], &b->buf[i][k], sizeof(float)) != 0;
        if (diff) {
            fprintf(stderr, "[rank %d] %s: tensor %s: %zu of %zu elements differ\n", g_rank, what, a->t[i].name, diff, n);
            ok = 0;
        }
    }
    return ok;
}

// Writes one checkpoint: /params (seed), /buffers, state, texts.
static int write_ckpt(const char *dir, int64_t step, uint64_t seed, int keep) {
    tset p;
    tset_make(&p, seed, 1);
    ckpt_writer *w = NULL;
    int rc = ckpt_writer_open(&w, dir, step, MPI_COMM_WORLD);
    if (!rc) rc = ckpt_write_tensors(w, "/params", p.t, NT);
    if (!rc) rc = ckpt_write_tensors(w, "/buffers", p.t + 6, 1);
    ckpt_state st;
    ckpt_state_init(&st);
    st.step = step;
    st.epoch = step / 3;
    st.epoch_pos = step % 3;
    if (!rc) rc = ckpt_write_state(w, &st);
    if (!rc) rc = ckpt_write_text(w, "config", "train = { lr = 0.1; };\n");
    if (!rc) rc = ckpt_writer_commit(w, keep, NULL, 0);
    else ckpt_writer_abort(w);
    tset_free(&p);
    return rc;
}

static void barrier(void) { MPI_Barrier(MPI_COMM_WORLD); }

static int exists(const char *dir, int64_t step) {
    char p[4096];
    ckpt_path_for_step(p, sizeof p, dir, step);
    return pl_path_exists(p);
}

static void test_checksum_reference(void) {
    // Values from an independent Python implementation of the documented algorithm.
    uint8_t b[70];
    for (int i = 0; i < 70; i++) b[i] = (uint8_t)i;
    CHECK(ckpt_checksum(b, 0) == 0x6f5ca67cf47c745dULL, "empty %016llx", (unsigned long long)ckpt_checksum(b, 0));
    CHECK(ckpt_checksum(b, 40) == 0x1df389a30f0e8169ULL, "40 bytes %016llx", (unsigned long long)ckpt_checksum(b, 40));
    CHECK(ckpt_checksum(b, 70) == 0xd7fc3bc5c3dee26eULL, "70 bytes %016llx", (unsigned long long)ckpt_checksum(b, 70));
    const float f[3] = {1.0f, -2.5f, 0.1f};
    CHECK(ckpt_checksum(f, sizeof f) == 0xc14fdf9f7c4a3da6ULL, "floats %016llx", (unsigned long long)ckpt_checksum(f, sizeof f));
    b[33] ^= 1;
    CHECK(ckpt_checksum(b, 70) != 0xd7fc3bc5c3dee26eULL, "one flipped bit must change the checksum");
}

// Round trip of every group at this rank count, plus the collective I/O mode of the big tensor.
static void test_round_trip(const char *dir) {
    tset p, m, q;
    tset_make(&p, 11, 1);
    tset_make(&m, 12, 1);
    ckpt_writer *w = NULL;
    int rc = ckpt_writer_open(&w, dir, 10, MPI_COMM_WORLD);
    CHECK(rc == 0, "open writer: %s", pl_last_error());
    if (rc) return;
    // The big tensor alone first, to read the io mode it used.
    rc = ckpt_write_tensors(w, "/params", p.t + 5, 1);
    CHECK(rc == 0, "write big: %s", pl_last_error());
    int nc = -1, ni = -1;
    enum ckpt_io_mode big_mode = CKPT_IO_NONE;
    ckpt_writer_io_stats(w, &nc, &ni, &big_mode);
    if (g_rank == 0) printf("io_mode big:%s collective:%d independent:%d ranks:%d\n",
                            big_mode == CKPT_IO_COLLECTIVE ? "collective" : "independent", nc, ni, g_size);
    if (g_size >= 2) CHECK(big_mode == CKPT_IO_COLLECTIVE && nc == 1 && ni == 0, "big tensor mode %d (nc %d ni %d)", big_mode, nc, ni);
    ckpt_tensor rest[NT - 1];
    for (int i = 0, j = 0; i < NT; i++)
        if (i != 5) rest[j++] = p.t[i];
    rc = ckpt_write_tensors(w, "/params", rest, NT - 1);
    CHECK(rc == 0, "write params: %s", pl_last_error());
    rc = ckpt_write_tensors(w, "/optim/momentum", m.t, NT);
    CHECK(rc == 0, "write momentum: %s", pl_last_error());
    ckpt_state st;
    ckpt_state_init(&st);
    st.step = 10;
    st.epoch = 2;
    st.epoch_pos = 77;
    st.nrng = 9;
    for (int i = 0; i < 9; i++) st.rng[i] = 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1);
    st.rng[8] = UINT64_MAX;
    CHECK(ckpt_state_set_int(&st, "samples_seen", -1234567890123LL) == 0, "set int");
    CHECK(ckpt_state_set_double(&st, "best_top1", 0.1) == 0, "set double");
    CHECK(ckpt_state_set_double(&st, "lr", 1e-300) == 0, "set double");
    pl_quiet_begin();
    CHECK(ckpt_state_set_int(&st, "step", 3) == PL_EINVAL, "reserved name accepted");
    CHECK(ckpt_state_set_int(&st, "best_top1", 3) == PL_EINVAL, "type clash accepted");
    pl_quiet_end();
    rc = ckpt_write_state(w, &st);
    CHECK(rc == 0, "write state: %s", pl_last_error());
    const char *cfg = "model = { arch = \"resnet3d18\"; };\ntrain = { lr = 0.1; }; # µ ünïcode\n";
    CHECK(ckpt_write_text(w, "config", cfg) == 0, "text");
    CHECK(ckpt_write_text(w, "git_commit", "0e305f6abcde") == 0, "text");
    char final[4096] = "";
    rc = ckpt_writer_commit(w, 0, final, sizeof final);
    CHECK(rc == 0, "commit: %s", pl_last_error());
    CHECK(strstr(final, "ckpt_00000010.h5") != NULL, "final path %s", final);

    // Read back with a fresh set of buffers.
    ckpt_reader *r = NULL;
    int skipped = -1;
    rc = ckpt_open_latest(&r, dir, MPI_COMM_WORLD, &skipped);
    CHECK(rc == 0 && skipped == 0, "open latest rc %d skipped %d: %s", rc, skipped, pl_last_error());
    if (rc) return;
    CHECK(ckpt_reader_step(r) == 10, "step %lld", (long long)ckpt_reader_step(r));
    tset_make(&q, 0, 0);
    CHECK(ckpt_read_tensors(r, "/params", q.t, NT) == 0, "read params: %s", pl_last_error());
    CHECK(tset_equal(&p, &q, "params"), "params differ");
    CHECK(ckpt_read_tensors(r, "optim/momentum", q.t, NT) == 0, "read momentum: %s", pl_last_error());
    CHECK(tset_equal(&m, &q, "momentum"), "momentum differ");
    if (g_rank == 0) printf("round_trip tensors:%d max_abs_diff:0 (bitwise) ranks:%d\n", 2 * NT, g_size);

    ckpt_entry *e = NULL;
    int ne = 0;
    CHECK(ckpt_list(r, "/params", &e, &ne) == 0 && ne == NT, "list: %d entries", ne);
    for (int i = 0; i + 1 < ne; i++) CHECK(strcmp(e[i].name, e[i + 1].name) < 0, "list not sorted: %s %s", e[i].name, e[i + 1].name);
    for (int i = 0; i < ne; i++)
        for (int k = 0; k < NT; k++)
            if (!strcmp(e[i].name, p.t[k].name)) {
                CHECK(e[i].ndim == p.t[k].ndim, "%s ndim %d", e[i].name, e[i].ndim);
                CHECK(e[i].checksum == ckpt_checksum(p.buf[k], sizeof(float) * (size_t)ckpt_tensor_numel(&p.t[k])),
                      "%s checksum", e[i].name);
            }
    free(e);

    ckpt_state s2;
    CHECK(ckpt_read_state(r, &s2) == 0, "read state: %s", pl_last_error());
    CHECK(s2.step == 10 && s2.epoch == 2 && s2.epoch_pos == 77 && s2.world_size == g_size, "state %lld %lld %lld %lld",
          (long long)s2.step, (long long)s2.epoch, (long long)s2.epoch_pos, (long long)s2.world_size);
    CHECK(s2.nrng == 9 && !memcmp(s2.rng, st.rng, 9 * sizeof(uint64_t)), "rng words (%lld)", (long long)s2.nrng);
    int64_t iv = 0;
    double dv = 0;
    CHECK(ckpt_state_get_int(&s2, "samples_seen", &iv) == 0 && iv == -1234567890123LL, "int extra %lld", (long long)iv);
    CHECK(ckpt_state_get_double(&s2, "best_top1", &dv) == 0 && dv == 0.1, "double extra %.17g", dv);
    CHECK(ckpt_state_get_double(&s2, "lr", &dv) == 0 && dv == 1e-300, "double extra %.17g", dv);
    CHECK(s2.nint == 1 && s2.ndbl == 2, "extras %d %d", s2.nint, s2.ndbl);
    char *txt = NULL;
    CHECK(ckpt_read_text(r, "config", &txt) == 0 && txt && !strcmp(txt, cfg), "config text '%s'", txt ? txt : "");
    free(txt);
    txt = NULL;
    CHECK(ckpt_read_text(r, "git_commit", &txt) == 0 && txt && !strcmp(txt, "0e305f6abcde"), "git text");
    free(txt);
    txt = NULL;
    CHECK(ckpt_read_text(r, "nope", &txt) == PL_ENOTFOUND && !txt, "absent text");

    // Strict reads refuse wrong shapes and absent names, naming the dataset.
    pl_quiet_begin();
    ckpt_tensor bad = q.t[5];
    bad.shape[1] = 999;
    CHECK(ckpt_read_tensors(r, "/params", &bad, 1) == PL_EINVAL && strstr(pl_last_error(), "/params/big") &&
              strstr(pl_last_error(), "(1000, 1000)"), "shape mismatch: %s", pl_last_error());
    bad.name = "fc.weight";
    CHECK(ckpt_read_tensors(r, "/params", &bad, 1) == PL_ENOTFOUND && strstr(pl_last_error(), "fc.weight"), "absent: %s",
          pl_last_error());
    CHECK(ckpt_read_tensors(r, "/nogroup", q.t, 1) == PL_ENOTFOUND, "absent group");
    pl_quiet_end();

    // Load by name into "another network": one same-shape name, one reshaped, one absent.
    float got_tiny[2] = {-1, -1}, got_big[10] = {7, 7, 7, 7, 7, 7, 7, 7, 7, 7}, got_fc[4] = {5, 5, 5, 5};
    ckpt_tensor other[3] = {
        {.name = "tiny", .ndim = 1, .shape = {2}, .data = got_tiny},
        {.name = "big", .ndim = 2, .shape = {2, 5}, .data = got_big},
        {.name = "fc.weight", .ndim = 2, .shape = {2, 2}, .data = got_fc},
    };
    int status[3] = {-1, -1, -1};
    ckpt_match_report rep = {-1, -1, -1, -1};
    CHECK(ckpt_read_matching(r, "/params", other, 3, status, &rep) == 0, "matching: %s", pl_last_error());
    CHECK(status[0] == CKPT_LOADED && status[1] == CKPT_SHAPE_MISMATCH && status[2] == CKPT_ABSENT, "status %d %d %d",
          status[0], status[1], status[2]);
    CHECK(rep.loaded == 1 && rep.mismatched == 1 && rep.absent == 1 && rep.unused == NT - 2, "report %d %d %d %d",
          rep.loaded, rep.mismatched, rep.absent, rep.unused);
    CHECK(!memcmp(got_tiny, p.buf[0], sizeof got_tiny), "tiny loaded by name");
    CHECK(got_big[0] == 7 && got_big[9] == 7 && got_fc[0] == 5 && got_fc[3] == 5, "mismatched/absent left untouched");
    CHECK(ckpt_read_matching(r, "/nogroup", other, 3, status, &rep) == 0 && rep.absent == 3 && rep.loaded == 0 &&
              rep.unused == 0 && status[0] == CKPT_ABSENT, "absent group: all absent");
    ckpt_close(r);

    // Metadata without tensors (what `mp3d infer` needs first): open unverified, read text.
    r = NULL;
    CHECK(ckpt_open(&r, final, MPI_COMM_WORLD, 0) == 0, "open meta: %s", pl_last_error());
    txt = NULL;
    if (r) CHECK(ckpt_read_text(r, "config", &txt) == 0 && txt && !strcmp(txt, cfg), "meta config");
    free(txt);
    ckpt_close(r);

    // Dotted names are dataset names directly under /params (h5ls sees them as such).
    barrier();
    if (g_rank == 0) {
        char cmd[4200], line[512];
        snprintf(cmd, sizeof cmd, "h5ls -r %s 2>&1", final);
        FILE *f = popen(cmd, "r");
        int seen_conv = 0, seen_mom = 0, seen_scalar = 0;
        while (f && fgets(line, sizeof line, f)) {   // "<path> <padding> Dataset {dims}"
            char path[256] = "", tail[256] = "";
            if (sscanf(line, "%255s %255[^\n]", path, tail) != 2) continue;
            if (!strcmp(path, "/params/layer1.0.conv1.weight") && !strcmp(tail, "Dataset {7, 11, 13, 301}")) seen_conv = 1;
            if (!strcmp(path, "/optim/momentum/big") && !strcmp(tail, "Dataset {1000, 1000}")) seen_mom = 1;
            if (!strcmp(path, "/params/num_batches_tracked") && !strcmp(tail, "Dataset {SCALAR}")) seen_scalar = 1;
        }
        int st2 = f ? pclose(f) : -1;
        CHECK(st2 == 0 && seen_conv && seen_mom && seen_scalar, "h5ls -r: status %d conv %d mom %d scalar %d", st2,
              seen_conv, seen_mom, seen_scalar);
    }
    tset_free(&p);
    tset_free(&m);
    tset_free(&q);
}

// keep-last-K, stale .tmp, truncated newest, flipped byte.
static void test_recovery(const char *dir) {
    for (int64_t s = 1; s <= 5; s++) CHECK(write_ckpt(dir, s, 100 + (uint64_t)s, 3) == 0, "write %lld: %s", (long long)s, pl_last_error());
    barrier();
    CHECK(!exists(dir, 1) && !exists(dir, 2) && exists(dir, 3) && exists(dir, 4) && exists(dir, 5), "keep 3: %d%d%d%d%d",
          exists(dir, 1), exists(dir, 2), exists(dir, 3), exists(dir, 4), exists(dir, 5));
    char latest[4096];
    pl_path_join(latest, sizeof latest, dir, "latest");
    uint8_t *txt = NULL;
    size_t len = 0;
    CHECK(pl_read_file(latest, &txt, &len) == 0 && len == 17 && !memcmp(txt, "ckpt_00000005.h5\n", 17), "latest file");
    free(txt);

    // A temporary left by a crash (newer step, garbage) is ignored.
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/ckpt_00000099.h5.tmp", dir);
    if (g_rank == 0) pl_write_file_atomic(tmp, "half a file", 11);
    barrier();
    ckpt_reader *r = NULL;
    int skipped = -1;
    CHECK(ckpt_open_latest(&r, dir, MPI_COMM_WORLD, &skipped) == 0 && r && ckpt_reader_step(r) == 5 && skipped == 0,
          "tmp ignored: skipped %d", skipped);
    tset want, got;
    tset_make(&want, 105, 1);
    tset_make(&got, 0, 0);
    if (r) CHECK(ckpt_read_tensors(r, "/params", got.t, NT) == 0 && tset_equal(&want, &got, "step 5"), "step 5 data");
    ckpt_close(r);
    tset_free(&want);
    tset_free(&got);

    // Truncate the newest to half its size: reported, step 4 used.
    char p5[4096];
    ckpt_path_for_step(p5, sizeof p5, dir, 5);
    if (g_rank == 0) {
        struct stat sb;
        stat(p5, &sb);
        int fd = open(p5, O_WRONLY);
        CHECK(fd >= 0 && ftruncate(fd, sb.st_size / 2) == 0, "ftruncate");
        if (fd >= 0) close(fd);
    }
    barrier();
    r = NULL;
    pl_clear_error();
    int rc = ckpt_open_latest(&r, dir, MPI_COMM_WORLD, &skipped);
    CHECK(rc == 0 && r && ckpt_reader_step(r) == 4 && skipped == 1, "truncated: rc %d skipped %d", rc, skipped);
    ckpt_close(r);
    r = NULL;
    pl_quiet_begin();
    rc = ckpt_open(&r, p5, MPI_COMM_WORLD, CKPT_VERIFY);
    pl_quiet_end();
    CHECK(rc == PL_ECORRUPT && strstr(pl_last_error(), "ckpt_00000005.h5"), "truncated reported: %d %s", rc, pl_last_error());
    if (g_rank == 0) printf("truncated_message: %s\n", pl_last_error());

    // A new checkpoint (keep all) with one data byte flipped inside /params/big.
    CHECK(write_ckpt(dir, 6, 106, 0) == 0, "write 6");
    barrier();
    CHECK(!pl_path_exists(tmp), "stale tmp removed by the next commit");
    char p6[4096];
    ckpt_path_for_step(p6, sizeof p6, dir, 6);
    if (g_rank == 0) {
        hid_t f = H5Fopen(p6, H5F_ACC_RDONLY, H5P_DEFAULT);   // serial open: locate the data
        hid_t d = H5Dopen2(f, "/params/big", H5P_DEFAULT);
        haddr_t off = H5Dget_offset(d);
        H5Dclose(d);
        H5Fclose(f);
        CHECK(off != HADDR_UNDEF, "dataset offset");
        int fd = open(p6, O_RDWR);
        unsigned char byte = 0;
        off_t at = (off_t)off + 4 * 123457 + 2;
        CHECK(fd >= 0 && pread(fd, &byte, 1, at) == 1, "pread");
        byte ^= 0x10;
        CHECK(fd >= 0 && pwrite(fd, &byte, 1, at) == 1, "pwrite");
        if (fd >= 0) close(fd);
    }
    barrier();
    r = NULL;
    pl_quiet_begin();
    rc = ckpt_open(&r, p6, MPI_COMM_WORLD, CKPT_VERIFY);
    pl_quiet_end();
    CHECK(rc == PL_ECORRUPT && strstr(pl_last_error(), "ckpt_00000006.h5") && strstr(pl_last_error(), "/params/big") &&
              strstr(pl_last_error(), "checksum mismatch"), "flipped reported on every rank: %s", pl_last_error());
    if (g_rank == 0) printf("flipped_message: %s\n", pl_last_error());
    // Unverified open, then the strict read catches it too.
    r = NULL;
    CHECK(ckpt_open(&r, p6, MPI_COMM_WORLD, 0) == 0, "open unverified");
    tset_make(&got, 0, 0);
    pl_quiet_begin();
    if (r) CHECK(ckpt_read_tensors(r, "/params", got.t, NT) == PL_ECORRUPT && strstr(pl_last_error(), "/params/big"), "read: %s",
                 pl_last_error());
    pl_quiet_end();
    ckpt_close(r);
    tset_free(&got);
    r = NULL;
    rc = ckpt_open_latest(&r, dir, MPI_COMM_WORLD, &skipped);
    CHECK(rc == 0 && r && ckpt_reader_step(r) == 4 && skipped == 2, "flipped+truncated: rc %d step %lld skipped %d", rc,
          r ? (long long)ckpt_reader_step(r) : -1LL, skipped);
    ckpt_close(r);

    // A well-formed file named like a checkpoint but without the complete flag is skipped too.
    char p7[4096];
    ckpt_path_for_step(p7, sizeof p7, dir, 7);
    if (g_rank == 0) {
        hid_t f = H5Fcreate(p7, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        hid_t sp = H5Screate(H5S_SCALAR), ty = H5Tcopy(H5T_C_S1);
        H5Tset_size(ty, H5T_VARIABLE);
        const char *fmt = "mp3d-checkpoint";
        hid_t a = H5Acreate2(f, "format", ty, sp, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, ty, &fmt);
        H5Aclose(a);
        int64_t one = 1;
        a = H5Acreate2(f, "format_version", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, H5T_NATIVE_INT64, &one);
        H5Aclose(a);
        H5Tclose(ty);
        H5Sclose(sp);
        CHECK(H5Fclose(f) >= 0, "incomplete file");
    }
    barrier();
    r = NULL;
    pl_quiet_begin();
    rc = ckpt_open(&r, p7, MPI_COMM_WORLD, CKPT_VERIFY);
    pl_quiet_end();
    CHECK(rc == PL_ECORRUPT && strstr(pl_last_error(), "ckpt_00000007.h5") && strstr(pl_last_error(), "not marked complete"),
          "incomplete: %d %s", rc, pl_last_error());
    rc = ckpt_open_latest(&r, dir, MPI_COMM_WORLD, &skipped);
    CHECK(rc == 0 && r && ckpt_reader_step(r) == 4 && skipped == 3, "incomplete+flipped+truncated: rc %d skipped %d", rc, skipped);
    ckpt_close(r);
    if (g_rank == 0) unlink(p7);

    // Nothing valid left -> ECORRUPT; empty folder -> ENOTFOUND.
    if (g_rank == 0) {
        char p[4096];
        for (int64_t s = 3; s <= 4; s++) {
            ckpt_path_for_step(p, sizeof p, dir, s);
            unlink(p);
        }
    }
    barrier();
    r = NULL;
    pl_quiet_begin();
    rc = ckpt_open_latest(&r, dir, MPI_COMM_WORLD, &skipped);
    pl_quiet_end();
    CHECK(rc == PL_ECORRUPT && !r && skipped == 2, "none valid: rc %d skipped %d", rc, skipped);
    char empty[4096];
    snprintf(empty, sizeof empty, "%s/none", dir);
    if (g_rank == 0) pl_mkdir_p(empty);
    barrier();
    CHECK(ckpt_open_latest(&r, empty, MPI_COMM_WORLD, NULL) == PL_ENOTFOUND && !r, "empty folder");
}

// Replicas that differ between ranks are refused on every rank, and nothing becomes visible.
static void test_divergent(const char *dir) {
    if (g_size < 2) return;
    float v[4] = {1, 2, 3, (float)(g_rank == 1)};
    ckpt_tensor t = {.name = "w", .ndim = 1, .shape = {4}, .data = v};
    ckpt_writer *w = NULL;
    CHECK(ckpt_writer_open(&w, dir, 50, MPI_COMM_WORLD) == 0, "open");
    pl_quiet_begin();
    int rc = ckpt_write_tensors(w, "/params", &t, 1);
    pl_quiet_end();
    CHECK(rc == PL_EINVAL && strstr(pl_last_error(), "/params/w") && strstr(pl_last_error(), "differs between ranks"),
          "divergence: %d %s", rc, pl_last_error());
    ckpt_writer_abort(w);
    barrier();
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/ckpt_00000050.h5.tmp", dir);
    CHECK(!exists(dir, 50) && !pl_path_exists(tmp), "aborted write left files");
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    pl_log_set_rank(g_rank);
    char dir[256], d1[300], d2[300], d3[300];
    snprintf(dir, sizeof dir, "ckpt_test_np%d", g_size);
    snprintf(d1, sizeof d1, "%s/rt", dir);
    snprintf(d2, sizeof d2, "%s/rec", dir);
    snprintf(d3, sizeof d3, "%s/div", dir);
    if (g_rank == 0) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0) fprintf(stderr, "cannot clean %s\n", dir);
    }
    barrier();
    double t0 = pl_time();
    test_checksum_reference();
    test_round_trip(d1);
    test_recovery(d2);
    test_divergent(d3);
    int total = 0;
    MPI_Allreduce(&g_fail, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (g_rank == 0) printf("test_ckpt ranks:%d failures:%d seconds:%.2f\n", g_size, total, pl_time() - t0);
    if (g_rank == 0 && total == 0) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0) fprintf(stderr, "cannot clean %s\n", dir);
    }
    MPI_Finalize();
    return total ? 1 : 0;
}
