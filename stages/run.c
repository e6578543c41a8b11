// mp3d run: executes the stages a pipeline config lists on the ranks it was started with.
//
// Dependencies. A stage depends on the stages its `after` list names; without `after`, on the
// stage listed before it (so a config without `after` and rank counts runs in listed order). A
// stage with `follow = "X"` (an evaluation that scores X's checkpoints while X trains) depends on
// what X depends on unless it has its own `after`, and runs beside X.
//
// Skipping. A stage is skipped when its completion marker RUN_DIR/.mp3d/<name>.done holds its
// signature: a hash of its command, its fully resolved config, the listing (names, sizes, mtimes)
// of its input.root folder and the signatures of the stages it depends on (and follows). A changed
// config or input re-runs the stage and, through the signatures, every stage that depends on it.
// Before anything runs, rank 0 removes the .done and .failed markers of the stages that will run,
// so a marker with the current signature appears only when the stage completed in this run.
//
// Schedule ("waves"; every rank computes it identically from the config and the world size).
// Each stage runs on `ranks` ranks (0 = all; all when pipeline.groups = false). The stages to run
// are taken in listed order into the current wave when every dependency is complete or in the
// current wave (a follow stage also needs the stage it follows complete or in the current wave):
//   - it opens a new group of its rank count when that many world ranks are still free (groups
//     get contiguous world ranks in the order they open);
//   - otherwise it is appended to a group of the wave with exactly its rank count and no follow
//     stage: the group holding its latest-listed dependency of this wave, else the one with the
//     fewest stages (the first on ties). A follow stage is never appended: it waits for a wave
//     with free ranks (then the stage it follows is complete and it scores what is left).
// Anything else waits for the next wave. The world is split (MPI_Comm_split) into the wave's
// groups; each group runs its stages in order, waiting for dependencies held by other groups of
// the wave through their completion markers (polled every pipeline.poll_s by the group's first
// rank; a failed stage writes <name>.failed holding its exit code, so waiting groups stop instead
// of hanging, and a group starts no further stage once any stage of the wave failed). The wave
// ends with a reduction of the exit codes over the world. Stages hand over only through files and
// markers. Every wait points at an earlier-listed stage, so groups cannot wait on each other in a
// cycle. A wave of one group of all ranks runs on the world communicator itself.
//
// Follow ("watch") stage: command "evaluate" following a "train" stage. Its group's first rank
// polls the followed stage's output.dir for complete checkpoints (ckpt_XXXXXXXX.h5; the trainer
// writes a .tmp and renames it), takes each new one in step order, hard-links it into the watch's
// output.dir (copies it when linking fails) so pruning by train.ckpt_keep cannot delete it while it
// is scored (a checkpoint pruned before it could be linked is logged and passed over), and the
// group runs `evaluate` on it with eval.checkpoint=<copy> eval.split=val output.dir=<dir>/step_N.
// One line per checkpoint goes to <dir>/checkpoints.csv (step, file, mfroc, sens at 0.5/1/2/4 FP,
// read from step_N/report/froc.json); the best by val mFROC (the earliest on ties) is kept as
// <dir>/best.h5 with <dir>/best.json. It finishes once the followed stage's marker holds its
// signature and the checkpoints present after that have been scored; it stops when the followed
// stage failed. A re-run with the same signature resumes from checkpoints.csv.
//
// Logging: inside a group of fewer than all ranks the log tag is the rank in the group, so the
// group's first rank prints the stage's rank-0 lines; each rank first logs its world rank, wave,
// group and group rank. --dry-run prints the plan and the waves.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "io/fileio.h"
#include "nn/pl.h"
#include "stages/stages.h"

typedef struct {
    const char *command;
    int (*run)(const pl_cfg *, MPI_Comm);
} stage_fn;

static const stage_fn g_stage_fns[] = {
    {"synth", stage_synth_run},       {"preprocess", stage_preprocess_run}, {"vdt", stage_vdt_run},
    {"train", stage_train_run},       {"anchors", stage_anchors_run},       {"evaluate", stage_evaluate_run},
    {"froc", stage_froc_run},         {"infer", stage_infer_run},
};

static int (*find_fn(const char *cmd))(const pl_cfg *, MPI_Comm) {
    for (size_t i = 0; i < sizeof g_stage_fns / sizeof g_stage_fns[0]; i++)
        if (!strcmp(g_stage_fns[i].command, cmd)) return g_stage_fns[i].run;
    return NULL;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Hash of a folder's direct entries (name, size, mtime), sorted: cheap, catches replaced data.
static uint64_t stamp_dir(const char *dir, uint64_t h) {
    DIR *d = opendir(dir);
    if (!d) return pl_fnv1a("-", 1, h);
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nn = realloc(names, sizeof(char *) * (size_t)cap);
            if (!nn) break;
            names = nn;
        }
        names[n++] = pl_strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof(char *), cmp_str);
    for (int i = 0; i < n; i++) {
        char p[4096];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        h = pl_fnv1a(names[i], strlen(names[i]), h);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            int64_t v[2] = {(int64_t)st.st_size, (int64_t)st.st_mtime};
            h = pl_fnv1a(v, sizeof v, h);
        }
        free(names[i]);
    }
    free(names);
    return h;
}

static char *subst_dir(const char *s, const char *dir) {
    size_t cap = strlen(s) + 1;
    for (const char *p = strstr(s, "@dir"); p; p = strstr(p + 4, "@dir")) cap += strlen(dir);
    char *out = pl_malloc(cap, "stage setting");
    if (!out) return NULL;
    char *o = out;
    for (const char *p = s; *p;) {
        if (!strncmp(p, "@dir", 4)) {
            o += sprintf(o, "%s", dir);
            p += 4;
        } else *o++ = *p++;
    }
    *o = 0;
    return out;
}

static int in_list(const char *csv, const char *name) {
    size_t n = strlen(name);
    for (const char *p = csv; p && *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, name, n)) return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// The plan

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
static int stage_cfg_load(pl_cfg **out, const plan *P, int i, const char *const *extra, int nextra) {
    const cfg_stage *s = &P->st[i];
    int nsets = 0;
    char **sets = pl_calloc((size_t)(s->nsets + P->nov + nextra + 1), sizeof(char *), "stage sets");
    if (!sets) return PL_ENOMEM;
    for (int j = 0; j < s->nsets; j++) sets[nsets++] = subst_dir(s->sets[j], P->dir);
    for (int j = 0; j < P->nov; j++)
        if (strncmp(P->ov[j], "pipeline.", 9) && strncmp(P->ov[j], "run.force", 9)) sets[nsets++] = pl_strdup(P->ov[j]);
    for (int j = 0; j < nextra; j++) sets[nsets++] = pl_strdup(extra[j]);
    int rc = 0;
    for (int j = 0; j < nsets; j++)
        if (!sets[j]) rc = PL_ENOMEM;
    if (!rc) rc = cfg_load(out, s->config[0] ? s->config : NULL, (const char *const *)sets, nsets);
    for (int j = 0; j < nsets; j++) free(sets[j]);
    free(sets);
    return rc;
}

static int stage_index(const cfg_stage *st, int ns, const char *name) {
    for (int j = 0; j < ns; j++)
        if (!strcmp(st[j].name, name)) return j;
    return -1;
}

// Dependencies, follow links and the checks that need the whole list. 0 or an exit code.
static int plan_links(plan *P) {
    const cfg_stage *st = P->st;
    for (int i = 0; i < P->ns; i++) {
        plan_stage *s = &P->p[i];
        s->follow = st[i].follow[0] ? stage_index(st, P->ns, st[i].follow) : -1;
        s->wave = s->group = -1;
        if (!find_fn(st[i].command)) {
            pl_fail(PL_EINVAL, "%s:%d: stage '%s': unknown command '%s'", P->path, st[i].line, st[i].name, st[i].command);
            return MP3D_EXIT_USAGE;
        }
        if (s->follow >= 0) {
            const cfg_stage *f = &st[s->follow];
            if (strcmp(st[i].command, "evaluate") || strcmp(f->command, "train")) {
                pl_fail(PL_EINVAL, "%s:%d: stage '%s': follow = '%s': a follow stage has command \"evaluate\" and follows a "
                        "\"train\" stage (here: '%s' follows a '%s' stage)", P->path, st[i].line, st[i].name, f->name,
                        st[i].command, f->command);
                return MP3D_EXIT_USAGE;
            }
            if (f->follow[0]) {
                pl_fail(PL_EINVAL, "%s:%d: stage '%s': follows '%s', itself a follow stage", P->path, st[i].line, st[i].name, f->name);
                return MP3D_EXIT_USAGE;
            }
        }
        const cfg_stage *src = &st[i];
        int n = 0;
        char *const *names = NULL;
        if (src->after_given) { names = src->after; n = src->nafter; }
        else if (s->follow >= 0) {
            // the dependencies of the followed stage (resolved already: it is listed earlier)
            const plan_stage *f = &P->p[s->follow];
            s->deps = pl_calloc((size_t)(f->ndeps + 1), sizeof(int), "stage dependencies");
            if (!s->deps) return MP3D_EXIT_FAIL;
            memcpy(s->deps, f->deps, sizeof(int) * (size_t)f->ndeps);
            s->ndeps = f->ndeps;
            continue;
        }
        s->deps = pl_calloc((size_t)(n + 1), sizeof(int), "stage dependencies");
        if (!s->deps) return MP3D_EXIT_FAIL;
        if (src->after_given) {
            for (int a = 0; a < n; a++) {
                int d = stage_index(st, P->ns, names[a]);
                PL_ASSERT(d >= 0 && d < i);   // cfg_pipeline_read checked it
                int dup = 0;
                for (int k = 0; k < s->ndeps; k++) dup |= s->deps[k] == d;
                if (!dup) s->deps[s->ndeps++] = d;
            }
        } else if (i > 0) {
            s->deps[s->ndeps++] = i - 1;
        }
    }
    return MP3D_EXIT_OK;
}

// Waves and groups (see the file comment). Every rank computes the same.
static int plan_schedule(plan *P, int world) {
    int ns = P->ns, left = 0;
    int *done = pl_calloc((size_t)(ns + 1), sizeof(int), "schedule");
    P->g = pl_calloc((size_t)(ns + 1), sizeof(plan_group), "groups");
    if (!done || !P->g) { free(done); return MP3D_EXIT_FAIL; }
    for (int i = 0; i < ns; i++) {
        done[i] = !P->p[i].run;
        left += P->p[i].run;
    }
    int wave = 0;
    while (left > 0) {
        int used = 0, placed = 0, g0 = P->ng;
        for (int i = 0; i < ns; i++) {
            plan_stage *s = &P->p[i];
            if (!s->run || s->wave >= 0) continue;
            int ok = 1, dep_group = -1, dep_latest = -1;
            for (int k = 0; k < s->ndeps; k++) {
                int d = s->deps[k];
                if (done[d]) continue;
                if (P->p[d].wave != wave) { ok = 0; break; }
                if (d > dep_latest) { dep_latest = d; dep_group = P->p[d].group; }
            }
            if (s->follow >= 0 && !done[s->follow] && P->p[s->follow].wave != wave) ok = 0;
            if (!ok) continue;
            int target = -1;
            if (used + s->nranks <= world) {
                plan_group *g = &P->g[P->ng];
                g->chain = pl_calloc((size_t)ns, sizeof(int), "group chain");
                if (!g->chain) { free(done); return MP3D_EXIT_FAIL; }
                g->wave = wave;
                g->first = used;
                g->n = s->nranks;
                g->has_follow = s->follow >= 0;
                used += s->nranks;
                target = P->ng++;
            } else if (s->follow < 0) {
                if (dep_group >= 0 && P->g[dep_group].n == s->nranks && !P->g[dep_group].has_follow) target = dep_group;
                for (int q = g0; dep_group < 0 && q < P->ng; q++)
                    if (P->g[q].n == s->nranks && !P->g[q].has_follow && (target < 0 || P->g[q].nchain < P->g[target].nchain))
                        target = q;
            }
            if (target < 0) continue;
            plan_group *g = &P->g[target];
            g->chain[g->nchain++] = i;
            s->wave = wave;
            s->group = target;
            left--;
            placed++;
        }
        PL_ASSERT(placed > 0);   // the first unscheduled stage always fits an empty wave
        for (int i = 0; i < ns; i++)
            if (P->p[i].wave == wave) done[i] = 1;
        wave++;
    }
    P->nwaves = wave;
    free(done);
    return MP3D_EXIT_OK;
}

static void plan_free(plan *P) {
    for (int i = 0; P->p && i < P->ns; i++) {
        cfg_destroy(P->p[i].cfg);
        free(P->p[i].deps);
    }
    for (int k = 0; P->g && k < P->ng; k++) free(P->g[k].chain);
    free(P->g);
    free(P->p);
    for (int j = 0; j < P->nov; j++) free(P->ov[j]);
    free(P->ov);
}

// ---------------------------------------------------------------------------------------------
// Markers, waiting, signals

static void marker_path(char *out, size_t cap, const plan *P, int i, const char *ext) {
    snprintf(out, cap, "%s/%s.%s", P->mdir, P->st[i].name, ext);
}

// First line of a small file into buf ("" when absent). Returns 1 when the file exists.
static int read_line(const char *path, char *buf, size_t cap) {
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    if (!fgets(buf, (int)cap, f)) buf[0] = 0;
    buf[strcspn(buf, "\n")] = 0;
    fclose(f);
    return 1;
}

static int marker_done(const plan *P, int i) {
    char m[4224], have[64];
    marker_path(m, sizeof m, P, i, "done");
    return read_line(m, have, sizeof have) && !strcmp(have, P->p[i].want);
}

// Exit code a failure marker holds, 0 when there is none.
static int marker_failed(const plan *P, int i) {
    char m[4224], have[64];
    marker_path(m, sizeof m, P, i, "failed");
    if (!read_line(m, have, sizeof have)) return 0;
    int c = 0;
    if (sscanf(have, "exit:%d", &c) != 1 || c == 0) c = MP3D_EXIT_FAIL;
    return c;
}

static int marker_write(const plan *P, int i, int code) {
    char m[4224], line[128];
    int n;
    if (code == 0) {
        marker_path(m, sizeof m, P, i, "done");
        n = snprintf(line, sizeof line, "%s\n", P->p[i].want);
    } else {
        marker_path(m, sizeof m, P, i, "failed");
        n = snprintf(line, sizeof line, "exit:%d\n", code);
    }
    return pl_write_file_atomic(m, line, (size_t)n);
}

static volatile sig_atomic_t g_run_signal = 0;
static void on_run_signal(int sig) { g_run_signal = sig; }

// SIGTERM / SIGUSR1 while run.c itself waits (markers, checkpoints, the end of a wave): noted,
// and the wait ends with MP3D_EXIT_PREEMPTED. Stages install their own handlers.
typedef struct { struct sigaction term, usr1; } sig_saved;
static void sig_catch(sig_saved *old) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_run_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, &old->term);
    sigaction(SIGUSR1, &sa, &old->usr1);
}
static void sig_restore(const sig_saved *old) {
    sigaction(SIGTERM, &old->term, NULL);
    sigaction(SIGUSR1, &old->usr1, NULL);
}

static void nap(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

// A stage of this wave (another group's) that failed, or -1.
static int wave_failure(const plan *P, int wave, int *code) {
    for (int j = 0; j < P->ns; j++)
        if (P->p[j].wave == wave && (*code = marker_failed(P, j))) return j;
    return -1;
}

// Collective over gcomm: waits until every dependency of stage i held by another group of the
// wave is complete. 0, or the exit code to stop with (a dependency or a stage of the wave failed,
// a signal came).
static int wait_deps(const plan *P, int i, MPI_Comm gcomm) {
    int grank = 0;
    MPI_Comm_rank(gcomm, &grank);
    const plan_stage *s = &P->p[i];
    sig_saved old;
    sig_catch(&old);
    int logged = 0, status = 0;   // 0 waiting, 1 ready, else an exit code + 1000
    while (status == 0) {
        if (grank == 0) {
            int c = 0, f = wave_failure(P, s->wave, &c);
            if (g_run_signal) {
                LOG_WARN("pipeline: stage:%s not started: signal %d", P->st[i].name, (int)g_run_signal);
                status = 1000 + MP3D_EXIT_PREEMPTED;
            } else if (f >= 0) {
                LOG_INFO("pipeline: stage:%s not started: stage '%s' of this wave failed (exit %d)", P->st[i].name, P->st[f].name, c);
                status = 1000 + MP3D_EXIT_FAIL;
            } else {
                char waiting[1024] = "";
                for (int k = 0; k < s->ndeps; k++) {
                    int d = s->deps[k];
                    if (!P->p[d].run || P->p[d].wave != s->wave || P->p[d].group == s->group || marker_done(P, d)) continue;
                    size_t len = strlen(waiting);
                    snprintf(waiting + len, sizeof waiting - len, "%s%s", len ? "," : "", P->st[d].name);
                }
                if (!waiting[0]) status = 1;
                else if (!logged++) LOG_INFO("pipeline: stage:%s waiting for:%s (their completion markers)", P->st[i].name, waiting);
            }
        }
        MPI_Bcast(&status, 1, MPI_INT, 0, gcomm);
        if (status == 0) nap(P->poll_s);
    }
    sig_restore(&old);
    return status == 1 ? 0 : status - 1000;
}

// Collective over comm: the worst exit code of all ranks, waiting without busy-polling (ranks
// whose group finished early sleep here while other groups work).
static int world_max(int code, MPI_Comm comm, double poll_s) {
    sig_saved old;
    sig_catch(&old);
    int out = code;
    MPI_Request rq;
    MPI_Iallreduce(&code, &out, 1, MPI_INT, MPI_MAX, comm, &rq);
    int flag = 0;
    double nap_s = 0.001;
    for (;;) {
        MPI_Test(&rq, &flag, MPI_STATUS_IGNORE);
        if (flag) break;
        nap(nap_s);
        nap_s = PL_MIN(nap_s * 2, PL_MIN(poll_s, 0.1));
    }
    sig_restore(&old);
    return out;
}

// ---------------------------------------------------------------------------------------------
// The follow ("watch") stage

typedef struct {
    int64_t *steps;
    int n, cap;
} step_set;

static int step_has(const step_set *s, int64_t v) {
    for (int i = 0; i < s->n; i++)
        if (s->steps[i] == v) return 1;
    return 0;
}

static int step_add(step_set *s, int64_t v) {
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        int64_t *p = pl_realloc(s->steps, sizeof(int64_t) * (size_t)cap, "checkpoint steps");
        if (!p) return PL_ENOMEM;
        s->steps = p;
        s->cap = cap;
    }
    s->steps[s->n++] = v;
    return 0;
}

// "ckpt_<8+ digits>.h5" exactly -> step, else -1.
static int64_t ckpt_step(const char *name) {
    if (strncmp(name, "ckpt_", 5)) return -1;
    const char *p = name + 5, *q = p;
    while (*q >= '0' && *q <= '9') q++;
    if (q - p < 8 || strcmp(q, ".h5")) return -1;
    return strtoll(p, NULL, 10);
}

// The smallest step of a complete checkpoint in dir not in `skip` (-1 = none).
static int64_t next_ckpt(const char *dir, const step_set *scored, const step_set *gone) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int64_t best = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t s = ckpt_step(e->d_name);
        if (s < 0 || step_has(scored, s) || step_has(gone, s)) continue;
        if (best < 0 || s < best) best = s;
    }
    closedir(d);
    return best;
}

// Keeps src alive under dst: a hard link, or a copy when linking is refused (another file
// system). 0 = done (*how "link"/"copy"), 1 = src is gone (pruned), negative = error.
static int snapshot(const char *src, const char *dst, const char **how) {
    unlink(dst);
    if (link(src, dst) == 0) { *how = "link"; return 0; }
    if (errno == ENOENT) return 1;
    int in = open(src, O_RDONLY);
    if (in < 0) return errno == ENOENT ? 1 : pl_fail(PL_EIO, "%s: cannot open to copy: %s", src, strerror(errno));
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", dst);
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0) {
        close(in);
        return pl_fail(PL_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    }
    char buf[1 << 16];
    int rc = 0;
    for (;;) {
        ssize_t r = read(in, buf, sizeof buf);
        if (r == 0) break;
        if (r < 0) { rc = pl_fail(PL_EIO, "%s: read failed: %s", src, strerror(errno)); break; }
        for (ssize_t off = 0; off < r;) {
            ssize_t w = write(out, buf + off, (size_t)(r - off));
            if (w < 0) { rc = pl_fail(PL_EIO, "%s: write failed: %s", tmp, strerror(errno)); break; }
            off += w;
        }
        if (rc) break;
    }
    close(in);
    if (close(out) != 0 && !rc) rc = pl_fail(PL_EIO, "%s: close failed: %s", tmp, strerror(errno));
    if (!rc && rename(tmp, dst) != 0) rc = pl_fail(PL_EIO, "%s: cannot rename to %s: %s", tmp, dst, strerror(errno));
    if (rc) unlink(tmp);
    else *how = "copy";
    return rc;
}

// mfroc and sensitivity at 0.5, 1, 2, 4 FP per image from an evaluate report's froc.json.
static int read_froc(const char *path, double *mfroc, double sens[4]) {
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = pl_read_file(path, &buf, &len);
    if (rc) return rc;
    char *text = pl_realloc(buf, len + 1, "froc.json");
    if (!text) { free(buf); return PL_ENOMEM; }
    text[len] = 0;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root) return pl_fail(PL_EFORMAT, "%s: not valid JSON", path);
    static const char *const lv[4] = {"0.5", "1", "2", "4"};
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "mfroc");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, "sens");
    if (!cJSON_IsNumber(m) && !cJSON_IsNull(m)) rc = pl_fail(PL_EFORMAT, "%s: no number \"mfroc\"", path);
    else *mfroc = cJSON_IsNumber(m) ? m->valuedouble : NAN;
    for (int k = 0; k < 4 && !rc; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, lv[k]);
        if (!cJSON_IsNumber(v) && !cJSON_IsNull(v)) rc = pl_fail(PL_EFORMAT, "%s: no \"sens\".\"%s\"", path, lv[k]);
        else sens[k] = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    }
    cJSON_Delete(root);
    return rc;
}

typedef struct {
    int64_t step;        // -1 = none yet
    double mfroc, sens[4];
    char file[4200];
} watch_best;

static int write_best_json(const char *out, const watch_best *b, const char *how) {
    char path[4200], text[8192];
    snprintf(path, sizeof path, "%s/best.json", out);
    int n = snprintf(text, sizeof text,
                     "{\"step\":%lld,\"file\":\"%s\",\"mfroc\":%.6f,\"sens\":{\"0.5\":%.6f,\"1\":%.6f,\"2\":%.6f,\"4\":%.6f},"
                     "\"split\":\"val\",\"copy\":\"best.h5\",\"kept_by\":\"%s\"}\n",
                     (long long)b->step, b->file, b->mfroc, b->sens[0], b->sens[1], b->sens[2], b->sens[3], how);
    if (n < 0 || n >= (int)sizeof text) return pl_fail(PL_EINVAL, "%s: text too long", path);
    return pl_write_file_atomic(path, text, (size_t)n);
}

// Group root: state of an earlier run of this watch with the same signature (checkpoints.csv),
// or a fresh start (old results removed). 0 or an error.
static int watch_resume(const char *out, const char *want, step_set *scored, watch_best *best) {
    char sigp[4200], csv[4200], have[64];
    snprintf(sigp, sizeof sigp, "%s/.watch_signature", out);
    snprintf(csv, sizeof csv, "%s/checkpoints.csv", out);
    if (pl_mkdir_p(out)) return PL_EIO;
    if (read_line(sigp, have, sizeof have) && !strcmp(have, want)) {
        FILE *f = fopen(csv, "r");
        char line[8192];
        while (f && fgets(line, sizeof line, f)) {
            char *e = NULL;
            long long step = strtoll(line, &e, 10);
            if (e == line || *e != ',') continue;   // the header
            char *file = e + 1, *c = strchr(file, ',');
            if (!c) continue;
            *c = 0;
            double m = strtod(c + 1, &e), sens[4] = {0};
            for (int k = 0; k < 4 && e && *e == ','; k++) sens[k] = strtod(e + 1, &e);
            if (step_add(scored, step)) { fclose(f); return PL_ENOMEM; }
            if (isfinite(m) && (best->step < 0 || m > best->mfroc)) {
                best->step = step;
                best->mfroc = m;
                memcpy(best->sens, sens, sizeof sens);
                snprintf(best->file, sizeof best->file, "%s", file);
            }
        }
        if (f) fclose(f);
        if (scored->n) LOG_INFO("watch: resuming: %d checkpoint(s) already scored in %s", scored->n, csv);
        return 0;
    }
    static const char *const old[] = {"checkpoints.csv", "best.h5", "best.json"};
    for (int k = 0; k < 3; k++) {
        char p[4200];
        snprintf(p, sizeof p, "%s/%s", out, old[k]);
        if (unlink(p) == 0) LOG_INFO("watch: removed %s of an earlier run with another signature", p);
    }
    char line[64];
    int n = snprintf(line, sizeof line, "%s\n", want);
    return pl_write_file_atomic(sigp, line, (size_t)n);
}

enum { W_WAIT = 0, W_EVAL = 1, W_DONE = 2, W_STOP = 3 };
static const double k_watch_note_s = 60;   // a waiting watch says so this often

// Collective over gcomm: the follow stage i (see the file comment). Returns an exit code.
static int run_watch(const plan *P, int i, MPI_Comm gcomm) {
    int grank = 0;
    MPI_Comm_rank(gcomm, &grank);
    const int t = P->p[i].follow;
    const char *name = P->st[i].name, *tname = P->st[t].name;
    const char *tdir = cfg_str(P->p[t].cfg, "output.dir"), *out = cfg_str(P->p[i].cfg, "output.dir");
    step_set scored = {0}, gone = {0};
    watch_best best = {.step = -1};
    int code = 0;
    if (grank == 0 && watch_resume(out, P->p[i].want, &scored, &best)) code = MP3D_EXIT_FAIL;
    MPI_Bcast(&code, 1, MPI_INT, 0, gcomm);
    if (code) return code;
    sig_saved old;
    sig_catch(&old);
    LOG0("watch: stage:%s follows:%s checkpoints:%s/ckpt_*.h5 split:val output:%s", name, tname, tdir, out);
    int done_seen = 0, n_new = 0;
    const char *snap_how = "";
    double t_wait = pl_time(), t_note = t_wait;
    for (;;) {
        int64_t msg[2] = {W_WAIT, 0};   // action, step or exit code
        char snap[4200] = "";
        if (grank == 0) {
            if (g_run_signal) {
                LOG_WARN("watch: stage:%s stopped by signal %d; a re-run resumes from checkpoints.csv", name, (int)g_run_signal);
                msg[0] = W_STOP;
                msg[1] = MP3D_EXIT_PREEMPTED;
            } else {
                // The marker first: checkpoints present once it holds the signature are the last ones.
                int fc = marker_failed(P, t);
                if (!done_seen) done_seen = marker_done(P, t);
                if (fc && (P->p[t].run || fc != MP3D_EXIT_PREEMPTED) && !done_seen) {
                    LOG_ERROR("watch: stage:%s stops: the followed stage '%s' failed (exit %d)", name, tname, fc);
                    msg[0] = W_STOP;
                    msg[1] = MP3D_EXIT_FAIL;
                }
                while (msg[0] == W_WAIT) {
                    int64_t s = next_ckpt(tdir, &scored, &gone);
                    if (s < 0) {
                        if (done_seen) msg[0] = W_DONE;
                        else if (pl_time() - t_note > k_watch_note_s) {
                            LOG_INFO("watch: stage:%s waiting for new checkpoints in %s or the completion marker of '%s' "
                                     "(scored:%d waited_s:%.0f)", name, tdir, tname, scored.n, pl_time() - t_wait);
                            t_note = pl_time();
                        }
                        break;
                    }
                    char src[4200];
                    snprintf(src, sizeof src, "%s/ckpt_%08lld.h5", tdir, (long long)s);
                    snprintf(snap, sizeof snap, "%s/.scoring_ckpt_%08lld.h5", out, (long long)s);
                    const char *how = "";
                    int r = snapshot(src, snap, &how);
                    if (r == 1) {
                        LOG_WARN("watch: %s was pruned (train.ckpt_keep) before it could be scored: passed over", src);
                        if (step_add(&gone, s)) { msg[0] = W_STOP; msg[1] = MP3D_EXIT_FAIL; }
                    } else if (r < 0) {
                        msg[0] = W_STOP;
                        msg[1] = MP3D_EXIT_FAIL;
                    } else {
                        msg[0] = W_EVAL;
                        msg[1] = s;
                        snap_how = how;
                        LOG_INFO("watch: scoring %s (%s kept as %s) waited_s:%.1f", src, how, snap, pl_time() - t_wait);
                    }
                }
            }
        }
        MPI_Bcast(msg, 2, MPI_INT64_T, 0, gcomm);
        if (msg[0] == W_STOP) { code = (int)msg[1]; break; }
        if (msg[0] == W_DONE) break;
        if (msg[0] == W_WAIT) { nap(P->poll_s); continue; }
        // W_EVAL: every rank of the group evaluates the kept copy on the val split.
        const int64_t step = msg[1];
        char a[4300], b[4300];
        snprintf(snap, sizeof snap, "%s/.scoring_ckpt_%08lld.h5", out, (long long)step);
        snprintf(a, sizeof a, "eval.checkpoint=%s", snap);
        snprintf(b, sizeof b, "output.dir=%s/step_%08lld", out, (long long)step);
        const char *extra[3] = {a, "eval.split=val", b};
        pl_cfg *ec = NULL;
        code = stage_cfg_load(&ec, P, i, extra, 3) ? MP3D_EXIT_USAGE : 0;
        double t0 = pl_time();
        if (!code) code = stage_evaluate_run(ec, gcomm);
        MPI_Allreduce(MPI_IN_PLACE, &code, 1, MPI_INT, MPI_MAX, gcomm);
        cfg_destroy(ec);
        if (code) {
            LOG0("watch: stage:%s evaluating step %lld failed (exit %d)", name, (long long)step, code);
            break;
        }
        if (grank == 0) {
            char fj[4400], src[4200], csv[4200];
            double m = NAN, sens[4];
            snprintf(fj, sizeof fj, "%s/step_%08lld/report/froc.json", out, (long long)step);
            snprintf(src, sizeof src, "%s/ckpt_%08lld.h5", tdir, (long long)step);
            snprintf(csv, sizeof csv, "%s/checkpoints.csv", out);
            if (!pl_path_exists(fj)) {
                pl_fail(PL_ENOTFOUND, "watch: %s missing: the val split of %s has no labelled lesions to rank checkpoints by",
                        fj, cfg_str(P->p[i].cfg, "input.root"));
                code = MP3D_EXIT_FAIL;
            } else if (read_froc(fj, &m, sens)) {
                code = MP3D_EXIT_FAIL;
            } else {
                int fresh = !pl_path_exists(csv), werr = 0;
                FILE *f = fopen(csv, "a");
                if (f) {
                    if (fresh && fprintf(f, "step,file,mfroc,sens_0.5,sens_1,sens_2,sens_4\n") < 0) werr = 1;
                    if (fprintf(f, "%lld,%s,%.6f,%.6f,%.6f,%.6f,%.6f\n", (long long)step, src, m, sens[0], sens[1], sens[2],
                                sens[3]) < 0)
                        werr = 1;
                    if (fclose(f) != 0) werr = 1;
                }
                if (!f || werr) {
                    pl_fail(PL_EIO, "%s: cannot append: %s", csv, strerror(errno));
                    code = MP3D_EXIT_FAIL;
                }
                if (!code && step_add(&scored, step)) code = MP3D_EXIT_FAIL;
                n_new++;
                int better = isfinite(m) && (best.step < 0 || m > best.mfroc);
                char bp[4200];
                snprintf(bp, sizeof bp, "%s/best.h5", out);
                if (!code && better) {
                    if (rename(snap, bp) != 0) {
                        pl_fail(PL_EIO, "%s: cannot rename to %s: %s", snap, bp, strerror(errno));
                        code = MP3D_EXIT_FAIL;
                    } else {
                        best.step = step;
                        best.mfroc = m;
                        memcpy(best.sens, sens, sizeof sens);
                        snprintf(best.file, sizeof best.file, "%s", src);
                        if (write_best_json(out, &best, snap_how)) code = MP3D_EXIT_FAIL;
                    }
                } else {
                    unlink(snap);
                }
                LOG_INFO("watch: step:%lld mfroc:%.4f sens@0.5:%.4f sens@1:%.4f sens@2:%.4f sens@4:%.4f eval_s:%.1f best_step:%lld "
                         "best_mfroc:%.4f", (long long)step, m, sens[0], sens[1], sens[2], sens[3], pl_time() - t0,
                         (long long)best.step, best.mfroc);
            }
            t_wait = pl_time();
        }
        MPI_Bcast(&code, 1, MPI_INT, 0, gcomm);
        if (code) break;
    }
    sig_restore(&old);
    if (grank == 0 && !code) {
        if (scored.n == 0) {
            pl_fail(PL_ENOTFOUND, "watch: stage '%s' completed but left no checkpoint in %s to score", tname, tdir);
            code = MP3D_EXIT_FAIL;
        } else if (best.step < 0) {
            pl_fail(PL_EINVAL, "watch: no checkpoint of %s has a finite val mFROC: no best.h5", tdir);
            code = MP3D_EXIT_FAIL;
        } else {
            LOG_INFO("watch: stage:%s follows:%s scored:%d new:%d passed_over:%d best_step:%lld best_mfroc:%.4f best:%s/best.h5",
                     name, tname, scored.n, n_new, gone.n, (long long)best.step, best.mfroc, out);
        }
    }
    MPI_Bcast(&code, 1, MPI_INT, 0, gcomm);
    free(scored.steps);
    free(gone.steps);
    return code;
}

// ---------------------------------------------------------------------------------------------
// Running

// Collective over gcomm: stage i, then its marker. Returns its exit code.
// A training (or watch) stage resumes from what its output.dir holds. When that was written under
// another signature (the `.started` marker of the earlier run differs: other config or inputs),
// resuming would continue the old run, so the folder is moved aside to <output.dir>.stale-<sig>
// and the stage starts afresh; an interrupted run with the same signature resumes.
static int set_aside_stale(const plan *P, int i) {
    const char *out = cfg_str(P->p[i].cfg, "output.dir");
    char m[4224], old[64];
    marker_path(m, sizeof m, P, i, "started");
    int resumable = !strcmp(P->st[i].command, "train") || P->p[i].follow >= 0;
    if (resumable && out[0] && read_line(m, old, sizeof old) && old[0] && strcmp(old, P->p[i].want) && pl_path_exists(out)) {
        char dst[4200];
        snprintf(dst, sizeof dst, "%s.stale-%s", out, old);
        for (int k = 2; pl_path_exists(dst) && k < 1000; k++) snprintf(dst, sizeof dst, "%s.stale-%s-%d", out, old, k);
        if (rename(out, dst) != 0)
            return pl_fail(PL_EIO, "pipeline: stage '%s': %s holds a run with other settings and cannot be moved to %s: %s",
                           P->st[i].name, out, dst, strerror(errno));
        LOG_WARN("pipeline: stage:%s output.dir %s was written with other settings (signature %s, now %s): moved to %s; "
                 "the stage starts afresh", P->st[i].name, out, old, P->p[i].want, dst);
    }
    char line[64];
    int n = snprintf(line, sizeof line, "%s\n", P->p[i].want);
    return pl_write_file_atomic(m, line, (size_t)n);
}

// The config keys (prefixes) each command reads: what decides whether its output is current.
static const char *stage_keys(const char *command) {
    static const struct { const char *cmd, *keys; } k[] = {
        {"synth", "synth.,output.,run.seed,run.max_bad_fraction"},
        {"preprocess", "input.,output.,preprocess.,run.seed,run.max_bad_fraction"},
        {"vdt", "input.,output.,vdt.,run.seed,run.max_bad_fraction"},
        {"train", "input.,output.,model.,train.,det.,eval.,run.seed"},
        {"anchors", "input.,output.,model.,det."},
        {"evaluate", "input.,output.,eval.,det.,model.,run.seed"},
        {"froc", "input.,output.,eval."},
        {"infer", "input.,output.,infer.,model."},
    };
    for (size_t j = 0; j < sizeof k / sizeof k[0]; j++)
        if (!strcmp(k[j].cmd, command)) return k[j].keys;
    return "";   // every key
}

static int run_stage(const plan *P, int i, MPI_Comm gcomm) {
    int grank = 0;
    MPI_Comm_rank(gcomm, &grank);
    const pl_cfg *sc = P->p[i].cfg;
    double t0 = pl_time();
    int ok = 1, code;
    if (grank == 0) ok = set_aside_stale(P, i) == 0;
    if (ok && grank == 0 && cfg_str(sc, "output.dir")[0]) ok = pl_dir_writable(cfg_str(sc, "output.dir")) == 0;
    MPI_Bcast(&ok, 1, MPI_INT, 0, gcomm);
    if (!ok) code = MP3D_EXIT_FAIL;
    else if (P->p[i].follow >= 0) code = run_watch(P, i, gcomm);
    else code = find_fn(P->st[i].command)(sc, gcomm);
    MPI_Allreduce(MPI_IN_PLACE, &code, 1, MPI_INT, MPI_MAX, gcomm);
    LOG0("pipeline: stage:%s exit:%d elapsed:%.1fs", P->st[i].name, code, pl_time() - t0);
    if (grank == 0 && marker_write(P, i, code) && code == 0) code = MP3D_EXIT_FAIL;
    MPI_Bcast(&code, 1, MPI_INT, 0, gcomm);
    return code;
}

static void names_of(char *out, size_t cap, const plan *P, const int *idx, int n) {
    out[0] = 0;
    for (int k = 0; k < n; k++) {
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%s", k ? "," : "", P->st[idx[k]].name);
    }
    if (!n) snprintf(out, cap, "-");
}

int stage_run_pipeline(const pl_cfg *cfg, MPI_Comm comm) {
    int rank = 0, world = 1;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &world);
    plan P;
    memset(&P, 0, sizeof P);
    P.path = cfg_path(cfg);
    cfg_stage *st = NULL;
    if (cfg_pipeline_read(P.path, &st, &P.ns)) return MP3D_EXIT_USAGE;
    P.st = st;
    if (cfg_require(cfg, "pipeline.dir")) { cfg_pipeline_free(st, P.ns); return MP3D_EXIT_USAGE; }
    P.dir = cfg_str(cfg, "pipeline.dir");
    P.poll_s = cfg_float(cfg, "pipeline.poll_s");
    snprintf(P.mdir, sizeof P.mdir, "%s/.mp3d", P.dir);
    const int dry = cfg_bool(cfg, "pipeline.dry_run"), force = cfg_bool(cfg, "run.force");
    const int groups = cfg_bool(cfg, "pipeline.groups");
    const char *only = cfg_str(cfg, "pipeline.only");
    P.nov = cfg_overrides(cfg, &P.ov);
    P.p = pl_calloc((size_t)(P.ns ? P.ns : 1), sizeof(plan_stage), "pipeline plan");
    int code = P.p ? plan_links(&P) : MP3D_EXIT_FAIL;

    // Rank counts: checked before anything runs.
    for (int i = 0; i < P.ns && !code; i++) {
        P.p[i].nranks = groups && st[i].ranks > 0 ? st[i].ranks : world;
        if (groups && st[i].ranks > world) {
            pl_fail(PL_ERANGE, "%s:%d: stage '%s': ranks = %d, but mp3d run has %d rank%s (mpirun -np / srun -n): give it at most "
                    "%d (0 = all ranks), start more ranks, or --set pipeline.groups=false to run every stage on all ranks",
                    P.path, st[i].line, st[i].name, st[i].ranks, world, world == 1 ? "" : "s", world);
            code = MP3D_EXIT_USAGE;
        }
    }

    // Configs and signatures, in listed order (dependencies come first).
    LOG0("pipeline:%s dir:%s stages:%d ranks:%d groups:%d%s", P.path, P.dir, P.ns, world, groups, dry ? " dry_run:1" : "");
    uint64_t *sig = pl_calloc((size_t)(P.ns ? P.ns : 1), sizeof(uint64_t), "signatures");
    if (!sig && !code) code = MP3D_EXIT_FAIL;
    for (int i = 0; i < P.ns && code == 0; i++) {
        plan_stage *s = &P.p[i];
        if (stage_cfg_load(&s->cfg, &P, i, NULL, 0)) {
            LOG0("pipeline: stage '%s' config rejected (above)", st[i].name);
            code = MP3D_EXIT_USAGE;
            break;
        }
        if (s->follow >= 0 && !cfg_str(P.p[s->follow].cfg, "output.dir")[0]) {
            pl_fail(PL_EINVAL, "%s:%d: stage '%s' follows '%s', which has no output.dir to watch", P.path, st[i].line, st[i].name,
                    st[s->follow].name);
            code = MP3D_EXIT_USAGE;
            break;
        }
        if (s->follow >= 0 && !cfg_str(s->cfg, "output.dir")[0]) {
            pl_fail(PL_EINVAL, "%s:%d: stage '%s' needs an output.dir (checkpoints.csv, best.h5)", P.path, st[i].line, st[i].name);
            code = MP3D_EXIT_USAGE;
            break;
        }
        // Signature: the config keys the stage's command reads (a run-level --set train.lr=...
        // does not re-run synth) + inputs + dependencies.
        uint64_t h = pl_fnv1a(st[i].command, strlen(st[i].command), PL_FNV_INIT);
        uint64_t hk = cfg_hash(s->cfg, stage_keys(st[i].command));
        h = pl_fnv1a(&hk, sizeof hk, h);
        // External inputs are stamped (name, size, mtime of the folder's files); a folder under the
        // run folder is written by the stages this one depends on, whose signatures cover it (its
        // files may not exist yet when the plan is made).
        const char *in = cfg_str(s->cfg, "input.root");
        size_t dl = strlen(P.dir);
        int inside = dl && !strncmp(in, P.dir, dl) && (in[dl] == '/' || in[dl] == 0);
        if (in[0] && !inside) h = stamp_dir(in, h);
        int up_changed = -1;
        for (int k = 0; k < s->ndeps; k++) {
            h = pl_fnv1a(&sig[s->deps[k]], sizeof sig[0], h);
            if (P.p[s->deps[k]].run && up_changed < 0) up_changed = s->deps[k];
        }
        if (s->follow >= 0) {
            h = pl_fnv1a("follow", 6, h);
            h = pl_fnv1a(&sig[s->follow], sizeof sig[0], h);
            if (P.p[s->follow].run && up_changed < 0) up_changed = s->follow;
        }
        sig[i] = h;
        snprintf(s->want, sizeof s->want, "%016" PRIx64, h);
        char marker[4224], have[64];
        marker_path(marker, sizeof marker, &P, i, "done");
        read_line(marker, have, sizeof have);
        if (only[0] && !in_list(only, st[i].name)) { s->run = 0; s->why = "not in pipeline.only"; }
        else if (force) { s->run = 1; s->why = "forced (--force)"; }
        else if (!have[0]) { s->run = 1; s->why = "no completion marker"; }
        else if (strcmp(have, s->want)) { s->run = 1; s->why = up_changed >= 0 ? "a stage it depends on runs" : "config or inputs changed"; }
        else { s->run = 0; s->why = "complete, same config and inputs"; }
        char deps[1024];
        names_of(deps, sizeof deps, &P, s->deps, s->ndeps);
        LOG0("pipeline: stage:%s command:%s after:%s follow:%s ranks:%d config:%s action:%s reason:%s", st[i].name, st[i].command,
             deps, s->follow >= 0 ? st[s->follow].name : "-", st[i].ranks, st[i].config[0] ? st[i].config : "-",
             s->run ? (dry ? "would-run" : "run") : "skip", s->why);
    }
    free(sig);
    if (!code) code = plan_schedule(&P, world);
    for (int k = 0; k < P.ng && !code; k++) {
        char names[2048];
        names_of(names, sizeof names, &P, P.g[k].chain, P.g[k].nchain);
        LOG0("pipeline: wave:%d group:%d ranks:%d world_ranks:%d-%d stages:%s", P.g[k].wave + 1, k, P.g[k].n, P.g[k].first,
             P.g[k].first + P.g[k].n - 1, names);
    }
    if (dry || code) {
        if (code) LOG0("pipeline: nothing run (exit %d)", code);
        plan_free(&P);
        cfg_pipeline_free(st, P.ns);
        return code;
    }

    // Stale markers of the stages that run go first, so waiting groups see only this run's.
    if (rank == 0) {
        if (pl_mkdir_p(P.mdir)) code = MP3D_EXIT_FAIL;
        for (int i = 0; i < P.ns && !code; i++) {
            if (!P.p[i].run) continue;
            static const char *const ext[2] = {"done", "failed"};
            for (int e = 0; e < 2 && !code; e++) {
                char m[4224];
                marker_path(m, sizeof m, &P, i, ext[e]);
                if (unlink(m) != 0 && errno != ENOENT) {
                    pl_fail(PL_EIO, "%s: cannot remove the stale marker: %s", m, strerror(errno));
                    code = MP3D_EXIT_FAIL;
                }
            }
        }
    }
    MPI_Bcast(&code, 1, MPI_INT, 0, comm);

    const int world_tag = pl_log_rank();
    for (int w = 0; w < P.nwaves && code == 0; w++) {
        double t0 = pl_time();
        int mine = -1, ngw = 0, whole = 0;
        for (int k = 0; k < P.ng; k++) {
            if (P.g[k].wave != w) continue;
            ngw++;
            whole = P.g[k].n == world;
            if (rank >= P.g[k].first && rank < P.g[k].first + P.g[k].n) mine = k;
        }
        whole = whole && ngw == 1;
        MPI_Comm gcomm = comm;
        if (!whole) MPI_Comm_split(comm, mine >= 0 ? mine : MPI_UNDEFINED, rank, &gcomm);
        int gcode = 0;
        if (mine >= 0) {
            const plan_group *g = &P.g[mine];
            if (!whole) {
                int grank = 0;
                MPI_Comm_rank(gcomm, &grank);
                char names[2048];
                names_of(names, sizeof names, &P, g->chain, g->nchain);
                LOG_INFO("pipeline: wave:%d group:%d world_rank:%d group_rank:%d group_size:%d stages:%s (log tag = group rank "
                         "until the wave ends)", w + 1, mine, rank, grank, g->n, names);
                pl_log_set_rank(grank);
            }
            for (int c = 0; c < g->nchain && !gcode; c++) {
                int i = g->chain[c];
                gcode = whole ? 0 : wait_deps(&P, i, gcomm);
                if (!gcode) gcode = run_stage(&P, i, gcomm);
            }
            pl_log_set_rank(world_tag);
            if (!whole) MPI_Comm_free(&gcomm);
        } else {
            LOG_INFO("pipeline: wave:%d world_rank:%d idle (no group)", w + 1, rank);
        }
        code = world_max(gcode, comm, P.poll_s);
        if (g_run_signal && code == 0) code = MP3D_EXIT_PREEMPTED;
        if (ngw > 1 || !whole) LOG0("pipeline: wave:%d groups:%d exit:%d elapsed:%.1fs", w + 1, ngw, code, pl_time() - t0);
    }
    if (code) LOG0("pipeline: stopped with exit code %d; completed stages keep their markers, re-run to resume", code);
    plan_free(&P);
    cfg_pipeline_free(st, P.ns);
    return code;
}
