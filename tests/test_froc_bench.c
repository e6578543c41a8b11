// FROC benchmark and cross-check data: generates a cohort (images x detections per image) with
// score ties, writes images.csv / gt.csv / dets.csv to DIR, reads the detections back through the
// CSV reader, scores them under the 4 conventions (IoU +1 / continuous x before_next / first_at)
// and writes DIR/c_results.csv for tests/test_froc_reference.py; prints timings as key:value.
// Usage: test_froc_bench DIR [n_images=500] [dets_per_image=100] [bootstrap=100]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/fileio.h"
#include "nn/pl.h"
#include "stages/score/froc.h"

#include <time.h>

static double cpu_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int write_text(const char *dir, const char *name, const char *text, size_t len) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return pl_write_file_atomic(path, text, len);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR [n_images] [dets_per_image] [bootstrap]\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    int64_t ni = argc > 2 ? atoll(argv[2]) : 500, dpi = argc > 3 ? atoll(argv[3]) : 100;
    int reps = argc > 4 ? atoi(argv[4]) : 100;
    if (pl_mkdir_p(dir)) return 1;
    pl_rng r;
    pl_rng_seed(&r, 2024);
    froc_image *im = calloc((size_t)ni, sizeof *im);
    froc_gt *g = calloc((size_t)ni * 3, sizeof *g);
    froc_det *d = calloc((size_t)(ni * dpi), sizeof *d);
    size_t cap = (size_t)ni * 400 + 4096;   // <= 3 lesion lines of < 100 chars per image
    char *ti = malloc(cap), *tg = malloc(cap);
    size_t li = 0, lg = 0;
    li += (size_t)sprintf(ti, "File_name,patient\n");
    lg += (size_t)sprintf(tg, "File_name,x1,y1,x2,y2,type,long_mm,slice_mm\n");
    int64_t ng = 0, nd = 0;
    for (int64_t i = 0; i < ni; i++) {
        int p = (int)(i / 3);
        snprintf(im[i].name, FROC_NAME, "%06d_01_01_%03d.png", p, (int)(i % 3));
        im[i].patient = p;
        li += (size_t)sprintf(ti + li, "%s,%d\n", im[i].name, p);
        int nl = (int)pl_rng_int(&r, 0, 3);   // some key slices without lesions
        int64_t first = nd;
        for (int l = 0; l < nl; l++) {
            double x = (double)pl_rng_int(&r, 0, 900) / 2, y = (double)pl_rng_int(&r, 0, 900) / 2;
            double w = (double)pl_rng_int(&r, 4, 120) / 2;   // small boxes: +1 on widths matters
            froc_gt *x0 = &g[ng++];
            x0->box[0] = x, x0->box[1] = y, x0->box[2] = x + w, x0->box[3] = y + w;
            x0->image = i;
            x0->type = (int)pl_rng_int(&r, 1, 8);
            x0->long_mm = w * 0.75;
            x0->slice_mm = pl_rng_uniform(&r) < 0.4 ? 1.25 : 5;
            x0->noisy = 0;
            lg += (size_t)sprintf(tg + lg, "%s,%g,%g,%g,%g,%d,%g,%g\n", im[i].name, x, y, x + w, y + w, x0->type,
                                  x0->long_mm, x0->slice_mm);
            int nj = (int)pl_rng_int(&r, 0, 3);
            for (int k = 0; k < nj && nd - first < dpi; k++) {
                double j = pl_rng_range(&r, -0.35, 0.35) * w;   // IoU around the 0.5 threshold
                froc_det *q = &d[nd++];
                snprintf(q->file, FROC_NAME, "%s", im[i].name);
                q->box[0] = x + j, q->box[1] = y - j / 2, q->box[2] = x + w + j, q->box[3] = y + w;
                q->score = floor((0.2 + 0.8 * pl_rng_uniform(&r)) * 1000) / 1000;   // ties on purpose
            }
        }
        while (nd - first < dpi) {
            double x = pl_rng_range(&r, 0, 470), y = pl_rng_range(&r, 0, 470), w = pl_rng_range(&r, 5, 40);
            froc_det *q = &d[nd++];
            snprintf(q->file, FROC_NAME, "%s", im[i].name);
            q->box[0] = x, q->box[1] = y, q->box[2] = x + w, q->box[3] = y + w * 0.8;
            double u = pl_rng_uniform(&r);   // mostly low, interleaved with the hits at the top
            q->score = floor(u * u * u * 1000) / 1000;
        }
    }
    int rc = write_text(dir, "images.csv", ti, li);
    if (!rc) rc = write_text(dir, "gt.csv", tg, lg);
    char path[1024];
    snprintf(path, sizeof path, "%s/dets.csv", dir);
    if (!rc) rc = froc_dets_write(path, d, nd);
    froc_dets ds;
    memset(&ds, 0, sizeof ds);
    double t0 = pl_time();
    if (!rc) rc = froc_dets_read(&ds, path);
    double t_read = pl_time() - t0;
    if (rc || ds.n != nd || ds.nbad) {
        fprintf(stderr, "bench: writing/reading the cohort failed: %s\n", pl_last_error());
        return 1;
    }
    printf("bench images:%lld lesions:%lld detections:%lld csv_read_s:%.3f\n", (long long)ni, (long long)ng,
           (long long)nd, t_read);
    froc_set s;
    t0 = pl_time();
    double c0 = cpu_time();
    if (froc_set_build(&s, im, ni, g, ng, ds.d, ds.n)) return 1;
    double t_build = pl_time() - t0, c_build = cpu_time() - c0;
    char res[4096];
    size_t lr = (size_t)sprintf(res, "iou_plus1,fp_rule,s0.5,s1,s2,s4,s8,s16,mfroc,ap50\n");
    for (int plus1 = 1; plus1 >= 0; plus1--) {
        for (int rule = 0; rule < 2; rule++) {
            froc_opts o;
            froc_opts_default(&o);
            o.iou_plus1 = plus1;
            o.fp_rule = (enum froc_fp_rule)rule;
            froc_curve c;
            double ap;
            t0 = pl_time();
            c0 = cpu_time();
            if (froc_walk(&c, &s, NULL, &o)) return 1;
            double t_walk = pl_time() - t0;
            t0 = pl_time();
            if (froc_ap(&ap, &s, NULL, &o)) return 1;
            double t_ap = pl_time() - t0, c_score = c_build + cpu_time() - c0;
            lr += (size_t)sprintf(res + lr, "%d,%s", plus1, rule ? "first_at" : "before_next");
            for (int k = 0; k < FROC_NLEVELS; k++) lr += (size_t)sprintf(res + lr, ",%.12g", c.sens[k]);
            lr += (size_t)sprintf(res + lr, ",%.12g,%.12g\n", c.mfroc, ap);
            printf("bench iou_plus1:%d fp_rule:%s sort_s:%.3f walk_s:%.3f ap_s:%.3f score_s:%.3f mfroc:%.4f "
                   "sens@0.5:%.4f ap50:%.4f score_cpu_s:%.3f build_cpu_s:%.3f\n", plus1, rule ? "first_at" : "before_next", t_build, t_walk,
                   t_ap, t_build + t_walk + t_ap, c.mfroc, c.sens[0], ap, c_score, c_build);
            froc_curve_free(&c);
        }
    }
    if (write_text(dir, "c_results.csv", res, lr)) return 1;
    froc_opts o;
    froc_opts_default(&o);
    froc_eval ev;
    t0 = pl_time();
    c0 = cpu_time();
    if (froc_evaluate(&ev, &s, &o, reps, 1)) return 1;
    printf("bench evaluate_with_groups_and_bootstrap:%d seconds:%.3f cpu_s:%.3f mfroc:%.4f ci:[%.4f,%.4f]\n", reps,
           pl_time() - t0, cpu_time() - c0, ev.all.mfroc, ev.ci.lo[FROC_NLEVELS], ev.ci.hi[FROC_NLEVELS]);
    froc_eval_free(&ev);
    froc_set_free(&s);
    froc_dets_free(&ds);
    free(im);
    free(g);
    free(d);
    free(ti);
    free(tg);
    return 0;
}
