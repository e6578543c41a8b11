// sgd: update rule, global-norm clipping, learning-rate schedules.
#include "nn/sgd.h"

#include <math.h>

void sgd_step(float *params, float *momentum_buf, const float *grads, size_t count, double lr,
              double momentum, double weight_decay, int first) {
    const float wd = (float)weight_decay, mom = (float)momentum, flr = (float)lr;
    if (momentum == 0) {
        for (size_t i = 0; i < count; i++) params[i] -= flr * (grads[i] + wd * params[i]);
        return;
    }
    for (size_t i = 0; i < count; i++) {
        float d = grads[i] + wd * params[i];
        float b = first ? d : mom * momentum_buf[i] + d;
        momentum_buf[i] = b;
        params[i] -= flr * b;
    }
}

double sgd_clip_grad_norm(float *grads, size_t count, double max_norm) {
    double s = 0;
    for (size_t i = 0; i < count; i++) s += (double)grads[i] * grads[i];
    double norm = sqrt(s);
    if (max_norm > 0 && norm > max_norm) {
        float k = (float)(max_norm / (norm + 1e-6));
        for (size_t i = 0; i < count; i++) grads[i] *= k;
    }
    return norm;
}

double sgd_lr_at(const sgd_lr_schedule *s, int64_t it) {
    double lr = s->base_lr;
    if (s->kind == SGD_SCHED_STEP) {
        for (int i = 0; i < s->nmilestones; i++)
            if (it >= s->milestones[i]) lr *= s->gamma;
    } else if (s->kind == SGD_SCHED_COSINE && s->total_iters > 0) {
        double t = it >= s->total_iters ? 1.0 : (double)it / (double)s->total_iters;
        lr = s->min_lr + (s->base_lr - s->min_lr) * 0.5 * (1.0 + cos(M_PI * t));
    }
    if (it < s->warmup_iters)
        lr *= 1.0 - (1.0 - (double)it / (double)s->warmup_iters) * (1.0 - s->warmup_factor);
    return lr;
}
