// h5ckpt: parallel-HDF5 checkpoints (see h5ckpt.h for the file layout, checksum and data path).
#include "io/h5ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/fileio.h"
#include "nn/pl.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "h5ckpt assumes a little-endian host (checksum words, float32 LE datasets)"
#endif

static const char CKPT_FORMAT[] = "mp3d-checkpoint";
static const int64_t CKPT_FORMAT_VERSION = 1;
static const char CKPT_CHECKSUM_ALG[] = "fnv1a64x4";
static const uint64_t FNV_PRIME = 0x100000001b3ULL;
enum { PATH_CAP = 4096 };

// ------------------------------------------------------------------------------- small helpers

static inline uint64_t load_le64(const unsigned char *p) {
    uint64_t w;
    memcpy(&w, p, sizeof w);   // little-endian host (checked above)
    return w;
}

uint64_t ckpt_checksum(const void *data, size_t bytes) {
    // Four independent multiply chains in registers (an array here made GCC spill through the
    // stack and stall on store forwarding: 1 GB/s instead of ~8).
    uint64_t h0 = PL_FNV_INIT, h1 = PL_FNV_INIT ^ 1, h2 = PL_FNV_INIT ^ 2, h3 = PL_FNV_INIT ^ 3;
    const unsigned char *p = data;
    const size_t nblk = bytes / 32;
    for (size_t i = 0; i < nblk; i++, p += 32) {
        h0 = (h0 ^ load_le64(p)) * FNV_PRIME;
        h1 = (h1 ^ load_le64(p + 8)) * FNV_PRIME;
        h2 = (h2 ^ load_le64(p + 16)) * FNV_PRIME;
        h3 = (h3 ^ load_le64(p + 24)) * FNV_PRIME;
    }
    for (size_t j = nblk * 32; j < bytes; j++, p++) h0 = (h0 ^ *p) * FNV_PRIME;
    const uint64_t h[4] = {h0, h1, h2, h3};
    uint64_t out = pl_fnv1a(h, sizeof h, PL_FNV_INIT);
    uint64_t n = (uint64_t)bytes;
    return pl_fnv1a(&n, sizeof n, out);
}

int64_t ckpt_tensor_numel(const ckpt_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

int ckpt_path_for_step(char *out, size_t cap, const char *dir, int64_t step) {
    int n = snprintf(out, cap, "%s/ckpt_%08lld.h5", dir, (long long)step);
    if (n < 0 || (size_t)n >= cap) return pl_fail(PL_ERANGE, "%s: checkpoint path too long", dir);
    return 0;
}

static void shape_str(char *out, size_t cap, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(out, cap, "(");
    for (int d = 0; d < ndim && n < cap; d++)
        n += (size_t)snprintf(out + n, cap - n, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (n < cap) snprintf(out + n, cap - n, ")");
}

// HDF5 prints its error stack by default; we report through pl_fail instead. While quiet, a
// handler keeps the innermost description of the latest failed API call (the stack itself is
// cleared by the next API call, e.g. the H5Pclose before we format the message).
typedef struct {
    H5E_auto2_t func;
    void *data;
} h5quiet;
static _Thread_local char g_h5why[256];

static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *data) {
    (void)n;
    char *buf = data;   // walking downward: the last frame is the most specific one
    if (e->desc && e->desc[0]) snprintf(buf, 256, "%s", e->desc);
    return 0;
}
static herr_t keep_reason(hid_t stack, void *data) {
    (void)data;
    char buf[256] = "";
    H5Ewalk2(stack, H5E_WALK_DOWNWARD, walk_cb, buf);
    if (buf[0]) memcpy(g_h5why, buf, sizeof buf);
    return 0;
}
static void quiet_on(h5quiet *q) {
    H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
    H5Eset_auto2(H5E_DEFAULT, keep_reason, NULL);
    g_h5why[0] = 0;
}
static void quiet_off(const h5quiet *q) { H5Eset_auto2(H5E_DEFAULT, q->func, q->data); }

// The reason of the latest failed HDF5 call (inside quiet_on/off).
static const char *h5_reason(char buf[256]) {
    snprintf(buf, 256, "%s", g_h5why[0] ? g_h5why : "HDF5 call failed");
    g_h5why[0] = 0;
    return buf;
}

static void close_id(hid_t *id) {
    if (*id < 0) return;
    switch (H5Iget_type(*id)) {
    case H5I_FILE: H5Fclose(*id); break;
    case H5I_GROUP: H5Gclose(*id); break;
    case H5I_DATASET: H5Dclose(*id); break;
    case H5I_DATASPACE: H5Sclose(*id); break;
    case H5I_DATATYPE: H5Tclose(*id); break;
    case H5I_ATTR: H5Aclose(*id); break;
    case H5I_GENPROP_LST: H5Pclose(*id); break;
    default: break;
    }
    *id = H5I_INVALID_HID;
}

// All ranks agree on a return code: the most negative one wins. A rank that was fine itself
// records why it fails anyway.
static int agree(int rc, MPI_Comm comm, const char *path) {
    int all = rc;
    if (MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MIN, comm) != MPI_SUCCESS)
        return pl_fail(PL_EMPI, "%s: MPI_Allreduce of the status failed", path);
    if (all < 0 && rc == 0) {
        pl_quiet_begin();
        pl_fail(all, "%s: failed on another rank", path);
        pl_quiet_end();
    }
    return all;
}

static int name_ok(const char *name) {
    if (!name || !name[0] || strchr(name, '/') || strlen(name) >= CKPT_NAME_MAX) return 0;
    if (!strcmp(name, ".") || !strcmp(name, "..")) return 0;
    return 1;
}

static int attr_write_i64(hid_t obj, const char *name, int64_t v) {
    hid_t sp = H5Screate(H5S_SCALAR), a = H5I_INVALID_HID;
    int ok = sp >= 0 && (a = H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT)) >= 0 &&
             H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0;
    close_id(&a);
    close_id(&sp);
    return ok ? 0 : -1;
}
static int attr_write_u64(hid_t obj, const char *name, uint64_t v) {
    hid_t sp = H5Screate(H5S_SCALAR), a = H5I_INVALID_HID;
    int ok = sp >= 0 && (a = H5Acreate2(obj, name, H5T_STD_U64LE, sp, H5P_DEFAULT, H5P_DEFAULT)) >= 0 &&
             H5Awrite(a, H5T_NATIVE_UINT64, &v) >= 0;
    close_id(&a);
    close_id(&sp);
    return ok ? 0 : -1;
}
static int attr_write_f64(hid_t obj, const char *name, double v) {
    hid_t sp = H5Screate(H5S_SCALAR), a = H5I_INVALID_HID;
    int ok = sp >= 0 && (a = H5Acreate2(obj, name, H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT)) >= 0 &&
             H5Awrite(a, H5T_NATIVE_DOUBLE, &v) >= 0;
    close_id(&a);
    close_id(&sp);
    return ok ? 0 : -1;
}
// Variable-length UTF-8 string: h5py returns it as str.
static int attr_write_str(hid_t obj, const char *name, const char *text) {
    hid_t sp = H5Screate(H5S_SCALAR), ty = H5Tcopy(H5T_C_S1), a = H5I_INVALID_HID;
    int ok = sp >= 0 && ty >= 0 && H5Tset_size(ty, H5T_VARIABLE) >= 0 && H5Tset_cset(ty, H5T_CSET_UTF8) >= 0 &&
             (a = H5Acreate2(obj, name, ty, sp, H5P_DEFAULT, H5P_DEFAULT)) >= 0 && H5Awrite(a, ty, &text) >= 0;
    close_id(&a);
    close_id(&ty);
    close_id(&sp);
    return ok ? 0 : -1;
}

// H5Aread writes every element of an attribute: one read into a single value needs exactly one
// (a damaged or foreign file may declare an array: found by fuzzing, a stack overflow before).
static int attr_single(hid_t a) {
    hid_t sp = H5Aget_space(a);
    hssize_t np = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    close_id(&sp);
    return np == 1;
}

static int attr_read_i64(hid_t obj, const char *name, int64_t *v) {
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    int ok = a >= 0 && attr_single(a) && H5Aread(a, H5T_NATIVE_INT64, v) >= 0;
    close_id(&a);
    return ok ? 0 : -1;
}
static int attr_read_u64(hid_t obj, const char *name, uint64_t *v) {
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    int ok = a >= 0 && attr_single(a) && H5Aread(a, H5T_NATIVE_UINT64, v) >= 0;
    close_id(&a);
    return ok ? 0 : -1;
}
// Reads a string attribute (variable or fixed length) into a new buffer.
static int attr_read_str(hid_t a, char **out) {
    *out = NULL;
    hid_t ty = H5Aget_type(a), mt = H5I_INVALID_HID;
    int ok = 0;
    if (ty < 0 || H5Tget_class(ty) != H5T_STRING || !attr_single(a)) goto done;
    if (H5Tis_variable_str(ty) > 0) {
        mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ty));
        char *s = NULL;
        if (H5Aread(a, mt, &s) < 0) goto done;
        *out = pl_strdup(s ? s : "");
        if (s) H5free_memory(s);
        ok = *out != NULL;
    } else {
        size_t n = H5Tget_size(ty);
        char *s = pl_malloc(n + 1, "string attribute");
        if (!s) goto done;
        if (H5Aread(a, ty, s) < 0) {
            free(s);
            goto done;
        }
        s[n] = 0;
        *out = s;
        ok = 1;
    }
done:
    close_id(&mt);
    close_id(&ty);
    return ok ? 0 : -1;
}

// Selects the elements with row-major flat index in [a, b) of an N-d dataspace as a union of
// at most 2*nd hyperslabs: the partial block at each end recurses one dimension down, the full
// blocks between them are one hyperslab.
typedef struct {
    hid_t space;
    int nd, nsel;
    hsize_t dims[CKPT_MAX_DIMS], inner[CKPT_MAX_DIMS], coord[CKPT_MAX_DIMS];
} flat_sel;

static int flat_add(flat_sel *s, int k, hsize_t first, hsize_t cnt) {
    hsize_t start[CKPT_MAX_DIMS], count[CKPT_MAX_DIMS];
    for (int d = 0; d < s->nd; d++) {
        start[d] = d < k ? s->coord[d] : d == k ? first : 0;
        count[d] = d < k ? 1 : d == k ? cnt : s->dims[d];
    }
    herr_t e = H5Sselect_hyperslab(s->space, s->nsel ? H5S_SELECT_OR : H5S_SELECT_SET, start, NULL, count, NULL);
    s->nsel++;
    return e < 0 ? -1 : 0;
}

static int flat_rec(flat_sel *s, int k, hsize_t a, hsize_t b) {
    if (a >= b) return 0;
    const hsize_t in = s->inner[k];
    if (k == s->nd - 1) return flat_add(s, k, a, b - a);
    hsize_t ia = a / in;
    if (a % in) {
        hsize_t end = PL_MIN(b, (ia + 1) * in);
        s->coord[k] = ia;
        if (flat_rec(s, k + 1, a - ia * in, end - ia * in)) return -1;
        ia++;
        a = ia * in;
        if (a >= b) return 0;
    }
    const hsize_t ib = b / in;
    if (ib > ia && flat_add(s, k, ia, ib - ia)) return -1;
    if (b % in) {
        s->coord[k] = ib;
        if (flat_rec(s, k + 1, 0, b - ib * in)) return -1;
    }
    return 0;
}

static int select_flat_range(hid_t space, int nd, const hsize_t *dims, hsize_t a, hsize_t b) {
    if (nd == 0 || a >= b) return H5Sselect_none(space) < 0 ? -1 : 0;
    flat_sel s = {.space = space, .nd = nd};
    hsize_t in = 1;
    for (int d = nd - 1; d >= 0; d--) {
        s.dims[d] = dims[d];
        s.inner[d] = in;
        in *= dims[d];
    }
    return flat_rec(&s, 0, a, b);
}

// Opens a group, or creates it with its parents (collective in a parallel file).
static hid_t group_open_or_create(hid_t file, const char *group) {
    hid_t g = H5Gopen2(file, group, H5P_DEFAULT);
    if (g >= 0) return g;
    H5Eclear2(H5E_DEFAULT);
    g_h5why[0] = 0;   // expected: the group is new
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    if (lcpl < 0) return H5I_INVALID_HID;
    H5Pset_create_intermediate_group(lcpl, 1);
    g = H5Gcreate2(file, group, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Pclose(lcpl);
    return g;
}

// ---------------------------------------------------------------------------------- state

void ckpt_state_init(ckpt_state *s) { memset(s, 0, sizeof *s); }

static const char *const STATE_FIXED[] = {"step", "epoch", "epoch_pos", "world_size", "rng"};

static int state_name_ok(const ckpt_state *s, const char *name) {
    (void)s;
    if (!name || !name[0] || strlen(name) >= 64 || strchr(name, '/')) return 0;
    for (size_t i = 0; i < sizeof STATE_FIXED / sizeof *STATE_FIXED; i++)
        if (!strcmp(name, STATE_FIXED[i])) return 0;
    return 1;
}

int ckpt_state_set_int(ckpt_state *s, const char *name, int64_t v) {
    if (!state_name_ok(s, name)) return pl_fail(PL_EINVAL, "checkpoint state: bad or reserved scalar name '%s'", name ? name : "(null)");
    for (int i = 0; i < s->ndbl; i++)
        if (!strcmp(s->dbl_name[i], name)) return pl_fail(PL_EINVAL, "checkpoint state: '%s' is already a double", name);
    for (int i = 0; i < s->nint; i++)
        if (!strcmp(s->int_name[i], name)) {
            s->int_val[i] = v;
            return 0;
        }
    if (s->nint >= CKPT_MAX_EXTRA) return pl_fail(PL_ERANGE, "checkpoint state: more than %d int scalars (adding '%s')", CKPT_MAX_EXTRA, name);
    snprintf(s->int_name[s->nint], sizeof s->int_name[0], "%s", name);
    s->int_val[s->nint++] = v;
    return 0;
}

int ckpt_state_set_double(ckpt_state *s, const char *name, double v) {
    if (!state_name_ok(s, name)) return pl_fail(PL_EINVAL, "checkpoint state: bad or reserved scalar name '%s'", name ? name : "(null)");
    for (int i = 0; i < s->nint; i++)
        if (!strcmp(s->int_name[i], name)) return pl_fail(PL_EINVAL, "checkpoint state: '%s' is already an int", name);
    for (int i = 0; i < s->ndbl; i++)
        if (!strcmp(s->dbl_name[i], name)) {
            s->dbl_val[i] = v;
            return 0;
        }
    if (s->ndbl >= CKPT_MAX_EXTRA) return pl_fail(PL_ERANGE, "checkpoint state: more than %d double scalars (adding '%s')", CKPT_MAX_EXTRA, name);
    snprintf(s->dbl_name[s->ndbl], sizeof s->dbl_name[0], "%s", name);
    s->dbl_val[s->ndbl++] = v;
    return 0;
}

int ckpt_state_get_int(const ckpt_state *s, const char *name, int64_t *v) {
    for (int i = 0; i < s->nint; i++)
        if (!strcmp(s->int_name[i], name)) {
            *v = s->int_val[i];
            return 0;
        }
    return PL_ENOTFOUND;
}

int ckpt_state_get_double(const ckpt_state *s, const char *name, double *v) {
    for (int i = 0; i < s->ndbl; i++)
        if (!strcmp(s->dbl_name[i], name)) {
            *v = s->dbl_val[i];
            return 0;
        }
    return PL_ENOTFOUND;
}

// ---------------------------------------------------------------------------------- writing

struct ckpt_writer {
    MPI_Comm comm;
    int rank, size;
    hid_t file;
    int64_t step;
    int64_t *load;              // (size) bytes of small tensors given to each rank so far
    int64_t bytes;              // tensor bytes written so far
    double t_open;
    int n_coll, n_indep;
    enum ckpt_io_mode largest;
    char dir[PATH_CAP], tmp[PATH_CAP], final[PATH_CAP], reserve[PATH_CAP];
};

// Disk space set aside (by rank 0, "<dir>/.ckpt_reserve") while a checkpoint is written, and
// given back just before the file is closed: closing flushes HDF5's metadata, and a close that
// fails on a full disk leaves HDF5 1.10 unable to shut down (a crash at MPI_Finalize). The
// metadata of a checkpoint is ~100 KB for a few hundred tensors.
static const off_t CKPT_RESERVE_BYTES = (off_t)1 << 20;

static int reserve_take(ckpt_writer *w) {
    if (w->rank != 0) return 0;
    int fd = open(w->reserve, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return pl_fail(PL_EIO, "%s: cannot create: %s", w->reserve, strerror(errno));
    int e = posix_fallocate(fd, 0, CKPT_RESERVE_BYTES);
    close(fd);
    if (e) {
        unlink(w->reserve);
        return pl_fail(PL_EIO, "%s: cannot set aside %lld bytes for writing a checkpoint: %s", w->tmp,
                       (long long)CKPT_RESERVE_BYTES, strerror(e));
    }
    return 0;
}

static void reserve_give_back(ckpt_writer *w) {
    if (w->rank == 0 && w->reserve[0]) unlink(w->reserve);
}

int ckpt_writer_open(ckpt_writer **out, const char *dir, int64_t step, MPI_Comm comm) {
    *out = NULL;
    if (step < 0) return pl_fail(PL_EINVAL, "%s: checkpoint step %lld is negative", dir, (long long)step);
    ckpt_writer *w = pl_calloc(1, sizeof *w, "checkpoint writer");
    if (!w) return PL_ENOMEM;
    MPI_Comm_rank(comm, &w->rank);
    MPI_Comm_size(comm, &w->size);
    w->load = pl_calloc((size_t)w->size, sizeof *w->load, "checkpoint writer loads");
    if (!w->load) {
        free(w);
        return PL_ENOMEM;
    }
    w->comm = comm;
    w->file = H5I_INVALID_HID;
    w->step = step;
    w->t_open = pl_time();
    snprintf(w->dir, sizeof w->dir, "%s", dir);
    int rc = ckpt_path_for_step(w->final, sizeof w->final, dir, step);
    if (!rc && snprintf(w->tmp, sizeof w->tmp, "%s.tmp", w->final) >= (int)sizeof w->tmp)
        rc = pl_fail(PL_ERANGE, "%s: checkpoint path too long", dir);
    if (!rc && pl_path_join(w->reserve, sizeof w->reserve, dir, ".ckpt_reserve"))
        rc = pl_fail(PL_ERANGE, "%s: checkpoint path too long", dir);
    if (!rc && w->rank == 0) rc = pl_mkdir_p(dir);
    if (!rc) rc = reserve_take(w);
    rc = agree(rc, comm, dir);
    if (rc) {
        reserve_give_back(w);
        free(w->load);
        free(w);
        return rc;
    }
    h5quiet q;
    quiet_on(&q);
    char why[256];
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0 && H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL) >= 0 && H5Pset_coll_metadata_write(fapl, 1) >= 0 &&
        H5Pset_all_coll_metadata_ops(fapl, 1) >= 0)
        w->file = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    close_id(&fapl);
    if (w->file < 0) {
        rc = pl_fail(PL_EIO, "%s: cannot create checkpoint file (%s)", w->tmp, h5_reason(why));
    } else if (attr_write_str(w->file, "format", CKPT_FORMAT) || attr_write_i64(w->file, "format_version", CKPT_FORMAT_VERSION) ||
               attr_write_str(w->file, "checksum_alg", CKPT_CHECKSUM_ALG) || attr_write_i64(w->file, "step", step)) {
        rc = pl_fail(PL_EH5, "%s: cannot write the root attributes (%s)", w->tmp, h5_reason(why));
    }
    quiet_off(&q);
    rc = agree(rc, comm, w->tmp);
    if (rc) {
        ckpt_writer_abort(w);
        return rc;
    }
    *out = w;
    return 0;
}

// One tensor: dataset, this rank's share, checksum attribute. Errors every rank meets alike
// (dataset creation) are returned and stop the group on all ranks at the same tensor; errors
// of this rank alone (selection, its own write, attribute) go to *local: the rank keeps making
// every collective call the others make (with an empty selection) and the ranks agree on the
// outcome at the end of the group, so no failure leaves a rank waiting in a collective.
static int write_one(ckpt_writer *w, hid_t grp, const char *group, const ckpt_tensor *t, uint64_t sum, hid_t dcpl,
                     hid_t dxpl_coll, hid_t dxpl_ind, int64_t *largest_n, int *local) {
    char why[256];
    int rc = 0, lr = 0;
    hid_t fsp = H5I_INVALID_HID, msp = H5I_INVALID_HID, ds = H5I_INVALID_HID;
    hsize_t dims[CKPT_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) dims[d] = (hsize_t)t->shape[d];
    const int64_t numel = ckpt_tensor_numel(t);
    fsp = t->ndim ? H5Screate_simple(t->ndim, dims, NULL) : H5Screate(H5S_SCALAR);
    if (fsp < 0 || (ds = H5Dcreate2(grp, t->name, H5T_IEEE_F32LE, fsp, H5P_DEFAULT, dcpl, H5P_DEFAULT)) < 0) {
        rc = pl_fail(PL_EH5, "%s: cannot create dataset %s/%s (%s)", w->tmp, group, t->name, h5_reason(why));
        goto done;
    }
    // Big tensors: every rank writes its contiguous element range in one collective call.
    // Small ones: the rank with the fewest small-tensor bytes so far writes it alone with
    // independent I/O (the same decision on every rank), so no per-tensor synchronisation.
    const int split = numel >= CKPT_SPLIT_MIN;
    int64_t a = 0, b = 0;
    if (split) {
        a = numel * w->rank / w->size;
        b = numel * (w->rank + 1) / w->size;
    } else if (numel > 0) {
        int owner = 0;
        for (int k = 1; k < w->size; k++)
            if (w->load[k] < w->load[owner]) owner = k;
        w->load[owner] += numel * (int64_t)sizeof(float);
        if (owner == w->rank && !*local) b = numel;
    }
    if (split || b > a) {
        hsize_t mcount = (hsize_t)(b > a ? b - a : 1);
        msp = H5Screate_simple(1, &mcount, NULL);
        int sel_bad = msp < 0;
        if (!sel_bad && b <= a) sel_bad = H5Sselect_none(msp) < 0 || H5Sselect_none(fsp) < 0;
        else if (!sel_bad && (t->ndim == 0 || !split)) sel_bad = H5Sselect_all(fsp) < 0;
        else if (!sel_bad) sel_bad = select_flat_range(fsp, t->ndim, dims, (hsize_t)a, (hsize_t)b) != 0;
        hssize_t got = sel_bad ? -1 : H5Sget_select_npoints(fsp);
        if (!sel_bad && got != (hssize_t)(b - a))   // an internal error: never write a wrong region
            lr = pl_fail(PL_EH5, "%s: selection of elements [%lld, %lld) of %s/%s has %lld elements", w->tmp,
                         (long long)a, (long long)b, group, t->name, (long long)got);
        else if (sel_bad)
            lr = pl_fail(PL_EH5, "%s: cannot select elements [%lld, %lld) of %s/%s (%s)", w->tmp, (long long)a,
                         (long long)b, group, t->name, h5_reason(why));
        if (split && (lr || *local)) {
            // This rank cannot write its share, but the others are entering the collective
            // write: take part with an empty selection; the group's final check fails everywhere.
            if (msp < 0) msp = H5Screate_simple(1, &mcount, NULL);
            H5Sselect_none(msp);
            H5Sselect_none(fsp);
            a = b = 0;
        } else if (lr) {
            goto done;
        }
        static const float dummy = 0;
        const float *src = b > a ? t->data + a : &dummy;
        hid_t dxpl = split ? dxpl_coll : dxpl_ind;
        if (H5Dwrite(ds, H5T_NATIVE_FLOAT, msp, fsp, dxpl, src) < 0) {
            lr = pl_fail(PL_EIO, "%s: writing %s/%s failed (%s)", w->tmp, group, t->name, h5_reason(why));
            goto done;
        }
        H5D_mpio_actual_io_mode_t mode = H5D_MPIO_NO_COLLECTIVE;
        H5Pget_mpio_actual_io_mode(dxpl, &mode);
        enum ckpt_io_mode m = mode == H5D_MPIO_NO_COLLECTIVE ? CKPT_IO_INDEPENDENT : CKPT_IO_COLLECTIVE;
        if (m == CKPT_IO_COLLECTIVE) w->n_coll++;
        else w->n_indep++;
        if (split && m != CKPT_IO_COLLECTIVE) {
            uint32_t lcause = 0, gcause = 0;
            H5Pget_mpio_no_collective_cause(dxpl, &lcause, &gcause);
            LOG_DEBUG("ckpt:collective_fallback dataset:%s/%s local_cause:0x%x global_cause:0x%x", group, t->name,
                      (unsigned)lcause, (unsigned)gcause);
        }
        if (numel > *largest_n) {
            *largest_n = numel;
            w->largest = m;
        }
    }
    if (attr_write_u64(ds, "checksum", sum)) {
        lr = pl_fail(PL_EH5, "%s: cannot write the checksum of %s/%s (%s)", w->tmp, group, t->name, h5_reason(why));
        goto done;
    }
    w->bytes += numel * (int64_t)sizeof(float);
done:
    if (lr && !*local) *local = lr;
    close_id(&ds);
    close_id(&msp);
    close_id(&fsp);
    return rc;
}

int ckpt_write_tensors(ckpt_writer *w, const char *group, const ckpt_tensor *t, int n) {
    int rc = 0;
    uint64_t *sums = NULL, *lo = NULL, *hi = NULL;
    w->n_coll = w->n_indep = 0;
    w->largest = CKPT_IO_NONE;
    for (int i = 0; i < n && !rc; i++) {
        if (!name_ok(t[i].name))
            rc = pl_fail(PL_EINVAL, "%s: tensor %d of group %s has a bad name '%s' (empty, '/', or >= %d chars)", w->tmp,
                         i, group, t[i].name ? t[i].name : "(null)", CKPT_NAME_MAX);
        else if (t[i].ndim < 0 || t[i].ndim > CKPT_MAX_DIMS)
            rc = pl_fail(PL_EINVAL, "%s: tensor %s/%s has ndim %d (0..%d)", w->tmp, group, t[i].name, t[i].ndim, CKPT_MAX_DIMS);
        for (int d = 0; !rc && d < t[i].ndim; d++)
            if (t[i].shape[d] < 0) rc = pl_fail(PL_EINVAL, "%s: tensor %s/%s has dim %d = %lld", w->tmp, group, t[i].name, d, (long long)t[i].shape[d]);
        if (!rc && !t[i].data && ckpt_tensor_numel(&t[i]) > 0)
            rc = pl_fail(PL_EINVAL, "%s: tensor %s/%s has no data", w->tmp, group, t[i].name);
    }
    if (rc) return agree(rc, w->comm, w->tmp);
    // Checksums on every rank; every rank must hold the same tensors (data parallel).
    // One MIN all-reduce over [sums, ~sums] gives the minimum and (as ~min(~x)) the maximum.
    sums = pl_malloc(sizeof(uint64_t) * (size_t)(4 * n + 1), "checkpoint checksums");
    if (!sums) return agree(PL_ENOMEM, w->comm, w->tmp);
    lo = sums + 2 * n;
    for (int i = 0; i < n; i++) {
        sums[i] = ckpt_checksum(t[i].data, (size_t)ckpt_tensor_numel(&t[i]) * sizeof(float));
        sums[n + i] = ~sums[i];
    }
    if (n > 0 && MPI_Allreduce(sums, lo, 2 * n, MPI_UINT64_T, MPI_MIN, w->comm) != MPI_SUCCESS) {
        free(sums);
        return pl_fail(PL_EMPI, "%s: MPI_Allreduce of the checksums failed", w->tmp);
    }
    hi = lo + n;
    for (int i = 0; i < n; i++) hi[i] = ~hi[i];
    for (int i = 0; i < n; i++)
        if (lo[i] != hi[i]) {
            rc = pl_fail(PL_EINVAL, "%s: tensor %s/%s differs between ranks (checksums %016llx .. %016llx); "
                         "checkpoints need identical replicas", w->tmp, group, t[i].name,
                         (unsigned long long)lo[i], (unsigned long long)hi[i]);
            break;
        }
    if (rc) {
        free(sums);
        return rc;   // every rank saw the same mismatch
    }
    h5quiet q;
    quiet_on(&q);
    char why[256];
    hid_t grp = group_open_or_create(w->file, group);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE), dxpl = H5Pcreate(H5P_DATASET_XFER), dxpl_ind = H5Pcreate(H5P_DATASET_XFER);
    if (grp < 0 || dcpl < 0 || dxpl < 0 || dxpl_ind < 0 || H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0 ||
        H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY) < 0 || H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE) < 0 ||
        H5Pset_dxpl_mpio(dxpl_ind, H5FD_MPIO_INDEPENDENT) < 0) {
        rc = pl_fail(PL_EH5, "%s: cannot open group %s (%s)", w->tmp, group, h5_reason(why));
    }
    int64_t largest_n = 0;
    int local = 0;
    // Dataset creation can fail on one rank only (a full disk meets each rank at a different
    // point of HDF5's metadata traffic): agree after every tensor so no rank goes on to the next
    // collective call alone (one int all-reduce per tensor).
    rc = agree(rc, w->comm, w->tmp);
    for (int i = 0; i < n && !rc; i++)
        rc = agree(write_one(w, grp, group, &t[i], sums[i], dcpl, dxpl, dxpl_ind, &largest_n, &local), w->comm, w->tmp);
    if (!rc) rc = local;
    close_id(&dxpl_ind);
    close_id(&dxpl);
    close_id(&dcpl);
    close_id(&grp);
    quiet_off(&q);
    free(sums);
    return agree(rc, w->comm, w->tmp);
}

int ckpt_write_state(ckpt_writer *w, const ckpt_state *s) {
    if (s->nrng < 0 || s->nrng > CKPT_RNG_MAX)
        return pl_fail(PL_EINVAL, "%s: state has %lld RNG words (0..%d)", w->tmp, (long long)s->nrng, CKPT_RNG_MAX);
    h5quiet q;
    quiet_on(&q);
    char why[256];
    int rc = 0;
    hid_t g = H5Gcreate2(w->file, "/state", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t sp = H5I_INVALID_HID, a = H5I_INVALID_HID;
    int bad = g < 0 || attr_write_i64(g, "step", s->step) || attr_write_i64(g, "epoch", s->epoch) ||
              attr_write_i64(g, "epoch_pos", s->epoch_pos) ||
              attr_write_i64(g, "world_size", s->world_size ? s->world_size : w->size);
    if (!bad && s->nrng > 0) {
        hsize_t n = (hsize_t)s->nrng;
        bad = (sp = H5Screate_simple(1, &n, NULL)) < 0 ||
              (a = H5Acreate2(g, "rng", H5T_STD_U64LE, sp, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
              H5Awrite(a, H5T_NATIVE_UINT64, s->rng) < 0;
    }
    for (int i = 0; !bad && i < s->nint; i++) bad = attr_write_i64(g, s->int_name[i], s->int_val[i]);
    for (int i = 0; !bad && i < s->ndbl; i++) bad = attr_write_f64(g, s->dbl_name[i], s->dbl_val[i]);
    if (bad) rc = pl_fail(PL_EH5, "%s: cannot write /state (%s)", w->tmp, h5_reason(why));
    close_id(&a);
    close_id(&sp);
    close_id(&g);
    quiet_off(&q);
    return agree(rc, w->comm, w->tmp);
}

int ckpt_write_text(ckpt_writer *w, const char *key, const char *text) {
    if (!key || !key[0] || strchr(key, '/'))
        return pl_fail(PL_EINVAL, "%s: bad text attribute name '%s'", w->tmp, key ? key : "(null)");
    static const char *const reserved[] = {"format", "format_version", "checksum_alg", "step", "complete"};
    for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++)
        if (!strcmp(key, reserved[i])) return pl_fail(PL_EINVAL, "%s: text attribute name '%s' is reserved", w->tmp, key);
    h5quiet q;
    quiet_on(&q);
    char why[256];
    int rc = 0;
    if (attr_write_str(w->file, key, text ? text : ""))
        rc = pl_fail(PL_EH5, "%s: cannot write text attribute '%s' (%s)", w->tmp, key, h5_reason(why));
    quiet_off(&q);
    return agree(rc, w->comm, w->tmp);
}

void ckpt_writer_io_stats(const ckpt_writer *w, int *n_collective, int *n_independent, enum ckpt_io_mode *largest) {
    if (n_collective) *n_collective = w->n_coll;
    if (n_independent) *n_independent = w->n_indep;
    if (largest) *largest = w->largest;
}

void ckpt_writer_abort(ckpt_writer *w) {
    if (!w) return;
    h5quiet q;
    quiet_on(&q);
    if (w->file >= 0) {
        // The file is discarded: empty it first so that the metadata H5Fclose still flushes
        // finds room on a full disk. A failed H5Fclose leaves HDF5 1.10 holding a freed file
        // whose id it closes again at MPI_Finalize (SIGSEGV); every rank closes exactly once,
        // at the same point, after the others have stopped writing.
        MPI_Barrier(w->comm);
        reserve_give_back(w);
        if (w->rank == 0 && truncate(w->tmp, 0) != 0 && errno != ENOENT)
            LOG_WARN("ckpt:abort cannot empty %s: %s", w->tmp, strerror(errno));
        MPI_Barrier(w->comm);
        if (H5Fclose(w->file) < 0) LOG_WARN("ckpt:abort closing %s failed", w->tmp);
        w->file = H5I_INVALID_HID;
    }
    H5Eclear2(H5E_DEFAULT);
    quiet_off(&q);
    MPI_Barrier(w->comm);
    reserve_give_back(w);
    if (w->rank == 0 && w->tmp[0] && unlink(w->tmp) == 0) LOG_INFO("ckpt:removed path:%s (write failed)", w->tmp);
    free(w->load);
    free(w);
}

static int fsync_path(const char *path, int is_dir) {
    int fd = open(path, is_dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return pl_fail(PL_EIO, "%s: cannot open for fsync: %s", path, strerror(errno));
    int r = fsync(fd);
    int e = errno;
    close(fd);
    if (r != 0) return pl_fail(PL_EIO, "%s: fsync failed: %s", path, strerror(e));
    return 0;
}

// Parses "ckpt_<digits>.h5" (kind 0) or "ckpt_<digits>.h5.tmp" (kind 1); -1 otherwise.
static int parse_ckpt_name(const char *name, int64_t *step) {
    if (strncmp(name, "ckpt_", 5)) return -1;
    const char *p = name + 5;
    char *end = NULL;
    if (*p < '0' || *p > '9') return -1;
    errno = 0;
    long long v = strtoll(p, &end, 10);
    if (errno || end - p < 8) return -1;
    *step = v;
    if (!strcmp(end, ".h5")) return 0;
    if (!strcmp(end, ".h5.tmp")) return 1;
    return -1;
}

static int cmp_i64_desc(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

// Steps of the complete-named checkpoints in dir, newest first (*steps malloc'ed). Stale
// temporaries are deleted when `drop_tmp`.
static int list_ckpts(const char *dir, int64_t **steps, int *n, int drop_tmp) {
    *steps = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        return pl_fail(PL_EIO, "%s: cannot list the folder: %s", dir, strerror(errno));
    }
    int cap = 0;
    int64_t *s = NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t st = 0;
        int kind = parse_ckpt_name(e->d_name, &st);
        if (kind == 1 && drop_tmp) {
            char p[PATH_CAP];
            if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < (int)sizeof p && unlink(p) == 0)
                LOG_INFO("ckpt:removed_stale_tmp path:%s", p);
        }
        if (kind != 0) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            int64_t *ns = pl_realloc(s, sizeof *s * (size_t)cap, "checkpoint list");
            if (!ns) {
                free(s);
                closedir(d);
                return PL_ENOMEM;
            }
            s = ns;
        }
        s[(*n)++] = st;
    }
    closedir(d);
    if (*n > 1) qsort(s, (size_t)*n, sizeof *s, cmp_i64_desc);
    *steps = s;
    return 0;
}

// Whether a checkpoint file counts toward keep-last-K: it opens as HDF5 through the serial
// (sec2) driver, so this rank alone can look without MPI-IO, and says format mp3d-ckpt, complete.
// Checksums are not read (resume does that).
static int ckpt_counts(const char *path) {
    h5quiet q;
    quiet_on(&q);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        quiet_off(&q);
        return 0;
    }
    char *fmt = NULL;
    int64_t complete = 0;
    hid_t a = H5Aopen(f, "format", H5P_DEFAULT);
    int ok = a >= 0 && !attr_read_str(a, &fmt) && !strcmp(fmt, CKPT_FORMAT) &&
             !attr_read_i64(f, "complete", &complete) && complete == 1;
    close_id(&a);
    free(fmt);
    H5Fclose(f);
    H5Eclear2(H5E_DEFAULT);
    quiet_off(&q);
    return ok;
}

// Rank 0's part of the commit: fsync, rename, folder fsync, "latest", pruning.
static int commit_rank0(ckpt_writer *w, int keep) {
    int rc = fsync_path(w->tmp, 0);
    if (rc) return rc;
    if (rename(w->tmp, w->final) != 0)
        return pl_fail(PL_EIO, "%s: cannot rename to %s: %s", w->tmp, w->final, strerror(errno));
    if ((rc = fsync_path(w->dir, 1))) return rc;
    char latest[PATH_CAP], line[256];
    const char *base = strrchr(w->final, '/');
    base = base ? base + 1 : w->final;
    int n = snprintf(line, sizeof line, "%s\n", base);
    if ((rc = pl_path_join(latest, sizeof latest, w->dir, "latest"))) return rc;
    if ((rc = pl_write_file_atomic(latest, line, (size_t)n))) return rc;
    int64_t *steps = NULL;
    int ns = 0;
    if ((rc = list_ckpts(w->dir, &steps, &ns, 1))) return rc;
    // Only checkpoints that open count toward `keep`: an unreadable ckpt_*.h5 (truncated,
    // foreign, a damaged one from a later step) must not push valid ones out; it is named and left.
    int kept = 0;
    for (int i = 0; i < ns && keep > 0; i++) {
        char old[PATH_CAP];
        if (ckpt_path_for_step(old, sizeof old, w->dir, steps[i])) continue;
        if (steps[i] == w->step) {
            kept++;
            continue;
        }
        if (!ckpt_counts(old)) {
            LOG_WARN("ckpt:invalid path:%s not counted toward keep:%d, left in place", old, keep);
            continue;
        }
        if (kept < keep) {
            kept++;
            continue;
        }
        if (unlink(old) == 0) LOG_INFO("ckpt:pruned path:%s keep:%d", old, keep);
        else LOG_WARN("ckpt:prune_failed path:%s reason:%s", old, strerror(errno));
    }
    free(steps);
    return 0;
}

int ckpt_writer_commit(ckpt_writer *w, int keep, char *path_out, size_t cap) {
    if (!w) return pl_fail(PL_EINVAL, "ckpt_writer_commit: no writer");
    h5quiet q;
    quiet_on(&q);
    char why[256];
    int rc = 0;
    if (attr_write_i64(w->file, "complete", 1))
        rc = pl_fail(PL_EH5, "%s: cannot write the complete flag (%s)", w->tmp, h5_reason(why));
    // H5Fflush on an MPI-IO file is MPI_File_sync: every rank's data reaches the disk.
    if (!rc && H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0)
        rc = pl_fail(PL_EIO, "%s: flush failed (%s)", w->tmp, h5_reason(why));
    rc = agree(rc, w->comm, w->tmp);
    if (rc) {
        quiet_off(&q);
        ckpt_writer_abort(w);
        return rc;
    }
    MPI_Barrier(w->comm);
    reserve_give_back(w);   // room for what closing still writes
    MPI_Barrier(w->comm);
    herr_t ce = H5Fclose(w->file);
    w->file = H5I_INVALID_HID;
    if (ce < 0) rc = pl_fail(PL_EIO, "%s: closing failed (%s)", w->tmp, h5_reason(why));
    quiet_off(&q);
    rc = agree(rc, w->comm, w->tmp);
    if (!rc && w->rank == 0) rc = commit_rank0(w, keep);
    if (MPI_Bcast(&rc, 1, MPI_INT, 0, w->comm) != MPI_SUCCESS) rc = pl_fail(PL_EMPI, "%s: MPI_Bcast failed", w->tmp);
    if (rc) {
        if (w->rank != 0 && rc < 0) {
            pl_quiet_begin();
            pl_fail(rc, "%s: commit failed on rank 0", w->tmp);
            pl_quiet_end();
        }
        if (w->rank == 0) unlink(w->tmp);
        free(w->load);
        free(w);
        return rc;
    }
    double dt = pl_time() - w->t_open;
    LOG0("ckpt:written path:%s step:%lld MB:%.1f seconds:%.3f MB_per_s:%.1f ranks:%d", w->final, (long long)w->step,
         (double)w->bytes / 1e6, dt, (double)w->bytes / 1e6 / (dt > 0 ? dt : 1e-9), w->size);
    if (path_out && cap) snprintf(path_out, cap, "%s", w->final);
    free(w->load);
    free(w);
    return 0;
}

// ---------------------------------------------------------------------------------- reading

struct ckpt_reader {
    MPI_Comm comm;
    int rank, size;
    hid_t file;
    int64_t step;
    char path[PATH_CAP];
};

const char *ckpt_reader_path(const ckpt_reader *r) { return r->path; }
int64_t ckpt_reader_step(const ckpt_reader *r) { return r->step; }

void ckpt_close(ckpt_reader *r) {
    if (!r) return;
    h5quiet q;
    quiet_on(&q);
    if (r->file >= 0) H5Fclose(r->file);
    H5Eclear2(H5E_DEFAULT);
    quiet_off(&q);
    free(r);
}

// Every dataset path of the file ("/params/conv1.weight"), in name order at each level.
typedef struct {
    char **paths;
    int n, cap;
    char prefix[PATH_CAP];
    int failed;
} ds_list;

static herr_t visit_cb(hid_t grp, const char *name, const H5L_info_t *info, void *data) {
    ds_list *L = data;
    if (info->type != H5L_TYPE_HARD) return 0;
    hid_t o = H5Oopen(grp, name, H5P_DEFAULT);
    if (o < 0) {
        L->failed = 1;
        return -1;
    }
    H5I_type_t ty = H5Iget_type(o);
    char full[PATH_CAP];
    herr_t ret = 0;
    if ((size_t)snprintf(full, sizeof full, "%.2000s/%.2000s", L->prefix, name) >= sizeof full) ret = -1;
    if (ret) {
        L->failed = 1;
    } else if (ty == H5I_GROUP) {
        char saved[PATH_CAP];
        memcpy(saved, L->prefix, sizeof saved);
        memcpy(L->prefix, full, sizeof full);
        hsize_t idx = 0;
        ret = H5Literate(o, H5_INDEX_NAME, H5_ITER_INC, &idx, visit_cb, L);
        memcpy(L->prefix, saved, sizeof saved);
    } else if (ty == H5I_DATASET) {
        if (L->n == L->cap) {
            L->cap = L->cap ? 2 * L->cap : 64;
            char **np = realloc(L->paths, sizeof *np * (size_t)L->cap);
            if (!np) ret = -1;
            else L->paths = np;
        }
        if (!ret && !(L->paths[L->n] = pl_strdup(full))) ret = -1;
        if (!ret) L->n++;
        if (ret) L->failed = 1;
    }
    H5Oclose(o);
    return ret;
}

static void ds_list_free(ds_list *L) {
    for (int i = 0; i < L->n; i++) free(L->paths[i]);
    free(L->paths);
}

// Dataset shape; ndim 0 for a scalar dataspace.
static int ds_shape(hid_t ds, int *ndim, int64_t *shape) {
    hid_t sp = H5Dget_space(ds);
    if (sp < 0) return -1;
    int nd = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[H5S_MAX_RANK];
    int ok = nd >= 0 && nd <= CKPT_MAX_DIMS && H5Sget_simple_extent_dims(sp, dims, NULL) >= 0;
    H5Sclose(sp);
    if (!ok) return -1;
    *ndim = nd;
    for (int d = 0; d < nd; d++) shape[d] = (int64_t)dims[d];
    return 0;
}

// Reads a whole dataset (numel floats) into buf and checks its checksum attribute.
// `collective`: one collective H5Dread on every rank; otherwise independent.
static int read_verified(hid_t ds, float *buf, int64_t numel, int collective, const char *file, const char *dset) {
    char why[256];
    if (numel > 0) {
        hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
        int ok = dxpl >= 0 && H5Pset_dxpl_mpio(dxpl, collective ? H5FD_MPIO_COLLECTIVE : H5FD_MPIO_INDEPENDENT) >= 0 &&
                 H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, dxpl, buf) >= 0;
        close_id(&dxpl);
        if (!ok) return pl_fail(PL_ECORRUPT, "%s: dataset %s cannot be read (%s)", file, dset, h5_reason(why));
    }
    uint64_t want = 0;
    if (attr_read_u64(ds, "checksum", &want))
        return pl_fail(PL_ECORRUPT, "%s: dataset %s has no checksum attribute (%s)", file, dset, h5_reason(why));
    uint64_t got = ckpt_checksum(buf, (size_t)numel * sizeof(float));
    if (got != want)
        return pl_fail(PL_ECORRUPT, "%s: dataset %s: checksum mismatch (stored %016llx, data %016llx): corrupt file",
                       file, dset, (unsigned long long)want, (unsigned long long)got);
    return 0;
}

// Each rank verifies datasets i % size == rank with independent reads; the ranks then agree on
// the first failure and every rank reports the finder's message.
static int verify_all(ckpt_reader *r) {
    ds_list L = {0};
    hsize_t idx = 0;
    char why[256];
    int rc = 0;
    if (H5Literate(r->file, H5_INDEX_NAME, H5_ITER_INC, &idx, visit_cb, &L) < 0 || L.failed)
        rc = pl_fail(PL_ECORRUPT, "%s: cannot walk the groups (%s)", r->path, h5_reason(why));
    float *buf = NULL;
    int64_t bufn = 0;
    char msg[1024] = "";
    int bad = INT_MAX;
    for (int i = r->rank; !rc && i < L.n; i += r->size) {
        hid_t ds = H5Dopen2(r->file, L.paths[i], H5P_DEFAULT);
        int nd = 0;
        int64_t shape[CKPT_MAX_DIMS];
        int lr = 0;
        if (ds < 0 || ds_shape(ds, &nd, shape)) {
            lr = pl_fail(PL_ECORRUPT, "%s: dataset %s cannot be opened (%s)", r->path, L.paths[i], h5_reason(why));
        } else {
            ckpt_tensor t = {.ndim = nd};
            memcpy(t.shape, shape, sizeof shape);
            int64_t numel = ckpt_tensor_numel(&t);
            if (numel > bufn) {
                free(buf);
                bufn = numel;
                buf = pl_malloc(sizeof(float) * (size_t)numel, "checkpoint verification buffer");
                if (!buf) lr = PL_ENOMEM, bufn = 0;
            }
            if (!lr) lr = read_verified(ds, buf, numel, 0, r->path, L.paths[i]);
        }
        close_id(&ds);
        if (lr) {
            bad = i;
            snprintf(msg, sizeof msg, "%s", pl_last_error());
            break;
        }
    }
    free(buf);
    rc = agree(rc, r->comm, r->path);
    if (!rc) {
        struct { int idx, rank; } mine = {bad, r->rank}, first;
        MPI_Allreduce(&mine, &first, 1, MPI_2INT, MPI_MINLOC, r->comm);
        if (first.idx != INT_MAX) {
            MPI_Bcast(msg, sizeof msg, MPI_CHAR, first.rank, r->comm);
            if (r->rank != first.rank) {   // the finder has logged it already
                pl_quiet_begin();
                pl_fail(PL_ECORRUPT, "%s", msg);
                pl_quiet_end();
            }
            rc = PL_ECORRUPT;
        }
    }
    ds_list_free(&L);
    return rc;
}

int ckpt_open(ckpt_reader **out, const char *path, MPI_Comm comm, int flags) {
    *out = NULL;
    ckpt_reader *r = pl_calloc(1, sizeof *r, "checkpoint reader");
    if (!r) return PL_ENOMEM;
    r->comm = comm;
    r->file = H5I_INVALID_HID;
    MPI_Comm_rank(comm, &r->rank);
    MPI_Comm_size(comm, &r->size);
    snprintf(r->path, sizeof r->path, "%s", path);
    int rc = 0;
    if (r->rank == 0) {
        struct stat st;
        if (stat(path, &st) != 0) rc = pl_fail(errno == ENOENT ? PL_ENOTFOUND : PL_EIO, "%s: cannot open checkpoint: %s", path, strerror(errno));
    }
    if ((rc = agree(rc, comm, path))) {
        free(r);
        return rc;
    }
    h5quiet q;
    quiet_on(&q);
    char why[256];
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0 && H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL) >= 0)
        r->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    close_id(&fapl);
    char *fmt = NULL;
    int64_t ver = 0, complete = 0;
    if (r->file < 0) {
        rc = pl_fail(PL_ECORRUPT, "%s: not a readable HDF5 file, truncated or damaged (%s)", path, h5_reason(why));
    } else {
        hid_t a = H5Aopen(r->file, "format", H5P_DEFAULT);
        if (a < 0 || attr_read_str(a, &fmt) || strcmp(fmt, CKPT_FORMAT))
            rc = pl_fail(PL_EFORMAT, "%s: root attribute format is '%s', expected '%s' (not an mp3d checkpoint)", path,
                         fmt ? fmt : "(absent)", CKPT_FORMAT);
        close_id(&a);
        H5Eclear2(H5E_DEFAULT);
        if (!rc && (attr_read_i64(r->file, "format_version", &ver) || ver < 1 || ver > CKPT_FORMAT_VERSION))
            rc = pl_fail(PL_EFORMAT, "%s: format_version %lld, this build reads 1..%lld (hint: newer mp3d?)", path,
                         (long long)ver, (long long)CKPT_FORMAT_VERSION);
        if (!rc && (attr_read_i64(r->file, "complete", &complete) || complete != 1))
            rc = pl_fail(PL_ECORRUPT, "%s: not marked complete (the write did not finish)", path);
        if (!rc && attr_read_i64(r->file, "step", &r->step))
            rc = pl_fail(PL_EFORMAT, "%s: root attribute step missing (%s)", path, h5_reason(why));
    }
    free(fmt);
    rc = agree(rc, comm, path);
    if (!rc && (flags & CKPT_VERIFY)) rc = verify_all(r);
    quiet_off(&q);
    if (rc) {
        ckpt_close(r);
        return rc;
    }
    *out = r;
    return 0;
}

int ckpt_open_latest(ckpt_reader **out, const char *dir, MPI_Comm comm, int *skipped) {
    *out = NULL;
    if (skipped) *skipped = 0;
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    int64_t *steps = NULL;
    int n = 0, rc = 0;
    if (rank == 0) rc = list_ckpts(dir, &steps, &n, 0);
    if ((rc = agree(rc, comm, dir))) {
        free(steps);
        return rc;
    }
    MPI_Bcast(&n, 1, MPI_INT, 0, comm);
    if (rank != 0 && n > 0) {
        steps = pl_malloc(sizeof *steps * (size_t)n, "checkpoint list");
        PL_ASSERT(steps != NULL);
    }
    if (n > 0) MPI_Bcast(steps, n, MPI_INT64_T, 0, comm);
    if (n == 0) {
        LOG0("ckpt:none dir:%s (fresh start)", dir);
        return PL_ENOTFOUND;
    }
    for (int i = 0; i < n; i++) {
        char path[PATH_CAP];
        if ((rc = ckpt_path_for_step(path, sizeof path, dir, steps[i]))) break;
        rc = ckpt_open(out, path, comm, CKPT_VERIFY);
        if (!rc) {
            if (i > 0) LOG0("ckpt:fallback using:%s skipped:%d", path, i);
            break;
        }
        if (skipped) (*skipped)++;
        if (rank == 0) LOG_WARN("ckpt:skip_invalid path:%s reason:%s", path, pl_last_error());
    }
    if (rc && rc != PL_ERANGE && rc != PL_ENOMEM && rc != PL_EMPI) {
        char newest[PATH_CAP];
        ckpt_path_for_step(newest, sizeof newest, dir, steps[0]);
        rc = pl_fail(PL_ECORRUPT, "%s: none of the %d checkpoints is valid (newest: %s)", dir, n, newest);
    }
    free(steps);
    return rc;
}

static hid_t open_group(ckpt_reader *r, const char *group) {
    hid_t g = H5Gopen2(r->file, group, H5P_DEFAULT);
    if (g < 0) {
        H5Eclear2(H5E_DEFAULT);
        pl_fail(PL_ENOTFOUND, "%s: no group %s", r->path, group);
    }
    return g;
}

// Opens "<group>/<name>" and returns its shape; H5I_INVALID_HID if absent.
static hid_t open_tensor(hid_t g, const char *name, int *ndim, int64_t *shape) {
    if (!name_ok(name) || H5Lexists(g, name, H5P_DEFAULT) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        g_h5why[0] = 0;
        return H5I_INVALID_HID;
    }
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    if (ds >= 0 && ds_shape(ds, ndim, shape)) close_id(&ds);
    H5Eclear2(H5E_DEFAULT);
    return ds;
}

static int same_shape(const ckpt_tensor *t, int nd, const int64_t *shape) {
    if (t->ndim != nd) return 0;
    for (int d = 0; d < nd; d++)
        if (t->shape[d] != shape[d]) return 0;
    return 1;
}

int ckpt_read_tensors(ckpt_reader *r, const char *group, ckpt_tensor *t, int n) {
    h5quiet q;
    quiet_on(&q);
    int rc = 0;
    hid_t g = open_group(r, group);
    if (g < 0) rc = PL_ENOTFOUND;
    for (int i = 0; i < n && !rc; i++) {
        int nd = 0;
        int64_t shape[CKPT_MAX_DIMS];
        hid_t ds = open_tensor(g, t[i].name, &nd, shape);
        if (ds < 0) {
            rc = pl_fail(PL_ENOTFOUND, "%s: dataset %s/%s not found", r->path, group, t[i].name ? t[i].name : "(null)");
            break;
        }
        if (!same_shape(&t[i], nd, shape)) {
            char a[160], b[160];
            shape_str(a, sizeof a, nd, shape);
            shape_str(b, sizeof b, t[i].ndim, t[i].shape);
            rc = pl_fail(PL_EINVAL, "%s: dataset %s/%s has shape %s, expected %s", r->path, group, t[i].name, a, b);
        } else {
            char dset[PATH_CAP];
            snprintf(dset, sizeof dset, "%s/%s", group, t[i].name);
            rc = read_verified(ds, t[i].data, ckpt_tensor_numel(&t[i]), 0, r->path, dset);
        }
        close_id(&ds);
    }
    close_id(&g);
    quiet_off(&q);
    return agree(rc, r->comm, r->path);
}

static herr_t names_cb(hid_t grp, const char *name, const H5L_info_t *info, void *data) {
    (void)grp;
    (void)info;
    ds_list *L = data;
    if (L->n == L->cap) {
        L->cap = L->cap ? 2 * L->cap : 64;
        char **np = realloc(L->paths, sizeof *np * (size_t)L->cap);
        if (!np) return -1;
        L->paths = np;
    }
    if (!(L->paths[L->n] = pl_strdup(name))) return -1;
    L->n++;
    return 0;
}

int ckpt_read_matching(ckpt_reader *r, const char *group, ckpt_tensor *t, int n, int *status, ckpt_match_report *rep) {
    ckpt_match_report R = {0};
    h5quiet q;
    quiet_on(&q);
    char why[256];
    int rc = 0;
    // An absent group is not an error here: every tensor is then absent (e.g. /buffers of a
    // GroupNorm network).
    hid_t g = H5Gopen2(r->file, group, H5P_DEFAULT);
    ds_list L = {0};
    hsize_t idx = 0;
    if (g < 0) {
        H5Eclear2(H5E_DEFAULT);
        g_h5why[0] = 0;
        LOG0("ckpt:load file:%s group:%s status:absent", r->path, group);
    } else if (H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, names_cb, &L) < 0) {
        rc = pl_fail(PL_ECORRUPT, "%s: cannot list group %s (%s)", r->path, group, h5_reason(why));
    }
    char *used = rc ? NULL : pl_calloc((size_t)L.n + 1, 1, "used names");
    if (!rc && !used) rc = PL_ENOMEM;
    for (int i = 0; i < n && !rc; i++) {
        int nd = 0, st;
        int64_t shape[CKPT_MAX_DIMS];
        hid_t ds = g >= 0 ? open_tensor(g, t[i].name, &nd, shape) : H5I_INVALID_HID;
        if (ds < 0) {
            st = CKPT_ABSENT;
            R.absent++;
            LOG0("ckpt:load name:%s status:absent file:%s", t[i].name, r->path);
        } else if (!same_shape(&t[i], nd, shape)) {
            char a[160], b[160];
            shape_str(a, sizeof a, nd, shape);
            shape_str(b, sizeof b, t[i].ndim, t[i].shape);
            st = CKPT_SHAPE_MISMATCH;
            R.mismatched++;
            LOG0("ckpt:load name:%s status:shape_mismatch file_shape:%s want:%s", t[i].name, a, b);
        } else {
            char dset[PATH_CAP];
            snprintf(dset, sizeof dset, "%s/%s", group, t[i].name);
            rc = read_verified(ds, t[i].data, ckpt_tensor_numel(&t[i]), 0, r->path, dset);
            st = CKPT_LOADED;
            R.loaded++;
        }
        if (ds >= 0)
            for (int j = 0; j < L.n; j++)
                if (!strcmp(L.paths[j], t[i].name)) used[j] = 1;
        close_id(&ds);
        if (status) status[i] = st;
    }
    if (!rc)
        for (int j = 0; j < L.n; j++)
            if (!used[j]) {
                R.unused++;
                LOG_DEBUG("ckpt:load name:%s status:unused file:%s", L.paths[j], r->path);
            }
    free(used);
    ds_list_free(&L);
    close_id(&g);
    quiet_off(&q);
    rc = agree(rc, r->comm, r->path);
    if (!rc)
        LOG0("ckpt:load file:%s group:%s loaded:%d absent:%d mismatched:%d unused:%d", r->path, group, R.loaded, R.absent,
             R.mismatched, R.unused);
    if (rep) *rep = R;
    return rc;
}

int ckpt_list(ckpt_reader *r, const char *group, ckpt_entry **out, int *nout) {
    *out = NULL;
    *nout = 0;
    h5quiet q;
    quiet_on(&q);
    char why[256];
    int rc = 0;
    hid_t g = open_group(r, group);
    ds_list L = {0};
    hsize_t idx = 0;
    if (g < 0) rc = PL_ENOTFOUND;
    else if (H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, names_cb, &L) < 0)
        rc = pl_fail(PL_ECORRUPT, "%s: cannot list group %s (%s)", r->path, group, h5_reason(why));
    ckpt_entry *e = rc ? NULL : pl_calloc((size_t)L.n + 1, sizeof *e, "checkpoint entries");
    if (!rc && !e) rc = PL_ENOMEM;
    int n = 0;
    for (int j = 0; j < L.n && !rc; j++) {
        if (strlen(L.paths[j]) >= CKPT_NAME_MAX) continue;
        hid_t o = H5Oopen(g, L.paths[j], H5P_DEFAULT);
        int is_ds = o >= 0 && H5Iget_type(o) == H5I_DATASET;
        if (o >= 0) H5Oclose(o);
        if (!is_ds) continue;
        hid_t ds = H5Dopen2(g, L.paths[j], H5P_DEFAULT);
        if (ds < 0 || ds_shape(ds, &e[n].ndim, e[n].shape) || attr_read_u64(ds, "checksum", &e[n].checksum))
            rc = pl_fail(PL_ECORRUPT, "%s: dataset %s/%s unreadable (%s)", r->path, group, L.paths[j], h5_reason(why));
        snprintf(e[n].name, sizeof e[n].name, "%s", L.paths[j]);
        close_id(&ds);
        if (!rc) n++;
    }
    ds_list_free(&L);
    close_id(&g);
    quiet_off(&q);
    rc = agree(rc, r->comm, r->path);
    if (rc) {
        free(e);
        return rc;
    }
    *out = e;
    *nout = n;
    return 0;
}

typedef struct {
    ckpt_state *s;
    int bad;
    char badname[64];
} state_ctx;

static herr_t state_cb(hid_t loc, const char *name, const H5A_info_t *info, void *data) {
    (void)info;
    state_ctx *c = data;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t ty = a >= 0 ? H5Aget_type(a) : H5I_INVALID_HID;
    H5T_class_t cls = ty >= 0 ? H5Tget_class(ty) : H5T_NO_CLASS;
    ckpt_state *s = c->s;
    int ok = a >= 0 && ty >= 0;
    if (ok && !strcmp(name, "rng")) {
        hid_t sp = H5Aget_space(a);
        hssize_t np = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
        close_id(&sp);
        ok = np >= 0 && np <= CKPT_RNG_MAX && H5Aread(a, H5T_NATIVE_UINT64, s->rng) >= 0;
        if (ok) s->nrng = np;
    } else if (ok && cls == H5T_INTEGER) {
        int64_t v = 0;
        ok = attr_single(a) && H5Aread(a, H5T_NATIVE_INT64, &v) >= 0;
        if (!ok) {
        } else if (!strcmp(name, "step")) s->step = v;
        else if (!strcmp(name, "epoch")) s->epoch = v;
        else if (!strcmp(name, "epoch_pos")) s->epoch_pos = v;
        else if (!strcmp(name, "world_size")) s->world_size = v;
        else ok = ckpt_state_set_int(s, name, v) == 0;
    } else if (ok && cls == H5T_FLOAT) {
        double v = 0;
        ok = attr_single(a) && H5Aread(a, H5T_NATIVE_DOUBLE, &v) >= 0 && ckpt_state_set_double(s, name, v) == 0;
    } else {
        ok = 0;
    }
    close_id(&ty);
    close_id(&a);
    if (!ok) {
        c->bad = 1;
        snprintf(c->badname, sizeof c->badname, "%s", name);
        return -1;
    }
    return 0;
}

int ckpt_read_state(ckpt_reader *r, ckpt_state *s) {
    ckpt_state_init(s);
    h5quiet q;
    quiet_on(&q);
    char why[256];
    int rc = 0;
    hid_t g = H5Gopen2(r->file, "/state", H5P_DEFAULT);
    if (g < 0) {
        rc = pl_fail(PL_ENOTFOUND, "%s: no /state group (%s)", r->path, h5_reason(why));
    } else {
        state_ctx c = {.s = s};
        hsize_t idx = 0;
        if (H5Aiterate2(g, H5_INDEX_NAME, H5_ITER_INC, &idx, state_cb, &c) < 0 || c.bad)
            rc = pl_fail(PL_EFORMAT, "%s: /state attribute '%s' unreadable or of an unexpected type (%s)", r->path,
                         c.badname, h5_reason(why));
    }
    close_id(&g);
    quiet_off(&q);
    return agree(rc, r->comm, r->path);
}

int ckpt_read_text(ckpt_reader *r, const char *key, char **text) {
    *text = NULL;
    h5quiet q;
    quiet_on(&q);
    int rc = 0;
    if (!key || H5Aexists(r->file, key) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        rc = PL_ENOTFOUND;   // not an error by itself: the caller decides
    } else {
        char why[256];
        hid_t a = H5Aopen(r->file, key, H5P_DEFAULT);
        if (a < 0 || attr_read_str(a, text))
            rc = pl_fail(PL_EFORMAT, "%s: text attribute '%s' unreadable (%s)", r->path, key, h5_reason(why));
        close_id(&a);
    }
    quiet_off(&q);
    return agree(rc, r->comm, r->path);
}
