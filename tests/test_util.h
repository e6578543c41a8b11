#pragma once
// test_util: the helpers every test executable shares: CHECK / CHECK_NEAR (count failures, name
// file:line, the expression and an optional printf-style message, rank-tagged when the log has a
// rank), and for the nn tests random fills, max-difference checks and a central finite-difference
// gradient check with a scale-free error metric. Header-only (static functions) so each test
// stays one file.

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/pl.h"

static int g_fail = 0;                            // failed checks
__attribute__((unused)) static int g_checks = 0;  // checks made (CHECK)

__attribute__((unused)) static void tu_fail_at(const char *file, int line, const char *expr, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char tag[32] = "";
    if (pl_log_rank() >= 0) snprintf(tag, sizeof tag, "[rank %d] ", pl_log_rank());
    fprintf(stderr, "%sFAIL %s:%d: %s%s%s\n", tag, file, line, expr, msg[0] ? ": " : "", msg);
}

// CHECK(cond) or CHECK(cond, "fmt", ...): counts the check; on failure counts it failed and
// prints "FAIL file:line: cond: message" to stderr. (The trailing "" lets the message be omitted
// in ISO C; it is an unused extra argument when a message is given.)
#define CHECK(...) TU_CHECK_(__VA_ARGS__, "")
#define TU_CHECK_(cond, ...)                                                 \
    do {                                                                     \
        g_checks++;                                                          \
        if (!(cond)) {                                                       \
            g_fail++;                                                        \
            tu_fail_at(__FILE__, __LINE__, #cond, __VA_ARGS__);              \
        }                                                                    \
    } while (0)
// |a - b| <= tol, printing both values on failure.
#define CHECK_NEAR(a, b, tol)                                                                 \
    do {                                                                                      \
        double a_ = (a), b_ = (b);                                                            \
        g_checks++;                                                                           \
        if (!(fabs(a_ - b_) <= (tol))) {                                                      \
            g_fail++;                                                                         \
            tu_fail_at(__FILE__, __LINE__, #a, "= %.17g, expected %.17g (tol %g)", a_, b_, (double)(tol)); \
        }                                                                                     \
    } while (0)

__attribute__((unused)) static void tu_fill(float *x, int64_t n, pl_rng *r, double lo, double hi) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)pl_rng_range(r, lo, hi);
}

__attribute__((unused)) static float *tu_alloc(int64_t n) {
    float *p = pl_calloc((size_t)(n > 0 ? n : 1), sizeof(float), "test buffer");
    PL_ASSERT(p);
    return p;
}

// max |a - b| / max(max |b|, floor): relative to the scale of the reference
__attribute__((unused)) static double tu_rel_diff(const float *a, const float *b, int64_t n, double floor_) {
    double md = 0, mb = floor_;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= md)) md = d;  // catches NaN
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return md / mb;
}

__attribute__((unused)) static void tu_check(const char *what, double value, double tol) {
    int ok = value <= tol;  // NaN fails
    printf("%-58s %s  max_rel_diff:%.3e tol:%.1e\n", what, ok ? "ok  " : "FAIL", value, tol);
    if (!ok) g_fail++;
}

__attribute__((unused)) static void tu_check_near(const char *what, double got, double want, double tol) {
    double d = fabs(got - want);
    int ok = d <= tol;
    printf("%-58s %s  got:%.9g want:%.9g diff:%.2e\n", what, ok ? "ok  " : "FAIL", got, want, d);
    if (!ok) g_fail++;
}

__attribute__((unused)) static int tu_finish(const char *name) {
    printf("%s: %s (%d failed)\n", name, g_fail ? "FAILED" : "passed", g_fail);
    return g_fail ? 1 : 0;
}

// Finite-difference check of an analytic gradient. loss(ctx) evaluates the scalar loss at the
// current contents of x (float, perturbed in place); grad holds the analytic dL/dx. Checks up
// to `samples` coordinates (all if n <= samples) with central differences of step h.
// Metric: max |analytic - numeric| / max(max |numeric|, 1e-3) over the checked coordinates.
typedef double (*tu_loss_fn)(void *ctx);
__attribute__((unused)) static double tu_fd_check(tu_loss_fn loss, void *ctx, float *x, const float *grad, int64_t n,
                          int samples, double h, pl_rng *r) {
    double md = 0, mref = 1e-3;
    for (int s = 0; s < (n <= samples ? n : samples); s++) {
        int64_t i = n <= samples ? s : pl_rng_int(r, 0, n - 1);
        float keep = x[i];
        x[i] = (float)(keep + h);
        double lp = loss(ctx);
        x[i] = (float)(keep - h);
        double lm = loss(ctx);
        x[i] = keep;
        double num = (lp - lm) / (2 * h);
        double d = fabs(num - grad[i]);
        if (!(d <= md)) md = d;
        if (fabs(num) > mref) mref = fabs(num);
    }
    return md / mref;
}
