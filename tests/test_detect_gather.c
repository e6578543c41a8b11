// test_detect_gather: det_gather (MPI_Gatherv / MPI_Allgatherv of variable detection counts)
// at any rank count: rank r holds r + 2 detections, except rank 1 which holds none; rank 0 (and,
// in the all-gather, every rank) must receive them concatenated in rank order, bit for bit.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/pl.h"
#include "stages/train/det_common.h"

static int count_of(int r) { return r == 1 ? 0 : r + 2; }

static void make_det(froc_det *d, int r, int j) {
    memset(d, 0, sizeof *d);
    snprintf(d->file, sizeof d->file, "%06d_01_01_%03d.png", r, j);
    for (int k = 0; k < 4; k++) d->box[k] = r * 100 + j * 10 + k + 0.125;
    d->score = 1.0 / (1 + r + j);
    d->line = r * 1000 + j;
}

static int check(const froc_det *all, int64_t n, int size) {
    int64_t want = 0, i = 0;
    for (int r = 0; r < size; r++) want += count_of(r);
    if (n != want) {
        printf("FAIL gathered %lld detections, expected %lld\n", (long long)n, (long long)want);
        return 1;
    }
    int bad = 0;
    for (int r = 0; r < size; r++)
        for (int j = 0; j < count_of(r); j++, i++) {
            froc_det e;
            make_det(&e, r, j);
            bad += memcmp(&e, &all[i], sizeof e) != 0;
        }
    return bad;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    pl_log_set_rank(rank);
    froc_det mine[16];
    for (int j = 0; j < count_of(rank); j++) make_det(&mine[j], rank, j);
    int fail = 0;
    froc_det *all = NULL;
    int64_t n = 0;
    if (det_gather(&all, &n, mine, count_of(rank), MPI_COMM_WORLD, 0)) fail++;
    if (rank == 0) {
        int b = check(all, n, size);
        printf("%s gather to rank 0 at %d ranks: %lld detections, %d mismatched\n", b ? "FAIL" : "ok  ", size, (long long)n, b);
        fail += b;
    } else if (all || n) {
        printf("FAIL rank %d received data from a gather to rank 0\n", rank);
        fail++;
    }
    free(all);
    if (det_gather(&all, &n, mine, count_of(rank), MPI_COMM_WORLD, -1)) fail++;
    int b = check(all, n, size);
    if (rank == 0 || b) printf("%s all-gather at %d ranks (rank %d): %lld detections, %d mismatched\n", b ? "FAIL" : "ok  ", size, rank,
                               (long long)n, b);
    fail += b;
    free(all);
    MPI_Allreduce(MPI_IN_PLACE, &fail, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf("test_detect_gather: %s (%d failed)\n", fail ? "FAILED" : "passed", fail);
    MPI_Finalize();
    return fail ? 1 : 0;
}
