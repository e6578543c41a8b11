#pragma once
// gradsync: bucketed gradient all-reduce overlapped with the backward pass. nn/ reports each
// layer's gradients as final in descending contiguous ranges of the grads buffer
// (nn_grad_ready_fn); ranges gather into buckets of at least `bucket_floats`, and each full
// bucket starts an MPI_Iallreduce(SUM) at once. gradsync_finish starts the last bucket, waits,
// and returns the time spent waiting (the communication the backward pass did not hide).
// The caller scales its loss so that the SUM is the global-batch mean. Collective over comm.

#include <mpi.h>
#include <stddef.h>

typedef struct {
    MPI_Comm comm;
    int size;
    float *grads;            // (count) the whole gradient buffer
    size_t count;
    size_t bucket_floats;
    size_t pending_end;      // [next ready offset, pending_end) is final but not yet sent
    MPI_Request *reqs;
    int nreq, capreq;
    double wait_s;           // last finish: seconds blocked in MPI_Waitall
    int nbuckets;            // last step: buckets started
} gradsync;

int gradsync_init(gradsync *g, MPI_Comm comm, float *grads, size_t count, size_t bucket_floats);
void gradsync_free(gradsync *g);
void gradsync_begin(gradsync *g);                                // before backward
void gradsync_ready(void *g, size_t offset, size_t count);       // the nn_grad_ready_fn
int gradsync_finish(gradsync *g);                                // after backward; 0 or PL_EMPI
