// worksplit: balanced contiguous split of sorted items by byte size (see io/worksplit.h).
#include "io/worksplit.h"

#include <stdlib.h>

#include "nn/pl.h"

// Which rank an item whose midpoint lies at `twice_mid` / 2 bytes of `total` belongs to:
// floor(mid * size / total), computed exactly in integers when it cannot overflow.
static int owner_of(int64_t twice_mid, int64_t total, int size) {
    int64_t r;
    if (twice_mid <= INT64_MAX / size) r = (twice_mid * size) / (2 * total);
    else r = (int64_t)((long double)twice_mid * size / (2.0L * (long double)total));
    return (int)PL_MIN(r, (int64_t)size - 1);
}

int worksplit_bounds(int64_t *bounds, const int64_t *bytes, int64_t n, int size) {
    if (size < 1) return pl_fail(PL_EINVAL, "worksplit: size %d (must be >= 1)", size);
    if (n < 0) return pl_fail(PL_EINVAL, "worksplit: item count %lld (must be >= 0)", (long long)n);
    int64_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        if (bytes[i] < 0)
            return pl_fail(PL_EINVAL, "worksplit: item %lld has size %lld (must be >= 0)", (long long)i,
                           (long long)bytes[i]);
        int64_t b = bytes[i] > 0 ? bytes[i] : 1;
        if (total > INT64_MAX / 4 - b) return pl_fail(PL_ERANGE, "worksplit: total size overflows at item %lld", (long long)i);
        total += b;
    }
    // bounds[r] = first item owned by a rank >= r; owners are monotone in i, so ranges are contiguous.
    int next = 0;     // next rank whose start is not yet set
    int64_t run = 0;  // bytes before item i
    for (int64_t i = 0; i < n; i++) {
        int64_t b = bytes[i] > 0 ? bytes[i] : 1;
        int owner = owner_of(2 * run + b, total, size);
        while (next <= owner) bounds[next++] = i;
        run += b;
    }
    while (next <= size) bounds[next++] = n;
    return 0;
}

int worksplit_range(int64_t *begin, int64_t *end, const int64_t *bytes, int64_t n, int rank, int size) {
    if (rank < 0 || rank >= size) return pl_fail(PL_EINVAL, "worksplit: rank %d outside [0, %d)", rank, size);
    int64_t *b = pl_malloc(sizeof(int64_t) * ((size_t)size + 1), "worksplit bounds");
    if (!b) return PL_ENOMEM;
    int rc = worksplit_bounds(b, bytes, n, size);
    if (rc == 0) {
        *begin = b[rank];
        *end = b[rank + 1];
    }
    free(b);
    return rc;
}
