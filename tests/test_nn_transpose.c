// test_nn_transpose: nn_transpose (nn/transpose.c) against the element-by-element definition
// dst[c * ds + r] (+)= src[r * ss + c], bit for bit: shapes around the 8x8 blocks and the
// 16-row streaming blocks (rows and columns 1..40, tails of 1..7), row strides wider than the
// matrix, add on a pre-filled destination, and stream on an aligned destination (the streaming
// path with its masked column tail), on a misaligned one or one with ds % 8 != 0 (the regular
// path), and on a contiguous one (ds == rows: large ones staged in chunks of 8 columns, with
// unaligned ends); elements
// of dst outside the matrix must stay untouched.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn/transpose.h"
#include "tests/test_util.h"

static double one(pl_rng *rng, int64_t rows, int64_t cols, int64_t spad, int64_t dpad, int add, int stream,
                  int misalign) {
    const int64_t ss = cols + spad, ds = rows + dpad, nd = cols * ds + 16;
    const size_t bytes = ((size_t)nd * sizeof(float) + 63) / 64 * 64;
    float *src = tu_alloc(rows * ss), *dst = aligned_alloc(64, bytes), *ref = aligned_alloc(64, bytes);
    PL_ASSERT(dst && ref);
    tu_fill(src, rows * ss, rng, -1, 1);
    tu_fill(dst, nd, rng, -1, 1);
    memcpy(ref, dst, (size_t)nd * sizeof(float));
    float *d = dst + misalign, *e = ref + misalign;
    for (int64_t c = 0; c < cols; c++)
        for (int64_t r = 0; r < rows; r++) e[c * ds + r] = add ? e[c * ds + r] + src[r * ss + c] : src[r * ss + c];
    nn_transpose(src, ss, d, ds, rows, cols, add, stream);
    nn_transpose_fence();
    const double bad = memcmp(dst, ref, (size_t)nd * sizeof(float)) != 0;
    free(src), free(dst), free(ref);
    return bad;
}

int main(void) {
    pl_rng rng;
    pl_rng_seed(&rng, 5);
    const int64_t sizes[] = {1, 3, 7, 8, 9, 15, 16, 17, 24, 27, 32, 40};
    const int n = sizeof sizes / sizeof sizes[0];
    double bad[5] = {0};  // plain, add, stream aligned (ds % 8 == 0), stream misaligned, contiguous
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            const int64_t r = sizes[i], c = sizes[j];
            bad[0] += one(&rng, r, c, j % 3, i % 2, 0, 0, 0);
            bad[1] += one(&rng, r, c, i % 3, j % 2, 1, 0, 0);
            bad[2] += one(&rng, r, c, j % 5, (8 - r % 8) % 8 + 8 * (i % 2), 0, 1, 0);  // ds % 8 == 0
            bad[3] += one(&rng, r, c, 1, (8 - r % 8) % 8, 0, 1, 3) + one(&rng, r, c, 0, r % 8 == 7 ? 2 : 1, 0, 1, 0);
            bad[4] += one(&rng, r, c, j % 3, 0, 0, 1, 0) + one(&rng, r, c, 0, 0, 0, 1, 1) + one(&rng, r, c, 1, 0, 0, 1, 3);
        }
    tu_check("transpose = definition, bit for bit (144 shapes)", bad[0], 0);
    tu_check("transpose with add = definition on a pre-filled dst", bad[1], 0);
    tu_check("streaming transpose (aligned dst, ds % 8 == 0) = definition", bad[2], 0);
    tu_check("stream asked on a misaligned dst or ds % 8 != 0 = definition", bad[3], 0);
    tu_check("stream on a contiguous dst (ds == rows, staged) = definition", bad[4], 0);
    // staged (>= 4096 floats, rows <= 1024): chunks of 8 columns and a partial last one, rows
    // with a tail; columns longer than the staging buffer allows (regular path)
    double st = 0;
    for (int m = 0; m < 3; m++)
        st += one(&rng, 27, 700, m, 0, 0, 1, m) + one(&rng, 588, 16, m, 0, 0, 1, m) + one(&rng, 1024, 9, 1, 0, 0, 1, m) +
              one(&rng, 1025, 5, 0, 0, 0, 1, m);
    tu_check("stream, contiguous dst: 27 x 700, 588 x 16, 1024 x 9, 1025 x 5", st, 0);
    return tu_finish("test_nn_transpose");
}
