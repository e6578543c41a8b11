// bench_detector: speed and peak memory of the whole MP3D detector (issue 5) as the detect task
// builds it from a config (det_config_from_cfg + detector_create): training images/s (one
// detector_train_step — forward, RPN/RoI targets and losses, backward — plus the optimizer of the
// recipe: gradient clipping and SGD with momentum and weight decay) and inference images/s
// (detector_detect), on random (N, 1, D, S, S) inputs with 3 fixed ground-truth boxes per image.
// Single thread unless --threads. Inference is timed first so the peak RSS after it is the inference peak; the
// peak after training is the process's overall peak (run one configuration per process).
// The same-run reference is tests/bench/bench_detector_torch.py (torchvision Faster R-CNN with
// the same backbone), driven by tests/bench/bench_detector.sh, which passes it our `config` line.
// Usage: bench_detector CONFIG.cfg [--name NAME] [--size S] [--batch N] [--iters K] [--warmup W]
//                       [--json OUT] [--set key=value ...] [--threads T] [--train-only]
// (--threads: OpenBLAS and nn/parallel threads, default 1; --train-only skips inference: used
// by tests/bench/scale.sh)
// Prints key:value lines; OUT gets one JSON line per run (appended).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "nn/conv3d.h"
#include "nn/sgd.h"
#include "stages/train/det_common.h"

void openblas_set_num_threads(int n);
char *openblas_get_corename(void);

#define MAX_SETS 32
static const int k_depth = 9;      // slices per input, as the preprocess shards
static const int k_boxes = 3;      // ground-truth boxes per image (bench_box, also in the torch twin)
static const uint64_t k_seed = 20261126;

typedef struct {
    double wall, cpu, other;   // seconds; other = CPU cores other processes used meanwhile
} span;

static double proc_busy_seconds(void) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    unsigned long long u, n, s, idle, io, irq, sirq, steal;
    int k = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &u, &n, &s, &idle, &io, &irq, &sirq, &steal);
    fclose(f);
    if (k != 8) return 0;
    return (double)(u + n + s + irq + sirq + steal) / (double)sysconf(_SC_CLK_TCK);
}

typedef struct {
    double wall, cpu, busy;
} stamp;

static stamp stamp_now(void) {
    stamp s = {pl_time(), (double)clock() / CLOCKS_PER_SEC, proc_busy_seconds()};
    return s;
}

static span span_since(stamp a) {
    stamp b = stamp_now();
    span r = {b.wall - a.wall, b.cpu - a.cpu, 0};
    double other = (b.busy - a.busy) - r.cpu;
    r.other = r.wall > 0 ? PL_MAX(other, 0.0) / r.wall : 0;
    return r;
}

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;   // Linux: KiB
}

// Box i of image n on an S x S input (x1 y1 x2 y2, input pixels): sides 4, 8, 12 % of S with
// aspect 1, 0.7, 1.3, spread over the image. bench_detector_torch.py uses the same formula.
static void bench_box(float *b, int64_t n, int i, int64_t S) {
    static const double aspect[3] = {1.0, 0.7, 1.3};
    double w = (double)S * (0.04 + 0.04 * i), h = w * aspect[i % 3];
    double cx = (double)S * (0.25 + 0.25 * i), cy = (double)S * (0.3 + 0.2 * (double)((i + n) % 3));
    b[0] = (float)(cx - w / 2);
    b[1] = (float)(cy - h / 2);
    b[2] = (float)(cx + w / 2);
    b[3] = (float)(cy + h / 2);
}

static void usage(void) {
    fprintf(stderr, "usage: bench_detector CONFIG.cfg [--name NAME] [--size S] [--batch N] [--iters K] [--warmup W]\n"
                    "                      [--json OUT] [--set key=value ...] [--threads T] [--train-only]\n");
}

int main(int argc, char **argv) {
    const char *cfg_file = NULL, *name = "detector", *json = NULL;
    const char *sets[MAX_SETS];
    int nsets = 0, iters = 3, warmup = 1, threads = 1, train_only = 0;
    int64_t size = 0, batch = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const int more = i + 1 < argc;
        if (!strcmp(a, "--name") && more) name = argv[++i];
        else if (!strcmp(a, "--size") && more) size = atoll(argv[++i]);
        else if (!strcmp(a, "--batch") && more) batch = atoll(argv[++i]);
        else if (!strcmp(a, "--iters") && more) iters = atoi(argv[++i]);
        else if (!strcmp(a, "--warmup") && more) warmup = atoi(argv[++i]);
        else if (!strcmp(a, "--json") && more) json = argv[++i];
        else if (!strcmp(a, "--threads") && more) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--train-only")) train_only = 1;
        else if (!strcmp(a, "--set") && more && nsets < MAX_SETS) sets[nsets++] = argv[++i];
        else if (a[0] != '-' && !cfg_file) cfg_file = a;
        else {
            fprintf(stderr, "bench_detector: unknown or incomplete argument '%s'\n", a);
            usage();
            return 2;
        }
    }
    if (!cfg_file || iters < 1 || warmup < 0 || threads < 1 || threads > 256) {
        usage();
        return 2;
    }
    openblas_set_num_threads(threads);   // nn/parallel follows OpenBLAS's count
    pl_cfg *cfg = NULL;
    if (cfg_load(&cfg, cfg_file, sets, nsets)) {
        fprintf(stderr, "bench_detector: %s\n", pl_last_error());
        return 1;
    }
    // nn.conv_engine as mp3d train reads it (stage_conv_engine_set): gemm | dnnl | auto
    conv3d_engine engine;
    if (conv3d_engine_parse(cfg_str(cfg, "nn.conv_engine"), &engine)) {
        fprintf(stderr, "bench_detector: nn.conv_engine: %s\n", pl_last_error());
        return 2;
    }
    conv3d_set_engine(engine);
    det_config dc;
    if (det_config_from_cfg(&dc, cfg, k_depth)) {
        fprintf(stderr, "bench_detector: %s\n", pl_last_error());
        return 1;
    }
    if (!size) size = cfg_int(cfg, "det.test_size");
    if (!batch) batch = cfg_int(cfg, "train.batch");
    if (size % 32 || size < 64 || batch < 1) {
        fprintf(stderr, "bench_detector: size %lld (a multiple of 32, >= 64) or batch %lld (>= 1) out of range\n",
                (long long)size, (long long)batch);
        return 2;
    }
    // The recipe's optimizer: lr scaled linearly with the batch (train.lr for train.lr_batch images).
    const double lr = cfg_float(cfg, "train.lr") * (double)batch / (double)cfg_int(cfg, "train.lr_batch");
    const double momentum = cfg_float(cfg, "train.momentum"), wd = cfg_float(cfg, "train.weight_decay");
    const double clip = cfg_float(cfg, "train.clip_grad");
    const char *arch = cfg_str(cfg, "model.arch");
    char ratios[256] = "";   // "0.5,1,2"
    for (int i = 0, len = 0; i < cfg_list_len(cfg, "det.anchor_ratios") && len < (int)sizeof ratios - 24; i++)
        len += snprintf(ratios + len, sizeof ratios - (size_t)len, "%s%g", i ? "," : "",
                        cfg_list_float(cfg, "det.anchor_ratios", i));

    const double rss_start = peak_rss_mb();
    detector *det = NULL;
    if (detector_create(&det, &dc, k_seed)) {
        fprintf(stderr, "bench_detector: %s\n", pl_last_error());
        return 1;
    }
    nn_params *p = detector_params(det);
    const nn_dims in = nn_dims_make(batch, 1, k_depth, size, size);
    const size_t nx = (size_t)nn_dims_count(in);
    float *x = pl_malloc(nx * sizeof(float), "input");
    float *boxes = pl_malloc(sizeof(float) * 4 * (size_t)(batch * k_boxes), "gt boxes");
    det_gt *gt = pl_calloc((size_t)batch, sizeof *gt, "gt");
    int64_t *img_hw = pl_malloc(sizeof(int64_t) * 2 * (size_t)batch, "image sizes");
    int64_t *ndets = pl_malloc(sizeof(int64_t) * (size_t)batch, "detection counts");
    float *dets = pl_malloc(sizeof(float) * 5 * (size_t)(batch * dc.max_dets), "detections");
    PL_ASSERT(x && boxes && gt && img_hw && ndets && dets);
    pl_rng rng;
    pl_rng_seed(&rng, k_seed);
    // Values in the range of the normalised window ((0 - 123.675) / 58.395 .. (255 - 123.675) / 58.395).
    for (size_t i = 0; i < nx; i++) x[i] = (float)pl_rng_range(&rng, -2.1, 2.2);
    for (int64_t n = 0; n < batch; n++) {
        for (int i = 0; i < k_boxes; i++) bench_box(boxes + 4 * (n * k_boxes + i), n, i, size);
        gt[n] = (det_gt){boxes + 4 * n * k_boxes, NULL, k_boxes, NULL, 0, size, size};
        img_hw[2 * n] = img_hw[2 * n + 1] = size;
    }
    printf("config name:%s arch:%s width:%g norm:%s gn_groups:%d depth:%d size:%lld batch:%lld fpn:%lld fc:%lld "
           "anchor_scale:%g ratios:%s rpn_samples:%lld rpn_pre_nms:%lld rpn_post_nms:%lld rpn_nms_iou:%g "
           "roi_samples:%lld roi_pos_fraction:%g nms_iou:%g score_thr:%g max_dets:%lld lr:%g momentum:%g wd:%g "
           "clip:%g boxes:%d iters:%d warmup:%d\n",
           name, arch, dc.backbone.width, cfg_str(cfg, "model.norm"), dc.backbone.gn_groups, k_depth, (long long)size,
           (long long)batch, (long long)dc.fpn_channels, (long long)dc.fc_dim, cfg_float(cfg, "det.anchor_scale"),
           ratios, (long long)dc.rpn_samples, (long long)dc.rpn_pre_nms, (long long)dc.rpn_post_nms, dc.rpn_nms_iou,
           (long long)dc.roi_samples, dc.roi_pos_fraction, dc.nms_iou, dc.score_thr, (long long)dc.max_dets, lr,
           momentum, wd, clip, k_boxes, iters, warmup);
    printf("model params:%zu (%.1f MB) blas_core:%s threads:%d conv_engine:%s\n", p->nparams, p->nparams * 4e-6,
           openblas_get_corename(), threads, conv3d_engine_name(engine));
    fflush(stdout);

    // ---- inference ----
    span infer = {0, 0, 0};
    int64_t dets_total = 0;
    for (int it = -warmup; it < (train_only ? -warmup : iters); it++) {
        stamp t0 = stamp_now();
        if (detector_detect(det, dets, ndets, x, in, img_hw)) {
            fprintf(stderr, "bench_detector: detect: %s\n", pl_last_error());
            return 1;
        }
        span s = span_since(t0);
        int64_t nd = 0;
        for (int64_t n = 0; n < batch; n++) nd += ndets[n];
        printf("infer iter:%d wall_s:%.3f cpu_s:%.3f other_cores:%.2f dets:%lld%s\n", it, s.wall, s.cpu, s.other,
               (long long)nd, it < 0 ? " (warm-up)" : "");
        fflush(stdout);
        if (it >= 0) {
            infer.wall += s.wall;
            infer.cpu += s.cpu;
            infer.other += s.other * s.wall;
            dets_total += nd;
        }
    }
    const double rss_infer = peak_rss_mb();

    // ---- training ----
    span train = {0, 0, 0};
    double loss[4] = {0, 0, 0, 0}, gnorm = 0;
    for (int it = -warmup; it < iters; it++) {
        stamp t0 = stamp_now();
        if (detector_train_step(det, loss, x, in, gt, 1.0, &rng)) {
            fprintf(stderr, "bench_detector: train step: %s\n", pl_last_error());
            return 1;
        }
        gnorm = sgd_clip_grad_norm(p->grads, p->nparams, clip);
        sgd_step(p->params, p->momentum, p->grads, p->nparams, lr, momentum, wd, it == -warmup);
        span s = span_since(t0);
        printf("train iter:%d wall_s:%.3f cpu_s:%.3f other_cores:%.2f loss_rpn_cls:%.4f loss_rpn_reg:%.4f "
               "loss_cls:%.4f loss_reg:%.4f grad_norm:%.3g%s\n",
               it, s.wall, s.cpu, s.other, loss[0], loss[1], loss[2], loss[3], gnorm, it < 0 ? " (warm-up)" : "");
        fflush(stdout);
        if (it >= 0) {
            train.wall += s.wall;
            train.cpu += s.cpu;
            train.other += s.other * s.wall;
        }
    }
    const double rss_train = peak_rss_mb();

    const double imgs = (double)(batch * iters);
    // --train-only: no inference ran; its figures read 0 (iw = 1 only keeps the divisions defined)
    const double iw = infer.wall > 0 ? infer.wall : 1, ii = infer.wall > 0 ? 1 : 0;
    printf("result impl:mp3d engine:%s name:%s threads:%d train_cpu_s_step:%.3f train_img_s:%.4f train_s_step:%.3f train_cpu_wall:%.2f train_other_cores:%.2f "
           "infer_img_s:%.4f infer_s_step:%.3f infer_cpu_wall:%.2f infer_other_cores:%.2f rss_start_mb:%.0f "
           "rss_infer_mb:%.0f rss_peak_mb:%.0f params:%zu\n",
           conv3d_engine_name(engine), name, threads, train.cpu / iters, imgs / train.wall, train.wall / iters, train.cpu / train.wall, train.other / train.wall,
           ii * imgs / iw, infer.wall / iters, infer.cpu / iw, infer.other / iw, rss_start,
           rss_infer, rss_train, p->nparams);
    if (json) {
        FILE *f = fopen(json, "a");
        if (!f) {
            fprintf(stderr, "bench_detector: cannot open %s for appending\n", json);
            return 1;
        }
        fprintf(f,
                "{\"impl\": \"mp3d\", \"engine\": \"%s\", \"blas_core\": \"%s\", \"threads\": %d, \"name\": \"%s\", \"arch\": \"%s\", \"width\": %g, \"gn_groups\": %d, "
                "\"size\": %lld, \"depth\": %d, \"batch\": %lld, \"fpn\": %lld, \"fc\": %lld, \"rpn_pre_nms\": %lld, "
                "\"rpn_post_nms\": %lld, \"roi_samples\": %lld, \"iters\": %d, \"warmup\": %d, \"params\": %zu, "
                "\"train_img_s\": %.5f, \"train_s_step\": %.4f, \"train_cpu_s\": %.3f, \"train_wall_s\": %.3f, "
                "\"train_other_cores\": %.3f, \"infer_img_s\": %.5f, \"infer_s_step\": %.4f, \"infer_cpu_s\": %.3f, "
                "\"infer_wall_s\": %.3f, \"infer_other_cores\": %.3f, \"dets_per_img\": %.1f, \"rss_start_mb\": %.1f, "
                "\"rss_infer_mb\": %.1f, \"rss_peak_mb\": %.1f, \"loss\": [%.5f, %.5f, %.5f, %.5f]}\n",
                conv3d_engine_name(engine), openblas_get_corename(), threads, name, arch, dc.backbone.width, dc.backbone.gn_groups, (long long)size, k_depth, (long long)batch,
                (long long)dc.fpn_channels, (long long)dc.fc_dim, (long long)dc.rpn_pre_nms,
                (long long)dc.rpn_post_nms, (long long)dc.roi_samples, iters, warmup, p->nparams, imgs / train.wall,
                train.wall / iters, train.cpu, train.wall, train.other / train.wall, ii * imgs / iw,
                infer.wall / iters, infer.cpu, infer.wall, infer.other / iw, (double)dets_total / imgs,
                rss_start, rss_infer, rss_train, loss[0], loss[1], loss[2], loss[3]);
        fclose(f);
    }
    free(x);
    free(boxes);
    free(gt);
    free(img_hw);
    free(ndets);
    free(dets);
    detector_destroy(det);
    cfg_destroy(cfg);
    return 0;
}
