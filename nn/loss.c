// loss: cross-entropy with label smoothing, sigmoid BCE, smooth L1.
#include "nn/loss.h"

#include <math.h>

#include "nn/pl.h"

int loss_softmax_ce(double *loss, float *dlogits, const float *logits, const int64_t *labels,
                    int64_t n, int64_t k, double eps) {
    double total = 0;
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] < 0 || labels[i] >= k) {
            *loss = NAN;
            return pl_fail(PL_ERANGE, "softmax_ce: sample %lld label %lld outside [0, %lld)",
                           (long long)i, (long long)labels[i], (long long)k);
        }
        const float *z = logits + i * k;
        double mx = z[0];
        for (int64_t j = 1; j < k; j++) mx = z[j] > mx ? z[j] : mx;
        double se = 0, sz = 0;
        for (int64_t j = 0; j < k; j++) {
            se += exp(z[j] - mx);
            sz += z[j] - mx;
        }
        double lse = log(se);  // log sum exp(z - mx)
        // -sum_j q_j (z_j - mx - lse) with q = (1-eps) onehot + eps/K
        total += (1.0 - eps) * (lse - (z[labels[i]] - mx)) + eps * (lse - sz / (double)k);
        if (dlogits)
            for (int64_t j = 0; j < k; j++) {
                double q = eps / (double)k + (j == labels[i] ? 1.0 - eps : 0.0);
                dlogits[i * k + j] = (float)((exp(z[j] - mx) / se - q) / (double)n);
            }
    }
    *loss = total / (double)n;
    return 0;
}

double loss_sigmoid_bce(float *dx, const float *x, const float *t, const float *w, int64_t count,
                        double norm) {
    if (norm <= 0) norm = (double)count;
    double total = 0;
    for (int64_t i = 0; i < count; i++) {
        double z = x[i], wi = w ? w[i] : 1.0;
        // max(z,0) - z t + log(1 + exp(-|z|)) = -[t log s + (1-t) log(1-s)]
        total += wi * (fmax(z, 0) - z * t[i] + log1p(exp(-fabs(z))));
        if (dx) dx[i] = (float)(wi * (1.0 / (1.0 + exp(-z)) - t[i]) / norm);
    }
    return total / norm;
}

double loss_smooth_l1(float *dx, const float *x, const float *t, const float *w, int64_t count,
                      double beta, double norm) {
    if (norm <= 0) norm = (double)count;
    double total = 0;
    for (int64_t i = 0; i < count; i++) {
        double d = (double)x[i] - t[i], ad = fabs(d), wi = w ? w[i] : 1.0;
        double g;
        if (ad < beta) {
            total += wi * 0.5 * d * d / beta;
            g = d / beta;
        } else {
            total += wi * (ad - 0.5 * beta);
            g = d > 0 ? 1.0 : (d < 0 ? -1.0 : 0.0);
        }
        if (dx) dx[i] = (float)(wi * g / norm);
    }
    return total / norm;
}
