#pragma once
// Shared by the libFuzzer harnesses (tests/fuzz/fuzz_*.c): silences mp3d's error echo (a harness
// provokes thousands of expected failures per second) and gives a private scratch folder in
// /dev/shm for the parsers whose pipeline entry point takes a path (HDF5 files, .pth files),
// removing the folders earlier harnesses left when they crashed.
// Built both with clang -fsanitize=fuzzer (tests/fuzz/run.sh) and with the normal build linked
// with tests/fuzz/replay.c (the ctest replay of the committed corpora).

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nn/pl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

// FUZZ_VERBOSE=1 keeps the messages (to see why a seed is refused).
static inline void fuzz_quiet(void) {
    if (getenv("FUZZ_VERBOSE")) return;
    pl_quiet_begin();
    pl_log_set_level(PL_ERROR + 1);
}

// A copy of the input in a buffer of exactly `size` bytes (no terminating NUL), so that a parser
// reading past the length it was given is caught by ASan.
static inline char *fuzz_dup(const uint8_t *data, size_t size) {
    char *p = malloc(size ? size : 1);
    if (p && size) memcpy(p, data, size);
    return p;
}

// Writes the input to <scratch>/<name> and returns that path (static storage), or NULL.
static char fuzz_dir_[256], fuzz_path_[512];
static inline void fuzz_cleanup_(void) {
    if (fuzz_path_[0]) unlink(fuzz_path_);
    if (fuzz_dir_[0]) rmdir(fuzz_dir_);
}
// A harness that crashed (ASan abort, libFuzzer's crash exit) never ran fuzz_cleanup_: the
// first scratch folder a harness makes removes those of processes that no longer exist.
static inline void fuzz_sweep_(const char *base) {
    DIR *d = opendir(base);
    if (!d) return;
    struct dirent *e;
    char sub[512], file[1024];
    while ((e = readdir(d)) != NULL) {
        char *end = NULL;
        if (strncmp(e->d_name, "mp3d-fuzz-", 10) != 0) continue;
        long pid = strtol(e->d_name + 10, &end, 10);
        if (!end || *end || pid <= 0 || pid == (long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;  // alive, or not ours to judge
        snprintf(sub, sizeof sub, "%s/%s", base, e->d_name);
        DIR *s = opendir(sub);
        if (s) {
            struct dirent *f;
            while ((f = readdir(s)) != NULL)
                if (strcmp(f->d_name, ".") && strcmp(f->d_name, "..")) {
                    snprintf(file, sizeof file, "%s/%s", sub, f->d_name);
                    unlink(file);
                }
            closedir(s);
        }
        rmdir(sub);
    }
    closedir(d);
}

static inline const char *fuzz_write_file(const char *name, const uint8_t *data, size_t size) {
    char *dir = fuzz_dir_, *path = fuzz_path_;
    if (!dir[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        fuzz_sweep_(base);
        snprintf(dir, sizeof fuzz_dir_, "%s/mp3d-fuzz-%ld", base, (long)getpid());
        if (mkdir(dir, 0700) != 0 && access(dir, W_OK) != 0) return NULL;
        atexit(fuzz_cleanup_);
    }
    snprintf(path, sizeof fuzz_path_, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return NULL;
    size_t w = size ? fwrite(data, 1, size, f) : 0;
    if (fclose(f) != 0 || w != size) return NULL;
    return path;
}
