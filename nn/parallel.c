// parallel: thread-per-call parallel-for (a call costs ~20-50 us of thread start-up, so callers
// only use it for loops of at least tens of microseconds per thread).
#include "nn/parallel.h"

#include <pthread.h>

#include "nn/pl.h"

int openblas_get_num_threads(void);  // OpenBLAS, declared here to keep cblas.h out of the header

enum { NN_MAX_THREADS = 64 };
static int g_threads = 0;

void nn_set_threads(int n) { g_threads = n < 0 ? 0 : n; }

int nn_get_threads(void) {
    int n = g_threads > 0 ? g_threads : openblas_get_num_threads();
    return PL_CLAMP(n, 1, NN_MAX_THREADS);
}

typedef struct {
    nn_range_fn fn;
    void *ctx;
    int64_t lo, hi;
} nn_task;

static void *nn_task_run(void *p) {
    nn_task *t = p;
    t->fn(t->ctx, t->lo, t->hi);
    return NULL;
}

void nn_parallel_for(int64_t n, int64_t min_per_thread, nn_range_fn fn, void *ctx) {
    if (n <= 0) return;
    int64_t nt = nn_get_threads();
    if (min_per_thread < 1) min_per_thread = 1;
    nt = PL_MIN(nt, n / min_per_thread);
    if (nt <= 1) {
        fn(ctx, 0, n);
        return;
    }
    nn_task tasks[NN_MAX_THREADS];
    pthread_t tid[NN_MAX_THREADS];
    int started[NN_MAX_THREADS] = {0};
    for (int64_t i = 0; i < nt; i++) {
        tasks[i] = (nn_task){fn, ctx, n * i / nt, n * (i + 1) / nt};
        if (i > 0) started[i] = pthread_create(&tid[i], NULL, nn_task_run, &tasks[i]) == 0;
    }
    fn(ctx, tasks[0].lo, tasks[0].hi);
    for (int64_t i = 1; i < nt; i++) {
        if (started[i])
            pthread_join(tid[i], NULL);
        else
            fn(ctx, tasks[i].lo, tasks[i].hi);  // could not start a thread: run it here
    }
}
