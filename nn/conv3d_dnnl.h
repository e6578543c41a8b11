#pragma once
// conv3d_dnnl: nn/conv3d's forward and backward on oneDNN's convolution primitives (the library
// PyTorch's CPU convolutions use), with conv3d's contracts: plain NCDHW user buffers, backward
// accumulates into din (may be NULL), dw, db. Inside, oneDNN picks its blocked layouts and
// reorders in and out, as PyTorch does. Primitives are created once per (layer shape, input
// dims, threads) and cached. It does not choose engines (nn/conv3d.c does) and never falls back
// by itself: any failure is returned (pl_fail) and the caller uses the sgemm path. Built with
// MP3D_DNNL only; without it every call returns PL_EUNSUPPORTED. One call at a time.

#include "nn/conv3d.h"

// 1 when this build has oneDNN.
int conv3d_dnnl_available(void);
// out (N, OC, OD, OH, OW) = conv(in (N, IC, D, H, W)) + b. 0 or a negative pl_err.
int conv3d_dnnl_forward(float *out, const float *in, const conv3d *l, nn_dims in_dims);
// din += dL/din (skipped when din is NULL), l->dw += dL/dw, l->db += dL/db; with flags
// CONV3D_WRITE_DIN / CONV3D_WRITE_DW (nn/conv3d.h) din / dw and db are overwritten instead. 0 or
// a negative pl_err; on error nothing was written.
int conv3d_dnnl_backward(float *din, const float *dout, const float *in, const conv3d *l,
                         nn_dims in_dims, int flags);
// Backward-data only: din += dL/din (din not NULL; overwritten with CONV3D_WRITE_DIN); dw and db
// untouched. Same error contract.
int conv3d_dnnl_backward_data(float *din, const float *dout, const conv3d *l, nn_dims in_dims, int flags);
// Which passes of layer l on in_dims oneDNN runs on one of its direct JIT kernels rather than
// its im2col+gemm (or reference) implementation: CONV3D_DNNL_FWD | _DATA | _WEIGHTS bits (the
// primitives are created if needed), or a negative pl_err when they cannot be. nn/conv3d runs
// the other passes on its own vol2col+sgemm path.
enum { CONV3D_DNNL_FWD = 1, CONV3D_DNNL_DATA = 2, CONV3D_DNNL_WEIGHTS = 4 };
int conv3d_dnnl_direct(const conv3d *l, nn_dims in_dims);
// oneDNN's implementation names for layer l on in_dims, "forward/backward-data/backward-weights"
// (e.g. "jit:avx512_core/jit:avx512_core/jit:avx512_core"), creating its primitives if needed.
int conv3d_dnnl_impl(char *buf, size_t n, const conv3d *l, nn_dims in_dims);
// C (m, n) = op(A) op(B) + beta C, row-major, op = transpose when ta / tb, on oneDNN's own
// JIT sgemm with nn_get_threads() threads. The linear layers use it with the dnnl and auto
// engines: Debian's OpenBLAS 0.3.21 does not know recent CPUs (it ran its SSE3 `Prescott`
// kernel at 22 GFLOP/s on a Xeon with AVX-512 where this ran at 153). 0 or a negative pl_err
// (invalid arguments; C is then untouched).
int nn_dnnl_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                  const float *b, int64_t ldb, float beta, float *c, int64_t ldc);
// Reorders between the plain layouts and oneDNN's channel-blocked ones done by conv3d_dnnl's own
// transposes since the start (activations aBcde16b / aBcde8b / acdeb, weights ABcde16b16a /
// ABcde16a16b and their 8-blocked forms), for tests.
long conv3d_dnnl_own_reorders(void);
// Own reorders whose destination has at least `bytes` bytes (and is not added into) write it with
// streaming stores; default 4 MiB. Returns the previous value (tests set 0 to cover that path).
int64_t conv3d_dnnl_set_stream_min(int64_t bytes);
// Primitives cached so far (for tests), and release of the cache and its buffers.
int conv3d_dnnl_cached(void);
void conv3d_dnnl_release(void);
