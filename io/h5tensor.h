#pragma once
// h5tensor: plain float32 tensors in plain HDF5 files, for the language-neutral entry points
// (`mp3d infer` reads /input and writes /output). Serial (one process), no `complete` flag:
// these files come from and go to other programs. The write is atomic (temporary + rename).

#include <stdint.h>

enum { H5T_MAX_DIMS = 8 };
// Reads dataset `name` converted to float32; *data malloc'ed (caller frees).
int h5tensor_read(const char *path, const char *name, float **data, int64_t *dims, int *ndim);
// Creates (or replaces) `path` holding dataset `name` with the given shape, plus a string attribute
// `note` on it (may be NULL).
int h5tensor_write(const char *path, const char *name, const float *data, const int64_t *dims, int ndim,
                   const char *note);
