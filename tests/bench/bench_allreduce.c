// bench_allreduce: the gradient all-reduce of data-parallel training (issue 15 item 5), measured
// the two ways the trainer could do it on float32 buffers of the model sizes that matter:
//   one    = one blocking MPI_Allreduce(SUM) of the whole buffer, in place;
//   bucket = the trainer's own path, stages/train/gradsync.c: the buffer cut into a grid of
//            buckets of B MB counted from the end, one MPI_Iallreduce per bucket, then Waitall
//            (gradsync_begin + gradsync_finish, i.e. no backward to overlap with);
//   overlap (--overlap-ms T) = the same buckets started as an emulated backward pass of T ms of
//            busy CPU work reports the gradients ready in 1 MB ranges (about one layer each) from
//            the end of the buffer (as nn/ does, calling gradsync_ready, which also lets Open MPI
//            progress), then gradsync_finish: the wait left after the backward is the part not hidden.
// Per row: best and median wall seconds over the ranks (MAX over ranks of each repetition, after
// one warm-up), this rank-0 process's CPU seconds (CLOCK_PROCESS_CPUTIME_ID) in the best
// repetition, bus bandwidth 2(n-1)/n * bytes / t (the NCCL-tests convention: the bytes each rank
// sends and receives in a ring all-reduce) and the load average before/after the row.
// Every repetition checks the reduced values (rank r fills x[i] = (i % 7) + r, so the SUM is
// n*(i % 7) + n(n-1)/2, exact in float32) and the bucket count; any mismatch fails the run.
// Usage: mpirun -np 2 bench_allreduce [--model NAME:FLOATS]... [--bucket-mb MB]... [--reps R]
//                                     [--overlap-ms T] [--label L] [--json OUT]
// Defaults: --model tiny:100000 --bucket-mb 1 --bucket-mb 25 --bucket-mb 100 --reps 5.
// Not a test by itself; tests/scale.cmake runs it at 2 ranks with tiny sizes (the checks assert).
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/pl.h"
#include "stages/train/gradsync.h"

#define MAX_ITEMS 16

typedef struct {
    char name[64];
    size_t floats;
} model_size;

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void loadavg(char *out, size_t n) {
    out[0] = 0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f) return;
    double a = 0, b = 0, c = 0;
    if (fscanf(f, "%lf %lf %lf", &a, &b, &c) == 3) snprintf(out, n, "%.2f %.2f %.2f", a, b, c);
    fclose(f);
}

static void fill(float *x, size_t n, int rank) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(i % 7) + (float)rank;
}

// Number of elements that differ from the expected SUM over `size` ranks (all ranks agree on it).
static long long check(const float *x, size_t n, int size, MPI_Comm comm) {
    const float base = (float)size * (float)(size - 1) / 2.0f;
    long long bad = 0;
    for (size_t i = 0; i < n; i++)
        if (x[i] != (float)size * (float)(i % 7) + base) {
            if (bad < 3)
                fprintf(stderr, "bench_allreduce: x[%zu] = %g, expected %g\n", i, (double)x[i],
                        (double)((float)size * (float)(i % 7) + base));
            bad++;
        }
    long long all = 0;
    MPI_Allreduce(&bad, &all, 1, MPI_LONG_LONG, MPI_SUM, comm);
    return all;
}

// Busy CPU work for about `sec` seconds (the emulated backward of one bucket-sized slice).
static double spin(double sec) {
    volatile double acc = 0;
    const double t_end = pl_time() + sec;
    while (pl_time() < t_end)
        for (int k = 0; k < 2000; k++) acc = acc * 0.999999 + 1e-9;
    return acc;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    model_size models[MAX_ITEMS];
    double buckets[MAX_ITEMS];
    int nmodels = 0, nbuckets = 0, reps = 5;
    double overlap_ms = 0;
    const char *label = "", *json = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const int more = i + 1 < argc;
        if (!strcmp(a, "--model") && more && nmodels < MAX_ITEMS) {
            const char *v = argv[++i], *colon = strchr(v, ':');
            long long f = colon ? atoll(colon + 1) : 0;
            if (!colon || f < 1 || colon - v >= 64) {
                if (rank == 0) fprintf(stderr, "bench_allreduce: --model %s (expected NAME:FLOATS, FLOATS >= 1)\n", v);
                MPI_Finalize();
                return 2;
            }
            snprintf(models[nmodels].name, sizeof models[nmodels].name, "%.*s", (int)(colon - v), v);
            models[nmodels++].floats = (size_t)f;
        } else if (!strcmp(a, "--bucket-mb") && more && nbuckets < MAX_ITEMS) {
            buckets[nbuckets] = atof(argv[++i]);
            if (!(buckets[nbuckets] > 0)) {
                if (rank == 0) fprintf(stderr, "bench_allreduce: --bucket-mb %s (must be > 0)\n", argv[i]);
                MPI_Finalize();
                return 2;
            }
            nbuckets++;
        } else if (!strcmp(a, "--reps") && more) reps = atoi(argv[++i]);
        else if (!strcmp(a, "--overlap-ms") && more) overlap_ms = atof(argv[++i]);
        else if (!strcmp(a, "--label") && more) label = argv[++i];
        else if (!strcmp(a, "--json") && more) json = argv[++i];
        else {
            if (rank == 0)
                fprintf(stderr, "usage: mpirun -np N bench_allreduce [--model NAME:FLOATS]... [--bucket-mb MB]... "
                                "[--reps R] [--overlap-ms T] [--label L] [--json OUT]\n");
            MPI_Finalize();
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    if (!nmodels) models[nmodels++] = (model_size){"tiny", 100000};
    if (!nbuckets) buckets[nbuckets++] = 1, buckets[nbuckets++] = 25, buckets[nbuckets++] = 100;
    const char *btl = getenv("OMPI_MCA_btl");
    if (rank == 0)
        printf("allreduce ranks:%d label:%s btl:%s reps:%d overlap_ms:%g\n", size, label, btl ? btl : "default", reps,
               overlap_ms);
    FILE *jf = NULL;
    if (rank == 0 && json && !(jf = fopen(json, "a"))) fprintf(stderr, "bench_allreduce: cannot append to %s\n", json);
    int failed = 0;
    double *times = pl_malloc(sizeof(double) * (size_t)reps, "times");
    PL_ASSERT(times);
    for (int m = 0; m < nmodels; m++) {
        const size_t n = models[m].floats;
        float *x = pl_malloc(n * sizeof(float), "buffer");
        PL_ASSERT(x);
        // variant -1 = one MPI_Allreduce; then one per bucket size, plain and (if asked) overlapped
        const int nvar = 1 + nbuckets * (overlap_ms > 0 ? 2 : 1);
        for (int v = 0; v < nvar; v++) {
            const int bi = v == 0 ? -1 : (v - 1) % nbuckets;
            const int overlap = v > nbuckets;
            const size_t bfloats = bi < 0 ? n : PL_MAX((size_t)1, (size_t)(buckets[bi] * 1e6 / 4.0));
            const int expect_buckets = bi < 0 ? 1 : (int)((n + bfloats - 1) / bfloats);
            gradsync g;
            if (gradsync_init(&g, MPI_COMM_WORLD, x, n, bfloats)) MPI_Abort(MPI_COMM_WORLD, 1);
            char load0[64], load1[64];
            loadavg(load0, sizeof load0);
            double best = 1e30, best_cpu = 0, wait_best = 0;
            int nb = 1;
            for (int r = -1; r < reps; r++) {  // r = -1: warm-up
                fill(x, n, rank);
                MPI_Barrier(MPI_COMM_WORLD);
                const double c0 = cpu_now(), t0 = pl_time();
                double wait = 0;
                if (bi < 0) {
                    MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
                } else {
                    gradsync_begin(&g);
                    if (overlap) {  // backward: ready ranges of 1 MB (about a layer) from the end, T spread evenly
                        const size_t piece = 250000;
                        for (size_t end = n; end > 0;) {
                            size_t lo = end > piece ? end - piece : 0;
                            spin(overlap_ms * 1e-3 * (double)(end - lo) / (double)n);
                            gradsync_ready(&g, lo, end - lo);
                            end = lo;
                        }
                    }
                    gradsync_finish(&g);
                    wait = g.wait_s;
                    nb = g.nbuckets;
                }
                double dt = pl_time() - t0, dcpu = cpu_now() - c0, tmax = 0, wmax = 0;
                MPI_Allreduce(&dt, &tmax, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
                MPI_Allreduce(&wait, &wmax, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
                long long bad = check(x, n, size, MPI_COMM_WORLD);
                if (bad || (bi >= 0 && size > 1 && nb != expect_buckets)) {
                    if (rank == 0)
                        fprintf(stderr, "bench_allreduce: %s mode %s bucket %g MB: %lld wrong values, %d buckets (expected %d)\n",
                                models[m].name, bi < 0 ? "one" : overlap ? "overlap" : "bucket", bi < 0 ? 0 : buckets[bi], bad, nb,
                                expect_buckets);
                    failed = 1;
                }
                if (r < 0) continue;
                times[r] = tmax;
                if (tmax < best) best = tmax, best_cpu = dcpu, wait_best = wmax;
            }
            loadavg(load1, sizeof load1);
            qsort(times, (size_t)reps, sizeof *times, cmp_double);
            const double med = times[reps / 2], bytes = (double)n * 4.0;
            const double busbw = size > 1 ? 2.0 * (size - 1) / size * bytes / best * 1e-9 : 0;
            const char *mode = bi < 0 ? "one" : overlap ? "overlap" : "bucket";
            if (rank == 0) {
                printf("row label:%s model:%s floats:%zu MB:%.1f mode:%s bucket_mb:%g buckets:%d best_s:%.5f median_s:%.5f "
                       "cpu_s:%.5f busbw_GBs:%.3f wait_s:%.5f overlap_ms:%g load_before:%s load_after:%s\n",
                       label, models[m].name, n, bytes * 1e-6, mode, bi < 0 ? 0 : buckets[bi], bi < 0 ? 1 : nb, best, med,
                       best_cpu, busbw, wait_best, overlap ? overlap_ms : 0, load0, load1);
                fflush(stdout);
                if (jf)
                    fprintf(jf,
                            "{\"label\": \"%s\", \"btl\": \"%s\", \"ranks\": %d, \"model\": \"%s\", \"floats\": %zu, "
                            "\"mode\": \"%s\", \"bucket_mb\": %g, \"buckets\": %d, \"best_s\": %.6f, \"median_s\": %.6f, "
                            "\"cpu_s\": %.6f, \"busbw_GBs\": %.4f, \"wait_s\": %.6f, \"overlap_ms\": %g, "
                            "\"load_before\": \"%s\", \"load_after\": \"%s\", \"reps\": %d}\n",
                            label, btl ? btl : "default", size, models[m].name, n, mode, bi < 0 ? 0 : buckets[bi],
                            bi < 0 ? 1 : nb, best, med, best_cpu, busbw, wait_best, overlap ? overlap_ms : 0, load0,
                            load1, reps);
            }
            gradsync_free(&g);
        }
        free(x);
    }
    free(times);
    if (jf) fclose(jf);
    if (rank == 0) printf("allreduce checks: %s\n", failed ? "FAILED" : "all values and bucket counts right");
    MPI_Finalize();
    return failed ? 1 : 0;
}
