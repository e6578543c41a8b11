#pragma once
// pl: the base every layer of mp3d stands on: error codes with one formatted message,
// checked allocation, rank-tagged logging, a seeded RNG (xoshiro256**) and a wall clock.
// It deliberately knows nothing of MPI, HDF5 or files: pipeline code sets the rank tag.
// Library code (nn/, io/) returns these codes; only stages/ and pipeline/ decide to abort.

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum pl_err {
    PL_OK = 0,
    PL_EINVAL = -1,      // bad argument or value (config, CLI, shapes)
    PL_EIO = -2,         // open/read/write failed
    PL_EFORMAT = -3,     // malformed file content (PNG, JPEG, CSV, JSON, HDF5 layout)
    PL_ENOMEM = -4,      // allocation failed
    PL_ERANGE = -5,      // value out of its allowed range
    PL_ENOTFOUND = -6,   // missing file, entry, key or slice
    PL_EMPI = -7,        // an MPI call failed
    PL_EH5 = -8,         // an HDF5 call failed
    PL_EUNSUPPORTED = -9,// valid input this build does not handle
    PL_ECORRUPT = -10,   // checksum or completeness check failed
};

// Formats the message, keeps it as the thread's last error, logs it once as an error line
// (unless inside a quiet region), and returns `code` so callers can `return pl_fail(...)`.
int pl_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *pl_last_error(void);     // "" when none
void pl_clear_error(void);
// Quiet regions: between pl_quiet_begin() and pl_quiet_end() failures are kept (pl_last_error)
// but not logged — for probes whose failure is an expected answer (is this file a complete
// shard?) and tests that provoke errors. Regions nest (a per-thread depth), so a helper that
// probes quietly never turns the echo back on for a caller that had silenced it.
void pl_quiet_begin(void);
void pl_quiet_end(void);             // a stray end (depth 0) is ignored
const char *pl_err_name(int code);   // "EINVAL", ...

// Always-on assertion for true invariants (not for input validation).
#define PL_ASSERT(expr)                                                              \
    do {                                                                             \
        if (!(expr)) pl_assert_fail(#expr, __FILE__, __LINE__);                      \
    } while (0)
_Noreturn void pl_assert_fail(const char *expr, const char *file, int line);

// Allocation that names what it was for; NULL + pl_fail(PL_ENOMEM) on failure.
void *pl_malloc(size_t bytes, const char *what);
void *pl_calloc(size_t n, size_t size, const char *what);
void *pl_realloc(void *p, size_t bytes, const char *what);
// Fault injection for tests: after n more successful pl_malloc / pl_calloc / pl_realloc calls
// (any thread), every further one fails as if out of memory (realloc leaves its block alone);
// n < 0 turns it off (the default). Sanitizer builds cannot take an address-space limit instead.
void pl_alloc_fail_after(long n);
char *pl_strdup(const char *s);

// Logging: one event per line on stderr, "[rank R] LEVEL message"; rank -1 = no tag.
enum pl_level { PL_DEBUG = 0, PL_INFO = 1, PL_WARN = 2, PL_ERROR = 3 };
void pl_log_set_rank(int rank);
int pl_log_rank(void);
void pl_log_set_level(int level);
void pl_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define LOG_DEBUG(...) pl_log(PL_DEBUG, __VA_ARGS__)
#define LOG_INFO(...) pl_log(PL_INFO, __VA_ARGS__)
#define LOG_WARN(...) pl_log(PL_WARN, __VA_ARGS__)
#define LOG_ERROR(...) pl_log(PL_ERROR, __VA_ARGS__)
// Rank-0-only info line.
#define LOG0(...) do { if (pl_log_rank() <= 0) pl_log(PL_INFO, __VA_ARGS__); } while (0)
// Rank-0-only error line (a verdict every rank reaches alike, e.g. a config value a stage rejects).
#define LOG0_ERROR(...) do { if (pl_log_rank() <= 0) pl_log(PL_ERROR, __VA_ARGS__); } while (0)

// Wall-clock seconds (monotonic).
double pl_time(void);

// For a process that allocates and frees buffers of the same few sizes over and over (the
// sharding stages: an archive entry, a decoded image, per sample): glibc keeps freed blocks below
// `bytes` in its heap for the next allocation, instead of handing blocks above its mmap threshold
// back to the kernel and faulting fresh zeroed pages in for the next one; up to 4 x `bytes` of
// freed memory stays with the process. Process-wide; returns 0, or -1 where the C library has no
// such setting (nothing changes).
int pl_malloc_reuse(size_t bytes);

// xoshiro256** seeded by splitmix64; deterministic for a seed on every platform.
typedef struct { uint64_t s[4]; } pl_rng;
void pl_rng_seed(pl_rng *r, uint64_t seed);
uint64_t pl_rng_u64(pl_rng *r);
double pl_rng_uniform(pl_rng *r);                 // [0, 1)
double pl_rng_range(pl_rng *r, double lo, double hi); // [lo, hi)
int64_t pl_rng_int(pl_rng *r, int64_t lo, int64_t hi); // [lo, hi] inclusive
double pl_rng_normal(pl_rng *r);                  // N(0, 1), Box-Muller
void pl_rng_shuffle_i64(pl_rng *r, int64_t *a, int64_t n); // Fisher-Yates

// FNV-1a 64-bit over bytes (provenance hashes, checksums of small things).
uint64_t pl_fnv1a(const void *data, size_t len, uint64_t h);
#define PL_FNV_INIT 0xcbf29ce484222325ULL

#define PL_MIN(a, b) ((a) < (b) ? (a) : (b))
#define PL_MAX(a, b) ((a) > (b) ? (a) : (b))
#define PL_CLAMP(x, lo, hi) ((x) < (lo) ? (lo) : (x) > (hi) ? (hi) : (x))
