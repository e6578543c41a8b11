// mp3d evaluate: the lesion detector of a checkpoint (rebuilt from the checkpoint's own stored
// config) runs on one split of a preprocess folder (input.root/<eval.split>.h5), sharded over the
// ranks in contiguous sample ranges; detections (in the original DL_info frame) are gathered to
// rank 0 (MPI_Gatherv of variable counts), written as output.dir/detections.csv (and .h5) and, when the
// split has lesion labels, scored with the FROC protocol and reported under output.dir/report/.
#include <stdlib.h>
#include <string.h>

#include "io/fileio.h"
#include "mp3d_git.h"   // MP3D_GIT, written at build time
#include "io/h5tensor.h"
#include "nn/pl.h"
#include "stages/eval/froc_report.h"
#include "stages/eval/train_curves.h"
#include "stages/train/det_common.h"
#include "stages/score/froc.h"
#include "stages/stages.h"
#include "stages/train/train_ckpt.h"

#ifndef MP3D_VERSION
#define MP3D_VERSION "0.1.0"
#endif

// Rank 0: write, score, report. Returns an exit code.
static int evaluate_rank0(const pl_cfg *cfg, const lesion_shard *s, const froc_det *dets, int64_t n, const char *ck,
                          const char *ck_text) {
    const char *od = cfg_str(cfg, "output.dir");
    char path[4096];
    if (pl_mkdir_p(od) || pl_path_join(path, sizeof path, od, "detections.csv") || froc_dets_write(path, dets, n)) {
        LOG_ERROR("evaluate: %s", pl_last_error());
        return MP3D_EXIT_FAIL;
    }
    LOG_INFO("evaluate: detections:%lld images:%lld file:%s", (long long)n, (long long)s->n, path);
    // The same as HDF5 for array tools: (n, 6) sample index in the split file, x1, y1, x2, y2, score.
    // Detections arrive in sample order (contiguous rank ranges, each in order), so one forward
    // walk over the samples finds each detection's index.
    {
        char hpath[4096];
        float *h = pl_malloc(sizeof(float) * 6 * (size_t)(n + 1), "detections table");
        int hrc = h ? pl_path_join(hpath, sizeof hpath, od, "detections.h5") : PL_ENOMEM;
        int64_t i = 0;
        for (int64_t k = 0; k < n && !hrc; k++) {
            while (i < s->n && strcmp(s->names[i], dets[k].file)) i++;
            if (i == s->n) {
                hrc = pl_fail(PL_EINVAL, "evaluate: detection %lld names '%s', not a key slice of %s in order", (long long)k,
                              dets[k].file, s->path);
                break;
            }
            float *r = h + 6 * k;
            r[0] = (float)i;
            for (int j = 0; j < 4; j++) r[1 + j] = (float)dets[k].box[j];
            r[5] = (float)dets[k].score;
        }
        char note[4300];
        snprintf(note, sizeof note, "mp3d evaluate detections (n, 6): sample index in %s (its file_name dataset), x1, y1, x2, y2 "
                 "in the original DL_info pixel frame, score", s->path);
        const int64_t dims[2] = {n, 6};
        if (!hrc && n > 0) hrc = h5tensor_write(hpath, "detections", h, dims, 2, note);
        if (!hrc && n == 0) LOG_INFO("evaluate: no detections: detections.h5 not written");
        free(h);
        if (hrc) {
            LOG_ERROR("evaluate: %s", pl_last_error());
            return MP3D_EXIT_FAIL;
        }
    }
    froc_opts o;
    det_froc_opts(&o, cfg);
    froc_set set;
    froc_eval ev;
    memset(&ev, 0, sizeof ev);
    int labelled = 0, code = MP3D_EXIT_FAIL;
    if (froc_set_from_shard(&set, &labelled, s, &o, dets, n)) {
        LOG_ERROR("evaluate: %s", pl_last_error());
        return MP3D_EXIT_FAIL;
    }
    if (!labelled || set.n_images == 0) {
        LOG_INFO("evaluate: no labels: detections written, scoring skipped (split:%s lesions:%lld)", cfg_str(cfg, "eval.split"),
                 (long long)s->nrows);
        froc_set_free(&set);
        return MP3D_EXIT_OK;
    }
    const int reps = (int)cfg_int(cfg, "eval.bootstrap");
    if (froc_evaluate(&ev, &set, &o, reps, (uint64_t)cfg_int(cfg, "run.seed"))) {
        LOG_ERROR("evaluate: scoring failed: %s", pl_last_error());
        goto done;
    }
    const froc_curve *c = &ev.all;
    LOG_INFO("evaluate: froc images:%lld lesions:%lld detections:%lld split:%s iou:%g iou_plus1:%d noisy:%s fp_rule:%s",
             (long long)set.n_images, (long long)c->n_lesions, (long long)set.n_det, cfg_str(cfg, "eval.split"), o.iou,
             o.iou_plus1, o.keep_noisy ? "keep" : "exclude", o.fp_rule == FROC_FP_FIRST_AT ? "first_at" : "before_next");
    LOG_INFO("evaluate: sens@0.5:%.4f sens@1:%.4f sens@2:%.4f sens@4:%.4f sens@8:%.4f sens@16:%.4f mfroc:%.4f ap50:%.4f",
             c->sens[0], c->sens[1], c->sens[2], c->sens[3], c->sens[4], c->sens[5], c->mfroc, ev.ap50);
    {
        char dir[4096];
        froc_report_info info;
        memset(&info, 0, sizeof info);
        info.truth_path = s->path;
        info.dets_path = path;
        // provenance: this run's config, then the checkpoint's own (the network that was scored)
        char *prov = NULL;
        {
            const char *a = cfg_text(cfg);
            size_t cap = strlen(a) + strlen(ck_text) + strlen(ck) + 128;
            prov = pl_malloc(cap, "provenance text");
            if (prov) snprintf(prov, cap, "%s\n# ---- config stored in the checkpoint %s ----\n%s", a, ck, ck_text);
        }
        info.config_text = prov ? prov : cfg_text(cfg);
        info.version = "mp3d " MP3D_VERSION " (git " MP3D_GIT ")";
        // overlays read the original PNGs: only when eval.truth names the DL_info.csv beside them
        char root[4096] = "";
        const char *truth = cfg_str(cfg, "eval.truth");
        if (*truth) {
            snprintf(root, sizeof root, "%s", truth);
            char *sl = strrchr(root, '/');
            if (sl) *sl = 0;
            else snprintf(root, sizeof root, ".");
        }
        info.images_root = root;
        info.n_overlays = *root ? (int)cfg_int(cfg, "eval.overlays") : 0;
        char q[4096];
        snprintf(q, sizeof q, "%s/quarantine.csv", cfg_str(cfg, "input.root"));
        const char *qk = cfg_str(cfg, "eval.quarantine");
        info.quarantine_csv = *qk ? qk : pl_path_exists(q) ? q : NULL;
        // the training curves of the run that made the checkpoint, when eval.train_metrics names them
        char *curves = NULL;
        const char *tm = cfg_str(cfg, "eval.train_metrics");
        if (*tm) {
            train_curves tc;
            if (train_curves_read(&tc, tm) == 0) {
                if (train_curves_svg(&curves, &tc, NULL)) curves = NULL;
                train_curves_free(&tc);
            }
            if (!curves) LOG_WARN("evaluate: eval.train_metrics: %s (the report has no training curves)", pl_last_error());
            info.curves_svg = curves;
            info.curves_source = tm;
        }
        int wrc = pl_path_join(dir, sizeof dir, od, "report");
        if (!wrc) wrc = froc_report_write(dir, &set, &ev, &info);
        free(prov);
        free(curves);
        if (wrc) {
            LOG_ERROR("evaluate: report: %s", pl_last_error());
            goto done;
        }
        LOG_INFO("evaluate: report:%s/report.md html:%s/report.html", dir, dir);
    }
    code = MP3D_EXIT_OK;
done:
    froc_eval_free(&ev);
    froc_set_free(&set);
    return code;
}

int stage_evaluate_run(const pl_cfg *cfg, MPI_Comm comm) {
    int rank = 0, size = 1;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    if (cfg_require(cfg, "input.root") || cfg_require(cfg, "output.dir")) return MP3D_EXIT_USAGE;
    if (stage_conv_engine_set(cfg)) return MP3D_EXIT_USAGE;
    const char *ck0 = cfg_str(cfg, "eval.checkpoint"), *split = cfg_str(cfg, "eval.split");
    char ck[4096];
    if (!*ck0) {
        pl_fail(PL_EINVAL, "%s: eval.checkpoint is empty: name the checkpoint to evaluate (ckpt_XXXXXXXX.h5 of mp3d train)",
                cfg_path(cfg));
        return MP3D_EXIT_USAGE;
    }
    if (!strcmp(split, "all")) {
        pl_fail(PL_EUNSUPPORTED, "%s: eval.split = \"all\": evaluate one split (train, val or test) per run", cfg_path(cfg));
        return MP3D_EXIT_USAGE;
    }
    // A folder means its newest valid checkpoint (e.g. a training run stopped by its time budget).
    if (train_ckpt_resolve(ck, sizeof ck, ck0, comm)) return MP3D_EXIT_FAIL;
    LOG0("evaluate: checkpoint:%s", ck);
    char *text = NULL;
    pl_cfg *mc = NULL;
    detector *det = NULL;
    lesion_shard s;
    memset(&s, 0, sizeof s);
    froc_dets mine;
    memset(&mine, 0, sizeof mine);
    froc_det *all = NULL;
    int64_t nall = 0;
    double secs = 0;
    int rc = train_ckpt_read_config(ck, comm, &text);
    if (!rc) rc = cfg_load_text(&mc, text, ck, NULL, 0);
    if (!rc && strcmp(cfg_str(mc, "train.task"), "detect"))
        rc = pl_fail(PL_EUNSUPPORTED, "%s: train.task = \"%s\": mp3d evaluate scores lesion detectors (train.task = \"detect\")", ck,
                     cfg_str(mc, "train.task"));
    if (!rc) rc = lesion_shard_open(&s, cfg_str(cfg, "input.root"), split);
    det_config dc;
    if (!rc) rc = det_config_from_cfg(&dc, mc, s.D);
    if (!rc) rc = detector_create(&det, &dc, 1);
    // collective from here on: every rank reaches the load (or all skip it together)
    int bad = rc != 0;
    MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, comm);
    if (!bad) {
        rc = train_ckpt_load_weights(detector_params(det), ck, comm);
        bad = rc != 0;
        MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, comm);
    }
    int code = MP3D_EXIT_FAIL;
    if (bad) goto done;
    {
        double window[2] = {cfg_list_float(mc, "det.window", 0), cfg_list_float(mc, "det.window", 1)};
        const int64_t lo = s.n * rank / size, hi = s.n * (rank + 1) / size;
        rc = det_infer_range(&mine, det, &s, lo, hi, (int)cfg_int(mc, "det.test_size"), window, &secs);
        bad = rc != 0;
        MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, comm);
        if (bad) goto done;
        double tmax = secs;
        MPI_Allreduce(MPI_IN_PLACE, &tmax, 1, MPI_DOUBLE, MPI_MAX, comm);
        LOG0("evaluate: checkpoint:%s split:%s images:%lld ranks:%d test_size:%lld infer_s:%.2f img_per_s:%.2f", ck, split,
             (long long)s.n, size, (long long)cfg_int(mc, "det.test_size"), tmax, tmax > 0 ? (double)s.n / tmax : 0.0);
        if (det_gather(&all, &nall, mine.d, mine.n, comm, 0)) goto done;
        code = rank == 0 ? evaluate_rank0(cfg, &s, all, nall, ck, text) : MP3D_EXIT_OK;
    }
done:
    MPI_Bcast(&code, 1, MPI_INT, 0, comm);
    free(all);
    froc_dets_free(&mine);
    lesion_shard_close(&s);
    detector_destroy(det);
    cfg_destroy(mc);
    free(text);
    return code;
}
