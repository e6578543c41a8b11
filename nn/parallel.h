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
