#include "stages/train/gradsync.h"

#include <stdlib.h>
#include <string.h>

#include "nn/pl.h"

int gradsync_init(gradsync *g, MPI_Comm comm, float *grads, size_t count, size_t bucket_floats) {
    g->comm = comm;
    MPI_Comm_size(comm, &g->size);
    g->grads = grads;
    g->count = count;
    g->bucket_floats = bucket_floats ? bucket_floats : count;
    if (g->bucket_floats == 0) g->bucket_floats = 1;
    if (g->bucket_floats > (size_t)1 << 30) g->bucket_floats = (size_t)1 << 30;   // MPI counts are int
    g->capreq = (int)(count / g->bucket_floats) + 2;
    g->state = GRADSYNC_IDLE;
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
    g->state = GRADSYNC_BEGUN;
}

// Starts every grid bucket that lies wholly in [offset, pending_end), highest first.
static void start_buckets_down_to(gradsync *g, size_t offset) {
    while (g->pending_end > 0) {
        size_t lo = g->pending_end > g->bucket_floats ? g->pending_end - g->bucket_floats : 0;
        if (lo < offset) break;
        if (g->nreq == g->capreq) {  // cannot happen with the grid; kept as a guard
            MPI_Waitall(g->nreq, g->reqs, MPI_STATUSES_IGNORE);
            g->nreq = 0;
        }
        MPI_Iallreduce(MPI_IN_PLACE, g->grads + lo, (int)(g->pending_end - lo), MPI_FLOAT, MPI_SUM, g->comm,
                       &g->reqs[g->nreq++]);
        g->nbuckets++;
        g->pending_end = lo;
    }
}

void gradsync_ready(void *ctx, size_t offset, size_t count) {
    gradsync *g = ctx;
    if (g->size == 1) return;
    PL_ASSERT(offset + count <= g->count);
    start_buckets_down_to(g, offset);
    // Open MPI progresses non-blocking collectives only inside MPI calls: poke it.
    if (g->nreq) {
        int flag;
        MPI_Testall(g->nreq, g->reqs, &flag, MPI_STATUSES_IGNORE);
        if (flag) g->nreq = 0;
    }
}

int gradsync_finish(gradsync *g) {
    g->wait_s = 0;
    g->state = GRADSYNC_DONE;
    if (g->size == 1) return 0;
    start_buckets_down_to(g, 0);
    double t0 = pl_time();
    MPI_Waitall(g->nreq, g->reqs, MPI_STATUSES_IGNORE);   // MPI errors are fatal (stages/stages.h)
    g->wait_s = pl_time() - t0;
    g->nreq = 0;
    return 0;
}

int gradsync_agree(gradsync *g, int rc) {
    g->peer_failed = 0;
    if (g->size == 1) return rc;
    int all = rc;
    if (MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MIN, g->comm) != MPI_SUCCESS)
        return pl_fail(PL_EMPI, "all-reduce of the data-loading status failed");
    if (rc) return rc;
    if (all) {
        g->peer_failed = 1;
        pl_quiet_begin();
        int r = pl_fail(PL_EINVAL, "another rank failed to load its samples");
        pl_quiet_end();
        return r;
    }
    return 0;
}

void gradsync_fail(gradsync *g) {
    if (g->state == GRADSYNC_DONE) return;
    if (g->state == GRADSYNC_IDLE) gradsync_begin(g);
    // [0, pending_end) was not sent yet; above it the all-reduce is in flight in place.
    memset(g->grads, 0, g->pending_end * sizeof(float));
    gradsync_finish(g);
}
