#pragma once
// dims: the 5-D shape (N, C, D, H, W) every nn/ layer takes, row-major NCDHW float32.
// A 2-D map is D = 1; a (N, K) matrix is C = K, D = H = W = 1. Counts are int64_t
// because one activation of a 3D network can pass INT_MAX elements.

#include <stdint.h>

typedef struct {
    int64_t n, c, d, h, w;
} nn_dims;

static inline nn_dims nn_dims_make(int64_t n, int64_t c, int64_t d, int64_t h, int64_t w) {
    nn_dims r = {n, c, d, h, w};
    return r;
}
static inline int64_t nn_dims_count(nn_dims s) { return s.n * s.c * s.d * s.h * s.w; }
static inline int64_t nn_dims_spatial(nn_dims s) { return s.d * s.h * s.w; }
