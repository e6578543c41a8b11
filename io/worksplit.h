#pragma once
// worksplit: deterministic, balanced split of a sorted item list over ranks by byte size.
// Every rank gets one contiguous range of the sorted list, so concatenating the ranks'
// outputs in rank order reproduces the sorted order whatever the rank count.
// Pure arithmetic: rank and size are arguments, so one process can play every rank (tests).
// It does not sort: callers pass items already in their sorted key order.

#include <stdint.h>

// bounds: (size + 1) item indices; rank r owns items [bounds[r], bounds[r+1]).
// bytes: (n) non-negative sizes (0 counts as 1 byte so empty items still spread).
// An item goes to the rank whose share [r*T/size, (r+1)*T/size) holds the item's midpoint
// in the running byte total T. Returns 0 or PL_EINVAL (negative size, size < 1).
int worksplit_bounds(int64_t *bounds, const int64_t *bytes, int64_t n, int size);

// The range of one rank: items [*begin, *end). Same rule as worksplit_bounds.
int worksplit_range(int64_t *begin, int64_t *end, const int64_t *bytes, int64_t n, int rank, int size);
