// mp3d run: executes the stages a pipeline config lists, in order, on the ranks it was started
// with. A stage is skipped when its completion marker (RUN_DIR/.mp3d/<name>.done) holds the
// same signature: a hash of the stage's fully resolved config, the listing (names, sizes,
// mtimes) of its input.root folder, and the signatures of the stages before it — so a changed
// config or input re-runs that stage and every stage after it. --dry-run prints the plan.
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

int stage_run_pipeline(const pl_cfg *cfg, MPI_Comm comm) {
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    const char *path = cfg_path(cfg);
    cfg_stage *st = NULL;
    int ns = 0;
    if (cfg_pipeline_read(path, &st, &ns)) return MP3D_EXIT_USAGE;
    if (cfg_require(cfg, "pipeline.dir")) { cfg_pipeline_free(st, ns); return MP3D_EXIT_USAGE; }
    const char *dir = cfg_str(cfg, "pipeline.dir");
    int dry = cfg_bool(cfg, "pipeline.dry_run"), force = cfg_bool(cfg, "run.force");
    const char *only = cfg_str(cfg, "pipeline.only");
    char **ov = NULL;
    int nov = cfg_overrides(cfg, &ov);

    // Validate every stage before running any: commands exist, configs load.
    int code = MP3D_EXIT_OK;
    for (int i = 0; i < ns && code == 0; i++)
        if (!find_fn(st[i].command)) {
            pl_fail(PL_EINVAL, "%s: stage '%s': unknown command '%s'", path, st[i].name, st[i].command);
            code = MP3D_EXIT_USAGE;
        }
    char mdir[4096];
    snprintf(mdir, sizeof mdir, "%s/.mp3d", dir);
    if (!code && !dry && rank == 0 && pl_mkdir_p(mdir)) code = MP3D_EXIT_FAIL;
    MPI_Bcast(&code, 1, MPI_INT, 0, comm);

    uint64_t *sig = pl_calloc((size_t)(ns ? ns : 1), sizeof(uint64_t), "signatures");
    int *changed = pl_calloc((size_t)(ns ? ns : 1), sizeof(int), "changed");
    LOG0("pipeline:%s dir:%s stages:%d%s", path, dir, ns, dry ? " dry_run:1" : "");
    for (int i = 0; i < ns && code == 0; i++) {
        // The stage's settings: its own, then run-level --set overrides (except pipeline.*).
        int nsets = 0;
        char **sets = pl_calloc((size_t)(st[i].nsets + nov + 1), sizeof(char *), "stage sets");
        for (int j = 0; j < st[i].nsets; j++) sets[nsets++] = subst_dir(st[i].sets[j], dir);
        for (int j = 0; j < nov; j++)
            if (strncmp(ov[j], "pipeline.", 9) && strncmp(ov[j], "run.force", 9)) sets[nsets++] = pl_strdup(ov[j]);
        pl_cfg *sc = NULL;
        int rc = cfg_load(&sc, st[i].config[0] ? st[i].config : NULL, (const char *const *)sets, nsets);
        for (int j = 0; j < nsets; j++) free(sets[j]);
        free(sets);
        if (rc) {
            LOG0("pipeline: stage '%s' config rejected (above)", st[i].name);
            code = MP3D_EXIT_USAGE;
            break;
        }
        // Signature: resolved config (without its first comment line) + inputs + predecessors.
        const char *text = cfg_text(sc);
        const char *body = strchr(text, '\n');
        uint64_t h = pl_fnv1a(st[i].command, strlen(st[i].command), PL_FNV_INIT);
        h = pl_fnv1a(body ? body : text, strlen(body ? body : text), h);
        if (cfg_str(sc, "input.root")[0]) h = stamp_dir(cfg_str(sc, "input.root"), h);
        int up_changed = 0;
        for (int j = 0; j < i; j++) {
            h = pl_fnv1a(&sig[j], sizeof sig[j], h);
            up_changed |= changed[j];
        }
        sig[i] = h;
        char marker[4224], want[64], have[64] = "";
        snprintf(marker, sizeof marker, "%s/%s.done", mdir, st[i].name);
        snprintf(want, sizeof want, "%016" PRIx64, h);
        FILE *f = fopen(marker, "r");
        if (f) {
            if (!fgets(have, sizeof have, f)) have[0] = 0;
            have[strcspn(have, "\n")] = 0;
            fclose(f);
        }
        const char *why;
        int run;
        if (only[0] && !in_list(only, st[i].name)) { run = 0; why = "not in pipeline.only"; }
        else if (force) { run = 1; why = "forced (--force)"; }
        else if (!have[0]) { run = 1; why = "no completion marker"; }
        else if (strcmp(have, want)) { run = 1; why = up_changed ? "an earlier stage changed" : "config or inputs changed"; }
        else { run = 0; why = "complete, same config and inputs"; }
        changed[i] = run;
        if (st[i].ranks > 0)
            LOG0("pipeline: stage '%s' asks for %d ranks: stage rank groups are not built yet, it runs on all ranks",
                 st[i].name, st[i].ranks);
        LOG0("pipeline: stage:%s command:%s config:%s action:%s reason:%s", st[i].name, st[i].command,
             st[i].config[0] ? st[i].config : "-", run ? (dry ? "would-run" : "run") : "skip", why);
        if (run && !dry) {
            double t0 = pl_time();
            int ok = 1;
            if (rank == 0 && cfg_str(sc, "output.dir")[0]) ok = pl_dir_writable(cfg_str(sc, "output.dir")) == 0;
            MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
            code = ok ? find_fn(st[i].command)(sc, comm) : MP3D_EXIT_FAIL;
            MPI_Allreduce(MPI_IN_PLACE, &code, 1, MPI_INT, MPI_MAX, comm);
            LOG0("pipeline: stage:%s exit:%d elapsed:%.1fs", st[i].name, code, pl_time() - t0);
            if (code == 0 && rank == 0) {
                char line[128];
                int n = snprintf(line, sizeof line, "%s\n", want);
                if (pl_write_file_atomic(marker, line, (size_t)n)) code = MP3D_EXIT_FAIL;
            }
            MPI_Bcast(&code, 1, MPI_INT, 0, comm);
        }
        cfg_destroy(sc);
    }
    if (code) LOG0("pipeline: stopped with exit code %d; completed stages keep their markers, re-run to resume", code);
    for (int j = 0; j < nov; j++) free(ov[j]);
    free(ov);
    free(sig);
    free(changed);
    cfg_pipeline_free(st, ns);
    return code;
}
