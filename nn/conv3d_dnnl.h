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
// din += dL/din (skipped when din is NULL), l->dw += dL/dw, l->db += dL/db. 0 or a negative
// pl_err; on error nothing was accumulated.
int conv3d_dnnl_backward(float *din, const float *dout, const float *in, const conv3d *l,
                         nn_dims in_dims);
// Primitives cached so far (for tests), and release of the cache and its buffers.
int conv3d_dnnl_cached(void);
void conv3d_dnnl_release(void);
