#pragma once
// fileio: whole-file reads, atomic whole-file writes (temporary name + rename), directory
// creation. Errors name the path and the OS reason. No MPI, no HDF5.

#include <stddef.h>
#include <stdint.h>

int pl_read_file(const char *path, uint8_t **buf, size_t *len);          // caller frees *buf
int pl_write_file_atomic(const char *path, const void *data, size_t len); // tmp, fsync, rename
int pl_mkdir_p(const char *path);                                          // like mkdir -p
int pl_path_exists(const char *path);                                      // 1 / 0
int pl_path_is_dir(const char *path);                                      // 1 / 0
// Checks that `dir` exists (or can be created) and is writable; message names the folder.
int pl_dir_writable(const char *dir);
// snprintf into a buffer and fail with PL_ERANGE if it would not fit.
int pl_path_join(char *out, size_t cap, const char *a, const char *b);
