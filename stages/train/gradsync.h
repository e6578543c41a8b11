#pragma once
// gradsync: bucketed gradient all-reduce overlapped with the backward pass. nn/ reports each
// layer's gradients as final in descending contiguous ranges of the grads buffer
// (nn_grad_ready_fn). Buckets are a fixed grid of `bucket_floats` counted from the end of the
// buffer ([count - B, count), [count - 2B, count - B), ..., [0, ...)); each bucket starts an
// MPI_Iallreduce(SUM) as soon as it is final. The grid does not depend on which ranges the
// backward pass reports, so every rank makes the same calls in the same order whatever its
// data, and a rank whose step failed can still take part (gradsync_fail). gradsync_finish
// starts the remaining buckets, waits, and returns the time spent waiting (the communication
// the backward pass did not hide). The caller scales its loss so that the SUM is the
// global-batch mean. Collective over comm.

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
    int state;               // GRADSYNC_IDLE / _BEGUN / _DONE within the current step
    int peer_failed;         // the last gradsync_agree failed because of another rank
} gradsync;

enum { GRADSYNC_IDLE = 0, GRADSYNC_BEGUN = 1, GRADSYNC_DONE = 2 };

int gradsync_init(gradsync *g, MPI_Comm comm, float *grads, size_t count, size_t bucket_floats);
void gradsync_free(gradsync *g);
void gradsync_begin(gradsync *g);                                // before backward
void gradsync_ready(void *g, size_t offset, size_t count);       // the nn_grad_ready_fn
int gradsync_finish(gradsync *g);                                // after backward; 0 or PL_EMPI
// Collective. Every rank's data-loading status, agreed before the forward pass (which may hold
// collectives of its own, e.g. synchronised BatchNorm): returns rc on the failing rank,
// PL_EINVAL ("failed on another rank") on the others, 0 when all ranks loaded their data.
int gradsync_agree(gradsync *g, int rc);
// On a rank whose step failed: completes the step's all-reduce as the other ranks do, with
// zero gradients for the part not yet sent (nothing if the step already finished it). The
// trainer calls it for a failed step, then agrees with the other ranks to stop.
void gradsync_fail(gradsync *g);
