#pragma once
// Shared by the libFuzzer harnesses (tests/fuzz/fuzz_*.c): silences mp3d's error echo (a harness
// provokes thousands of expected failures per second) and gives a private scratch folder in
// /dev/shm for the parsers whose pipeline entry point takes a path (HDF5 files, .pth files).
// Built both with clang -fsanitize=fuzzer (tests/fuzz/run.sh) and with the normal build linked
// with tests/fuzz/replay.c (the ctest replay of the committed corpora).

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
static inline const char *fuzz_write_file(const char *name, const uint8_t *data, size_t size) {
    char *dir = fuzz_dir_, *path = fuzz_path_;
    if (!dir[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
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
