// libFuzzer harness: HDF5 files mp3d opens (io/h5shard.c, io/lesion_shard.c, io/h5ckpt.c). The
// input is written to a scratch file in /dev/shm and opened through the same path-taking entry
// points the stages use: lesion_shard_open (train/evaluate/froc on a preprocess split),
// h5shard_open + list + attributes + reads (vdt shards, `mp3d inspect`), h5shard_describe,
// and ckpt_open with CKPT_VERIFY, the /params and /buffers listings, tensor reads, the trainer
// state and the stored config (resume, init_from, export). Collective calls run on MPI_COMM_SELF.
#include <hdf5.h>
#include <mpi.h>

#include "tests/fuzz/fuzz_common.h"
#include "io/h5ckpt.h"
#include "io/h5shard.h"
#include "io/lesion_shard.h"

static void checkpoint_read(const char *path);

static const int64_t k_max_read = (int64_t)1 << 20;   // elements read per dataset

// Writes and reads back one checkpoint so that Open MPI loads its MPI-IO and collective
// components (allocations it keeps until exit) before the first input, not during one.
static void warm_up(void) {
    if (!fuzz_write_file("warm", (const uint8_t *)"", 0)) return;
    unlink(fuzz_path_);
    float v[2] = {1, 2};
    ckpt_tensor t = {"w", 1, {2}, v};
    ckpt_writer *w = NULL;
    char path[1024];
    if (ckpt_writer_open(&w, fuzz_dir_, 1, MPI_COMM_SELF) == 0) {
        if (ckpt_write_tensors(w, "/params", &t, 1) != 0) {
            ckpt_writer_abort(w);
        } else if (ckpt_writer_commit(w, 1, path, sizeof path) == 0) {   // frees w either way
            checkpoint_read(path);
            unlink(path);
        }
    }
    snprintf(path, sizeof path, "%s/latest", fuzz_dir_);
    unlink(path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) MPI_Init(argc, argv);
    fuzz_quiet();
    if (!getenv("FUZZ_VERBOSE")) H5Eset_auto2(H5E_DEFAULT, NULL, NULL);   // HDF5's own error stacks
    warm_up();
    return 0;
}

static void shard(const char *path) {
    h5shard_reader *r = NULL;
    if (h5shard_open(&r, path) != 0) return;
    char *names = NULL;
    int n = 0;
    if (h5shard_list(r, &names, &n) == 0) {
        const char *p = names;
        for (int i = 0; i < n; i++, p += strlen(p) + 1) {
            int64_t dims[8];
            int nd = h5shard_shape(r, p, dims, 8);
            if (nd < 0) continue;
            int64_t numel = 1;
            for (int d = 0; d < nd && d < 8; d++) numel = dims[d] > 0 && numel <= k_max_read ? numel * dims[d] : k_max_read + 1;
            if (numel > k_max_read) continue;
            void *buf = NULL;
            size_t bytes = 0;
            if (h5shard_read_raw(r, p, &buf, &bytes) == 0) free(buf);
            if (nd >= 1 && dims[0] > 0) {
                double *row = malloc(sizeof(double) * (size_t)(numel / dims[0] + 1));
                if (row) (void)h5shard_read(r, p, SHARD_F64, row, dims[0] - 1, 1);
                free(row);
            }
        }
    }
    free(names);
    static const char *const attrs[] = {"split", "categories", "config", "hash"};
    for (size_t i = 0; i < sizeof attrs / sizeof *attrs; i++) {
        char *v = NULL;
        if (h5shard_get_attr_str(r, attrs[i], &v) == 0) free(v);
    }
    double f[16];
    int nf = 0;
    (void)h5shard_get_attr_f64(r, "hu", f, 16, &nf);
    h5shard_close(r);
}

static void checkpoint_read(const char *path) {
    ckpt_reader *r = NULL;
    if (ckpt_open(&r, path, MPI_COMM_SELF, CKPT_VERIFY) != 0) return;
    static const char *const groups[2] = {"/params", "/buffers"};
    for (int g = 0; g < 2; g++) {
        ckpt_entry *e = NULL;
        int n = 0;
        if (ckpt_list(r, groups[g], &e, &n) != 0) continue;
        for (int i = 0; i < n; i++) {
            ckpt_tensor t;
            memset(&t, 0, sizeof t);
            t.name = e[i].name;
            t.ndim = e[i].ndim;
            int64_t numel = 1;
            for (int d = 0; d < t.ndim && d < CKPT_MAX_DIMS; d++) {
                t.shape[d] = e[i].shape[d];
                numel = t.shape[d] >= 0 && numel <= k_max_read ? numel * t.shape[d] : k_max_read + 1;
            }
            if (numel > k_max_read) continue;
            t.data = malloc(sizeof(float) * (size_t)(numel + 1));
            if (t.data) (void)ckpt_read_tensors(r, groups[g], &t, 1);
            free(t.data);
        }
        free(e);
    }
    ckpt_state s;
    ckpt_state_init(&s);
    (void)ckpt_read_state(r, &s);
    char *text = NULL;
    if (ckpt_read_text(r, "config", &text) == 0) free(text);
    ckpt_close(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fuzz_write_file("fuzz.h5", data, size);
    if (!p) return 0;
    char path[512], root[512];
    snprintf(path, sizeof path, "%s", p);
    snprintf(root, sizeof root, "%s", p);
    *strrchr(root, '/') = 0;

    lesion_shard ls;
    memset(&ls, 0, sizeof ls);
    if (lesion_shard_open(&ls, root, "fuzz") == 0) {
        volatile double sum = 0;   // what the detector's sampler and FROC do with each sample's rows
        for (int64_t i = 0; i < ls.n; i++)
            for (int64_t k = ls.off[i]; k < ls.off[i + 1]; k++)
                sum += ls.boxes[4 * k] + ls.boxes_orig[4 * k + 3] + ls.diam_mm[2 * k] + ls.type[k] + ls.noisy[k];
        (void)sum;
        lesion_shard_close(&ls);
    }
    shard(path);
    FILE *devnull = fopen("/dev/null", "w");
    if (devnull) {
        (void)h5shard_describe(path, devnull);
        fclose(devnull);
    }
    checkpoint_read(path);
    return 0;
}
