#pragma once
// h5ckpt: training checkpoints as one parallel-HDF5 file written by all ranks of a communicator:
// named float32 tensors in groups ("/params/layer1.0.conv1.weight", "/optim/momentum/<name>",
// "/buffers/<name>"; dotted PyTorch names are dataset names, shapes as given), each with a
// checksum attribute, a training-state record ("/state"), text attributes and a `complete` flag.
// Files are "<dir>/ckpt_<step:08d>.h5", made visible only by an atomic rename once fully written
// and flushed. It knows nothing of networks: callers hand it (name, shape, buffer) lists.
//
// File layout (readable with h5py: f["params"]["layer1.0.conv1.weight"][...]):
//   /                 attrs: format="mp3d-checkpoint", format_version=1, complete=1 (written last),
//                            checksum_alg="fnv1a64x4", step, and any text attrs (config, version, git)
//   /<group>/<name>   float32 dataset of the tensor's shape (ndim 0 = scalar dataspace),
//                     attr checksum (uint64) = ckpt_checksum() of the tensor's float bytes
//   /state            attrs: step, epoch, epoch_pos, world_size (int64), rng (uint64 array),
//                     extra scalars as int64 or double attrs under their own names
//
// Checksum "fnv1a64x4": the bytes are read as little-endian uint64 words in 4 interleaved lanes
// (word i goes to lane i%4), each lane h = (h ^ word) * 0x100000001b3 starting from
// 0xcbf29ce484222325 ^ lane; the remaining < 32 bytes go byte-wise FNV-1a into lane 0; result =
// FNV-1a over the 4 lane values (8 little-endian bytes each) then the byte count (8 bytes),
// starting from 0xcbf29ce484222325. Same value at any rank count.
//
// Parallel data path: every call marked "Collective" must be made by every rank of the
// communicator with identical arguments. Writing: each tensor of >= CKPT_SPLIT_MIN elements is
// cut into `size` contiguous element ranges, one per rank (a union of hyperslabs in the N-d
// dataset), written with one collective (H5FD_MPIO_COLLECTIVE) H5Dwrite; each smaller tensor is
// written whole by one rank with independent I/O (the rank with the fewest small-tensor bytes so
// far, the same choice on every rank), so small tensors cost no synchronisation. Dataset and
// attribute creation are collective metadata operations. All ranks must hold identical tensors
// (data parallel): checksums are computed on every rank and compared (a divergence fails the
// write naming the tensor). Loading: every rank reads each whole dataset itself with independent
// MPI-IO reads (no per-tensor synchronisation; on one node they come from the page cache) and
// checks its checksum itself; verification at open splits the datasets round-robin over the
// ranks and agrees on the result, so a corrupt file is reported identically on every rank.

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

enum { CKPT_MAX_DIMS = 8, CKPT_NAME_MAX = 128, CKPT_MAX_EXTRA = 32, CKPT_RNG_MAX = 1024 };
#define CKPT_SPLIT_MIN ((int64_t)262144)   // elements (1 MiB); below this one rank writes the whole tensor

typedef struct {
    const char *name;          // "layer1.0.conv1.weight": no '/', not empty, < CKPT_NAME_MAX
    int ndim;                  // 0 (scalar) .. CKPT_MAX_DIMS
    int64_t shape[CKPT_MAX_DIMS];
    float *data;               // (prod shape); read by writes, filled by reads
} ckpt_tensor;

// Training state. Extras are named scalars ("best_top1", "samples_seen"); names must not clash
// with the fixed fields. rng holds any RNG state words the caller wants back bit-exactly.
typedef struct {
    int64_t step, epoch, epoch_pos;   // epoch_pos: position in the epoch's permutation
    int64_t world_size;
    int64_t nrng;
    uint64_t rng[CKPT_RNG_MAX];
    int nint, ndbl;
    char int_name[CKPT_MAX_EXTRA][64];
    int64_t int_val[CKPT_MAX_EXTRA];
    char dbl_name[CKPT_MAX_EXTRA][64];
    double dbl_val[CKPT_MAX_EXTRA];
} ckpt_state;

void ckpt_state_init(ckpt_state *s);                                   // zeroes everything
int ckpt_state_set_int(ckpt_state *s, const char *name, int64_t v);    // adds or replaces
int ckpt_state_set_double(ckpt_state *s, const char *name, double v);
int ckpt_state_get_int(const ckpt_state *s, const char *name, int64_t *v);    // PL_ENOTFOUND if absent
int ckpt_state_get_double(const ckpt_state *s, const char *name, double *v);

uint64_t ckpt_checksum(const void *data, size_t bytes);   // "fnv1a64x4" above
int64_t ckpt_tensor_numel(const ckpt_tensor *t);           // 1 for ndim 0
// "<dir>/ckpt_<step:08d>.h5"; PL_ERANGE if it does not fit.
int ckpt_path_for_step(char *out, size_t cap, const char *dir, int64_t step);

// ---------------------------------------------------------------------------------- writing
typedef struct ckpt_writer ckpt_writer;

// Collective. Creates `dir` if needed and "<dir>/ckpt_<step:08d>.h5.tmp" (replacing a stale one).
int ckpt_writer_open(ckpt_writer **w, const char *dir, int64_t step, MPI_Comm comm);
// Collective. Writes n tensors as datasets "<group>/<name>" (group "/params", "/optim/momentum";
// created with its parents if needed; a group may get several calls, names must be new).
int ckpt_write_tensors(ckpt_writer *w, const char *group, const ckpt_tensor *t, int n);
// Collective. Writes the /state attributes (world_size is taken from the communicator if 0).
int ckpt_write_state(ckpt_writer *w, const ckpt_state *s);
// Collective. A text attribute on the root ("config", "mp3d_version", "git_commit").
int ckpt_write_text(ckpt_writer *w, const char *key, const char *text);
// Collective. Marks the file complete, flushes (MPI_File_sync, then fsync on rank 0), closes,
// renames to "ckpt_<step:08d>.h5", fsyncs the folder, writes "<dir>/latest" (the file name)
// atomically, then deletes all but the newest `keep` checkpoints (keep <= 0: keep all) and any
// stale ".h5.tmp". Frees w whatever happens. `path_out` (may be NULL) gets the final path.
int ckpt_writer_commit(ckpt_writer *w, int keep, char *path_out, size_t cap);
// Collective. Closes and deletes the temporary file; accepts NULL.
void ckpt_writer_abort(ckpt_writer *w);

// Diagnostics of the last ckpt_write_tensors call: how many datasets went through collective
// MPI-IO (H5Pget_mpio_actual_io_mode != H5D_MPIO_NO_COLLECTIVE) or not, and the io mode of the
// largest tensor of that call.
enum ckpt_io_mode { CKPT_IO_NONE = 0, CKPT_IO_INDEPENDENT = 1, CKPT_IO_COLLECTIVE = 2 };
void ckpt_writer_io_stats(const ckpt_writer *w, int *n_collective, int *n_independent,
                          enum ckpt_io_mode *largest);

// ---------------------------------------------------------------------------------- reading
typedef struct ckpt_reader ckpt_reader;

enum { CKPT_VERIFY = 1 };   // flags for ckpt_open
// Collective. Opens a checkpoint file; checks format and `complete`; with CKPT_VERIFY reads every
// dataset and checks its checksum (PL_ECORRUPT naming file and dataset on a mismatch).
int ckpt_open(ckpt_reader **r, const char *path, MPI_Comm comm, int flags);
// Collective. Opens the newest "<dir>/ckpt_*.h5" that passes ckpt_open(CKPT_VERIFY); an invalid
// newer one is reported (LOG_WARN with the reason) and skipped; ".tmp" files are ignored.
// Returns PL_ENOTFOUND when the folder holds no checkpoint (start fresh), PL_ECORRUPT when
// checkpoints exist but none is valid. *skipped (may be NULL) = number of invalid newer files.
int ckpt_open_latest(ckpt_reader **r, const char *dir, MPI_Comm comm, int *skipped);
void ckpt_close(ckpt_reader *r);   // collective; accepts NULL
const char *ckpt_reader_path(const ckpt_reader *r);
int64_t ckpt_reader_step(const ckpt_reader *r);   // from the root `step` attribute

// Collective. Reads every tensor "<group>/<name>" into t[i].data; all must exist with exactly
// t[i]'s shape (else PL_ENOTFOUND / PL_EINVAL naming file, dataset and both shapes); each is
// checked against its checksum.
int ckpt_read_tensors(ckpt_reader *r, const char *group, ckpt_tensor *t, int n);

// Load by name into another network (model.init_from): tensors whose name exists with the same
// shape are read; others are left untouched. status[i] (may be NULL) gets one of the values below;
// the report counts them and the datasets of the group no tensor asked for ("unused"). An absent
// group makes every tensor absent (not an error). Collective.
enum ckpt_match { CKPT_LOADED = 0, CKPT_ABSENT = 1, CKPT_SHAPE_MISMATCH = 2 };
typedef struct { int loaded, absent, mismatched, unused; } ckpt_match_report;
int ckpt_read_matching(ckpt_reader *r, const char *group, ckpt_tensor *t, int n, int *status,
                       ckpt_match_report *rep);

// A dataset of a group, for listing (mp3d inspect) and rebuilding.
typedef struct {
    char name[CKPT_NAME_MAX];
    int ndim;
    int64_t shape[CKPT_MAX_DIMS];
    uint64_t checksum;
} ckpt_entry;
// Collective. The datasets of `group` sorted by name (*e malloc'ed, caller frees). A missing
// group gives PL_ENOTFOUND.
int ckpt_list(ckpt_reader *r, const char *group, ckpt_entry **e, int *n);

int ckpt_read_state(ckpt_reader *r, ckpt_state *s);                  // collective
// Collective. *text malloc'ed (caller frees); PL_ENOTFOUND if the attribute is absent.
int ckpt_read_text(ckpt_reader *r, const char *key, char **text);
