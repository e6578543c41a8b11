// test_nn_parallel: the persistent pool behind nn_parallel_for (nn/parallel.c). Every index of
// every region is visited exactly once, for 1..4 threads and sizes around the chunking
// boundaries, across thousands of back-to-back regions (a stale worker that took a chunk of a
// finished region would visit an index twice or miss one); nested regions run inline and still
// cover their range; two application threads running regions at once both get complete results.
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/parallel.h"
#include "test_util.h"

typedef struct {
    atomic_int *hits;
    int64_t n;
    int nested;
} cover_ctx;

static void inner_fn(void *p, int64_t lo, int64_t hi) {
    cover_ctx *c = p;
    for (int64_t i = lo; i < hi; i++) atomic_fetch_add(&c->hits[i], 1);
}

static void cover_fn(void *p, int64_t lo, int64_t hi) {
    cover_ctx *c = p;
    if (!c->nested) {
        inner_fn(p, lo, hi);
        return;
    }
    cover_ctx sub = {c->hits + lo, hi - lo, 0};  // a nested region over this chunk
    nn_parallel_for(hi - lo, 1, inner_fn, &sub);
}

// Runs `rounds` regions over sizes 1..maxn and counts indices not visited exactly once.
static long run_regions(int rounds, int64_t maxn, int nested, unsigned seed) {
    atomic_int *hits = malloc(sizeof(atomic_int) * (size_t)maxn);
    long bad = 0;
    for (int r = 0; r < rounds; r++) {
        seed = seed * 1103515245u + 12345u;
        int64_t n = 1 + (int64_t)((seed >> 8) % (uint64_t)maxn);
        for (int64_t i = 0; i < n; i++) atomic_init(&hits[i], 0);
        cover_ctx c = {hits, n, nested};
        nn_parallel_for(n, 1 + (int64_t)(seed % 3), cover_fn, &c);
        for (int64_t i = 0; i < n; i++) bad += atomic_load(&hits[i]) != 1;
    }
    free(hits);
    return bad;
}

typedef struct {
    unsigned seed;
    long bad;
} app_thread;

static void *app_main(void *p) {
    app_thread *a = p;
    a->bad = run_regions(3000, 257, 0, a->seed);
    return NULL;
}

int main(void) {
    int fails = 0;
    for (int t = 1; t <= 4; t++) {
        nn_set_threads(t);
        long bad = run_regions(5000, 67, 0, 17u + (unsigned)t);
        long bad_nested = run_regions(500, 1000, 1, 99u + (unsigned)t);
        printf("threads:%d regions:5000 wrong_visits:%ld nested_regions:500 wrong_visits:%ld\n", t, bad,
               bad_nested);
        fails += bad != 0 || bad_nested != 0;
    }
    // Two application threads at once: one runs its regions on the pool, the other inline.
    nn_set_threads(3);
    app_thread a[2] = {{5u, -1}, {7u, -1}};
    pthread_t tid[2];
    for (int i = 0; i < 2; i++) CHECK(pthread_create(&tid[i], NULL, app_main, &a[i]) == 0);
    for (int i = 0; i < 2; i++) pthread_join(tid[i], NULL);
    printf("two application threads: wrong_visits:%ld %ld\n", a[0].bad, a[1].bad);
    fails += a[0].bad != 0 || a[1].bad != 0;
    // A large region split over 4 threads sums what the serial loop sums.
    nn_set_threads(4);
    enum { N = 1 << 20 };
    atomic_int *hits = malloc(sizeof(atomic_int) * N);
    for (int i = 0; i < N; i++) atomic_init(&hits[i], 0);
    cover_ctx c = {hits, N, 0};
    nn_parallel_for(N, 1024, cover_fn, &c);
    long sum = 0;
    for (int i = 0; i < N; i++) sum += atomic_load(&hits[i]);
    printf("large region: visits %ld of %d\n", sum, N);
    fails += sum != N;
    free(hits);
    nn_set_threads(0);
    fails += g_fail;
    printf("%s\n", fails ? "FAIL" : "PASS");
    return fails ? 1 : 0;
}
