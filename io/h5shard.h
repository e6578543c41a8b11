#pragma once
// h5shard: HDF5 sample shards. One file holds N fixed-shape samples `data` (N, ...) chunked one
// sample per chunk, per-sample columns (N, width), one ragged row set (M, width) indexed by
// `<offsets>` (N+1), and attributes (provenance). Written by all ranks together with collective
// parallel HDF5; samples land in increasing key order, so the file does not depend on the rank count.
// Read back per process (no MPI) with a check of the `complete` attribute. hid_t stays hidden.

#include <mpi.h>
#include <stdint.h>
#include <stdio.h>

enum shard_type { SHARD_U8, SHARD_I8, SHARD_I16, SHARD_I32, SHARD_I64, SHARD_F32, SHARD_F64, SHARD_STR };

typedef struct {
    const char *name;       // dataset name at the file root
    enum shard_type type;
    int64_t width;          // values per sample (per row for row columns); bytes for SHARD_STR
} shard_col;

typedef struct {
    const char *data_name;      // "images"
    enum shard_type data_type;  // SHARD_I16 or SHARD_U8 (any numeric type works)
    int ndims;                  // dims of one sample, 1..6
    int64_t dims[6];            // e.g. (9, 512, 512) or (1, 3, 256, 256)
    const shard_col *cols; int ncols;   // per-sample datasets: (N) if width 1, else (N, width)
    const shard_col *rows; int nrows;   // per-row datasets:    (M) if width 1, else (M, width)
    const char *rows_offsets;           // (N+1) int64: sample i owns rows [off[i], off[i+1])
} shard_layout;

// ---- writing --------------------------------------------------------------------------------
typedef struct h5shard_writer h5shard_writer;

typedef struct {
    int64_t n_total, rows_total;  // samples and rows in the file
    int all_collective;           // 1 if every raw-data write reported collective I/O (H5Pget_mpio_actual_io_mode)
    double write_seconds;         // HDF5 part of h5shard_finish
    // direct mode: sample writes (in place and moves) with O_DIRECT, with a buffered pwrite at the
    // chunk's address, and through H5Dwrite (see h5shard.c's raw_slot_write); summed over ranks
    int64_t odirect_writes, buffered_writes, hdf5_writes;
} h5shard_stats;

// Not collective. Samples are spooled until h5shard_finish: the first 512 MiB of them in memory,
// the rest in the file `path`.spool.<rank> (MP3D_SHARD_SPOOL_MEMORY, bytes, sets the bound); the layout is
// copied (names too). `rank` only names the spool file.
int h5shard_writer_create(h5shard_writer **w, const char *path, const shard_layout *layout, int rank);
// Not collective. Adds one sample: data (dims...), colvals[c] -> cols[c].width values,
// rowvals[r] -> (nrow, rows[r].width) values (NULL allowed when nrow == 0).
// Keys must be unique; the file holds samples sorted by key, and every key of rank r must be
// smaller than every key of rank r+1 (contiguous work split) — checked in h5shard_finish.
int h5shard_add(h5shard_writer *w, int64_t key, const void *data, const void *const *colvals,
                int64_t nrow, const void *const *rowvals);
int64_t h5shard_writer_count(const h5shard_writer *w);
// Not collective, but every rank must set the same attributes with the same values.
int h5shard_set_attr_str(h5shard_writer *w, const char *name, const char *value);
int h5shard_set_attr_f64(h5shard_writer *w, const char *name, const double *v, int n);
int h5shard_set_attr_i64(h5shard_writer *w, const char *name, const int64_t *v, int n);
// Collective over comm. If any rank passes local_ok = 0 nothing is written. Otherwise writes
// `path`.tmp, sets attribute complete = 1, closes, renames it to `path` (rank 0) and removes the
// spools. Frees w on every path. Returns the same code on every rank; stats may be NULL.
int h5shard_finish(h5shard_writer *w, MPI_Comm comm, int local_ok, h5shard_stats *stats);
void h5shard_writer_abort(h5shard_writer *w);   // not collective; drops spool; accepts NULL

// Direct mode, for stages that know before reading how many samples can at most be kept and
// where each one goes: no spool, each sample's data is written once, in place, as it is added.
// Collective over comm: creates `path`.tmp with `reserve` data slots (the same on every rank;
// returns the same code on every rank). h5shard_add_at writes sample data at `slot` at once
// (independent I/O; slots unique, and every slot of rank r below every slot of rank r+1), and
// keeps the columns and rows for h5shard_finish. Slots that stay empty (a sample that fails
// after its slot was reserved) are closed up by h5shard_finish, which moves the later samples
// down; without empty slots nothing moves. h5shard_finish and h5shard_writer_abort as above,
// except that a direct writer must be finished (its file is open on every rank).
// The sample data goes to its chunk's file address with O_DIRECT when the filesystem takes it and
// the sample size is a multiple of 4096 bytes (MP3D_SHARD_DIRECT_IO=0: never), else buffered;
// the file is the same either way. A caller's 4096-aligned buffer is written without a copy.
int h5shard_writer_create_direct(h5shard_writer **w, const char *path, const shard_layout *layout, int64_t reserve,
                                 MPI_Comm comm);
int h5shard_add_at(h5shard_writer *w, int64_t slot, const void *data, const void *const *colvals, int64_t nrow,
                   const void *const *rowvals);

// ---- reading (no MPI; each process opens the file itself) ------------------------------------
typedef struct h5shard_reader h5shard_reader;

// Fails with PL_ECORRUPT if the file has no `complete` = 1 attribute (half-written output).
int h5shard_open(h5shard_reader **r, const char *path);
void h5shard_close(h5shard_reader *r);   // accepts NULL
// Shape of dataset `name`: returns ndims (>= 0) and fills dims[0..min(ndims,cap)), or a pl_err.
int h5shard_shape(h5shard_reader *r, const char *name, int64_t *dims, int cap);
int h5shard_exists(h5shard_reader *r, const char *name);   // 1 / 0
// Reads entries [i0, i0+n) along axis 0 of `name`, converted to `type` (SHARD_STR: the file's
// fixed string width per entry). out holds n * (product of the other dims) values.
int h5shard_read(h5shard_reader *r, const char *name, enum shard_type type, void *out, int64_t i0, int64_t n);
// The same for a caller whose buffer holds `width` values per entry (SHARD_STR: `width` bytes per
// string, the file's strings truncated or padded to it): a dataset with another number of values
// per entry, or a scalar, is PL_EFORMAT naming the file and dataset. For files from outside.
int h5shard_read_rows(h5shard_reader *r, const char *name, enum shard_type type, void *out, int64_t i0, int64_t n,
                      int64_t width);
// Whole dataset in its own type (native byte order) into a new buffer: for comparisons.
int h5shard_read_raw(h5shard_reader *r, const char *name, void **buf, size_t *bytes);
// Dataset names at the root, sorted; *names is one malloc'ed array of NUL-separated strings.
int h5shard_list(h5shard_reader *r, char **names, int *n);
int h5shard_get_attr_str(h5shard_reader *r, const char *name, char **value);   // caller frees
// 1 when `path` is a complete shard whose config_hash attribute is `hash` (hex text), else 0 —
// absent, unreadable or written under other settings, all answered quietly. Not collective.
int h5shard_hash_matches(const char *path, const char *hash);
int h5shard_get_attr_f64(h5shard_reader *r, const char *name, double *v, int cap, int *n);
const char *h5shard_path(const h5shard_reader *r);

// Prints a summary of any HDF5 file (datasets with type and shape, attributes; long strings cut)
// to `out`. Not collective; does not require `complete`.
int h5shard_describe(const char *path, FILE *out);
