#pragma once
// pth: PyTorch checkpoint files without Python. Reads the zip container torch.save writes since
// 1.6 (`<prefix>/data.pkl` + `<prefix>/data/<key>`, read with libarchive; the prefix is the
// archive's folder name) and the legacy single-file format (magic number, protocol, sys-info
// pickles, the object pickle, the storage-key list, then each storage as int64 element count +
// raw bytes), through the restricted unpickler (io/pickle.h). Finds the state dict in the shapes
// releases use (bare, {'state_dict': ...} as mmcv/mmdet/mmcls write, {'model': ...}; DDP's
// `module.` prefix stripped) and returns its tensors as contiguous float32 (views resolved:
// offset, strides, shared storages). Writes a zip-format state dict torch.load(weights_only=True)
// accepts. It knows nothing of networks: names are returned as the file has them.

#include <stddef.h>
#include <stdint.h>

#include "io/pickle.h"

#define PTH_NAME_MAX 256
typedef struct {
    char name[PTH_NAME_MAX];   // state-dict key ("backbone.layer1.0.conv1.weight")
    int ndim;
    int64_t shape[PK_MAX_DIMS];
    enum pk_dtype dtype;       // dtype of its storage in the file
    int view;                  // 1: offset != 0, non-contiguous strides, or a storage shared with another tensor
    float *data;               // (prod shape) float32, row-major, owned
} pth_tensor;

typedef struct {
    pth_tensor *t;
    int n;
    char format[16];          // "zip" or "legacy"
    char where[32];           // "state_dict", "model" or "" (the top-level dict)
    int stripped_module;      // 1: a "module." prefix was removed from every name
    int skipped;              // non-tensor values in the state dict (ignored)
    int count[PK_NDTYPES];    // tensors per source dtype
} pth_state;

// Reads a .pth file and its state dict. Errors name the file, the entry/byte and the reason
// (PL_EFORMAT corrupt/truncated, PL_EUNSUPPORTED refused global/opcode/dtype, PL_ERANGE limits).
int pth_read(pth_state *s, const char *path);
void pth_state_free(pth_state *s);   // accepts a zeroed struct

// A tensor to write: float32 data, or int64 when as_int64 (stored as a LongStorage; values are
// rounded from data), e.g. BatchNorm's num_batches_tracked.
typedef struct {
    const char *name;
    int ndim;
    const int64_t *shape;
    const float *data;
    int as_int64;
} pth_out;

// Writes an OrderedDict state dict in the zip layout torch 1.13 writes (stored entries
// "<stem>/data.pkl", "<stem>/data/<i>", "<stem>/version"), to path + ".tmp" then renamed.
int pth_write(const char *path, const pth_out *t, int n);
