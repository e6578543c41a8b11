// mp3d infer: a plain-tensor entry point. Rebuilds the network from the checkpoint's own stored
// config, loads its weights, runs it (evaluation mode) on /input (N, 1, D, H, W) float32 —
// already normalised — of infer.input, and writes /output of infer.output: logits (N, classes)
// for a classification network. Rank 0 computes; the checkpoint is opened collectively.
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "io/h5tensor.h"
#include "nn/net.h"
#include "nn/pl.h"
#include "stages/stages.h"
#include "stages/train/train_ckpt.h"

static int build_net(nn_net **net, const pl_cfg *mc, uint64_t seed) {
    nn_net_config nc = {0};
    int rc = nn_arch_parse(&nc.arch, cfg_str(mc, "model.arch"));
    if (rc) return rc;
    nc.width = cfg_float(mc, "model.width");
    nc.norm = !strcmp(cfg_str(mc, "model.norm"), "gn") ? NN_NORM_GN : NN_NORM_BN;
    nc.gn_groups = (int)cfg_int(mc, "model.gn_groups");
    nc.num_classes = (int)cfg_int(mc, "model.num_classes");
    return nn_net_create(net, &nc, seed);
}

// 1 when a and b name the same file: equal paths, or the same device and inode.
static int same_file(const char *a, const char *b) {
    if (!strcmp(a, b)) return 1;
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int stage_infer_run(const pl_cfg *cfg, MPI_Comm comm) {
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    if (cfg_require(cfg, "infer.checkpoint") || cfg_require(cfg, "infer.input") || cfg_require(cfg, "infer.output"))
        return MP3D_EXIT_USAGE;
    if (stage_conv_engine_set(cfg)) return MP3D_EXIT_USAGE;
    const char *ck = cfg_str(cfg, "infer.checkpoint");
    // Writing /output into the input or the checkpoint would replace that file (issue 16).
    const char *in_path = cfg_str(cfg, "infer.input"), *out_path = cfg_str(cfg, "infer.output");
    if (same_file(out_path, in_path) || same_file(out_path, ck)) {
        if (rank == 0)
            LOG_ERROR("infer: --output %s is the same file as --%s: it would be overwritten; choose another output file",
                      out_path, same_file(out_path, in_path) ? "input" : "checkpoint");
        return MP3D_EXIT_USAGE;
    }
    char *text = NULL;
    pl_cfg *mc = NULL;
    nn_net *net = NULL;
    float *x = NULL, *y = NULL;
    int rc = train_ckpt_read_config(ck, comm, &text);
    if (!rc) rc = cfg_load_text(&mc, text, ck, NULL, 0);
    if (!rc && strcmp(cfg_str(mc, "train.task"), "classify"))
        rc = pl_fail(PL_EUNSUPPORTED, "%s: train.task = \"%s\": mp3d infer handles classification networks in this version",
                     ck, cfg_str(mc, "train.task"));
    if (!rc) rc = build_net(&net, mc, 1);
    if (!rc) rc = train_ckpt_load_weights(nn_net_params(net), ck, comm);
    int code = rc ? MP3D_EXIT_FAIL : MP3D_EXIT_OK;
    if (!rc && rank == 0) {
        int64_t dims[8];
        int nd = 0;
        const char *in = cfg_str(cfg, "infer.input");
        rc = h5tensor_read(in, "input", &x, dims, &nd);
        if (!rc && (nd != 5 || dims[1] != 1))
            rc = pl_fail(PL_EFORMAT, "%s: /input must be (N, 1, D, H, W) float32, has %d dims", in, nd);
        // Non-finite input makes non-finite logits silently: name the first sample that has one.
        const int64_t nx = !rc ? dims[0] * dims[1] * dims[2] * dims[3] * dims[4] : 0;
        for (int64_t i = 0; i < nx; i++)
            if (!isfinite(x[i])) {
                int64_t per_s = nx / dims[0];
                rc = pl_fail(PL_EFORMAT, "%s: /input sample %lld holds a non-finite value (%g at element %lld)", in,
                             (long long)(i / per_s), (double)x[i], (long long)(i % per_s));
                break;
            }
        const int64_t K = cfg_int(mc, "model.num_classes");
        if (!rc) y = pl_malloc(sizeof(float) * (size_t)(dims[0] * K + 1), "logits");
        if (!rc && !y) rc = PL_ENOMEM;
        const int64_t per = dims[1] * dims[2] * dims[3] * dims[4], bs = 16;
        double t0 = pl_time();
        for (int64_t i0 = 0; !rc && i0 < dims[0]; i0 += bs) {
            int64_t n = PL_MIN(bs, dims[0] - i0);
            rc = nn_net_forward(net, x + i0 * per, nn_dims_make(n, 1, dims[2], dims[3], dims[4]), 0);
            nn_dims od;
            if (!rc) memcpy(y + i0 * K, nn_net_output(net, 0, &od), sizeof(float) * (size_t)(n * K));
        }
        if (!rc) {
            int64_t od[2] = {dims[0], K};
            rc = h5tensor_write(cfg_str(cfg, "infer.output"), "output", y, od, 2, "logits (N, classes) from mp3d infer");
        }
        if (!rc)
            LOG0("infer: checkpoint:%s input:%s samples:%lld output:%s seconds:%.3f", ck, in, (long long)dims[0],
                 cfg_str(cfg, "infer.output"), pl_time() - t0);
        code = rc ? MP3D_EXIT_FAIL : MP3D_EXIT_OK;
    }
    MPI_Bcast(&code, 1, MPI_INT, 0, comm);
    free(x);
    free(y);
    free(text);
    cfg_destroy(mc);
    nn_net_destroy(net);
    return code;
}
