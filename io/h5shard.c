// h5shard: HDF5 sample shards written with collective parallel HDF5 (see io/h5shard.h).
// Spool mode: each rank's samples go to a local file first, because a sample's place in the file
// is only known once every rank knows how many samples it kept (bad inputs are skipped); offsets
// come from MPI_Exscan at the end and the raw data is then written collectively in rounds.
// Direct mode: the stage reserves a slot per sample that can be kept and each sample's data is
// written into its slot at once; slots left empty are closed up at the end.
#define _GNU_SOURCE   // O_DIRECT
#include "io/h5shard.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <unistd.h>

#include "io/fileio.h"
#include "nn/pl.h"

static const int64_t shard_format_version = 1;        // attribute "format_version"
static const size_t shard_round_bytes = 64u << 20;     // raw data per collective write round
static const size_t shard_spool_memory = 512u << 20;   // spool: the first samples kept in memory
enum { SHARD_MAX_ATTRS = 64, SHARD_NAME_CAP = 256 };
enum { SHARD_IO_ALIGN = 4096 };   // direct mode: chunk addresses, and O_DIRECT's offset/size/buffer alignment

#define SHARD_H5(call, ...)                                                       \
    do {                                                                         \
        if ((call) < 0) { rc = pl_fail(PL_EH5, __VA_ARGS__); goto done; }        \
    } while (0)

static size_t type_size(enum shard_type t) {
    switch (t) {
    case SHARD_U8: case SHARD_I8: case SHARD_STR: return 1;
    case SHARD_I16: return 2;
    case SHARD_I32: case SHARD_F32: return 4;
    default: return 8;
    }
}

// Bytes one sample (or row) of a column occupies.
static size_t col_bytes(const shard_col *c) {
    return c->type == SHARD_STR ? (size_t)c->width : type_size(c->type) * (size_t)c->width;
}

// Memory type (file == 0) or little-endian file type (file == 1); strings are fixed width.
static hid_t make_type(enum shard_type t, int64_t str_width, int file) {
    switch (t) {
    case SHARD_U8: return H5Tcopy(file ? H5T_STD_U8LE : H5T_NATIVE_UINT8);
    case SHARD_I8: return H5Tcopy(file ? H5T_STD_I8LE : H5T_NATIVE_INT8);
    case SHARD_I16: return H5Tcopy(file ? H5T_STD_I16LE : H5T_NATIVE_INT16);
    case SHARD_I32: return H5Tcopy(file ? H5T_STD_I32LE : H5T_NATIVE_INT32);
    case SHARD_I64: return H5Tcopy(file ? H5T_STD_I64LE : H5T_NATIVE_INT64);
    case SHARD_F32: return H5Tcopy(file ? H5T_IEEE_F32LE : H5T_NATIVE_FLOAT);
    case SHARD_F64: return H5Tcopy(file ? H5T_IEEE_F64LE : H5T_NATIVE_DOUBLE);
    case SHARD_STR: {
        hid_t s = H5Tcopy(H5T_C_S1);
        if (s < 0) return s;
        if (H5Tset_size(s, (size_t)(str_width > 0 ? str_width : 1)) < 0 || H5Tset_strpad(s, H5T_STR_NULLPAD) < 0) {
            H5Tclose(s);
            return H5I_INVALID_HID;
        }
        return s;
    }
    }
    return H5I_INVALID_HID;
}

// ============================================================================== writer

typedef struct {
    char name[SHARD_NAME_CAP];
    int kind;        // 0 string, 1 f64, 2 i64
    void *val;       // string or (n) values
    int n;
} shard_attr;

struct h5shard_writer {
    char *path;
    char spool_path[4096];
    int fd;                     // spool file: sample i >= mem_n at (i - mem_n) * sample_bytes
    uint8_t *mem;               // spool head in memory: samples [0, mem_n), room for mem_max
    int64_t mem_n, mem_max;     // mem_max: samples allowed in memory (0 when the mapping failed)
    shard_layout lay;           // copied, names owned
    shard_col *cols, *rows;
    char *data_name, *offsets_name;
    size_t sample_bytes;
    int64_t n, cap;             // samples added
    int64_t *keys;              // (n)
    int64_t *row_start, *row_n; // (n) into the row buffers, in add order
    uint8_t **colbuf;           // per column: (cap, col_bytes)
    uint8_t **rowbuf;           // per row column: (rows_cap, col_bytes)
    int64_t rows_n, rows_cap;
    shard_attr attrs[SHARD_MAX_ATTRS];
    int nattrs;
    // direct mode: the file is open on every rank from create to finish
    int direct;
    int64_t reserve;            // data slots
    hid_t fid, ds, dxpl, mt;    // file, data dataset, collective transfer list, data memory type
    double direct_write_s;      // time spent in h5shard_add_at's writes
    // raw writes of a slot's chunk at its file address (see raw_slot_write)
    int raw;                    // file type == memory type: the chunk's bytes are the sample's
    int rawfd, dfd;             // the .tmp file, buffered and with O_DIRECT (-1: not open / refused)
    uint8_t *stage;             // (sample_bytes), aligned for O_DIRECT, when the caller's buffer is not
    int64_t n_odirect, n_buffered, n_hdf5;   // samples written each way
};

static void direct_close(h5shard_writer *w) {   // collective (H5Fclose)
    if (w->rawfd >= 0) close(w->rawfd);
    if (w->dfd >= 0) close(w->dfd);
    w->rawfd = w->dfd = -1;
    if (w->ds >= 0) H5Dclose(w->ds);
    if (w->mt >= 0) H5Tclose(w->mt);
    if (w->dxpl >= 0) H5Pclose(w->dxpl);
    if (w->fid >= 0) H5Fclose(w->fid);
    w->ds = w->mt = w->dxpl = w->fid = H5I_INVALID_HID;
}

static void writer_free(h5shard_writer *w) {
    if (!w) return;
    if (w->direct) direct_close(w);
    if (w->fd >= 0) close(w->fd);
    if (w->spool_path[0]) unlink(w->spool_path);
    if (w->mem) munmap(w->mem, (size_t)w->mem_max * w->sample_bytes);
    free(w->stage);
    for (int c = 0; c < w->lay.ncols; c++) { free(w->colbuf ? w->colbuf[c] : NULL); free((char *)w->cols[c].name); }
    for (int c = 0; c < w->lay.nrows; c++) { free(w->rowbuf ? w->rowbuf[c] : NULL); free((char *)w->rows[c].name); }
    free(w->colbuf);
    free(w->rowbuf);
    free(w->cols);
    free(w->rows);
    free(w->data_name);
    free(w->offsets_name);
    free(w->keys);
    free(w->row_start);
    free(w->row_n);
    for (int a = 0; a < w->nattrs; a++) free(w->attrs[a].val);
    free(w->path);
    free(w);
}

void h5shard_writer_abort(h5shard_writer *w) { writer_free(w); }

// The writer without its storage (spool or file).
static int writer_new(h5shard_writer **out, const char *path, const shard_layout *lay) {
    *out = NULL;
    if (lay->ndims < 1 || lay->ndims > 6 || !lay->data_name || lay->data_type == SHARD_STR)
        return pl_fail(PL_EINVAL, "%s: shard layout: data '%s' ndims %d (need 1..6, numeric)", path,
                       lay->data_name ? lay->data_name : "(null)", lay->ndims);
    if (lay->nrows > 0 && !lay->rows_offsets)
        return pl_fail(PL_EINVAL, "%s: shard layout has %d row columns but no offsets name", path, lay->nrows);
    h5shard_writer *w = pl_calloc(1, sizeof *w, "shard writer");
    if (!w) return PL_ENOMEM;
    w->fd = w->rawfd = w->dfd = -1;
    w->fid = w->ds = w->dxpl = w->mt = H5I_INVALID_HID;
    w->lay = *lay;
    w->path = pl_strdup(path);
    w->data_name = pl_strdup(lay->data_name);
    w->offsets_name = pl_strdup(lay->rows_offsets ? lay->rows_offsets : "row_offsets");
    w->cols = pl_calloc((size_t)lay->ncols + 1, sizeof(shard_col), "shard cols");
    w->rows = pl_calloc((size_t)lay->nrows + 1, sizeof(shard_col), "shard rows");
    w->colbuf = pl_calloc((size_t)lay->ncols + 1, sizeof(uint8_t *), "shard col buffers");
    w->rowbuf = pl_calloc((size_t)lay->nrows + 1, sizeof(uint8_t *), "shard row buffers");
    if (!w->path || !w->data_name || !w->offsets_name || !w->cols || !w->rows || !w->colbuf || !w->rowbuf) {
        w->lay.ncols = w->lay.nrows = 0;
        writer_free(w);
        return PL_ENOMEM;
    }
    int ok = 1;
    for (int c = 0; c < lay->ncols; c++) {
        w->cols[c] = lay->cols[c];
        w->cols[c].name = pl_strdup(lay->cols[c].name);
        if (!w->cols[c].name || lay->cols[c].width < 1) ok = 0;
    }
    for (int c = 0; c < lay->nrows; c++) {
        w->rows[c] = lay->rows[c];
        w->rows[c].name = pl_strdup(lay->rows[c].name);
        if (!w->rows[c].name || lay->rows[c].width < 1) ok = 0;
    }
    w->lay.cols = w->cols;
    w->lay.rows = w->rows;
    w->lay.data_name = w->data_name;
    w->lay.rows_offsets = w->offsets_name;
    if (!ok) {
        writer_free(w);
        return pl_fail(PL_EINVAL, "%s: shard layout: a column has no name or a width < 1", path);
    }
    w->sample_bytes = type_size(lay->data_type);
    for (int d = 0; d < lay->ndims; d++) {
        if (lay->dims[d] < 1) {
            writer_free(w);
            return pl_fail(PL_EINVAL, "%s: shard layout: sample dim %d is %lld", path, d, (long long)lay->dims[d]);
        }
        w->sample_bytes *= (size_t)lay->dims[d];
    }
    *out = w;
    return 0;
}

int h5shard_writer_create(h5shard_writer **out, const char *path, const shard_layout *lay, int rank) {
    h5shard_writer *w = NULL;
    int rc = writer_new(&w, path, lay);
    *out = NULL;
    if (rc) return rc;
    snprintf(w->spool_path, sizeof w->spool_path, "%s.spool.%d", path, rank);
    w->fd = open(w->spool_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (w->fd < 0) {
        int e = errno;
        w->spool_path[0] = 0;
        writer_free(w);
        return pl_fail(PL_EIO, "%s.spool.%d: cannot create the sample spool: %s", path, rank, strerror(e));
    }
    // The first samples stay in memory (h5shard_finish then writes them without reading them
    // back); MP3D_SHARD_SPOOL_MEMORY (bytes) overrides the bound, for tests.
    size_t mem = shard_spool_memory;
    const char *env = getenv("MP3D_SHARD_SPOOL_MEMORY");
    if (env && *env) mem = (size_t)strtoull(env, NULL, 10);
    w->mem_max = (int64_t)(mem / w->sample_bytes);
    *out = w;
    return 0;
}

int64_t h5shard_writer_count(const h5shard_writer *w) { return w->n; }

static int grow(void **p, int64_t newcap, size_t elem, const char *what) {
    void *q = pl_realloc(*p, (size_t)newcap * elem, what);
    if (!q) return PL_ENOMEM;
    *p = q;
    return 0;
}

// Room for one more sample and `nrow` rows.
static int reserve_sample(h5shard_writer *w, int64_t key, int64_t nrow) {
    if (nrow < 0) return pl_fail(PL_EINVAL, "%s: sample key %lld has %lld rows", w->path, (long long)key, (long long)nrow);
    if (w->n == w->cap) {
        int64_t nc = w->cap ? 2 * w->cap : 64;
        if (grow((void **)&w->keys, nc, sizeof(int64_t), "shard keys") || grow((void **)&w->row_start, nc, sizeof(int64_t), "shard rows") ||
            grow((void **)&w->row_n, nc, sizeof(int64_t), "shard rows"))
            return PL_ENOMEM;
        for (int c = 0; c < w->lay.ncols; c++)
            if (grow((void **)&w->colbuf[c], nc, col_bytes(&w->cols[c]), "shard column")) return PL_ENOMEM;
        w->cap = nc;
    }
    if (w->rows_n + nrow > w->rows_cap) {
        int64_t nc = PL_MAX(2 * w->rows_cap, w->rows_n + nrow + 64);
        for (int c = 0; c < w->lay.nrows; c++)
            if (grow((void **)&w->rowbuf[c], nc, col_bytes(&w->rows[c]), "shard row column")) return PL_ENOMEM;
        w->rows_cap = nc;
    }
    return 0;
}

// Keeps a sample's columns and rows (written at finish).
static void remember_sample(h5shard_writer *w, int64_t key, const void *const *colvals, int64_t nrow, const void *const *rowvals) {
    for (int c = 0; c < w->lay.ncols; c++) {
        size_t b = col_bytes(&w->cols[c]);
        memcpy(w->colbuf[c] + (size_t)w->n * b, colvals[c], b);
    }
    for (int c = 0; c < w->lay.nrows && nrow > 0; c++) {
        size_t b = col_bytes(&w->rows[c]);
        memcpy(w->rowbuf[c] + (size_t)w->rows_n * b, rowvals[c], b * (size_t)nrow);
    }
    w->keys[w->n] = key;
    w->row_start[w->n] = w->rows_n;
    w->row_n[w->n] = nrow;
    w->rows_n += nrow;
    w->n++;
}

int h5shard_add(h5shard_writer *w, int64_t key, const void *data, const void *const *colvals, int64_t nrow,
                const void *const *rowvals) {
    if (w->direct) return pl_fail(PL_EINVAL, "%s: h5shard_add on a direct writer (use h5shard_add_at)", w->path);
    int rc = reserve_sample(w, key, nrow);
    if (rc) return rc;
    // raw data to the spool: its memory head while there is room and nothing has gone to the file
    // yet (a failed mapping only ends the head), then the file
    if (w->n < w->mem_max && w->n == w->mem_n) {
        if (!w->mem) {   // address space for the whole head, touched as it fills; huge pages
            void *q = mmap(NULL, (size_t)w->mem_max * w->sample_bytes, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (q != MAP_FAILED) {
#ifdef MADV_HUGEPAGE
                madvise(q, (size_t)w->mem_max * w->sample_bytes, MADV_HUGEPAGE);   // a hint (page faults are dear in VMs)
#endif
                w->mem = q;
            } else {
                w->mem_max = 0;
            }
        }
        if (w->mem) {
            memcpy(w->mem + (size_t)w->mem_n * w->sample_bytes, data, w->sample_bytes);
            w->mem_n++;
            remember_sample(w, key, colvals, nrow, rowvals);
            return 0;
        }
    }
    const uint8_t *p = data;
    size_t left = w->sample_bytes;
    off_t at = (off_t)(w->n - w->mem_n) * (off_t)w->sample_bytes;
    while (left > 0) {
        ssize_t k = pwrite(w->fd, p, left, at);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return pl_fail(PL_EIO, "%s: writing sample key %lld: %s", w->spool_path, (long long)key, strerror(errno));
        p += k;
        at += k;
        left -= (size_t)k;
    }
    remember_sample(w, key, colvals, nrow, rowvals);
    return 0;
}

// One data slot of a direct writer, read (write == 0) or written, independent I/O.
static int direct_slot_io(h5shard_writer *w, int64_t slot, void *buf, int write) {
    int rc = 0;
    hid_t fs = H5Dget_space(w->ds), ms = H5I_INVALID_HID;
    hsize_t st[8] = {0}, cnt[8];
    cnt[0] = 1;
    for (int d = 0; d < w->lay.ndims; d++) cnt[d + 1] = (hsize_t)w->lay.dims[d];
    st[0] = (hsize_t)slot;
    if (fs < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, st, NULL, cnt, NULL) < 0 ||
        (ms = H5Screate_simple(w->lay.ndims + 1, cnt, NULL)) < 0)
        rc = pl_fail(PL_EH5, "%s.tmp: selecting sample slot %lld", w->path, (long long)slot);
    else if ((write ? H5Dwrite(w->ds, w->mt, ms, fs, H5P_DEFAULT, buf) : H5Dread(w->ds, w->mt, ms, fs, H5P_DEFAULT, buf)) < 0)
        rc = pl_fail(PL_EH5, "%s.tmp: %s sample slot %lld failed (disk full?)", w->path, write ? "writing" : "reading back", (long long)slot);
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    return rc;
}

// Direct mode writes a sample's bytes itself, at its chunk's file address, instead of through
// HDF5: the chunk is unfiltered, allocated at creation and its type is the memory type, so its
// bytes are the sample's (the file is the same as with H5Dwrite). With O_DIRECT, when the address,
// the size and the buffer are aligned (HDF5 aligns the chunks), the kernel writes from our buffer:
// no copy into the page cache, which costs more than the PNG decoding of a tenth of the samples
// (results/bench/preprocess.md). Filesystems that refuse O_DIRECT (tmpfs) get a buffered pwrite;
// MP3D_SHARD_DIRECT_IO=0 asks for that everywhere. Anything unexpected: HDF5's own write.
static int raw_slot_write(h5shard_writer *w, int64_t slot, const void *data) {
    hsize_t at[8] = {0}, size = 0;
    haddr_t addr = HADDR_UNDEF;
    unsigned filters = 0;
    at[0] = (hsize_t)slot;
    if (!w->raw || H5Dget_chunk_info_by_coord(w->ds, at, &filters, &addr, &size) < 0 || addr == HADDR_UNDEF ||
        size != w->sample_bytes || filters != 0) {
        w->n_hdf5++;
        return direct_slot_io(w, slot, (void *)data, 1);
    }
    const uint8_t *src = data;
    int fd = w->rawfd;
    if (w->dfd >= 0 && addr % SHARD_IO_ALIGN == 0) {
        if ((uintptr_t)data % SHARD_IO_ALIGN) {
            if (!w->stage && posix_memalign((void **)&w->stage, SHARD_IO_ALIGN, w->sample_bytes)) w->stage = NULL;
            if (w->stage) src = memcpy(w->stage, data, w->sample_bytes);
        }
        if ((uintptr_t)src % SHARD_IO_ALIGN == 0) fd = w->dfd;
    }
    for (size_t done = 0; done < w->sample_bytes;) {
        ssize_t k = pwrite(fd, src + done, w->sample_bytes - done, (off_t)(addr + done));
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && errno == EINVAL && fd == w->dfd && done == 0) {   // O_DIRECT refused after all
            LOG_DEBUG("h5shard:%s.tmp O_DIRECT write refused, buffered from here", w->path);
            close(w->dfd);
            w->dfd = -1;
            fd = w->rawfd;
            src = data;
            continue;
        }
        if (k <= 0)
            return pl_fail(PL_EIO, "%s.tmp: writing sample slot %lld (%zu bytes at byte %llu): %s", w->path, (long long)slot,
                           w->sample_bytes, (unsigned long long)addr, k < 0 ? strerror(errno) : "nothing written");
        done += (size_t)k;
    }
    if (fd == w->dfd) w->n_odirect++;
    else w->n_buffered++;
    return 0;
}

// Opens the raw descriptors of a direct writer's file (see raw_slot_write); failing that, the
// samples go through HDF5.
static void raw_open(h5shard_writer *w, const char *tmp, hid_t ft) {
    w->raw = H5Tequal(ft, w->mt) > 0 && (w->rawfd = open(tmp, O_WRONLY)) >= 0;
    const char *env = getenv("MP3D_SHARD_DIRECT_IO");
    if (w->raw && w->sample_bytes % SHARD_IO_ALIGN == 0 && !(env && !strcmp(env, "0")))
        w->dfd = open(tmp, O_WRONLY | O_DIRECT);   // -1 where the filesystem refuses it
}

int h5shard_writer_create_direct(h5shard_writer **out, const char *path, const shard_layout *lay, int64_t reserve,
                                 MPI_Comm comm) {
    *out = NULL;
    h5shard_writer *w = NULL;
    int lrc = writer_new(&w, path, lay), rc = 0;
    if (!lrc && reserve < 0) lrc = pl_fail(PL_EINVAL, "%s: %lld slots reserved", path, (long long)reserve);
    MPI_Allreduce(&lrc, &rc, 1, MPI_INT, MPI_MIN, comm);   // the layout is the same everywhere
    if (rc) {
        writer_free(w);
        return rc;
    }
    w->direct = 1;
    w->reserve = reserve;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS), dcpl = H5Pcreate(H5P_DATASET_CREATE), space = H5I_INVALID_HID, ft = H5I_INVALID_HID;
    if (fapl < 0 || H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL) < 0 || H5Pset_coll_metadata_write(fapl, 1) < 0 ||
        H5Pset_alignment(fapl, SHARD_IO_ALIGN, SHARD_IO_ALIGN) < 0)   // chunks at aligned addresses, for O_DIRECT
        lrc = pl_fail(PL_EH5, "%s: MPI-IO file access list failed", tmp);
    // collective: the same outcome on every rank (an MPI_File_open failure is reported everywhere)
    if (!lrc && (w->fid = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl)) < 0)
        lrc = pl_fail(PL_EH5, "%s: cannot create the HDF5 file (H5Fcreate)", tmp);
    if (!lrc) {
        // one sample per chunk, space for every slot allocated now (independent writes into
        // chunks need no collective allocation later), no fill: each slot is written once
        hsize_t dims[8], maxd[8], chunk[8];
        dims[0] = (hsize_t)reserve;
        maxd[0] = H5S_UNLIMITED;
        chunk[0] = 1;
        for (int d = 0; d < lay->ndims; d++) dims[d + 1] = maxd[d + 1] = chunk[d + 1] = (hsize_t)lay->dims[d];
        space = H5Screate_simple(lay->ndims + 1, dims, maxd);
        ft = make_type(lay->data_type, 0, 1);
        w->mt = make_type(lay->data_type, 0, 0);
        if (space < 0 || dcpl < 0 || ft < 0 || w->mt < 0 || H5Pset_chunk(dcpl, lay->ndims + 1, chunk) < 0 ||
            H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0 || H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY) < 0 ||
            (w->ds = H5Dcreate2(w->fid, lay->data_name, ft, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)) < 0)
            lrc = pl_fail(PL_EH5, "%s: cannot create dataset '%s' of %lld slots (disk full?)", tmp, lay->data_name, (long long)reserve);
        else
            raw_open(w, tmp, ft);
    }
    if (!lrc && ((w->dxpl = H5Pcreate(H5P_DATASET_XFER)) < 0 || H5Pset_dxpl_mpio(w->dxpl, H5FD_MPIO_COLLECTIVE) < 0))
        lrc = pl_fail(PL_EH5, "%s: transfer property list failed", tmp);
    if (space >= 0) H5Sclose(space);
    if (ft >= 0) H5Tclose(ft);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (fapl >= 0) H5Pclose(fapl);
    MPI_Allreduce(&lrc, &rc, 1, MPI_INT, MPI_MIN, comm);
    if (rc) {
        int rank;
        MPI_Comm_rank(comm, &rank);
        if (lrc == 0) pl_fail(rc, "%s: not created: another rank failed (%s)", tmp, pl_err_name(rc));
        writer_free(w);   // closes the file on every rank where it opened
        if (rank == 0) unlink(tmp);
        return rc;
    }
    *out = w;
    return 0;
}

int h5shard_add_at(h5shard_writer *w, int64_t slot, const void *data, const void *const *colvals, int64_t nrow,
                   const void *const *rowvals) {
    if (!w->direct) return pl_fail(PL_EINVAL, "%s: h5shard_add_at on a spool writer (use h5shard_add)", w->path);
    if (slot < 0 || slot >= w->reserve)
        return pl_fail(PL_EINVAL, "%s: sample slot %lld outside the %lld reserved", w->path, (long long)slot, (long long)w->reserve);
    int rc = reserve_sample(w, slot, nrow);
    if (rc) return rc;
    double t0 = pl_time();
    rc = raw_slot_write(w, slot, data);
    w->direct_write_s += pl_time() - t0;
    if (rc) return rc;
    remember_sample(w, slot, colvals, nrow, rowvals);
    return 0;
}

static int add_attr(h5shard_writer *w, const char *name, int kind, const void *v, size_t bytes, int n) {
    if (strlen(name) >= SHARD_NAME_CAP) return pl_fail(PL_EINVAL, "%s: attribute name '%s' too long", w->path, name);
    shard_attr *a = NULL;
    for (int i = 0; i < w->nattrs; i++)
        if (!strcmp(w->attrs[i].name, name)) a = &w->attrs[i];
    if (!a) {
        if (w->nattrs == SHARD_MAX_ATTRS) return pl_fail(PL_ERANGE, "%s: more than %d attributes", w->path, SHARD_MAX_ATTRS);
        a = &w->attrs[w->nattrs++];
        snprintf(a->name, sizeof a->name, "%s", name);
    } else {
        free(a->val);
    }
    a->val = pl_malloc(bytes ? bytes : 1, "shard attribute");
    if (!a->val) return PL_ENOMEM;
    if (bytes) memcpy(a->val, v, bytes);
    a->kind = kind;
    a->n = n;
    return 0;
}

int h5shard_set_attr_str(h5shard_writer *w, const char *name, const char *value) {
    return add_attr(w, name, 0, value, strlen(value) + 1, 1);
}
int h5shard_set_attr_f64(h5shard_writer *w, const char *name, const double *v, int n) {
    return add_attr(w, name, 1, v, sizeof(double) * (size_t)n, n);
}
int h5shard_set_attr_i64(h5shard_writer *w, const char *name, const int64_t *v, int n) {
    return add_attr(w, name, 2, v, sizeof(int64_t) * (size_t)n, n);
}

static const int64_t *g_sort_keys;
static int cmp_by_key(const void *a, const void *b) {
    int64_t ka = g_sort_keys[*(const int64_t *)a], kb = g_sort_keys[*(const int64_t *)b];
    return (ka > kb) - (ka < kb);
}

// Creates dataset `name` of shape (len0, inner...) at the file root. Chunked one entry per chunk
// with an unlimited first axis when `chunked`, else contiguous.
static hid_t create_dset(hid_t fid, const char *name, hid_t ftype, int64_t len0, int ninner, const int64_t *inner, int chunked) {
    hsize_t dims[8], maxd[8], chunk[8];
    dims[0] = (hsize_t)len0;
    maxd[0] = chunked ? H5S_UNLIMITED : (hsize_t)len0;
    chunk[0] = 1;
    for (int d = 0; d < ninner; d++) dims[d + 1] = maxd[d + 1] = chunk[d + 1] = (hsize_t)inner[d];
    hid_t space = H5Screate_simple(ninner + 1, dims, maxd);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t ds = H5I_INVALID_HID;
    if (space >= 0 && dcpl >= 0) {
        int ok = 1;
        if (chunked) {
            ok = H5Pset_chunk(dcpl, ninner + 1, chunk) >= 0 && H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) >= 0;
        }
        if (ok) ds = H5Dcreate2(fid, name, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    }
    if (space >= 0) H5Sclose(space);
    if (dcpl >= 0) H5Pclose(dcpl);
    return ds;
}

// Collective write of `count` entries at `start` along axis 0 (count may be 0 on some ranks).
static int write_entries(hid_t ds, hid_t memtype, hid_t dxpl, const void *buf, int64_t start, int64_t count,
                         int *all_collective, const char *what) {
    int rc = 0;
    hid_t fspace = H5Dget_space(ds), mspace = H5I_INVALID_HID;
    static const uint8_t dummy[16];
    if (fspace < 0) return pl_fail(PL_EH5, "H5Dget_space(%s) failed", what);
    hsize_t dims[8], st[8], cnt[8];
    int nd = H5Sget_simple_extent_dims(fspace, dims, NULL);
    hsize_t inner = 1;
    for (int d = 0; d < nd; d++) {
        st[d] = 0;
        cnt[d] = dims[d];
        if (d > 0) inner *= dims[d];
    }
    // An empty contiguous dataset has no storage to write to; every rank sees the same extent.
    if (nd >= 1 && dims[0] == 0) goto done;
    if (count > 0) {
        st[0] = (hsize_t)start;
        cnt[0] = (hsize_t)count;
        SHARD_H5(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, st, NULL, cnt, NULL), "%s: selecting entries %lld+%lld", what,
                (long long)start, (long long)count);
        // memory space of the same shape as the file selection: HDF5 then maps whole chunks
        // instead of iterating element by element (a flat 1-D space was ~10x slower here)
        (void)inner;
        mspace = H5Screate_simple(nd, cnt, NULL);
    } else {
        hsize_t one = 1;
        SHARD_H5(H5Sselect_none(fspace), "%s: select none", what);
        mspace = H5Screate_simple(1, &one, NULL);
        if (mspace >= 0) H5Sselect_none(mspace);
    }
    if (mspace < 0) { rc = pl_fail(PL_EH5, "%s: memory space", what); goto done; }
    SHARD_H5(H5Dwrite(ds, memtype, mspace, fspace, dxpl, buf ? buf : dummy), "%s: H5Dwrite of entries %lld+%lld failed",
            what, (long long)start, (long long)count);
    H5D_mpio_actual_io_mode_t mode;
    if (H5Pget_mpio_actual_io_mode(dxpl, &mode) >= 0 && mode == H5D_MPIO_NO_COLLECTIVE) {
        *all_collective = 0;
        LOG_DEBUG("h5shard:%s io_mode:independent (collective fallback)", what);
    }
done:
    if (mspace >= 0) H5Sclose(mspace);
    H5Sclose(fspace);
    return rc;
}

static int write_attr(hid_t loc, const shard_attr *a) {
    int rc = 0;
    hid_t type = H5I_INVALID_HID, space = H5I_INVALID_HID, at = H5I_INVALID_HID;
    if (a->kind == 0) {
        type = H5Tcopy(H5T_C_S1);
        H5Tset_size(type, strlen(a->val) + 1);
        H5Tset_strpad(type, H5T_STR_NULLTERM);
        space = H5Screate(H5S_SCALAR);
    } else {
        hsize_t n = (hsize_t)a->n;
        type = H5Tcopy(a->kind == 1 ? H5T_IEEE_F64LE : H5T_STD_I64LE);
        space = H5Screate_simple(1, &n, NULL);
    }
    if (type < 0 || space < 0) { rc = pl_fail(PL_EH5, "attribute %s: type/space", a->name); goto done; }
    at = H5Acreate2(loc, a->name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (at < 0) { rc = pl_fail(PL_EH5, "H5Acreate2(%s) failed", a->name); goto done; }
    hid_t mt = a->kind == 0 ? type : a->kind == 1 ? H5T_NATIVE_DOUBLE : H5T_NATIVE_INT64;
    SHARD_H5(H5Awrite(at, mt, a->val), "H5Awrite(%s) failed", a->name);
done:
    if (at >= 0) H5Aclose(at);
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    return rc;
}

// Direct mode: sample i of this rank (in key order) belongs at off + i. Slots left empty before it
// move it down. Done in global rounds over the new positions: in a round every rank first reads
// the samples it moves into that round's range, then (after a barrier) writes them. A read slot
// is never one written by the compaction (a sample's old slot >= its new position, and positions
// written so far lie below the round); a slot is only overwritten once the sample in it has been
// read (its own new position is lower, so in this round or an earlier one). Each rank reads only
// slots it wrote itself. Collective; returns the same code on every rank.
static size_t round_bytes(void) {
    const char *env = getenv("MP3D_SHARD_ROUND_BYTES");   // smaller rounds, for tests
    return env && atol(env) > 0 ? (size_t)atol(env) : shard_round_bytes;
}

static int close_holes(h5shard_writer *w, MPI_Comm comm, const int64_t *perm, int64_t off, int64_t N) {
    if (N == w->reserve) return 0;   // the same on every rank: no empty slot, nothing moves
    int64_t B = (int64_t)PL_MAX((size_t)1, round_bytes() / w->sample_bytes), n = w->n;
    int lrc = 0, rc = 0;
    uint8_t *buf = pl_malloc(w->sample_bytes * (size_t)PL_MIN(B, PL_MAX(n, (int64_t)1)), "shard compaction");
    if (!buf) lrc = PL_ENOMEM;
    int64_t moved = 0;
    for (int64_t r0 = 0; r0 < N; r0 += B) {
        // this rank's samples with new positions in [r0, r0 + B) that are not in place
        int64_t i0 = PL_CLAMP(r0 - off, (int64_t)0, n), i1 = PL_CLAMP(r0 + B - off, (int64_t)0, n), k = 0;
        for (int64_t i = i0; i < i1 && !lrc; i++)
            if (w->keys[perm[i]] != off + i) lrc = direct_slot_io(w, w->keys[perm[i]], buf + (size_t)(k++) * w->sample_bytes, 0);
        MPI_Allreduce(&lrc, &rc, 1, MPI_INT, MPI_MIN, comm);   // also the barrier between reads and writes
        if (rc) break;
        k = 0;
        for (int64_t i = i0; i < i1 && !lrc; i++)
            if (w->keys[perm[i]] != off + i) {
                lrc = raw_slot_write(w, off + i, buf + (size_t)(k++) * w->sample_bytes);
                moved++;
            }
        MPI_Allreduce(&lrc, &rc, 1, MPI_INT, MPI_MIN, comm);
        if (rc) break;
    }
    free(buf);
    if (!rc) {
        hsize_t dims[8];
        dims[0] = (hsize_t)N;
        for (int d = 0; d < w->lay.ndims; d++) dims[d + 1] = (hsize_t)w->lay.dims[d];
        lrc = H5Dset_extent(w->ds, dims) < 0 ? pl_fail(PL_EH5, "%s.tmp: shrinking '%s' to %lld samples failed", w->path, w->data_name, (long long)N) : 0;
        MPI_Allreduce(&lrc, &rc, 1, MPI_INT, MPI_MIN, comm);
    }
    if (rc && lrc == 0) pl_fail(rc, "%s: not written: another rank failed (%s)", w->path, pl_err_name(rc));
    LOG_DEBUG("h5shard:%s reserved:%lld kept:%lld moved_here:%lld", w->path, (long long)w->reserve, (long long)N, (long long)moved);
    return rc;
}

static int read_spool(const h5shard_writer *w, uint8_t *dst, int64_t i) {
    if (i < w->mem_n) {
        memcpy(dst, w->mem + (size_t)i * w->sample_bytes, w->sample_bytes);
        return 0;
    }
    size_t left = w->sample_bytes;
    off_t at = (off_t)(i - w->mem_n) * (off_t)w->sample_bytes;
    while (left > 0) {
        ssize_t k = pread(w->fd, dst, left, at);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return pl_fail(PL_EIO, "%s: reading back sample %lld: %s", w->spool_path, (long long)i, k < 0 ? strerror(errno) : "short file");
        dst += k;
        at += k;
        left -= (size_t)k;
    }
    return 0;
}

// The HDF5 part of h5shard_finish: every rank calls it with the same N, M; returns 0 or pl_err.
static int write_file(h5shard_writer *w, MPI_Comm comm, const char *tmp, const int64_t *perm, int64_t off, int64_t N,
                      int64_t row_off, int64_t M, int *all_collective) {
    int rc = 0, rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    hid_t fapl = H5I_INVALID_HID, fid = H5I_INVALID_HID, dxpl = H5I_INVALID_HID, ds = H5I_INVALID_HID;
    hid_t mt = H5I_INVALID_HID, ft = H5I_INVALID_HID;
    uint8_t *buf = NULL;
    int64_t n = w->n;

    if (w->direct) {   // the data is in place: close the empty slots, then the tables below
        rc = close_holes(w, comm, perm, off, N);
        if (w->rawfd >= 0) close(w->rawfd);   // every sample is in place: HDF5 alone from here
        if (w->dfd >= 0) close(w->dfd);
        w->rawfd = w->dfd = -1;
        fid = w->fid;
        dxpl = w->dxpl;
        w->fid = w->dxpl = H5I_INVALID_HID;   // closed at done:
        H5Dclose(w->ds);
        H5Tclose(w->mt);
        w->ds = w->mt = H5I_INVALID_HID;
        if (rc) goto done;
        goto tables;
    }
    fapl = H5Pcreate(H5P_FILE_ACCESS);
    SHARD_H5(fapl, "H5Pcreate(file access) failed");
    SHARD_H5(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL), "%s: H5Pset_fapl_mpio failed", tmp);
    SHARD_H5(H5Pset_coll_metadata_write(fapl, 1), "%s: H5Pset_coll_metadata_write failed", tmp);
    fid = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    SHARD_H5(fid, "%s: cannot create the HDF5 file (H5Fcreate)", tmp);
    dxpl = H5Pcreate(H5P_DATASET_XFER);
    SHARD_H5(dxpl, "H5Pcreate(xfer) failed");
    SHARD_H5(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE), "H5Pset_dxpl_mpio failed");

    // --- raw data, in rounds of up to B samples per rank
    {
        int64_t B = (int64_t)PL_MAX((size_t)1, round_bytes() / w->sample_bytes);
        int64_t my_rounds = (n + B - 1) / B, rounds = 0;
        MPI_Allreduce(&my_rounds, &rounds, 1, MPI_INT64_T, MPI_MAX, comm);
        mt = make_type(w->lay.data_type, 0, 0);
        ft = make_type(w->lay.data_type, 0, 1);
        ds = create_dset(fid, w->data_name, ft, N, w->lay.ndims, w->lay.dims, 1);
        SHARD_H5(ds, "%s: cannot create dataset '%s'", tmp, w->data_name);
        buf = pl_malloc(w->sample_bytes * (size_t)PL_MIN(B, PL_MAX(n, (int64_t)1)), "shard write round");
        if (!buf) { rc = PL_ENOMEM; goto done; }
        for (int64_t r = 0; r < rounds; r++) {
            int64_t i0 = PL_MIN(n, r * B), i1 = PL_MIN(n, (r + 1) * B);
            // samples added in key order and held in memory are written from there
            int inplace = i1 > i0 && perm[i1 - 1] < w->mem_n;
            for (int64_t i = i0 + 1; i < i1 && inplace; i++) inplace = perm[i] == perm[i - 1] + 1;
            const uint8_t *src = inplace ? w->mem + (size_t)perm[i0] * w->sample_bytes : buf;
            for (int64_t i = i0; i < i1 && rc == 0 && !inplace; i++)
                rc = read_spool(w, buf + (size_t)(i - i0) * w->sample_bytes, perm[i]);
            if (rc) goto done;  // a local I/O failure: the caller aborts everyone after this call returns
            rc = write_entries(ds, mt, dxpl, src, off + i0, i1 - i0, all_collective, w->data_name);
            if (rc) goto done;
        }
        free(buf);
        buf = NULL;
        H5Dclose(ds);
        ds = H5I_INVALID_HID;
        H5Tclose(mt);
        H5Tclose(ft);
        mt = ft = H5I_INVALID_HID;
    }
tables:
    // --- per-sample columns, permuted into key order
    for (int c = 0; c < w->lay.ncols; c++) {
        const shard_col *col = &w->cols[c];
        size_t b = col_bytes(col);
        buf = pl_malloc(b * (size_t)PL_MAX(n, (int64_t)1), "shard column write");
        if (!buf) { rc = PL_ENOMEM; goto done; }
        for (int64_t i = 0; i < n; i++) memcpy(buf + (size_t)i * b, w->colbuf[c] + (size_t)perm[i] * b, b);
        mt = make_type(col->type, col->width, 0);
        ft = make_type(col->type, col->width, 1);
        int64_t width = col->width;
        ds = create_dset(fid, col->name, ft, N, (col->type == SHARD_STR || width == 1) ? 0 : 1, &width, 0);
        SHARD_H5(ds, "%s: cannot create dataset '%s'", tmp, col->name);
        rc = write_entries(ds, mt, dxpl, buf, off, n, all_collective, col->name);
        if (rc) goto done;
        free(buf);
        buf = NULL;
        H5Dclose(ds);
        H5Tclose(mt);
        H5Tclose(ft);
        ds = mt = ft = H5I_INVALID_HID;
    }
    // --- rows and their offsets
    if (w->lay.nrows > 0) {
        for (int c = 0; c < w->lay.nrows; c++) {
            const shard_col *col = &w->rows[c];
            size_t b = col_bytes(col);
            buf = pl_malloc(b * (size_t)PL_MAX(w->rows_n, (int64_t)1), "shard row write");
            if (!buf) { rc = PL_ENOMEM; goto done; }
            size_t at = 0;
            for (int64_t i = 0; i < n; i++) {
                size_t nb = b * (size_t)w->row_n[perm[i]];
                if (nb) memcpy(buf + at, w->rowbuf[c] + (size_t)w->row_start[perm[i]] * b, nb);
                at += nb;
            }
            mt = make_type(col->type, col->width, 0);
            ft = make_type(col->type, col->width, 1);
            int64_t width = col->width;
            ds = create_dset(fid, col->name, ft, M, (col->type == SHARD_STR || width == 1) ? 0 : 1, &width, 0);
            SHARD_H5(ds, "%s: cannot create dataset '%s'", tmp, col->name);
            rc = write_entries(ds, mt, dxpl, buf, row_off, w->rows_n, all_collective, col->name);
            if (rc) goto done;
            free(buf);
            buf = NULL;
            H5Dclose(ds);
            H5Tclose(mt);
            H5Tclose(ft);
            ds = mt = ft = H5I_INVALID_HID;
        }
        // offsets (N+1): each rank writes its n starts; the last rank also writes the total M.
        int last = rank == size - 1;
        int64_t *o = pl_malloc(sizeof(int64_t) * (size_t)(n + 1), "shard offsets");
        if (!o) { rc = PL_ENOMEM; goto done; }
        int64_t acc = row_off;
        for (int64_t i = 0; i < n; i++) {
            o[i] = acc;
            acc += w->row_n[perm[i]];
        }
        o[n] = acc;
        ft = make_type(SHARD_I64, 1, 1);
        ds = create_dset(fid, w->offsets_name, ft, N + 1, 0, NULL, 0);
        if (ds < 0) { free(o); rc = pl_fail(PL_EH5, "%s: cannot create dataset '%s'", tmp, w->offsets_name); goto done; }
        rc = write_entries(ds, H5T_NATIVE_INT64, dxpl, o, off, n + last, all_collective, w->offsets_name);
        free(o);
        if (rc) goto done;
        H5Dclose(ds);
        H5Tclose(ft);
        ds = ft = H5I_INVALID_HID;
    }
    // --- attributes, then the completion mark
    for (int a = 0; a < w->nattrs && rc == 0; a++) rc = write_attr(fid, &w->attrs[a]);
    if (rc) goto done;
    {
        shard_attr fv = {.name = "format_version", .kind = 2, .val = (void *)&shard_format_version, .n = 1};
        shard_attr cnt = {.name = "num_samples", .kind = 2, .val = &N, .n = 1};
        static const int64_t one = 1;
        shard_attr done_attr = {.name = "complete", .kind = 2, .val = (void *)&one, .n = 1};
        rc = write_attr(fid, &fv);
        if (!rc) rc = write_attr(fid, &cnt);
        if (!rc) rc = write_attr(fid, &done_attr);
    }
done:
    free(buf);
    if (ds >= 0) H5Dclose(ds);
    if (mt >= 0) H5Tclose(mt);
    if (ft >= 0) H5Tclose(ft);
    if (dxpl >= 0) H5Pclose(dxpl);
    if (fid >= 0 && H5Fclose(fid) < 0 && rc == 0) rc = pl_fail(PL_EH5, "%s: H5Fclose failed", tmp);
    if (fapl >= 0) H5Pclose(fapl);
    return rc;
}

int h5shard_finish(h5shard_writer *w, MPI_Comm comm, int local_ok, h5shard_stats *stats) {
    int rank, size, rc = 0;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    double t0 = pl_time();
    int64_t *perm = NULL;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", w->path);

    // local checks: keys sorted and unique
    int lrc = local_ok ? 0 : PL_EINVAL;
    perm = pl_malloc(sizeof(int64_t) * (size_t)PL_MAX(w->n, (int64_t)1), "shard order");
    if (!perm) lrc = PL_ENOMEM;
    else {
        for (int64_t i = 0; i < w->n; i++) perm[i] = i;
        g_sort_keys = w->keys;
        qsort(perm, (size_t)w->n, sizeof *perm, cmp_by_key);
        for (int64_t i = 1; i < w->n && lrc == 0; i++)
            if (w->keys[perm[i]] == w->keys[perm[i - 1]])
                lrc = pl_fail(PL_EINVAL, "%s: sample key %lld added twice on rank %d", w->path, (long long)w->keys[perm[i]], rank);
    }
    // global check: every key of this rank follows every key of the ranks before it
    int64_t my_max = w->n && perm ? w->keys[perm[w->n - 1]] : INT64_MIN, prev_max = INT64_MIN;
    MPI_Exscan(&my_max, &prev_max, 1, MPI_INT64_T, MPI_MAX, comm);
    if (rank == 0) prev_max = INT64_MIN;
    if (lrc == 0 && w->n && w->keys[perm[0]] <= prev_max)
        lrc = pl_fail(PL_EINVAL, "%s: rank %d holds key %lld not after key %lld of an earlier rank (work split not contiguous)",
                      w->path, rank, (long long)w->keys[perm[0]], (long long)prev_max);
    MPI_Allreduce(&lrc, &rc, 1, MPI_INT, MPI_MIN, comm);
    if (rc) {
        if (lrc == 0 && rc != PL_EINVAL) pl_fail(rc, "%s: not written: another rank failed (%s)", w->path, pl_err_name(rc));
        goto done;
    }

    int64_t off = 0, row_off = 0, N = 0, M = 0, n = w->n, rn = w->rows_n;
    MPI_Exscan(&n, &off, 1, MPI_INT64_T, MPI_SUM, comm);
    MPI_Exscan(&rn, &row_off, 1, MPI_INT64_T, MPI_SUM, comm);
    if (rank == 0) off = row_off = 0;   // MPI_Exscan leaves rank 0's result undefined
    MPI_Allreduce(&n, &N, 1, MPI_INT64_T, MPI_SUM, comm);
    MPI_Allreduce(&rn, &M, 1, MPI_INT64_T, MPI_SUM, comm);

    int coll = 1, coll_all = 1;
    lrc = write_file(w, comm, tmp, perm, off, N, row_off, M, &coll);
    MPI_Allreduce(&lrc, &rc, 1, MPI_INT, MPI_MIN, comm);
    MPI_Allreduce(&coll, &coll_all, 1, MPI_INT, MPI_MIN, comm);
    if (rc == 0) {
        if (rank == 0 && rename(tmp, w->path) != 0)
            lrc = pl_fail(PL_EIO, "%s: rename from %s failed: %s", w->path, tmp, strerror(errno));
        MPI_Allreduce(&lrc, &rc, 1, MPI_INT, MPI_MIN, comm);
    }
    if (stats) {
        double dw = w->direct_write_s, dmax = 0;
        MPI_Allreduce(&dw, &dmax, 1, MPI_DOUBLE, MPI_MAX, comm);
        int64_t ways[3] = {w->n_odirect, w->n_buffered, w->n_hdf5}, ways_all[3];
        MPI_Allreduce(ways, ways_all, 3, MPI_INT64_T, MPI_SUM, comm);
        stats->odirect_writes = ways_all[0];
        stats->buffered_writes = ways_all[1];
        stats->hdf5_writes = ways_all[2];
        stats->n_total = N;
        stats->rows_total = M;
        stats->all_collective = coll_all;
        stats->write_seconds = pl_time() - t0 + dmax;   // direct mode: plus the in-place writes (slowest rank)
    }
done:
    free(perm);
    writer_free(w);   // direct mode: closes the file on every rank (collective)
    if (rc && rank == 0) unlink(tmp);
    return rc;
}

// ============================================================================== reader

struct h5shard_reader {
    char *path;
    hid_t fid;
    struct stat st;   // at open: every read checks the file is still this one (see unchanged())
};

const char *h5shard_path(const h5shard_reader *r) { return r->path; }

void h5shard_close(h5shard_reader *r) {
    if (!r) return;
    if (r->fid >= 0) H5Fclose(r->fid);
    free(r->path);
    free(r);
}

// H5Aread writes every element of an attribute: one read into a single value needs exactly one
// (a damaged or foreign file may declare an array: a stack overflow before).
static int attr_single(hid_t a) {
    hid_t sp = H5Aget_space(a);
    hssize_t np = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    if (sp >= 0) H5Sclose(sp);
    return np == 1;
}

static int read_attr_i64(hid_t loc, const char *name, int64_t *v) {
    if (H5Aexists(loc, name) <= 0) return PL_ENOTFOUND;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return PL_EH5;
    int rc = !attr_single(a) ? PL_EFORMAT : H5Aread(a, H5T_NATIVE_INT64, v) < 0 ? PL_EH5 : 0;
    H5Aclose(a);
    return rc;
}

int h5shard_open(h5shard_reader **out, const char *path) {
    *out = NULL;
    if (access(path, R_OK) != 0) return pl_fail(PL_ENOTFOUND, "%s: cannot open shard: %s", path, strerror(errno));
    h5shard_reader *r = pl_calloc(1, sizeof *r, "shard reader");
    if (!r) return PL_ENOMEM;
    r->path = pl_strdup(path);
    if (stat(path, &r->st) != 0) {
        int e = errno;
        h5shard_close(r);
        return pl_fail(PL_EIO, "%s: cannot stat the shard: %s", path, strerror(e));
    }
    r->fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (r->fid < 0) {
        h5shard_close(r);
        return pl_fail(PL_EFORMAT, "%s: not a readable HDF5 file", path);
    }
    int64_t complete = 0;
    if (read_attr_i64(r->fid, "complete", &complete) != 0 || complete != 1) {
        h5shard_close(r);
        return pl_fail(PL_ECORRUPT, "%s: no attribute complete = 1: the file was not finished (re-run the stage that writes it)", path);
    }
    *out = r;
    return 0;
}

int h5shard_exists(h5shard_reader *r, const char *name) { return H5Lexists(r->fid, name, H5P_DEFAULT) > 0; }

int h5shard_shape(h5shard_reader *r, const char *name, int64_t *dims, int cap) {
    if (!h5shard_exists(r, name)) return pl_fail(PL_ENOTFOUND, "%s: no dataset '%s'", r->path, name);
    hid_t ds = H5Dopen2(r->fid, name, H5P_DEFAULT);
    if (ds < 0) return pl_fail(PL_EFORMAT, "%s: '%s' is not a dataset", r->path, name);
    hid_t sp = H5Dget_space(ds);
    hsize_t d[32];
    int nd = H5Sget_simple_extent_ndims(sp);
    if (nd > 32) nd = 32;
    if (nd >= 0) H5Sget_simple_extent_dims(sp, d, NULL);
    for (int i = 0; i < nd && i < cap; i++) dims[i] = (int64_t)d[i];
    H5Sclose(sp);
    H5Dclose(ds);
    return nd < 0 ? pl_fail(PL_EH5, "%s: dataset '%s': cannot read its shape", r->path, name) : nd;
}

// width >= 0: the caller's buffer holds `width` values per entry (SHARD_STR: `width` bytes per
// string); a dataset whose entries are wider or narrower is refused instead of overrunning it.
// HDF5 allocates a whole chunk to read any part of it, sized as the file declares: a damaged
// shard declaring 4 GB chunks made one read allocate 4 GB (fuzz_h5, oom). mp3d writes one sample
// per chunk (a 9x512x512 int16 sample is 4.7 MB); more than SHARD_MAX_CHUNK_BYTES is refused.
#define SHARD_MAX_CHUNK_BYTES ((hsize_t)256 << 20)
static int chunk_bounded(const h5shard_reader *r, hid_t ds, const char *name) {
    hid_t pl = H5Dget_create_plist(ds), ft = H5Dget_type(ds);
    int rc = 0;
    if (pl >= 0 && ft >= 0 && H5Pget_layout(pl) == H5D_CHUNKED) {
        hsize_t c[32];
        int nc = H5Pget_chunk(pl, 32, c);
        hsize_t bytes = H5Tget_size(ft);
        for (int k = 0; k < nc && bytes <= SHARD_MAX_CHUNK_BYTES; k++) bytes = c[k] > SHARD_MAX_CHUNK_BYTES ? c[k] : bytes * c[k];
        if (nc < 0 || bytes > SHARD_MAX_CHUNK_BYTES)
            rc = pl_fail(PL_EFORMAT, "%s: dataset '%s' declares chunks of more than %llu MB (damaged or not an mp3d shard)",
                         r->path, name, (unsigned long long)(SHARD_MAX_CHUNK_BYTES >> 20));
    }
    if (ft >= 0) H5Tclose(ft);
    if (pl >= 0) H5Pclose(pl);
    return rc;
}

static int read_sel(h5shard_reader *r, const char *name, hid_t mt_given, enum shard_type type, void *out, int64_t i0, int64_t n,
                    int whole, int64_t width) {
    int rc = 0;
    hid_t ds = H5I_INVALID_HID, fs = H5I_INVALID_HID, ms = H5I_INVALID_HID, mt = H5I_INVALID_HID, ft = H5I_INVALID_HID;
    if (!h5shard_exists(r, name)) return pl_fail(PL_ENOTFOUND, "%s: no dataset '%s'", r->path, name);
    ds = H5Dopen2(r->fid, name, H5P_DEFAULT);
    if (ds < 0) return pl_fail(PL_EFORMAT, "%s: '%s' is not a dataset", r->path, name);
    fs = H5Dget_space(ds);
    hsize_t d[32], st[32], cnt[32];
    int nd = H5Sget_simple_extent_ndims(fs);
    if (nd < 0 || nd > 32) { rc = pl_fail(PL_EFORMAT, "%s: dataset '%s' has %d dims", r->path, name, nd); goto done; }
    H5Sget_simple_extent_dims(fs, d, NULL);
    if ((rc = chunk_bounded(r, ds, name))) goto done;
    if (nd == 0) {   // scalar: only i0 = 0, n = 1
        whole = 1;
    } else if (!whole) {
        if (i0 < 0 || n < 0 || (hsize_t)(i0 + n) > d[0]) {
            rc = pl_fail(PL_ERANGE, "%s: dataset '%s': entries [%lld, %lld) outside [0, %llu)", r->path, name, (long long)i0,
                         (long long)(i0 + n), (unsigned long long)d[0]);
            goto done;
        }
        hsize_t inner = 1;
        for (int k = 0; k < nd; k++) {
            st[k] = 0;
            cnt[k] = d[k];
            if (k) inner *= d[k];
        }
        st[0] = (hsize_t)i0;
        cnt[0] = (hsize_t)n;
        const int64_t want = type == SHARD_STR ? 1 : width;
        if (width >= 0 && (hsize_t)want != inner) {
            rc = pl_fail(PL_EFORMAT, "%s: dataset '%s' has %llu values per entry, expected %lld", r->path, name,
                         (unsigned long long)inner, (long long)want);
            goto done;
        }
        if (n == 0) goto done;
        SHARD_H5(H5Sselect_hyperslab(fs, H5S_SELECT_SET, st, NULL, cnt, NULL), "%s: '%s': hyperslab", r->path, name);
        (void)inner;
        ms = H5Screate_simple(nd, cnt, NULL);   // same shape as the selection (fast chunk mapping)
    }
    ft = H5Dget_type(ds);
    if (width >= 0 && whole) {   // a scalar where entries were expected
        rc = pl_fail(PL_EFORMAT, "%s: dataset '%s' is a scalar, expected entries of %lld values", r->path, name, (long long)width);
        goto done;
    }
    if (mt_given >= 0) mt = H5Tcopy(mt_given);
    else if (type == SHARD_STR) {
        if (H5Tget_class(ft) != H5T_STRING || H5Tis_variable_str(ft) > 0) {
            rc = pl_fail(PL_EFORMAT, "%s: dataset '%s' is not a fixed-length string dataset", r->path, name);
            goto done;
        }
        // with a width, HDF5 converts (truncates / pads) the file's strings to the caller's slots
        mt = make_type(SHARD_STR, width >= 0 ? width : (int64_t)H5Tget_size(ft), 0);
    } else mt = make_type(type, 0, 0);
    SHARD_H5(H5Dread(ds, mt, whole ? H5S_ALL : ms, whole ? H5S_ALL : fs, H5P_DEFAULT, out), "%s: reading dataset '%s' failed", r->path, name);
done:
    if (mt >= 0) H5Tclose(mt);
    if (ft >= 0) H5Tclose(ft);
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    H5Dclose(ds);
    return rc;
}

// HDF5's sec2 driver reads past the end of a file as zeros: a shard truncated (or rewritten)
// while a run reads it would silently feed zeros or another file's rows. So after each read the
// file must still be the one opened: same inode, size and modification time (one stat).
static int unchanged(const h5shard_reader *r, const char *name) {
    struct stat now;
    if (stat(r->path, &now) != 0)
        return pl_fail(PL_EIO, "%s: the shard disappeared while '%s' was being read: %s", r->path, name, strerror(errno));
    if (now.st_ino != r->st.st_ino || now.st_size != r->st.st_size || now.st_mtim.tv_sec != r->st.st_mtim.tv_sec ||
        now.st_mtim.tv_nsec != r->st.st_mtim.tv_nsec)
        return pl_fail(PL_ECORRUPT,
                       "%s: the shard changed while '%s' was being read (size %lld -> %lld bytes, inode %llu -> %llu): "
                       "a shard must not be truncated or rewritten during a run; what was read is not trusted",
                       r->path, name, (long long)r->st.st_size, (long long)now.st_size, (unsigned long long)r->st.st_ino,
                       (unsigned long long)now.st_ino);
    return 0;
}

int h5shard_read(h5shard_reader *r, const char *name, enum shard_type type, void *out, int64_t i0, int64_t n) {
    int rc = read_sel(r, name, H5I_INVALID_HID, type, out, i0, n, 0, -1);
    return rc ? rc : unchanged(r, name);
}

int h5shard_read_rows(h5shard_reader *r, const char *name, enum shard_type type, void *out, int64_t i0, int64_t n,
                      int64_t width) {
    if (width < 1) return pl_fail(PL_EINVAL, "%s: dataset '%s': row width %lld", r->path, name, (long long)width);
    int rc = read_sel(r, name, H5I_INVALID_HID, type, out, i0, n, 0, width);
    return rc ? rc : unchanged(r, name);
}

int h5shard_read_raw(h5shard_reader *r, const char *name, void **buf, size_t *bytes) {
    *buf = NULL;
    *bytes = 0;
    if (!h5shard_exists(r, name)) return pl_fail(PL_ENOTFOUND, "%s: no dataset '%s'", r->path, name);
    hid_t ds = H5Dopen2(r->fid, name, H5P_DEFAULT);
    if (ds < 0) return pl_fail(PL_EFORMAT, "%s: '%s' is not a dataset", r->path, name);
    hid_t ft = H5Dget_type(ds), sp = H5Dget_space(ds);
    hid_t mt = H5Tget_class(ft) == H5T_STRING ? H5Tcopy(ft) : H5Tget_native_type(ft, H5T_DIR_ASCEND);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    size_t nb = (size_t)np * H5Tget_size(mt);
    H5Sclose(sp);
    H5Tclose(ft);
    H5Dclose(ds);
    int rc = 0;
    *buf = pl_malloc(nb ? nb : 1, "shard raw read");
    if (!*buf) rc = PL_ENOMEM;
    else if (nb && !(rc = read_sel(r, name, mt, SHARD_U8, *buf, 0, 0, 1, -1))) rc = unchanged(r, name);
    H5Tclose(mt);
    if (rc) { free(*buf); *buf = NULL; return rc; }
    *bytes = nb;
    return 0;
}

typedef struct { char *buf; size_t len, cap; int n; } name_list;

static herr_t list_cb(hid_t g, const char *name, const H5L_info_t *info, void *op) {
    (void)info;
    name_list *l = op;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0) return 0;
    int is_ds = H5Iget_type(o) == H5I_DATASET;
    H5Oclose(o);
    if (!is_ds) return 0;
    size_t k = strlen(name) + 1;
    if (l->len + k > l->cap) {
        size_t nc = PL_MAX(2 * l->cap, l->len + k + 256);
        char *q = pl_realloc(l->buf, nc, "dataset names");
        if (!q) return -1;
        l->buf = q;
        l->cap = nc;
    }
    memcpy(l->buf + l->len, name, k);
    l->len += k;
    l->n++;
    return 0;
}

int h5shard_list(h5shard_reader *r, char **names, int *n) {
    name_list l = {0};
    hsize_t idx = 0;
    // H5_INDEX_NAME + H5_ITER_INC visits names in increasing order: the list comes out sorted.
    if (H5Literate(r->fid, H5_INDEX_NAME, H5_ITER_INC, &idx, list_cb, &l) < 0) {
        free(l.buf);
        return pl_fail(PL_EH5, "%s: cannot list datasets", r->path);
    }
    *names = l.buf;
    *n = l.n;
    return 0;
}

int h5shard_get_attr_str(h5shard_reader *r, const char *name, char **value) {
    *value = NULL;
    if (H5Aexists(r->fid, name) <= 0) return pl_fail(PL_ENOTFOUND, "%s: no attribute '%s'", r->path, name);
    hid_t a = H5Aopen(r->fid, name, H5P_DEFAULT);
    hid_t t = H5Aget_type(a);
    int rc = 0;
    if (H5Tget_class(t) != H5T_STRING || H5Tis_variable_str(t) > 0 || !attr_single(a)) {
        rc = pl_fail(PL_EFORMAT, "%s: attribute '%s' is not one fixed-length string", r->path, name);
    } else {
        size_t sz = H5Tget_size(t);
        *value = pl_calloc(sz + 1, 1, "attribute text");
        if (!*value) rc = PL_ENOMEM;
        else if (H5Aread(a, t, *value) < 0) rc = pl_fail(PL_EH5, "%s: reading attribute '%s' failed", r->path, name);
    }
    H5Tclose(t);
    H5Aclose(a);
    if (rc) { free(*value); *value = NULL; }
    return rc;
}

int h5shard_get_attr_f64(h5shard_reader *r, const char *name, double *v, int cap, int *n) {
    if (H5Aexists(r->fid, name) <= 0) return pl_fail(PL_ENOTFOUND, "%s: no attribute '%s'", r->path, name);
    hid_t a = H5Aopen(r->fid, name, H5P_DEFAULT);
    hid_t sp = H5Aget_space(a);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    int rc = 0;
    if (np > cap) rc = pl_fail(PL_ERANGE, "%s: attribute '%s' has %lld values, room for %d", r->path, name, (long long)np, cap);
    else if (H5Aread(a, H5T_NATIVE_DOUBLE, v) < 0) rc = pl_fail(PL_EFORMAT, "%s: attribute '%s' is not numeric", r->path, name);
    H5Aclose(a);
    if (!rc) *n = (int)np;
    return rc;
}

// ============================================================================== describe

static void type_name(hid_t t, char *out, size_t cap) {
    H5T_class_t c = H5Tget_class(t);
    size_t sz = H5Tget_size(t);
    if (c == H5T_INTEGER) snprintf(out, cap, "%sint%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "", sz * 8);
    else if (c == H5T_FLOAT) snprintf(out, cap, "float%zu", sz * 8);
    else if (c == H5T_STRING) snprintf(out, cap, "string[%zu]", sz);
    else snprintf(out, cap, "class%d[%zu]", (int)c, sz);
}

static herr_t attr_cb(hid_t loc, const char *name, const H5A_info_t *info, void *op) {
    (void)info;
    FILE *out = ((void **)op)[0];
    const char *indent = ((void **)op)[1];
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return 0;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    if (H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) <= 0 && np == 1) {
        size_t sz = H5Tget_size(t);
        char *s = calloc(sz + 1, 1);
        if (s && H5Aread(a, t, s) >= 0) {
            size_t len = strlen(s), lines = 0, first = strcspn(s, "\n");
            for (size_t i = 0; i < len; i++) lines += s[i] == '\n';
            if (lines == 0 && len <= 100) fprintf(out, "%s@%s = \"%s\"\n", indent, name, s);
            else fprintf(out, "%s@%s = \"%.*s%s\" (%zu chars, %zu lines)\n", indent, name, (int)PL_MIN(first, (size_t)80), s,
                         first > 80 || lines ? " ..." : "", len, lines + (len && s[len - 1] != '\n'));
        }
        free(s);
    } else if (H5Tget_class(t) == H5T_INTEGER || H5Tget_class(t) == H5T_FLOAT) {
        double v[8];
        if (np <= 8 && H5Aread(a, H5T_NATIVE_DOUBLE, v) >= 0) {
            fprintf(out, "%s@%s =", indent, name);
            for (hssize_t i = 0; i < np; i++) fprintf(out, " %.10g", v[i]);
            fprintf(out, "\n");
        } else {
            fprintf(out, "%s@%s = (%lld values)\n", indent, name, (long long)np);
        }
    } else {
        fprintf(out, "%s@%s (unprinted type)\n", indent, name);
    }
    H5Sclose(sp);
    H5Tclose(t);
    H5Aclose(a);
    return 0;
}

typedef struct { FILE *out; char prefix[1400]; int depth; } describe_ctx;

static herr_t describe_cb(hid_t g, const char *name, const H5L_info_t *info, void *op) {
    (void)info;
    describe_ctx *c = op;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0) return 0;
    char full[1400];
    if (snprintf(full, sizeof full, "%s/%s", c->prefix, name) >= (int)sizeof full) full[sizeof full - 1] = 0;
    if (H5Iget_type(o) == H5I_DATASET) {
        hid_t t = H5Dget_type(o), sp = H5Dget_space(o);
        char tn[64];
        type_name(t, tn, sizeof tn);
        hsize_t d[32];
        int nd = H5Sget_simple_extent_ndims(sp);
        if (nd > 32) nd = 32;
        if (nd > 0) H5Sget_simple_extent_dims(sp, d, NULL);
        fprintf(c->out, "  %-28s %-12s (", full, tn);
        for (int i = 0; i < nd; i++) fprintf(c->out, "%s%llu", i ? ", " : "", (unsigned long long)d[i]);
        fprintf(c->out, ")\n");
        H5Sclose(sp);
        H5Tclose(t);
    } else if (H5Iget_type(o) == H5I_GROUP && c->depth < 8) {
        fprintf(c->out, "  %s/\n", full);
        describe_ctx sub = *c;
        snprintf(sub.prefix, sizeof sub.prefix, "%s", full);
        sub.depth++;
        hsize_t idx = 0;
        H5Literate(o, H5_INDEX_NAME, H5_ITER_INC, &idx, describe_cb, &sub);
    }
    H5Oclose(o);
    return 0;
}

int h5shard_describe(const char *path, FILE *out) {
    if (access(path, R_OK) != 0) return pl_fail(PL_ENOTFOUND, "%s: cannot open: %s", path, strerror(errno));
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (fid < 0) return pl_fail(PL_EFORMAT, "%s: not a readable HDF5 file", path);
    fprintf(out, "file: %s\n", path);
    int64_t complete = 0;
    int has = read_attr_i64(fid, "complete", &complete) == 0;
    fprintf(out, "complete: %s\n", has && complete == 1 ? "yes" : "no (not finished or not an mp3d output)");
    fprintf(out, "attributes:\n");
    void *op[2] = {out, "  "};
    hsize_t idx = 0;
    H5Aiterate2(fid, H5_INDEX_NAME, H5_ITER_INC, &idx, attr_cb, op);
    fprintf(out, "datasets:\n");
    describe_ctx c = {.out = out, .prefix = "", .depth = 0};
    idx = 0;
    H5Literate(fid, H5_INDEX_NAME, H5_ITER_INC, &idx, describe_cb, &c);
    H5Fclose(fid);
    return 0;
}

int h5shard_hash_matches(const char *path, const char *hash) {
    if (!pl_path_exists(path)) return 0;
    h5shard_reader *r = NULL;
    pl_quiet_begin();
    int rc = h5shard_open(&r, path);
    char *h = NULL;
    if (!rc) rc = h5shard_get_attr_str(r, "config_hash", &h);
    pl_quiet_end();
    int ok = !rc && h && !strcmp(h, hash);
    free(h);
    h5shard_close(r);
    return ok;
}
