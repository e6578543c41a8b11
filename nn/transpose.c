// transpose: strided 2-D float transposes, the kernel of conv3d_dnnl's own layout reorders and of
// the kernel-taps weight gradient's transpose-add (nn/conv3d.c). AVX2 8x8 register blocks where
// the CPU has AVX2 (checked once), plain loops otherwise; the results are the same bits.
#include "nn/transpose.h"

#include <immintrin.h>
#include <stdint.h>

// dst[c * ds + r] (+)= src[r * ss + c] for r < rows, c < cols: a transpose with row strides.
static void tr_ref(const float *src, int64_t ss, float *dst, int64_t ds, int64_t rows, int64_t cols,
                             int add) {
    for (int64_t c = 0; c < cols; c++)
        for (int64_t r = 0; r < rows; r++) {
            const float v = src[r * ss + c];
            dst[c * ds + r] = add ? dst[c * ds + r] + v : v;
        }
}

// One 8x8 block of floats transposed in AVX registers (unpack / shuffle / permute): o[i] holds
// column i of the 8 rows at s (row stride ss).
__attribute__((target("avx2"))) static inline void tr_8x8_regs(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4,
                                                                  __m256 a5, __m256 a6, __m256 a7, __m256 o[8]) {
    __m256 t0 = _mm256_unpacklo_ps(a0, a1), t1 = _mm256_unpackhi_ps(a0, a1);
    __m256 t2 = _mm256_unpacklo_ps(a2, a3), t3 = _mm256_unpackhi_ps(a2, a3);
    __m256 t4 = _mm256_unpacklo_ps(a4, a5), t5 = _mm256_unpackhi_ps(a4, a5);
    __m256 t6 = _mm256_unpacklo_ps(a6, a7), t7 = _mm256_unpackhi_ps(a6, a7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    o[0] = _mm256_permute2f128_ps(u0, u4, 0x20), o[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    o[2] = _mm256_permute2f128_ps(u2, u6, 0x20), o[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    o[4] = _mm256_permute2f128_ps(u0, u4, 0x31), o[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    o[6] = _mm256_permute2f128_ps(u2, u6, 0x31), o[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

__attribute__((target("avx2"))) static inline void tr_8x8(const float *s, int64_t ss, __m256 o[8]) {
    tr_8x8_regs(_mm256_loadu_ps(s), _mm256_loadu_ps(s + ss), _mm256_loadu_ps(s + 2 * ss), _mm256_loadu_ps(s + 3 * ss),
                 _mm256_loadu_ps(s + 4 * ss), _mm256_loadu_ps(s + 5 * ss), _mm256_loadu_ps(s + 6 * ss),
                 _mm256_loadu_ps(s + 7 * ss), o);
}

// The same for the first n < 8 columns only (lanes n.. of o[i] are 0; nothing beyond is read).
__attribute__((target("avx2"))) static inline void tr_8x8_part(const float *s, int64_t ss, int n, __m256 o[8]) {
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    tr_8x8_regs(_mm256_maskload_ps(s, m), _mm256_maskload_ps(s + ss, m), _mm256_maskload_ps(s + 2 * ss, m),
                 _mm256_maskload_ps(s + 3 * ss, m), _mm256_maskload_ps(s + 4 * ss, m), _mm256_maskload_ps(s + 5 * ss, m),
                 _mm256_maskload_ps(s + 6 * ss, m), _mm256_maskload_ps(s + 7 * ss, m), o);
}

// The transpose in 8x8 blocks, edges by the loop above.
__attribute__((target("avx2"))) static void tr_avx2(const float *src, int64_t ss, float *dst, int64_t ds,
                                                               int64_t rows, int64_t cols, int add) {
    const int64_t r8 = rows / 8 * 8, c8 = cols / 8 * 8;
    for (int64_t r0 = 0; r0 < r8; r0 += 8)
        for (int64_t c0 = 0; c0 < c8; c0 += 8) {
            __m256 o[8];
            tr_8x8(src + r0 * ss + c0, ss, o);
            float *d = dst + c0 * ds + r0;
            for (int i = 0; i < 8; i++)
                _mm256_storeu_ps(d + i * ds, add ? _mm256_add_ps(_mm256_loadu_ps(d + i * ds), o[i]) : o[i]);
        }
    if (c8 < cols) tr_ref(src + c8, ss, dst + c8 * ds, ds, r8, cols - c8, add);
    if (r8 < rows) tr_ref(src + r8 * ss, ss, dst + r8, ds, rows - r8, cols, add);
}

// The same for a destination that is not read before it is overwritten and too large to stay in
// cache: 16 source rows at a time, so that every destination row gets 16 floats (a 64-byte line)
// by two adjacent streaming stores, which skip the read-for-ownership of the line. On the Zen 4
// this ran the 512x512x27 weight reorder in 3.1 ms against 7.1 (regular stores). Needs dst and
// ds 8-float aligned; the last < 8 columns by masked loads; rows beyond the last 16 go through the
// regular code.
__attribute__((target("avx2"))) static void tr_stream(const float *src, int64_t ss, float *dst, int64_t ds,
                                                                 int64_t rows, int64_t cols) {
    const int64_t r16 = rows / 16 * 16, c8 = cols / 8 * 8;
    for (int64_t r0 = 0; r0 < r16; r0 += 16) {
        for (int64_t c0 = 0; c0 < c8; c0 += 8) {
            __m256 lo[8], hi[8];
            tr_8x8(src + r0 * ss + c0, ss, lo);
            tr_8x8(src + (r0 + 8) * ss + c0, ss, hi);
            float *d = dst + c0 * ds + r0;
            for (int i = 0; i < 8; i++) {
                _mm256_stream_ps(d + i * ds, lo[i]);
                _mm256_stream_ps(d + i * ds + 8, hi[i]);
            }
        }
        if (c8 < cols) {
            __m256 lo[8], hi[8];
            const int n = (int)(cols - c8);
            tr_8x8_part(src + r0 * ss + c8, ss, n, lo);
            tr_8x8_part(src + (r0 + 8) * ss + c8, ss, n, hi);
            float *d = dst + c8 * ds + r0;
            for (int i = 0; i < n; i++) {
                _mm256_stream_ps(d + i * ds, lo[i]);
                _mm256_stream_ps(d + i * ds + 8, hi[i]);
            }
        }
    }
    if (r16 < rows) tr_avx2(src + r16 * ss, ss, dst + r16, ds, rows - r16, cols, 0);
}

// A contiguous destination (ds == rows) whose rows do not start on 8-float boundaries (the
// kernel-taps dW: rows of 27 taps): 8-column chunks transposed into a cache-resident buffer, each
// chunk then copied out with streaming stores (regular ones for the partial 32-byte pieces at its
// two ends). nn_transpose sends here only destinations of >= TR_STAGE_MIN floats (the partial
// pieces at the ends of small ones cost more than the streaming saves) with rows <= TR_STAGE_ROWS.
// On the Zen 4, the kernel taps' C (512, 27, 512) into dW (512, 512, 27), within the ResNet3D-18
// step: 11 ms a step against 15 with regular stores and 21 for a scalar loop.
enum { TR_STAGE_FLOATS = 8192, TR_STAGE_ROWS = TR_STAGE_FLOATS / 8, TR_STAGE_MIN = 4096 };

__attribute__((target("avx2"))) static void tr_staged(const float *src, int64_t ss, float *dst, int64_t rows,
                                                       int64_t cols) {
    float stage[TR_STAGE_FLOATS] __attribute__((aligned(32)));
    const int64_t chunk = TR_STAGE_FLOATS / rows / 8 * 8;  // >= 8 (rows <= TR_STAGE_ROWS)
    for (int64_t c0 = 0; c0 < cols; c0 += chunk) {
        const int64_t nc = cols - c0 < chunk ? cols - c0 : chunk, n = nc * rows;
        tr_avx2(src + c0, ss, stage, rows, rows, nc, 0);
        float *d = dst + c0 * rows;
        int64_t head = (int64_t)((32 - (uintptr_t)d % 32) % 32) / 4;  // floats before a 32-byte boundary
        if (head > n) head = n;
        int64_t i = 0;
        for (; i < head; i++) d[i] = stage[i];
        for (; i + 8 <= n; i += 8) _mm256_stream_ps(d + i, _mm256_loadu_ps(stage + i));
        for (; i < n; i++) d[i] = stage[i];
    }
}

static int g_have_avx2 = -1;  // set on first use (the same value by any thread that races to it)

void nn_transpose_fence(void) { _mm_sfence(); }

void nn_transpose(const float *src, int64_t ss, float *dst, int64_t ds, int64_t rows, int64_t cols, int add, int stream) {
    if (g_have_avx2 < 0) g_have_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    if (g_have_avx2 && stream && !add && ds % 8 == 0 && (uintptr_t)dst % 32 == 0)
        tr_stream(src, ss, dst, ds, rows, cols);
    else if (g_have_avx2 && stream && !add && ds == rows && rows <= TR_STAGE_ROWS && rows * cols >= TR_STAGE_MIN)
        tr_staged(src, ss, dst, rows, cols);
    else if (g_have_avx2)
        tr_avx2(src, ss, dst, ds, rows, cols, add);
    else
        tr_ref(src, ss, dst, ds, rows, cols, add);
}
