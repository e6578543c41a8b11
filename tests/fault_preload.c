// fault_preload: LD_PRELOAD fault injection for the reliability tests (never linked into mp3d).
// It wraps the libc read/write calls that HDF5 (sec2 driver) and Open MPI's MPI-IO use, and
// fires once, on one rank, at the N-th call on a file whose path ends with SUFFIX:
//   MP3D_FAULT=kill:SUFFIX:RANK:N          the N-th write: SIGKILL before the write happens
//                                          (a rank dying in the middle of a checkpoint)
//   MP3D_FAULT=truncate:SUFFIX:RANK:N:BYTES the N-th read: the file is cut to BYTES first
//                                          (a shard truncated while it is being read)
// RANK is the MPI world rank (OMPI_COMM_WORLD_RANK, PMIX_RANK or SLURM_PROCID; processes
// without one, such as mpirun itself, are never touched). The firing is logged on stderr.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum { FAULT_NONE, FAULT_KILL, FAULT_TRUNCATE };

static struct {
    int parsed, kind, rank, done;
    long nth, count;
    long long bytes;
    char suffix[256];
} g;

static int my_rank(void) {
    const char *v = getenv("OMPI_COMM_WORLD_RANK");
    if (!v) v = getenv("PMIX_RANK");
    if (!v) v = getenv("SLURM_PROCID");
    return v ? atoi(v) : -1;
}

static void parse(void) {
    if (g.parsed) return;
    g.parsed = 1;
    const char *f = getenv("MP3D_FAULT");
    if (!f) return;
    char kind[16] = {0};
    int n = sscanf(f, "%15[^:]:%255[^:]:%d:%ld:%lld", kind, g.suffix, &g.rank, &g.nth, &g.bytes);
    if (n >= 4 && !strcmp(kind, "kill")) g.kind = FAULT_KILL;
    else if (n == 5 && !strcmp(kind, "truncate")) g.kind = FAULT_TRUNCATE;
    else fprintf(stderr, "fault_preload: MP3D_FAULT='%s' not understood (kill:SUFFIX:RANK:N or truncate:SUFFIX:RANK:N:BYTES)\n", f);
    if (g.kind && my_rank() != g.rank) g.kind = FAULT_NONE;
}

// Whether fd names a file ending with the suffix (readlink of /proc/self/fd/N).
static int matches(int fd, char *path, size_t cap) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, cap - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    size_t ls = strlen(g.suffix);
    return (size_t)n >= ls && !strcmp(path + n - (ssize_t)ls, g.suffix);
}

static void on_io(int fd, int is_write) {
    parse();
    if (g.done || g.kind == FAULT_NONE || is_write != (g.kind == FAULT_KILL)) return;
    char path[4096];
    if (!matches(fd, path, sizeof path) || ++g.count < g.nth) return;
    g.done = 1;
    if (g.kind == FAULT_KILL) {
        fprintf(stderr, "fault_preload: rank %d killed at write %ld to %s\n", g.rank, g.count, path);
        raise(SIGKILL);
    }
    fprintf(stderr, "fault_preload: rank %d truncated %s to %lld bytes at read %ld\n", g.rank, path, g.bytes, g.count);
    if (truncate(path, (off_t)g.bytes) != 0) perror("fault_preload: truncate");
}

// POSIX's way to turn dlsym's object pointer into a function pointer (ISO C has none)
#define NEXT(name) static __typeof__(name) *real; if (!real) *(void **)(&real) = dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *b, size_t n) { NEXT(write); on_io(fd, 1); return real(fd, b, n); }
ssize_t pwrite(int fd, const void *b, size_t n, off_t o) { NEXT(pwrite); on_io(fd, 1); return real(fd, b, n, o); }
ssize_t pwrite64(int fd, const void *b, size_t n, off_t o) { NEXT(pwrite64); on_io(fd, 1); return real(fd, b, n, o); }
ssize_t pwritev(int fd, const struct iovec *v, int c, off_t o) { NEXT(pwritev); on_io(fd, 1); return real(fd, v, c, o); }
ssize_t read(int fd, void *b, size_t n) { NEXT(read); on_io(fd, 0); return real(fd, b, n); }
ssize_t pread(int fd, void *b, size_t n, off_t o) { NEXT(pread); on_io(fd, 0); return real(fd, b, n, o); }
ssize_t pread64(int fd, void *b, size_t n, off_t o) { NEXT(pread64); on_io(fd, 0); return real(fd, b, n, o); }
ssize_t preadv(int fd, const struct iovec *v, int c, off_t o) { NEXT(preadv); on_io(fd, 0); return real(fd, v, c, o); }
