#include "stages/train/gradsync.h"

#include <stdlib.h>

#include "nn/pl.h"

int gradsync_init(gradsync *g, MPI_Comm comm, float *grads, size_t count, size_t bucket_floats) {
    g->comm = comm;
    MPI_Comm_size(comm, &g->size);
    g->grads = grads;
    g->count = count;
    g->bucket_floats = bucket_floats ? bucket_floats : count;
    g->capreq = (int)(count / g->bucket_floats) + 64;
    g->reqs = pl_malloc(sizeof(MPI_Request) * (size_t)g->capreq, "all-reduce requests");
    g->nreq = 0;
    g->pending_end = count;
    g->wait_s = 0;
    return g->reqs ? 0 : PL_ENOMEM;
}

void gradsync_free(gradsync *g) {
    free(g->reqs);
    g->reqs = NULL;
}

void gradsync_begin(gradsync *g) {
    g->nreq = 0;
    g->pending_end = g->count;
    g->nbuckets = 0;
}

static void start_bucket(gradsync *g, size_t off, size_t end) {
    if (end <= off) return;
    if (g->nreq == g->capreq) {  // more layers than planned: finish what is in flight first
        MPI_Waitall(g->nreq, g->reqs, MPI_STATUSES_IGNORE);
        g->nreq = 0;
    }
    // Counts above INT_MAX are split (MPI counts are int).
    while (end > off) {
        size_t n = end - off;
        if (n > (size_t)1 << 30) n = (size_t)1 << 30;
        MPI_Iallreduce(MPI_IN_PLACE, g->grads + end - n, (int)n, MPI_FLOAT, MPI_SUM, g->comm, &g->reqs[g->nreq++]);
        end -= n;
        g->nbuckets++;
        if (g->nreq == g->capreq && end > off) {
            MPI_Waitall(g->nreq, g->reqs, MPI_STATUSES_IGNORE);
            g->nreq = 0;
        }
    }
}

void gradsync_ready(void *ctx, size_t offset, size_t count) {
    gradsync *g = ctx;
    if (g->size == 1) return;
    PL_ASSERT(offset + count <= g->pending_end);
    if (g->pending_end - offset >= g->bucket_floats) {
        start_bucket(g, offset, g->pending_end);
        g->pending_end = offset;
    }
    // Open MPI progresses non-blocking collectives only inside MPI calls: poke it.
    if (g->nreq) {
        int flag;
        MPI_Testall(g->nreq, g->reqs, &flag, MPI_STATUSES_IGNORE);
        if (flag) g->nreq = 0;
    }
}

int gradsync_finish(gradsync *g) {
    g->wait_s = 0;
    if (g->size == 1) return 0;
    start_bucket(g, 0, g->pending_end);
    g->pending_end = 0;
    double t0 = pl_time();
    MPI_Waitall(g->nreq, g->reqs, MPI_STATUSES_IGNORE);   // MPI errors are fatal (stages/stages.h)
    g->wait_s = pl_time() - t0;
    g->nreq = 0;
    return 0;
}
