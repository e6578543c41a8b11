#pragma once
// Strided 2-D float transposes (nn/transpose.c).

#include <stdint.h>

// dst[c * ds + r] = src[r * ss + c] (add: +=) for r < rows, c < cols. stream: dst is not read
// before it is overwritten and is too large to stay in cache, so (without add, with AVX2) it is
// written with streaming stores: with dst and ds 8-float aligned 16 rows at a time, so that every
// destination row gets whole 64-byte lines; with a contiguous dst (ds == rows) through a
// cache-resident buffer. The caller then runs nn_transpose_fence before another thread reads dst
// (once per batch of calls: a fence per call costs more than it saves). Same results either way.
void nn_transpose(const float *src, int64_t ss, float *dst, int64_t ds, int64_t rows, int64_t cols, int add,
                  int stream);
// Orders this thread's streaming stores before its later stores (sfence).
void nn_transpose_fence(void);
