// import_tool: runs the backbone (+ GTM) of a detector checkpoint, for the import tests.
//   import_tool gtm-forward CKPT.h5 IN.h5 OUT_PREFIX ARCH WIDTH NORM GROUPS DEPTH
// builds ARCH in backbone mode with a GTM over DEPTH slices, loads its tensors by name from
// CKPT.h5 (/params, /buffers: every backbone and GTM name must be there), runs /input of IN.h5
// in evaluation mode and writes the four GTM outputs (N, C_k, 1, H_k, W_k) as /output of
// OUT_PREFIX.<k>.h5, for comparison with PyTorch.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "io/h5tensor.h"
#include "nn/net.h"
#include "nn/pl.h"
#include "stages/train/train_ckpt.h"

int main(int argc, char **argv) {
    if (argc != 10 || strcmp(argv[1], "gtm-forward")) {
        fprintf(stderr, "usage: import_tool gtm-forward CKPT.h5 IN.h5 OUT_PREFIX ARCH WIDTH NORM GROUPS DEPTH\n");
        return 2;
    }
    MPI_Init(&argc, &argv);
    nn_net_config nc = {0};
    nn_net *net = NULL;
    float *x = NULL;
    int rc = nn_arch_parse(&nc.arch, argv[5]);
    nc.width = atof(argv[6]);
    nc.norm = !strcmp(argv[7], "gn") ? NN_NORM_GN : NN_NORM_BN;
    nc.gn_groups = atoi(argv[8]);
    nc.num_classes = 1;
    nc.backbone = 1;
    nc.gtm_depth = atoi(argv[9]);
    if (!rc) rc = nn_net_create(&net, &nc, 1);
    if (!rc) rc = train_ckpt_load_weights(nn_net_params(net), argv[2], MPI_COMM_WORLD);
    int64_t dims[8];
    int nd = 0;
    if (!rc) rc = h5tensor_read(argv[3], "input", &x, dims, &nd);
    if (!rc && nd != 5) rc = pl_fail(PL_EFORMAT, "%s: /input has %d dims, expected 5", argv[3], nd);
    if (!rc) rc = nn_net_forward(net, x, nn_dims_make(dims[0], dims[1], dims[2], dims[3], dims[4]), 0);
    for (int k = 0; !rc && k < nn_net_num_outputs(net); k++) {
        nn_dims od;
        const float *y = nn_net_output(net, k, &od);
        int64_t shape[5] = {od.n, od.c, od.d, od.h, od.w};
        char path[4096];
        snprintf(path, sizeof path, "%s.%d.h5", argv[4], k);
        rc = h5tensor_write(path, "output", y, shape, 5, "GTM output k of the imported backbone");
    }
    free(x);
    nn_net_destroy(net);
    MPI_Finalize();
    return rc ? 1 : 0;
}
