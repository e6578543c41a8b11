// Helper for the trainer tests (an MPI program run with 1 rank):
//   train_tool make-shard DIR NTRAIN NVAL S CLASSES SEED   learnable VDT-style classification shards
//       DIR/train.h5, DIR/val.h5: "images" (N, 1, 3, S, S) uint8, "label" (N) int64; class k is
//       a bright square in quadrant k of slice (k % 3) on a noisy background.
//   train_tool compare A.h5 B.h5 TOL    compares /params, /buffers, /optim/momentum of two
//       checkpoints: prints the max abs difference; exit 0 if <= TOL (TOL 0: bit-identical).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "io/h5ckpt.h"
#include "io/fileio.h"
#include "io/h5shard.h"
#include "io/h5tensor.h"
#include "stages/train/augment.h"
#include "nn/pl.h"

static int make_split(const char *dir, const char *split, int64_t n, int S, int classes, uint64_t seed) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.h5", dir, split);
    shard_col cols[1] = {{"label", SHARD_I64, 1}};
    shard_layout lay = {.data_name = "images", .data_type = SHARD_U8, .ndims = 4, .dims = {1, 3, S, S},
                        .cols = cols, .ncols = 1};
    h5shard_writer *w = NULL;
    int rc = h5shard_writer_create(&w, path, &lay, 0);
    if (rc) return rc;
    uint8_t *img = malloc((size_t)3 * S * S);
    pl_rng r;
    pl_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) {
        int64_t label = i % classes;
        for (int64_t j = 0; j < 3 * S * S; j++) img[j] = (uint8_t)pl_rng_int(&r, 40, 120);
        int half = S / 2, q = (int)(label % 4), sl = (int)(label % 3);
        int y0 = (q / 2) * half + (int)pl_rng_int(&r, 0, half / 4), x0 = (q % 2) * half + (int)pl_rng_int(&r, 0, half / 4);
        int side = half * 3 / 4;
        for (int y = y0; y < y0 + side && y < S; y++)
            for (int x = x0; x < x0 + side && x < S; x++) img[(int64_t)sl * S * S + y * S + x] = 230;
        const void *cv[1] = {&label};
        if ((rc = h5shard_add(w, i, img, cv, 0, NULL))) break;
    }
    free(img);
    return h5shard_finish(w, MPI_COMM_WORLD, rc == 0, NULL);
}

static int compare_group(ckpt_reader *a, ckpt_reader *b, const char *group, double *maxdiff) {
    ckpt_entry *ea = NULL, *eb = NULL;
    int na = 0, nb = 0;
    pl_quiet_begin();  // a network without BatchNorm has no /buffers: not an error here
    int rc = ckpt_list(a, group, &ea, &na);
    pl_quiet_end();
    if (rc == PL_ENOTFOUND) return 0;
    if (rc || (rc = ckpt_list(b, group, &eb, &nb))) return rc;
    if (na != nb) { fprintf(stderr, "%s: %d vs %d tensors\n", group, na, nb); return 1; }
    for (int i = 0; i < na && !rc; i++) {
        ckpt_tensor ta = {.name = ea[i].name, .ndim = ea[i].ndim}, tb;
        memcpy(ta.shape, ea[i].shape, sizeof ta.shape);
        int64_t n = ckpt_tensor_numel(&ta);
        ta.data = malloc(sizeof(float) * (size_t)n);
        tb = ta;
        tb.data = malloc(sizeof(float) * (size_t)n);
        if (!(rc = ckpt_read_tensors(a, group, &ta, 1)) && !(rc = ckpt_read_tensors(b, group, &tb, 1)))
            for (int64_t j = 0; j < n; j++) {
                double d = fabs((double)ta.data[j] - (double)tb.data[j]);
                if (memcmp(&ta.data[j], &tb.data[j], sizeof(float)) && d == 0) d = 1e-30;  // -0 vs 0
                if (d > *maxdiff) *maxdiff = d;
            }
        free(ta.data);
        free(tb.data);
    }
    free(ea);
    free(eb);
    return rc;
}

// The val split centre-cropped and normalised exactly as validation does, as /input.
static int make_input(const char *dir, int crop, float mean, float std, const char *out) {
    char path[4096];
    snprintf(path, sizeof path, "%s/val.h5", dir);
    h5shard_reader *r = NULL;
    int rc = h5shard_open(&r, path);
    if (rc) return rc;
    int64_t d[6];
    h5shard_shape(r, "images", d, 6);
    int64_t n = d[0], D = d[2], S = d[3], per = D * crop * crop;
    uint8_t *raw = malloc((size_t)(D * S * S));
    float *x = malloc(sizeof(float) * (size_t)(n * per));
    for (int64_t i = 0; i < n && !rc; i++) {
        rc = h5shard_read(r, "images", SHARD_U8, raw, i, 1);
        aug_crop_resize(x + i * per, crop, crop, raw, (int)D, (int)S, (int)S, aug_center_box((int)S, (int)S, crop), 0, NULL, mean, std);
    }
    int64_t dims[5] = {n, 1, D, crop, crop};
    if (!rc) rc = h5tensor_write(out, "input", x, dims, 5, NULL);
    free(raw);
    free(x);
    h5shard_close(r);
    return rc;
}

// Top-1 of /output logits against the val labels.
static int top1(const char *out, const char *dir) {
    float *y = NULL;
    int64_t dims[8];
    int nd = 0;
    int rc = h5tensor_read(out, "output", &y, dims, &nd);
    if (rc) return rc;
    char path[4096];
    snprintf(path, sizeof path, "%s/val.h5", dir);
    h5shard_reader *r = NULL;
    if ((rc = h5shard_open(&r, path))) { free(y); return rc; }
    int64_t *lab = malloc(sizeof(int64_t) * (size_t)dims[0]);
    rc = h5shard_read(r, "label", SHARD_I64, lab, 0, dims[0]);
    int64_t correct = 0;
    for (int64_t i = 0; i < dims[0] && !rc; i++) {
        const float *z = y + i * dims[1];
        int above = 0;
        for (int64_t k = 0; k < dims[1]; k++) above += z[k] > z[lab[i]];
        correct += above == 0;
    }
    printf("infer_top1:%.4f n:%lld classes:%lld\n", (double)correct / (double)dims[0], (long long)dims[0], (long long)dims[1]);
    free(lab);
    free(y);
    h5shard_close(r);
    return rc;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int code = 2;
    if (argc == 8 && !strcmp(argv[1], "make-shard")) {
        int64_t ntr = atoll(argv[3]), nva = atoll(argv[4]);
        int S = atoi(argv[5]), classes = atoi(argv[6]);
        uint64_t seed = strtoull(argv[7], NULL, 10);
        int rc = pl_mkdir_p(argv[2]);
        if (!rc) rc = make_split(argv[2], "train", ntr, S, classes, seed);
        if (!rc) rc = make_split(argv[2], "val", nva, S, classes, seed + 1000);
        code = rc ? 1 : 0;
    } else if (argc == 5 && !strcmp(argv[1], "compare")) {
        double tol = atof(argv[4]), maxdiff = 0;
        ckpt_reader *a = NULL, *b = NULL;
        int rc = ckpt_open(&a, argv[2], MPI_COMM_WORLD, CKPT_VERIFY);
        if (!rc) rc = ckpt_open(&b, argv[3], MPI_COMM_WORLD, CKPT_VERIFY);
        const char *groups[] = {"/params", "/buffers", "/optim/momentum"};
        for (int g = 0; g < 3 && !rc; g++) rc = compare_group(a, b, groups[g], &maxdiff);
        ckpt_close(a);
        ckpt_close(b);
        printf("compare: %s vs %s max_abs_diff:%.3g tol:%g -> %s\n", argv[2], argv[3], maxdiff, tol,
               rc ? "ERROR" : maxdiff <= tol ? "equal" : "DIFFERENT");
        code = rc ? 1 : maxdiff <= tol ? 0 : 1;
    } else if (argc == 7 && !strcmp(argv[1], "make-input")) {
        code = make_input(argv[2], atoi(argv[3]), (float)atof(argv[4]), (float)atof(argv[5]), argv[6]) ? 1 : 0;
    } else if (argc == 4 && !strcmp(argv[1], "top1")) {
        code = top1(argv[2], argv[3]) ? 1 : 0;
    } else {
        fprintf(stderr, "usage: train_tool make-shard DIR NTRAIN NVAL S CLASSES SEED | compare A B TOL\n");
    }
    MPI_Finalize();
    return code;
}
