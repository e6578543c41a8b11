// test_shard_split: worksplit's contiguous, byte-balanced, deterministic split, played for
// every rank of 1..7 ranks in one process, with hand-computed cases.
#include <stdio.h>
#include <stdlib.h>

#include "io/worksplit.h"
#include "nn/pl.h"
#include "test_util.h"


int main(void) {
    // hand-computed: sizes 10,10,10,10 over 2 ranks -> midpoints 5,15,25,35 of 40 -> ranks 0,0,1,1
    int64_t eq[4] = {10, 10, 10, 10}, b[8];
    CHECK(worksplit_bounds(b, eq, 4, 2) == 0 && b[0] == 0 && b[1] == 2 && b[2] == 4, "equal split %lld %lld %lld",
          (long long)b[0], (long long)b[1], (long long)b[2]);
    // one big item: 100,1,1,1 over 2 ranks -> midpoints 50,100.5,101.5,102.5 of 103 -> 0,1,1,1
    int64_t big[4] = {100, 1, 1, 1};
    CHECK(worksplit_bounds(b, big, 4, 2) == 0 && b[1] == 1 && b[2] == 4, "big first item: bounds %lld %lld", (long long)b[1], (long long)b[2]);
    // 3 ranks, 6 items of 1,2,3,4,5,6 (T = 21): midpoints .5 2 4.5 8 12.5 18 -> *3/21 -> 0 0 0 1 1 2
    int64_t inc[6] = {1, 2, 3, 4, 5, 6};
    CHECK(worksplit_bounds(b, inc, 6, 3) == 0 && b[0] == 0 && b[1] == 3 && b[2] == 5 && b[3] == 6, "increasing: %lld %lld %lld %lld",
          (long long)b[0], (long long)b[1], (long long)b[2], (long long)b[3]);
    // fewer items than ranks: 2 items over 3 ranks, every rank gets a valid (possibly empty) range
    int64_t two[2] = {5, 5};
    CHECK(worksplit_bounds(b, two, 2, 3) == 0 && b[0] == 0 && b[3] == 2 && b[1] <= b[2], "two items over 3 ranks");
    // zero items
    CHECK(worksplit_bounds(b, NULL, 0, 3) == 0 && b[0] == 0 && b[3] == 0, "zero items");
    // errors
    pl_quiet_begin();
    int64_t neg[2] = {3, -1};
    CHECK(worksplit_bounds(b, neg, 2, 2) == PL_EINVAL, "negative size accepted");
    CHECK(worksplit_bounds(b, eq, 4, 0) == PL_EINVAL, "size 0 accepted");
    int64_t s0, s1;
    CHECK(worksplit_range(&s0, &s1, eq, 4, 2, 2) == PL_EINVAL, "rank == size accepted");
    pl_quiet_end();

    // random sizes: ranges tile [0, n), each rank's load <= T/size + largest item, and
    // worksplit_range agrees with worksplit_bounds.
    pl_rng rng;
    pl_rng_seed(&rng, 42);
    enum { N = 1000 };
    int64_t *sz = malloc(sizeof(int64_t) * N);
    double worst = 0;
    for (int trial = 0; trial < 20; trial++) {
        int64_t n = pl_rng_int(&rng, 1, N), total = 0, maxitem = 0;
        for (int64_t i = 0; i < n; i++) {
            sz[i] = pl_rng_int(&rng, 0, 3) == 0 ? pl_rng_int(&rng, 0, 10) : pl_rng_int(&rng, 100000, 900000);
            int64_t e = sz[i] > 0 ? sz[i] : 1;
            total += e;
            maxitem = PL_MAX(maxitem, e);
        }
        for (int size = 1; size <= 7; size++) {
            int64_t bb[8];
            CHECK(worksplit_bounds(bb, sz, n, size) == 0, "bounds trial %d size %d", trial, size);
            CHECK(bb[0] == 0 && bb[size] == n, "ends %lld %lld n %lld", (long long)bb[0], (long long)bb[size], (long long)n);
            for (int r = 0; r < size; r++) {
                CHECK(bb[r] <= bb[r + 1], "rank %d range reversed", r);
                int64_t load = 0;
                for (int64_t i = bb[r]; i < bb[r + 1]; i++) load += sz[i] > 0 ? sz[i] : 1;
                double over = (double)load - (double)total / size;
                CHECK(over <= (double)maxitem, "trial %d size %d rank %d load %lld over the share by %.0f > max item %lld", trial, size, r,
                      (long long)load, over, (long long)maxitem);
                worst = PL_MAX(worst, over / (double)maxitem);
                CHECK(worksplit_range(&s0, &s1, sz, n, r, size) == 0 && s0 == bb[r] && s1 == bb[r + 1], "range of rank %d", r);
            }
        }
    }
    free(sz);
    printf("worst_overload_in_max_items:%.3f\n", worst);
    printf("%s: %d failed checks\n", g_fail ? "FAIL" : "PASS", g_fail);
    return g_fail ? 1 : 0;
}
