#pragma once
// conv3d: 3-D convolution (any kernel, per-axis stride and padding, groups, optional bias),
// forward and backward on flat NCDHW float32 buffers, via vol2col + cblas_sgemm processed in
// chunks of output rows so the column workspace stays under a caller-given bound; 1x1x1
// stride-1 convolutions are one GEMM on the input itself and (k,1,1) stride-1 temporal ones
// KD shifted GEMMs on it (no vol2col). vol2col/col2vol use nn_parallel_for threads. A naive
// double-accumulating reference sits beside it. Conv2d is Conv3d with D = 1. No allocation.

#include <stddef.h>
#include "nn/dims.h"

typedef struct {
    int64_t ic, oc;      // input / output channels
    int64_t k[3];        // kernel (kd, kh, kw)
    int64_t s[3];        // stride (sd, sh, sw)
    int64_t p[3];        // zero padding (pd, ph, pw), both sides
    int64_t groups;      // ic and oc divisible by it
    int bias;            // 1: b/db present
} conv3d_shape;

typedef struct {
    conv3d_shape sh;
    float *w;   // (OC, IC/groups, KD, KH, KW)  view into the model's params
    float *b;   // (OC) or NULL
    float *dw;  // same layout as w, view into grads (accumulated by backward)
    float *db;  // (OC) or NULL
} conv3d;

// Shape helper: a kernel k with stride s and pad p on all axes.
conv3d_shape conv3d_shape_make(int64_t ic, int64_t oc, const int64_t k[3], const int64_t s[3],
                               const int64_t p[3], int64_t groups, int bias);
// Validates the shape against an input and gives the output dims; PL_EINVAL naming the value.
int conv3d_out_dims(nn_dims *out, const conv3d_shape *s, nn_dims in);
int64_t conv3d_weight_count(const conv3d_shape *s);    // OC * IC/groups * KD*KH*KW
double conv3d_forward_flops(const conv3d_shape *s, nn_dims in); // 2 * MACs
// Floats of workspace forward/backward need for this input; at most max(bound_floats, one
// output row of columns). 0 for the direct-GEMM (1x1x1 stride 1) case.
size_t conv3d_workspace_floats(const conv3d_shape *s, nn_dims in, size_t bound_floats);

// out (N, OC, OD, OH, OW) = conv(in (N, IC, D, H, W)); ws: >= conv3d_workspace_floats floats
// (any larger value just makes the chunks bigger). Runs on the engine conv3d_set_engine chose
// for this layer shape and input (see below).
void conv3d_forward(float *out, const float *in, const conv3d *l, nn_dims in_dims,
                    float *ws, size_t ws_floats);
// Accumulates: din += dL/din (skipped when din is NULL), l->dw += dL/dw, l->db += dL/db.
void conv3d_backward(float *din, const float *dout, const float *in, const conv3d *l,
                     nn_dims in_dims, float *ws, size_t ws_floats);
// The same, with flags saying which outputs hold nothing to keep: CONV3D_WRITE_DIN (din =
// dL/din) and CONV3D_WRITE_DW (l->dw = dL/dw, l->db = dL/db) are overwritten, not added into.
// The net's backward passes them for buffers it would otherwise zero just before: the oneDNN
// engine then writes them straight from its blocked layouts (no zeroing pass, no read of zeros).
enum { CONV3D_WRITE_DIN = 1, CONV3D_WRITE_DW = 2 };
void conv3d_backward_flags(float *din, const float *dout, const float *in, const conv3d *l,
                           nn_dims in_dims, float *ws, size_t ws_floats, int flags);
// The vol2col + sgemm path itself (the reference fast path and the fallback), same contracts.
void conv3d_forward_gemm(float *out, const float *in, const conv3d *l, nn_dims in_dims,
                         float *ws, size_t ws_floats);
void conv3d_backward_gemm(float *din, const float *dout, const float *in, const conv3d *l,
                          nn_dims in_dims, float *ws, size_t ws_floats);

// Engines (config key nn.conv_engine). GEMM: the path above, always. DNNL: oneDNN's direct
// kernels (nn/conv3d_dnnl.h) where it builds a primitive for the shape, else GEMM with one log
// line. AUTO: per (layer shape, input dims, threads), at first use, times forward+backward of
// both on scratch copies (best of 2 after a warm-up) and keeps DNNL only when it is >= 5 %
// faster; logs the choice once at INFO. Timing-based: two runs (or two ranks) may choose
// differently near the margin, so AUTO is not bit-reproducible across runs; the trainer makes
// ranks agree (conv3d_engine_table_*). Without oneDNN in the build AUTO and DNNL are GEMM.
typedef enum { CONV3D_ENGINE_AUTO = 0, CONV3D_ENGINE_GEMM = 1, CONV3D_ENGINE_DNNL = 2 } conv3d_engine;
void conv3d_set_engine(conv3d_engine e);   // process-wide; default GEMM
conv3d_engine conv3d_get_engine(void);
const char *conv3d_engine_name(conv3d_engine e);  // "auto", "gemm", "dnnl"
int conv3d_engine_parse(const char *s, conv3d_engine *e);  // 0, or PL_EINVAL naming s
// The engine a layer runs on for this input: GEMM or DNNL (AUTO decides now when undecided,
// timing on the input `in` and scratch outputs: the layer's gradients are not touched).
conv3d_engine conv3d_engine_for(const conv3d *l, const float *in, nn_dims in_dims, float *ws,
                                size_t ws_floats);
// The decisions made so far, as a flat record list (for ranks to adopt rank 0's): export
// writes up to max records and returns how many there are; import sets (overrides) each
// record's engine: 0, PL_EINVAL (a record with another engine) or PL_ENOMEM (the table could
// not grow); on an error the records before the failing one are set. Forgetting them all:
// conv3d_engine_reset (also frees oneDNN's cache).
typedef struct {
    conv3d_shape sh;
    nn_dims in;
    int32_t threads;
    int32_t engine;  // CONV3D_ENGINE_GEMM or CONV3D_ENGINE_DNNL
} conv3d_engine_record;
int conv3d_engine_table_export(conv3d_engine_record *rec, int max);
int conv3d_engine_table_import(const conv3d_engine_record *rec, int n);
void conv3d_engine_reset(void);

// Backward-weights by kernel taps: l->dw += dL/dw (and l->db += dL/db; with `write`, dw and db
// are overwritten instead), one GEMM per tap over the outputs whose input for that tap is inside
// the volume (groups 1 only). scratch: at least conv3d_taps_scratch_floats floats. 0 or a
// negative pl_err (then nothing was written).
// The dnnl engine uses it where conv3d_taps_preferred (groups 1, a spatial kernel, >= 3 M weights,
// <= 256 output positions per sample: ResNet3D-18's 512-channel stage on 3-slice volumes).
int conv3d_backward_weights_taps(const float *dout, const float *in, const conv3d *l, nn_dims in_dims,
                                 float *scratch, size_t scratch_floats, int write);
size_t conv3d_taps_scratch_floats(const conv3d_shape *s, nn_dims in);
int conv3d_taps_preferred(const conv3d_shape *s, nn_dims in);

// Reference: direct loops, double accumulation. Same contracts (backward accumulates).
void conv3d_forward_naive(float *out, const float *in, const conv3d *l, nn_dims in_dims);
void conv3d_backward_naive(float *din, const float *dout, const float *in, const conv3d *l,
                           nn_dims in_dims);
