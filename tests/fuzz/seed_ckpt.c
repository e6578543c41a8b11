// Writes a tiny checkpoint (two /params tensors, one /buffers tensor, the trainer state and a
// config text) through io/h5ckpt.c into DIR: the seed of the fuzz_h5 corpus
// (tests/fuzz/corpus/h5/ckpt_tiny.h5). Usage: fuzz_seed_ckpt DIR
#include <mpi.h>
#include <stdio.h>

#include "io/h5ckpt.h"
#include "nn/pl.h"

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    if (argc != 2) { fprintf(stderr, "usage: fuzz_seed_ckpt DIR\n"); return 2; }
    float w[6] = {1, -2, 3, -4, 5, -6}, b[2] = {0.5f, -0.5f}, m[1] = {7};
    ckpt_tensor t[3] = {{"conv.weight", 2, {2, 3}, w}, {"conv.bias", 1, {2}, b}, {"bn.num_batches_tracked", 0, {0}, m}};
    ckpt_writer *wr = NULL;
    int rc = ckpt_writer_open(&wr, argv[1], 3, MPI_COMM_WORLD);
    if (!rc) rc = ckpt_write_tensors(wr, "/params", t, 2);
    if (!rc) rc = ckpt_write_tensors(wr, "/buffers", t + 2, 1);
    ckpt_state st;
    ckpt_state_init(&st);
    st.step = 3;
    st.epoch = 1;
    if (!rc) rc = ckpt_state_set_double(&st, "best_val", 0.25);
    if (!rc) rc = ckpt_write_state(wr, &st);
    if (!rc) rc = ckpt_write_text(wr, "config", "train = { lr = 0.1; };\n");
    if (!rc) rc = ckpt_writer_commit(wr, 1, NULL, 0);
    else ckpt_writer_abort(wr);
    MPI_Finalize();
    return rc ? 1 : 0;
}
