// parallel: a persistent pool of worker threads behind nn_parallel_for. Workers are started on
// first use (up to the thread count asked for) and wait between regions, spinning briefly and
// then sleeping on a condition variable, so a region costs a wake-up (~1-10 us), not a thread
// start-up (~20-50 us per thread, as the thread-per-call version before it did).
//
// One region runs at a time: a call from inside a region (a nested loop run by a worker or by
// the caller's own chunk) or from a second application thread while a region is running runs
// inline on its caller, which is always correct because fn must accept any range.
#include "nn/parallel.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "nn/pl.h"

int openblas_get_num_threads(void);  // OpenBLAS, declared here to keep cblas.h out of the header
void openblas_set_num_threads(int n);

enum { NN_MAX_THREADS = 64, NN_SPIN = 20000 };
static atomic_int g_threads = 0;
static _Thread_local int t_hold_depth;  // nn_blas_single nesting on this thread

void nn_set_threads(int n) { atomic_store(&g_threads, n < 0 ? 0 : n); }

int nn_get_threads(void) {
    int g = atomic_load(&g_threads), n = g > 0 ? g : openblas_get_num_threads();
    return PL_CLAMP(n, 1, NN_MAX_THREADS);
}

nn_blas_hold nn_blas_single(void) {
    nn_blas_hold h = {0, 0, 0};
    if (t_hold_depth++ > 0) return h;
    h.blas_threads = openblas_get_num_threads();
    if (h.blas_threads <= 1) return h;  // nothing to hold
    h.pool_threads = atomic_load(&g_threads);
    h.active = 1;
    atomic_store(&g_threads, nn_get_threads());  // the pool keeps its count while BLAS has one
    openblas_set_num_threads(1);
    return h;
}

void nn_blas_restore(nn_blas_hold h) {
    t_hold_depth--;
    if (!h.active) return;
    openblas_set_num_threads(h.blas_threads);
    atomic_store(&g_threads, h.pool_threads);
}

// The pool. A region is published as one 64-bit word, `claim` = generation << 32 | chunks << 16 |
// next unclaimed chunk, stored (release) after the region's fields. Workers and the caller take
// chunks by compare-and-swap on that word, so a chunk can only be taken while its region is the
// current one, and the region's fields cannot change under it: the caller rewrites them only
// after `pending` (chunks taken by others and not yet finished) has dropped to 0.
static struct {
    pthread_mutex_t lock;        // guards the sleep/wake hand-shake and pool growth
    pthread_cond_t wake;         // workers sleep here between regions
    pthread_mutex_t region;      // held by the thread that runs a region
    int started;                 // workers running
    _Atomic uint64_t claim;
    atomic_int pending;
    nn_range_fn fn;
    void *ctx;
    int64_t n, chunks;
} g_pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER, .region = PTHREAD_MUTEX_INITIALIZER};

static _Thread_local int t_in_region;  // this thread is running a chunk: nested calls go inline

static void nn_run_chunk(int64_t idx) {
    int64_t n = g_pool.n, nt = g_pool.chunks;
    t_in_region = 1;
    g_pool.fn(g_pool.ctx, n * idx / nt, n * (idx + 1) / nt);
    t_in_region = 0;
}

// Takes and runs chunks of the current region until none is left; returns the last word seen.
static uint64_t nn_take_chunks(int count_pending) {
    for (;;) {
        uint64_t w = atomic_load_explicit(&g_pool.claim, memory_order_acquire);
        uint64_t next = w & 0xffff, chunks = (w >> 16) & 0xffff;
        if (next >= chunks) return w;
        if (!atomic_compare_exchange_weak_explicit(&g_pool.claim, &w, w + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        nn_run_chunk((int64_t)next);
        if (count_pending) atomic_fetch_sub_explicit(&g_pool.pending, 1, memory_order_acq_rel);
    }
}

static void *nn_worker(void *arg) {
    (void)arg;
    uint64_t seen = atomic_load_explicit(&g_pool.claim, memory_order_acquire);
    for (;;) {
        uint64_t w = seen;
        for (int spin = 0; spin < NN_SPIN && w == seen; spin++)
            w = atomic_load_explicit(&g_pool.claim, memory_order_acquire);
        if (w == seen) {
            pthread_mutex_lock(&g_pool.lock);
            while (atomic_load_explicit(&g_pool.claim, memory_order_acquire) == seen)
                pthread_cond_wait(&g_pool.wake, &g_pool.lock);
            pthread_mutex_unlock(&g_pool.lock);
        }
        seen = nn_take_chunks(1);
    }
    return NULL;
}

// Starts workers until want-1 run; returns how many chunks can run at once (1 + workers).
static int nn_pool_grow(int want) {
    pthread_mutex_lock(&g_pool.lock);
    while (g_pool.started + 1 < want) {
        pthread_t tid;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&tid, &attr, nn_worker, NULL);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;  // could not start more: use the ones there are
        g_pool.started++;
    }
    int have = g_pool.started + 1;
    pthread_mutex_unlock(&g_pool.lock);
    return PL_MIN(want, have);
}

void nn_parallel_for(int64_t n, int64_t min_per_thread, nn_range_fn fn, void *ctx) {
    if (n <= 0) return;
    int64_t nt = nn_get_threads();
    if (min_per_thread < 1) min_per_thread = 1;
    nt = PL_MIN(nt, n / min_per_thread);
    if (nt <= 1 || t_in_region || pthread_mutex_trylock(&g_pool.region) != 0) {
        fn(ctx, 0, n);
        return;
    }
    nt = nn_pool_grow((int)nt);
    if (nt <= 1) {
        pthread_mutex_unlock(&g_pool.region);
        fn(ctx, 0, n);
        return;
    }
    g_pool.fn = fn;
    g_pool.ctx = ctx;
    g_pool.n = n;
    g_pool.chunks = nt;
    atomic_store_explicit(&g_pool.pending, (int)nt - 1, memory_order_relaxed);
    uint64_t gen = (atomic_load_explicit(&g_pool.claim, memory_order_relaxed) >> 32) + 1;
    pthread_mutex_lock(&g_pool.lock);
    atomic_store_explicit(&g_pool.claim, (gen << 32) | ((uint64_t)nt << 16) | 1, memory_order_release);
    pthread_cond_broadcast(&g_pool.wake);
    pthread_mutex_unlock(&g_pool.lock);
    nn_run_chunk(0);
    nn_take_chunks(1);  // chunks no worker has taken yet (workers asleep or busy elsewhere)
    for (int spin = 0; atomic_load_explicit(&g_pool.pending, memory_order_acquire) > 0; spin++)
        if (spin > NN_SPIN) sched_yield();
    pthread_mutex_unlock(&g_pool.region);
}

static void zero_range(void *ctx, int64_t lo, int64_t hi) {
    memset((float *)ctx + lo, 0, (size_t)(hi - lo) * sizeof(float));
}

void nn_parallel_zero(float *p, int64_t n) { nn_parallel_for(n, 1 << 18, zero_range, p); }
