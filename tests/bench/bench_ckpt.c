// bench_ckpt: checkpoint write speed beside `dd ... conv=fsync` of the same size, measured in
// the same run, interleaved sample by sample. The checkpoint is a ResNet3D-18 state_dict
// (33.7M parameters + BatchNorm buffers = 135 MB; with --momentum also the SGD momentum, 270 MB).
// Each sample also records the CPU seconds other processes used meanwhile (from /proc/stat,
// minus this job's ranks and its dd child), so noisy samples can be told apart.
//   mpirun -np N bench_ckpt [--dir DIR] [--reps R] [--momentum]
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/fileio.h"
#include "io/h5ckpt.h"
#include "nn/pl.h"

enum { MAXT = 128 };
typedef struct {
    ckpt_tensor t[MAXT];
    char names[MAXT][96];
    int n;
    float *buf;
    int64_t numel;
} model;

static void add(model *m, const char *name, int ndim, int64_t a, int64_t b, int64_t c, int64_t d, int64_t e) {
    PL_ASSERT(m->n < MAXT);
    ckpt_tensor *t = &m->t[m->n];
    snprintf(m->names[m->n], sizeof m->names[0], "%s", name);
    t->name = m->names[m->n];
    t->ndim = ndim;
    int64_t s[5] = {a, b, c, d, e};
    for (int i = 0; i < ndim; i++) t->shape[i] = s[i];
    m->numel += ckpt_tensor_numel(t);
    m->n++;
}

static void add_conv(model *m, const char *name, int64_t oc, int64_t ic, int64_t k) {
    char n[96];
    if (snprintf(n, sizeof n, "%s.weight", name) >= (int)sizeof n) return;
    add(m, n, 5, oc, ic, k, k, k);
}
static void add_bn(model *m, const char *name, int64_t c, int buffers) {
    char n[96];
    static const char *const p[] = {"weight", "bias"}, *const b[] = {"running_mean", "running_var"};
    for (int i = 0; i < 2; i++) {
        if (snprintf(n, sizeof n, "%s.%s", name, buffers ? b[i] : p[i]) >= (int)sizeof n) return;
        add(m, n, 1, c, 0, 0, 0, 0);
    }
    if (buffers) {
        snprintf(n, sizeof n, "%s.num_batches_tracked", name);
        add(m, n, 0, 0, 0, 0, 0, 0);
    }
}

// ResNet3D-18 (DESIGN.md): params (buffers = 0) or BN buffers (buffers = 1), PyTorch names.
static void resnet3d18(model *m, int buffers) {
    const int64_t w[4] = {64, 128, 256, 512};
    if (!buffers) add_conv(m, "conv1", 64, 1, 7);
    add_bn(m, "bn1", 64, buffers);
    int64_t in = 64;
    for (int s = 0; s < 4; s++)
        for (int b = 0; b < 2; b++) {
            char p[64], n[96];
            snprintf(p, sizeof p, "layer%d.%d", s + 1, b);
            snprintf(n, sizeof n, "%s.conv1", p);
            if (!buffers) add_conv(m, n, w[s], in, 3);
            snprintf(n, sizeof n, "%s.bn1", p);
            add_bn(m, n, w[s], buffers);
            snprintf(n, sizeof n, "%s.conv2", p);
            if (!buffers) add_conv(m, n, w[s], w[s], 3);
            snprintf(n, sizeof n, "%s.bn2", p);
            add_bn(m, n, w[s], buffers);
            if (b == 0 && s > 0) {
                snprintf(n, sizeof n, "%s.downsample.0", p);
                if (!buffers) add_conv(m, n, w[s], in, 1);
                snprintf(n, sizeof n, "%s.downsample.1", p);
                add_bn(m, n, w[s], buffers);
            }
            in = w[s];
        }
    if (!buffers) {
        add(m, "fc.weight", 2, 1000, 512, 0, 0, 0);
        add(m, "fc.bias", 1, 1000, 0, 0, 0, 0);
    }
}

static void model_alloc(model *m, uint64_t seed) {
    m->buf = malloc(sizeof(float) * (size_t)m->numel);
    PL_ASSERT(m->buf);
    pl_rng r;
    pl_rng_seed(&r, seed);
    for (int64_t i = 0; i < m->numel; i++) m->buf[i] = (float)(pl_rng_uniform(&r) - 0.5);
    float *p = m->buf;
    for (int i = 0; i < m->n; i++) {
        m->t[i].data = p;
        p += ckpt_tensor_numel(&m->t[i]);
    }
}

static double cpu_self(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + 1e-6 * (double)u.ru_utime.tv_usec + (double)u.ru_stime.tv_sec +
           1e-6 * (double)u.ru_stime.tv_usec;
}
static double cpu_children(void) {
    struct rusage u;
    getrusage(RUSAGE_CHILDREN, &u);
    return (double)u.ru_utime.tv_sec + 1e-6 * (double)u.ru_utime.tv_usec + (double)u.ru_stime.tv_sec +
           1e-6 * (double)u.ru_stime.tv_usec;
}
// Busy CPU seconds of the whole machine so far (user+nice+system+irq+softirq+steal).
static double cpu_machine(void) {
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[8] = {0};
    if (!f) return 0;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 8) return 0;
    double hz = (double)sysconf(_SC_CLK_TCK);
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / hz;
}

typedef struct {
    double wall, other_cpu;
} sample;

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Runs fn on all ranks between barriers; wall time and other processes' CPU seconds.
typedef int (*bench_fn)(void *ctx);
static sample measure(bench_fn fn, void *ctx, int rank) {
    MPI_Barrier(MPI_COMM_WORLD);
    double m0 = rank == 0 ? cpu_machine() : 0, s0 = cpu_self(), c0 = cpu_children(), t0 = pl_time();
    int rc = fn(ctx);
    MPI_Barrier(MPI_COMM_WORLD);
    double t1 = pl_time(), mine = cpu_self() - s0 + cpu_children() - c0, ours = 0;
    MPI_Reduce(&mine, &ours, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rc) {
        fprintf(stderr, "[rank %d] benchmark step failed: %s\n", rank, pl_last_error());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    sample s = {t1 - t0, 0};
    if (rank == 0) s.other_cpu = cpu_machine() - m0 - ours;
    return s;
}

typedef struct {
    const char *dir;
    model *params, *buffers, *momentum;
    int64_t step, file_bytes;
    int rank;
    const float *src;
} ctx_t;

static int do_ckpt(void *p) {
    ctx_t *c = p;
    ckpt_writer *w = NULL;
    int rc = ckpt_writer_open(&w, c->dir, c->step++, MPI_COMM_WORLD);
    if (!rc) rc = ckpt_write_tensors(w, "/params", c->params->t, c->params->n);
    if (!rc) rc = ckpt_write_tensors(w, "/buffers", c->buffers->t, c->buffers->n);
    if (!rc && c->momentum) rc = ckpt_write_tensors(w, "/optim/momentum", c->momentum->t, c->momentum->n);
    ckpt_state st;
    ckpt_state_init(&st);
    st.step = c->step;
    if (!rc) rc = ckpt_write_state(w, &st);
    if (!rc) rc = ckpt_write_text(w, "config", "bench = true;\n");
    char path[4096];
    if (!rc) rc = ckpt_writer_commit(w, 1, path, sizeof path);
    else ckpt_writer_abort(w);
    if (!rc && c->rank == 0) {
        struct stat sb;
        if (stat(path, &sb) == 0) c->file_bytes = (int64_t)sb.st_size;
    }
    return rc;
}

static int do_dd(void *p) {
    ctx_t *c = p;
    if (c->rank != 0) return 0;
    char cmd[4400];
    long mb = (long)((c->file_bytes + (1 << 20) - 1) >> 20);
    snprintf(cmd, sizeof cmd, "dd if=/dev/zero of=%s/dd.bin bs=1M count=%ld conv=fsync status=none", c->dir, mb);
    int rc = system(cmd);
    return rc == 0 ? 0 : pl_fail(PL_EIO, "%s failed (%d)", cmd, rc);
}

// The same bytes from this process's memory: write(2) in 1 MiB calls + fsync, on rank 0.
static int do_cwrite(void *p) {
    ctx_t *c = p;
    if (c->rank != 0) return 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/cwrite.bin", c->dir);
    FILE *f = fopen(path, "wb");
    if (!f) return pl_fail(PL_EIO, "%s: cannot create", path);
    const char *b = (const char *)c->src;
    int64_t left = c->file_bytes;
    while (left > 0) {
        size_t n = (size_t)PL_MIN(left, (int64_t)1 << 20);
        if (fwrite(b, 1, n, f) != n) break;
        b += n;
        left -= (int64_t)n;
    }
    int ok = left == 0 && fflush(f) == 0 && fsync(fileno(f)) == 0;
    fclose(f);
    return ok ? 0 : pl_fail(PL_EIO, "%s: write failed", path);
}

static int do_load(void *p) {
    ctx_t *c = p;
    ckpt_reader *r = NULL;
    int rc = ckpt_open_latest(&r, c->dir, MPI_COMM_WORLD, NULL);
    if (!rc) rc = ckpt_read_tensors(r, "/params", c->params->t, c->params->n);
    if (!rc) rc = ckpt_read_tensors(r, "/buffers", c->buffers->t, c->buffers->n);
    if (!rc && c->momentum) rc = ckpt_read_tensors(r, "/optim/momentum", c->momentum->t, c->momentum->n);
    ckpt_close(r);
    return rc;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    pl_log_set_rank(rank);
    pl_log_set_level(PL_WARN);
    const char *dir = "bench_ckpt_dir";
    int reps = 5, with_mom = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--momentum")) with_mom = 1;
    }
    if (reps < 1 || reps > 50) reps = 5;
    model P = {0}, B = {0}, M = {0};
    resnet3d18(&P, 0);
    resnet3d18(&B, 1);
    model_alloc(&P, 1);
    model_alloc(&B, 2);
    if (with_mom) {
        resnet3d18(&M, 0);
        model_alloc(&M, 3);
    }
    if (rank == 0) pl_mkdir_p(dir);
    ctx_t c = {.dir = dir, .params = &P, .buffers = &B, .momentum = with_mom ? &M : NULL, .step = 1, .rank = rank, .src = P.buf};
    const int64_t tensor_bytes = (int64_t)sizeof(float) * (P.numel + B.numel + (with_mom ? M.numel : 0));

    // Checksum speed (one core), for the record.
    double t0 = pl_time();
    volatile uint64_t h = ckpt_checksum(P.buf, sizeof(float) * (size_t)P.numel);
    double cks = pl_time() - t0;
    (void)h;

    measure(do_ckpt, &c, rank);   // warm-up; also gives the file size for the references
    MPI_Bcast(&c.file_bytes, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
    double *wc = calloc((size_t)reps, sizeof(double)), *wd = calloc((size_t)reps, sizeof(double));
    double *ww = calloc((size_t)reps, sizeof(double)), *wl = calloc((size_t)reps, sizeof(double));
    if (rank == 0)
        printf("bench_ckpt ranks:%d tensors:%d tensor_MB:%.1f file_MB:%.1f checksum_GB_per_s:%.2f\n", size, P.n + B.n + (with_mom ? M.n : 0),
               (double)tensor_bytes / 1e6, (double)c.file_bytes / 1e6, (double)P.numel * 4 / cks / 1e9);
    for (int r = 0; r < reps; r++) {
        sample sd = measure(do_dd, &c, rank);
        sample sw = measure(do_cwrite, &c, rank);
        sample sc = measure(do_ckpt, &c, rank);
        sample sl = measure(do_load, &c, rank);
        wd[r] = sd.wall;
        ww[r] = sw.wall;
        wc[r] = sc.wall;
        wl[r] = sl.wall;
        if (rank == 0)
            printf("sample:%d ckpt_s:%.3f (%.0f MB/s, other_cpu_s:%.2f) dd_s:%.3f (%.0f MB/s, other_cpu_s:%.2f) "
                   "write_fsync_s:%.3f (%.0f MB/s) load_verify_s:%.3f\n",
                   r, sc.wall, (double)c.file_bytes / 1e6 / sc.wall, sc.other_cpu, sd.wall,
                   (double)c.file_bytes / 1e6 / sd.wall, sd.other_cpu, sw.wall, (double)c.file_bytes / 1e6 / sw.wall, sl.wall);
        fflush(stdout);
    }
    if (rank == 0) {
        // Medians, then minima (the least disturbed sample of each, on a shared machine).
        double mc = median(wc, reps), md = median(wd, reps), mw = median(ww, reps), ml = median(wl, reps);
        double bc = wc[0], bd = wd[0], bw = ww[0];   // sorted by median()
        double mb = (double)c.file_bytes / 1e6;
        printf("median ranks:%d ckpt_MB_per_s:%.0f dd_MB_per_s:%.0f write_fsync_MB_per_s:%.0f ckpt_vs_dd:%.2f "
               "load_verify_MB_per_s:%.0f\n",
               size, mb / mc, mb / md, mb / mw, md / mc, mb / ml);
        printf("best ranks:%d ckpt_MB_per_s:%.0f dd_MB_per_s:%.0f write_fsync_MB_per_s:%.0f ckpt_vs_dd:%.2f\n", size, mb / bc,
               mb / bd, mb / bw, bd / bc);
        char p[4200];
        snprintf(p, sizeof p, "%s/dd.bin", dir);
        unlink(p);
        snprintf(p, sizeof p, "%s/cwrite.bin", dir);
        unlink(p);
        ckpt_path_for_step(p, sizeof p, dir, c.step - 1);
        unlink(p);
        snprintf(p, sizeof p, "%s/latest", dir);
        unlink(p);
        rmdir(dir);
    }
    free(wc);
    free(wd);
    free(ww);
    free(wl);
    free(P.buf);
    free(B.buf);
    free(M.buf);
    MPI_Finalize();
    return 0;
}
