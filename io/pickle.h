#pragma once
// pickle: a restricted unpickler for PyTorch checkpoints (untrusted input) and the few writer
// helpers `mp3d export` needs. It builds a tree of plain values (None, bool, int, float, str,
// bytes, tuple, list, dict) plus tensor and storage references; it calls nothing: the only globals
// accepted are the handful a state dict names (pk_global_allowed), any other is refused with an
// error naming module.name. Depth, object-count and size limits; truncated or corrupt input is an
// error naming the byte offset and the opcode. It does not read storages (io/pth does).

#include <stddef.h>
#include <stdint.h>

enum pk_type {
    PK_NONE = 0, PK_BOOL, PK_INT, PK_FLOAT, PK_STR, PK_BYTES, PK_TUPLE, PK_LIST, PK_DICT,
    PK_GLOBAL,    // an allowed class/function (s = "module.name")
    PK_STORAGE,   // a persistent id ('storage', type, key, location, numel[, view])
    PK_TENSOR,    // _rebuild_tensor_v2(storage, offset, size, stride, ...)
    PK_BIGINT     // an integer wider than 64 bits (s = its little-endian bytes, len)
};

// Storage element types a state dict may hold.
enum pk_dtype { PK_F32 = 0, PK_F16, PK_BF16, PK_F64, PK_I64, PK_I32, PK_U8, PK_NDTYPES };
const char *pk_dtype_name(enum pk_dtype d);
int pk_dtype_size(enum pk_dtype d);

#define PK_MAX_DIMS 8
typedef struct pk_obj pk_obj;
struct pk_obj {
    enum pk_type t;
    int64_t i;            // PK_BOOL, PK_INT
    double f;             // PK_FLOAT
    char *s;              // PK_STR/PK_BYTES/PK_GLOBAL/PK_BIGINT (NUL-terminated; len bytes)
    size_t len;
    pk_obj **items;       // PK_TUPLE/PK_LIST: n items; PK_DICT: n (key, value) pairs as 2n items
    int64_t n, cap;
    // PK_STORAGE
    enum pk_dtype dtype;
    char key[64];          // storage key ("0", "140234…")
    int64_t numel;         // elements the id declares
    int64_t view_offset;   // legacy views: offset (elements) into the root storage, else 0
    // PK_TENSOR
    pk_obj *storage;
    int64_t offset;        // elements into the storage
    int ndim;
    int64_t shape[PK_MAX_DIMS], stride[PK_MAX_DIMS];
};

typedef struct {
    int max_depth;         // nesting of containers and the stack (default 1000)
    int64_t max_objects;   // objects created (default 1e7)
    int64_t max_bytes;     // a single string/bytes value (default 1 GiB)
} pk_limits;

typedef struct pk_arena pk_arena;   // owns every object of one or more loads
int pk_arena_create(pk_arena **a);
void pk_arena_destroy(pk_arena *a);  // frees every object; accepts NULL

// Unpickles one pickle from buf[0..len) (protocols 2..5; a prefix of buf — *used gets the bytes
// consumed through STOP). `label` names the source in errors ("x.pth:archive/data.pkl").
// limits may be NULL (defaults). Errors: PL_EFORMAT (corrupt/truncated, names offset and opcode),
// PL_EUNSUPPORTED (a refused global or opcode), PL_ERANGE (a limit).
int pk_load(pk_obj **out, size_t *used, pk_arena *a, const uint8_t *buf, size_t len,
            const char *label, const pk_limits *limits);

// dict lookup by string key (NULL if absent or not a dict).
pk_obj *pk_dict_get(const pk_obj *d, const char *key);
const char *pk_type_name(enum pk_type t);

// ---- writing (mp3d export): a growable byte buffer and the opcodes a state dict needs -------
typedef struct { uint8_t *p; size_t n, cap; int err; } pk_buf;
void pk_buf_free(pk_buf *b);
void pk_put_raw(pk_buf *b, const void *p, size_t n);
void pk_put_op(pk_buf *b, uint8_t op);
void pk_put_int(pk_buf *b, int64_t v);           // BININT / LONG1
void pk_put_str(pk_buf *b, const char *s);       // BINUNICODE
void pk_put_global(pk_buf *b, const char *module, const char *name);   // GLOBAL

// Every object an arena holds, in creation order (io/pth scans it for storage ids).
int64_t pk_arena_size(const pk_arena *a);
pk_obj *pk_arena_at(const pk_arena *a, int64_t i);
