#pragma once
// parallel: a minimal parallel-for over POSIX threads for the non-GEMM loops of nn/ (vol2col,
// col2vol, normalisation, pooling). The thread count follows OpenBLAS's
// (openblas_get_num_threads) unless nn_set_threads overrides it, so one knob sets both.
// Work is split in contiguous index ranges; small loops run inline on the caller.

#include <stdint.h>

typedef void (*nn_range_fn)(void *ctx, int64_t lo, int64_t hi);

// 0 = follow OpenBLAS (default); n >= 1 fixes the count.
void nn_set_threads(int n);
int nn_get_threads(void);
// Runs fn(ctx, lo, hi) over a partition of [0, n); inline when n < 2*min_per_thread or one
// thread. fn must be safe to run concurrently on disjoint ranges.
void nn_parallel_for(int64_t n, int64_t min_per_thread, nn_range_fn fn, void *ctx);

// Sets n floats of p to 0 with the pool (large gradient buffers: one thread's memset cannot
// saturate the memory bandwidth of a socket).
void nn_parallel_zero(float *p, int64_t n);

// Holds OpenBLAS at one thread while the pool keeps its count (the one nn_get_threads gave before
// the hold), for code that splits its own GEMMs over the pool (nn/conv3d.c's gemm engine: each
// chunk calls sgemm on a block of columns, the same bits as one call). Small GEMMs, as in narrow
// networks, run slower on OpenBLAS's threads than on one (its threads also spin between calls,
// on the cores the pool needs). Calls nest; only the outermost hold/release acts.
typedef struct {
    int blas_threads, pool_threads, active;
} nn_blas_hold;
nn_blas_hold nn_blas_single(void);
void nn_blas_restore(nn_blas_hold h);
