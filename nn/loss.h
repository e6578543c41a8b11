#pragma once
// loss: softmax cross-entropy with label smoothing, sigmoid binary cross-entropy and smooth L1,
// each returning the loss and writing dL/dinput for it. Means over the batch, as PyTorch's
// reduction='mean' (CE: over samples; BCE and smooth L1: over elements, or over a caller-given
// normaliser). Computed in double, stable for large logits.

#include <stdint.h>

// logits (N, K), labels (N) in [0, K). Target q = (1 - eps) onehot + eps / K (PyTorch
// CrossEntropyLoss(label_smoothing=eps)). loss = mean_n sum_k -q_k log softmax_k;
// dlogits = (softmax - q) / N (may be NULL). Returns PL_ERANGE via *loss = NAN on a bad label.
int loss_softmax_ce(double *loss, float *dlogits, const float *logits, const int64_t *labels,
                    int64_t n, int64_t k, double eps);
// x logits, t targets in [0, 1], count elements; loss = sum BCE(sigmoid(x), t) / norm
// (norm <= 0: count). dx may be NULL. Per-element weights w (NULL = 1).
double loss_sigmoid_bce(float *dx, const float *x, const float *t, const float *w, int64_t count,
                        double norm);
// smooth L1 (PyTorch): |d| < beta ? 0.5 d^2 / beta : |d| - 0.5 beta, d = x - t; sum / norm
// (norm <= 0: count); beta = 0 is plain L1. Per-element weights w (NULL = 1).
double loss_smooth_l1(float *dx, const float *x, const float *t, const float *w, int64_t count,
                      double beta, double norm);
