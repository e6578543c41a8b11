// `mp3d froc`: scores a detections CSV against DL_info.csv with the DeepLesion FROC protocol
// (stages/froc.h) and writes the report under output.dir/report/. Only rank 0 works; the exit
// code is broadcast so every rank returns the same.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/dlinfo.h"
#include "io/fileio.h"
#include "mp3d_git.h"   // MP3D_GIT, written at build time
#include "nn/pl.h"
#include "stages/eval/froc_report.h"
#include "stages/score/froc.h"
#include "stages/stages.h"

static const int k_bad_lines_logged = 10;   // malformed input lines logged one by one, then a count

static int parse_split(const char *s) {
    if (strcmp(s, "train") == 0) return 1;
    if (strcmp(s, "val") == 0) return 2;
    if (strcmp(s, "test") == 0) return 3;
    return 0;   // "all" (the schema allows nothing else)
}

// Finds the preprocessing quarantine list: eval.quarantine, else <parent of output.dir>/preprocess/,
// else input.root/. Returns 1 with the path in `out`, 0 when there is none.
static int find_quarantine(char *out, size_t cap, const pl_cfg *cfg) {
    const char *key = cfg_str(cfg, "eval.quarantine");
    if (*key) {
        snprintf(out, cap, "%s", key);
        return 1;   // the report says so if it cannot be read
    }
    const char *od = cfg_str(cfg, "output.dir"), *root = cfg_str(cfg, "input.root");
    if (*od) {
        // the parent of output.dir by text: "X/../" cannot be resolved while X does not exist yet
        char parent[1024];
        snprintf(parent, sizeof parent, "%s", od);
        size_t n = strlen(parent);
        while (n > 1 && parent[n - 1] == '/') parent[--n] = 0;
        char *slash = strrchr(parent, '/');
        if (!slash) snprintf(parent, sizeof parent, ".");
        else if (slash == parent) parent[1] = 0;
        else *slash = 0;
        snprintf(out, cap, "%s/preprocess/quarantine.csv", parent);
        if (pl_path_exists(out)) return 1;
    }
    if (*root) {
        snprintf(out, cap, "%s/quarantine.csv", root);
        if (pl_path_exists(out)) return 1;
    }
    return 0;
}

static int froc_rank0(const pl_cfg *cfg) {
    const char *truth = cfg_str(cfg, "eval.truth"), *dets_path = cfg_str(cfg, "eval.detections");
    if (!*truth || !*dets_path) {
        LOG_ERROR("froc: eval.truth = '%s', eval.detections = '%s': both are needed "
                  "(mp3d froc --truth DL_info.csv --detections dets.csv)", truth, dets_path);
        return MP3D_EXIT_USAGE;
    }
    froc_opts o;
    froc_opts_default(&o);
    o.split = parse_split(cfg_str(cfg, "eval.split"));
    o.iou = cfg_float(cfg, "eval.iou");
    o.iou_plus1 = cfg_bool(cfg, "eval.iou_plus1");
    o.keep_noisy = strcmp(cfg_str(cfg, "eval.noisy"), "keep") == 0;
    o.fp_rule = strcmp(cfg_str(cfg, "eval.fp_rule"), "first_at") == 0 ? FROC_FP_FIRST_AT : FROC_FP_BEFORE_NEXT;
    int reps = (int)cfg_int(cfg, "eval.bootstrap");
    uint64_t seed = (uint64_t)cfg_int(cfg, "run.seed");

    int code = MP3D_EXIT_FAIL;
    dl_table tab;
    memset(&tab, 0, sizeof tab);
    froc_dets dets;
    memset(&dets, 0, sizeof dets);
    froc_set set;
    memset(&set, 0, sizeof set);
    froc_eval ev;
    memset(&ev, 0, sizeof ev);
    char *json = NULL;

    if (dlinfo_read(&tab, truth)) {
        LOG_ERROR("froc: cannot read ground truth: %s", pl_last_error());
        goto done;
    }
    for (int64_t i = 0; i < tab.nbad && i < k_bad_lines_logged; i++) LOG_WARN("froc: skipped %s", tab.bad[i].msg);
    if (froc_dets_read(&dets, dets_path)) {
        LOG_ERROR("froc: cannot read detections: %s", pl_last_error());
        goto done;
    }
    for (int64_t i = 0; i < dets.nbad && i < k_bad_lines_logged; i++) LOG_WARN("froc: skipped %s", dets.bad[i]);
    // A file that is not a detections CSV must not score as mFROC 0 with exit 0 (issue 16):
    // nothing at all, or more malformed lines than valid ones (a binary file, another CSV), is
    // an error; a few malformed lines are skipped and listed; a header alone is a valid file of
    // a detector that found nothing.
    if (dets.n == 0 && dets.nbad == 0 && !dets.header) {
        LOG_ERROR("froc: %s is empty: no header line (File_name,x1,y1,x2,y2,score) and no detections", dets_path);
        goto done;
    }
    if (dets.nbad > 0 && dets.nbad >= dets.n) {
        LOG_ERROR("froc: %s: %lld of %lld lines are malformed (first: %s): not a detections CSV "
                  "(File_name,x1,y1,x2,y2,score)?", dets_path, (long long)dets.nbad, (long long)(dets.n + dets.nbad),
                  dets.bad[0]);
        goto done;
    }
    if (dets.n == 0) LOG_WARN("froc: %s holds a header and no detections: every sensitivity is 0", dets_path);
    if (tab.nbad || dets.nbad)
        LOG_WARN("froc: truth_rows_skipped:%lld detection_lines_skipped:%lld", (long long)tab.nbad, (long long)dets.nbad);
    if (froc_set_from_dlinfo(&set, tab.rows, tab.n, &o, dets.d, dets.n)) {
        LOG_ERROR("froc: %s", pl_last_error());
        goto done;
    }
    if (set.n_images == 0) {
        LOG_ERROR("froc: %s has no key slices in split '%s' (noisy %s): nothing to score", truth,
                  cfg_str(cfg, "eval.split"), o.keep_noisy ? "kept" : "excluded");
        goto done;
    }
    if (set.n_det_outside)
        LOG_WARN("froc: %lld detections are on key slices outside the scored set and are ignored",
                 (long long)set.n_det_outside);
    if (froc_evaluate(&ev, &set, &o, reps, seed)) {
        LOG_ERROR("froc: scoring failed: %s", pl_last_error());
        goto done;
    }
    const froc_curve *c = &ev.all;
    LOG_INFO("froc images:%lld lesions:%lld detections:%lld split:%s iou:%g iou_plus1:%d noisy:%s fp_rule:%s",
             (long long)set.n_images, (long long)c->n_lesions, (long long)set.n_det, cfg_str(cfg, "eval.split"),
             o.iou, o.iou_plus1, o.keep_noisy ? "keep" : "exclude", o.fp_rule == FROC_FP_FIRST_AT ? "first_at" : "before_next");
    LOG_INFO("froc sens@0.5:%.4f sens@1:%.4f sens@2:%.4f sens@4:%.4f sens@8:%.4f sens@16:%.4f mfroc:%.4f ap50:%.4f "
             "seconds:%.3f", c->sens[0], c->sens[1], c->sens[2], c->sens[3], c->sens[4], c->sens[5], c->mfroc,
             ev.ap50, ev.seconds);
    if (reps > 0)
        LOG_INFO("froc bootstrap:%d mfroc_ci:[%.4f,%.4f] sens@0.5_ci:[%.4f,%.4f]", reps, ev.ci.lo[FROC_NLEVELS],
                 ev.ci.hi[FROC_NLEVELS], ev.ci.lo[0], ev.ci.hi[0]);
    if (cfg_bool(cfg, "eval.json")) {
        if (froc_json(&json, &set, &ev)) goto done;
        fputs(json, stdout);
        fflush(stdout);
    }
    const char *od = cfg_str(cfg, "output.dir");
    if (*od) {
        char dir[1024], qpath[1200];
        if (pl_path_join(dir, sizeof dir, od, "report")) {
            LOG_ERROR("froc: %s", pl_last_error());
            goto done;
        }
        froc_report_info info;
        memset(&info, 0, sizeof info);
        info.truth_path = truth;
        info.dets_path = dets_path;
        info.config_text = cfg_text(cfg);
        info.version = "mp3d " MP3D_VERSION " (git " MP3D_GIT ")";
        info.images_root = cfg_str(cfg, "input.root");
        info.quarantine_csv = find_quarantine(qpath, sizeof qpath, cfg) ? qpath : NULL;
        info.n_overlays = (int)cfg_int(cfg, "eval.overlays");
        info.n_truth_bad = tab.nbad;
        info.n_dets_bad = dets.nbad;
        if (froc_report_write(dir, &set, &ev, &info)) {
            LOG_ERROR("froc: report: %s", pl_last_error());
            goto done;
        }
        LOG_INFO("froc report:%s/report.md html:%s/report.html", dir, dir);
    } else {
        LOG_INFO("froc report:skipped reason:output.dir_unset");
    }
    code = MP3D_EXIT_OK;
done:
    free(json);
    froc_eval_free(&ev);
    froc_set_free(&set);
    froc_dets_free(&dets);
    dlinfo_free(&tab);
    return code;
}

int stage_froc_run(const pl_cfg *cfg, MPI_Comm comm) {
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    int code = rank == 0 ? froc_rank0(cfg) : 0;
    MPI_Bcast(&code, 1, MPI_INT, 0, comm);
    return code;
}
