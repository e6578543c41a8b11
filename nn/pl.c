#include "nn/pl.h"

#include <errno.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>   // mallopt
#endif
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static _Thread_local char g_last_error[2048];
static _Thread_local int g_quiet = 0;   // depth of nested quiet regions
static int g_rank = -1;
static int g_level = PL_INFO;

static const char *level_name(int level) {
    switch (level) {
    case PL_DEBUG: return "DEBUG";
    case PL_INFO: return "INFO";
    case PL_WARN: return "WARN";
    default: return "ERROR";
    }
}

static void vlog(int level, const char *fmt, va_list ap) {
    if (level < g_level) return;
    // Build the whole line first so lines from several ranks do not interleave mid-line.
    char line[4096];
    int n = 0;
    if (g_rank >= 0) n = snprintf(line, sizeof line, "[rank %d] %s ", g_rank, level_name(level));
    else n = snprintf(line, sizeof line, "%s ", level_name(level));
    if (n < 0) n = 0;
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    size_t len = strlen(line);
    if (len + 1 < sizeof line) { line[len] = '\n'; line[len + 1] = 0; }
    fputs(line, stderr);
    fflush(stderr);
}

void pl_log(int level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

void pl_log_set_rank(int rank) { g_rank = rank; }
int pl_log_rank(void) { return g_rank; }
void pl_log_set_level(int level) { g_level = level; }

int pl_fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
    va_end(ap);
    if (g_quiet == 0) pl_log(PL_ERROR, "%s", g_last_error);
    return code;
}

const char *pl_last_error(void) { return g_last_error; }
void pl_clear_error(void) { g_last_error[0] = 0; }
void pl_quiet_begin(void) { g_quiet++; }
void pl_quiet_end(void) {
    if (g_quiet > 0) g_quiet--;
}

const char *pl_err_name(int code) {
    switch (code) {
    case PL_OK: return "OK";
    case PL_EINVAL: return "EINVAL";
    case PL_EIO: return "EIO";
    case PL_EFORMAT: return "EFORMAT";
    case PL_ENOMEM: return "ENOMEM";
    case PL_ERANGE: return "ERANGE";
    case PL_ENOTFOUND: return "ENOTFOUND";
    case PL_EMPI: return "EMPI";
    case PL_EH5: return "EH5";
    case PL_EUNSUPPORTED: return "EUNSUPPORTED";
    case PL_ECORRUPT: return "ECORRUPT";
    default: return "E?";
    }
}

void pl_assert_fail(const char *expr, const char *file, int line) {
    pl_log(PL_ERROR, "assertion failed: %s (%s:%d)", expr, file, line);
    abort();
}

static _Atomic int g_alloc_armed;
static _Atomic long g_alloc_left;

void pl_alloc_fail_after(long n) {
    g_alloc_left = n;
    g_alloc_armed = n >= 0;
}

static int pl_alloc_refused(void) { return g_alloc_armed && atomic_fetch_sub(&g_alloc_left, 1) <= 0; }

void *pl_malloc(size_t bytes, const char *what) {
    void *p = pl_alloc_refused() ? NULL : malloc(bytes ? bytes : 1);
    if (!p) pl_fail(PL_ENOMEM, "out of memory allocating %zu bytes for %s", bytes, what);
    return p;
}

void *pl_calloc(size_t n, size_t size, const char *what) {
    void *p = pl_alloc_refused() ? NULL : calloc(n ? n : 1, size ? size : 1);
    if (!p) pl_fail(PL_ENOMEM, "out of memory allocating %zu x %zu bytes for %s", n, size, what);
    return p;
}

void *pl_realloc(void *p, size_t bytes, const char *what) {
    void *q = pl_alloc_refused() ? NULL : realloc(p, bytes ? bytes : 1);
    if (!q) pl_fail(PL_ENOMEM, "out of memory growing %s to %zu bytes", what, bytes);
    return q;
}

char *pl_strdup(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = pl_malloc(n, "string");
    if (d) memcpy(d, s, n);
    return d;
}

int pl_malloc_reuse(size_t bytes) {
#ifdef __GLIBC__
    int big = bytes > (size_t)INT_MAX / 4 ? INT_MAX / 4 : (int)bytes;
    return mallopt(M_MMAP_THRESHOLD, big) == 1 && mallopt(M_TRIM_THRESHOLD, 4 * big) == 1 ? 0 : -1;
#else
    (void)bytes;
    return -1;
#endif
}

double pl_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void pl_rng_seed(pl_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t pl_rng_u64(pl_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double pl_rng_uniform(pl_rng *r) { return (double)(pl_rng_u64(r) >> 11) * 0x1.0p-53; }

double pl_rng_range(pl_rng *r, double lo, double hi) { return lo + (hi - lo) * pl_rng_uniform(r); }

int64_t pl_rng_int(pl_rng *r, int64_t lo, int64_t hi) {
    PL_ASSERT(hi >= lo);
    uint64_t span = (uint64_t)(hi - lo) + 1;
    return lo + (int64_t)(pl_rng_u64(r) % span);
}

double pl_rng_normal(pl_rng *r) {
    double u1 = pl_rng_uniform(r), u2 = pl_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void pl_rng_shuffle_i64(pl_rng *r, int64_t *a, int64_t n) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = pl_rng_int(r, 0, i);
        int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

uint64_t pl_fnv1a(const void *data, size_t len, uint64_t h) {
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}
