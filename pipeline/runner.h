#pragma once
// runner (private to pipeline/runner.c and pipeline/watch.c): the plan of `mp3d run` — stages,
// their resolved configs and signatures, the groups of each wave — and the helpers the runner and
// its follow ("watch") stage share: completion markers, the signal note, polling naps.
// Not a library interface: nothing outside pipeline/ includes it.

#include <mpi.h>
#include <signal.h>

#include "io/config.h"

typedef struct {
    pl_cfg *cfg;         // the stage's resolved config
    char want[32];       // its signature as the marker holds it (hex)
    int run;             // 1 = runs in this invocation
    const char *why;     // reason shown in the plan
    int *deps, ndeps;    // stage indices it depends on
    int follow;          // stage index it follows, -1 = none
    int nranks;          // ranks it runs on (1..world size)
    int wave, group;     // schedule (-1 = not run)
} plan_stage;

typedef struct {
    int wave;
    int first, n;        // world ranks [first, first + n)
    int *chain, nchain;  // stage indices, in order
    int has_follow;
} plan_group;

typedef struct {
    const char *path;    // pipeline config
    const char *dir;     // run folder
    char mdir[4096];     // dir/.mp3d
    const cfg_stage *st;
    plan_stage *p;
    int ns;
    plan_group *g;
    int ng, nwaves;
    char **ov;           // run-level --set values passed to every stage
    int nov;
    double poll_s;
} plan;

// A stage's settings: its own `set` values (@dir substituted), the run-level --set values
// (except pipeline.* and run.force), then `extra`. Loads its config with them.
int stage_cfg_load(pl_cfg **out, const plan *P, int i, const char *const *extra, int nextra);
// First line of a small file into buf ("" when absent). Returns 1 when the file exists.
int read_line(const char *path, char *buf, size_t cap);
int marker_done(const plan *P, int i);     // 1 when stage i's .done marker holds its signature
int marker_failed(const plan *P, int i);   // exit code its .failed marker holds, 0 when none

// SIGTERM / SIGUSR1 while the runner itself waits: noted in g_run_signal.
extern volatile sig_atomic_t g_run_signal;
typedef struct { struct sigaction term, usr1; } sig_saved;
void sig_catch(sig_saved *old);
void sig_restore(const sig_saved *old);
void nap(double s);

// Collective over gcomm: the follow stage i (see pipeline/runner.c's file comment). Returns an exit code.
int run_watch(const plan *P, int i, MPI_Comm gcomm);
