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
#include "pipeline/commands.h"
#include "pipeline/runner.h"
#include "stages/stages.h"

// The command's entry point when a pipeline stage may run it (the table in pipeline/commands.c).
static int (*find_fn(const char *cmd))(const pl_cfg *, MPI_Comm) {
    const mp3d_command *c = mp3d_command_find(cmd);
    return c && c->in_pipeline ? c->run : NULL;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Hash of a folder's direct entries (name, size, mtime in ns), sorted: cheap, catches replaced data.
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
            // nanoseconds too: a file rewritten in place within the same second (same size) is
            // a changed input
            int64_t v[3] = {(int64_t)st.st_size, (int64_t)st.st_mtim.tv_sec, (int64_t)st.st_mtim.tv_nsec};
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

// A stage's settings: its own `set` values (@dir substituted), the run-level --set values
// (except pipeline.* and run.force), then `extra`. Loads its config with them.
int stage_cfg_load(pl_cfg **out, const plan *P, int i, const char *const *extra, int nextra) {
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
int read_line(const char *path, char *buf, size_t cap) {
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    if (!fgets(buf, (int)cap, f)) buf[0] = 0;
    buf[strcspn(buf, "\n")] = 0;
    fclose(f);
    return 1;
}

int marker_done(const plan *P, int i) {
    char m[4224], have[64];
    marker_path(m, sizeof m, P, i, "done");
    return read_line(m, have, sizeof have) && !strcmp(have, P->p[i].want);
}

// Exit code a failure marker holds, 0 when there is none.
int marker_failed(const plan *P, int i) {
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

volatile sig_atomic_t g_run_signal = 0;
static void on_run_signal(int sig) { g_run_signal = sig; }

// SIGTERM / SIGUSR1 while run.c itself waits (markers, checkpoints, the end of a wave): noted,
// and the wait ends with MP3D_EXIT_PREEMPTED. Stages install their own handlers.
void sig_catch(sig_saved *old) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_run_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, &old->term);
    sigaction(SIGUSR1, &sa, &old->usr1);
}
void sig_restore(const sig_saved *old) {
    sigaction(SIGTERM, &old->term, NULL);
    sigaction(SIGUSR1, &old->usr1, NULL);
}

void nap(double s) {
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
    else if (cfg_resolve_anchors(P->p[i].cfg)) {
        LOG_ERROR("pipeline: stage:%s: %s", P->st[i].name, pl_last_error());
        code = MP3D_EXIT_USAGE;
    } else if (P->p[i].follow >= 0) code = run_watch(P, i, gcomm);
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

int pipeline_run(const pl_cfg *cfg, MPI_Comm comm) {
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
    // A command-line override reaches every stage: output.dir would give them all one folder (their
    // outputs mixed, and a training stage's checkpoints moved aside as another stage's). Refused.
    for (int j = 0; j < P.nov && !code; j++)
        if (!strncmp(P.ov[j], "output.dir=", 11)) {
            pl_fail(PL_EINVAL, "--set %s: on mp3d run this would give every stage the same output folder; each stage's "
                    "output.dir comes from %s under pipeline.dir: set --set pipeline.dir=DIR instead (or a stage's "
                    "output.dir in the pipeline file)", P.ov[j], P.path);
            code = MP3D_EXIT_USAGE;
        }

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
        uint64_t hk = cfg_hash(s->cfg, mp3d_command_find(st[i].command)->reads);
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
