// synth: `mp3d synth` — writes the demo cohort (DeepLesion, ImageNet, COCO layouts) under
// output.dir. Rank 0 generates; the other ranks wait for its exit code (one broadcast), so
// every rank returns the same code. The generators live in stages/synth/synth_{dl,imagenet,coco}.c,
// their shared leaf helpers in synth_common.c.
#include <stdio.h>
#include <string.h>

#include "io/fileio.h"
#include "io/runlog.h"
#include "nn/pl.h"
#include "stages/stages.h"
#include "stages/synth/synth.h"

int synth_parse_scale(enum synth_scale *out, const char *s) {
    if (s && !strcmp(s, "tiny")) *out = SYNTH_TINY;
    else if (s && !strcmp(s, "small")) *out = SYNTH_SMALL;
    else if (s && !strcmp(s, "medium")) *out = SYNTH_MEDIUM;
    else return pl_fail(PL_EINVAL, "synth.scale = '%s' (must be tiny|small|medium)", s ? s : "");
    return 0;
}

int synth_parse_datasets(int *out, const char *s) {
    *out = 0;
    const char *p = s ? s : "";
    while (*p) {
        while (*p == ' ' || *p == ',') p++;
        const char *q = p;
        while (*q && *q != ',' && *q != ' ') q++;
        size_t n = (size_t)(q - p);
        if (n == 0) break;
        if (n == 10 && !strncmp(p, "deeplesion", n)) *out |= SYNTH_DEEPLESION;
        else if (n == 8 && !strncmp(p, "imagenet", n)) *out |= SYNTH_IMAGENET;
        else if (n == 4 && !strncmp(p, "coco", n)) *out |= SYNTH_COCO;
        else
            return pl_fail(PL_EINVAL, "synth.datasets = '%s': unknown dataset '%.*s' (allowed: "
                           "deeplesion, imagenet, coco, comma-separated)", s, (int)n, p);
        p = q;
    }
    if (!*out)
        return pl_fail(PL_EINVAL, "synth.datasets = '%s' names no dataset (allowed: deeplesion, "
                       "imagenet, coco, comma-separated)", s ? s : "");
    return 0;
}

static int dataset_dir(char *dir, size_t cap, const synth_opts *o, const char *name) {
    return pl_path_join(dir, cap, o->out, name);
}

int synth_prepare(const synth_opts *o) {
    int rc = pl_mkdir_p(o->out);
    if (!rc) rc = pl_dir_writable(o->out);
    if (rc || !(o->datasets & SYNTH_DEEPLESION)) return rc;
    char dir[4096];
    if ((rc = dataset_dir(dir, sizeof dir, o, "deeplesion"))) return rc;
    synth_stats st;
    memset(&st, 0, sizeof st);
    return synth_write_deeplesion(&st, o, dir, SYNTH_PART_PREPARE);
}

int synth_generate_share(synth_stats *st, const synth_opts *o) {
    memset(st, 0, sizeof *st);
    const int size = o->size > 1 ? o->size : 1, rank = o->size > 1 ? o->rank : 0;
    char dir[4096];
    int rc = 0;
    if (o->datasets & SYNTH_DEEPLESION) {
        double t0 = pl_time();
        if ((rc = dataset_dir(dir, sizeof dir, o, "deeplesion"))) return rc;
        if ((rc = synth_write_deeplesion(st, o, dir, SYNTH_PART_DATA))) return rc;
        st->seconds_dl = pl_time() - t0;
    }
    if ((o->datasets & SYNTH_IMAGENET) && rank == 1 % size) {
        double t0 = pl_time();
        if ((rc = dataset_dir(dir, sizeof dir, o, "imagenet"))) return rc;
        if ((rc = synth_write_imagenet(st, o, dir))) return rc;
        st->seconds_in = pl_time() - t0;
    }
    if ((o->datasets & SYNTH_COCO) && rank == 2 % size) {
        double t0 = pl_time();
        if ((rc = dataset_dir(dir, sizeof dir, o, "coco"))) return rc;
        if ((rc = synth_write_coco(st, o, dir))) return rc;
        st->seconds_coco = pl_time() - t0;
    }
    return 0;
}

int synth_finish(synth_stats *st, const synth_opts *o) {
    if (!(o->datasets & SYNTH_DEEPLESION)) return 0;
    char dir[4096];
    int rc = dataset_dir(dir, sizeof dir, o, "deeplesion");
    if (rc) return rc;
    double t0 = pl_time();
    rc = synth_write_deeplesion(st, o, dir, SYNTH_PART_INDEX);
    st->seconds_dl += pl_time() - t0;
    return rc;
}

int synth_generate(synth_stats *st, const synth_opts *o) {
    synth_opts one = *o;
    one.rank = 0;
    one.size = 1;
    int rc = synth_prepare(&one);
    if (!rc) rc = synth_generate_share(st, &one);
    if (!rc) rc = synth_finish(st, &one);
    return rc;
}

// Reads and validates the keys (every rank, same config); 0 or MP3D_EXIT_USAGE.
static int synth_opts_from_cfg(synth_opts *o, const pl_cfg *cfg, int rank, int size) {
    memset(o, 0, sizeof *o);
    if (cfg_require(cfg, "output.dir")) return MP3D_EXIT_USAGE;
    o->out = cfg_str(cfg, "output.dir");
    o->seed = (uint64_t)cfg_int(cfg, "run.seed");
    o->rank = rank;
    o->size = size;
    o->progress = rank == 0;
    o->progress_interval = cfg_float(cfg, "log.progress_interval");
    if (!o->out[0]) {
        pl_fail(PL_EINVAL, "output.dir is empty (give --out DIR or --set output.dir=DIR)");
        return MP3D_EXIT_USAGE;
    }
    if (synth_parse_scale(&o->scale, cfg_str(cfg, "synth.scale"))) return MP3D_EXIT_USAGE;
    if (synth_parse_datasets(&o->datasets, cfg_str(cfg, "synth.datasets"))) return MP3D_EXIT_USAGE;
    o->in_side_lo = (int)cfg_int(cfg, "synth.imagenet_side_min");
    o->in_side_hi = (int)cfg_int(cfg, "synth.imagenet_side_max");
    if ((o->in_side_lo > 0) != (o->in_side_hi > 0) || o->in_side_lo > o->in_side_hi || (o->in_side_lo > 0 && o->in_side_lo < 16)) {
        pl_fail(PL_EINVAL, "synth.imagenet_side_min = %d, synth.imagenet_side_max = %d: give both, 16 <= min <= max (or both 0)",
                o->in_side_lo, o->in_side_hi);
        return MP3D_EXIT_USAGE;
    }
    return 0;
}

// Every rank returns the worst code any rank reached (a collective: all ranks call it).
static int agree(int code, MPI_Comm comm) {
    int worst = code;
    MPI_Allreduce(&code, &worst, 1, MPI_INT, MPI_MAX, comm);
    return worst;
}

static void log_result(const synth_opts *o, const synth_stats *st, const pl_cfg *cfg, double seconds) {
    if (o->datasets & SYNTH_DEEPLESION)
        LOG_INFO("synth:deeplesion dir:%s/deeplesion patients:%lld series:%lld slices:%lld key_slices:%lld "
                 "lesions:%lld zips:%lld rank0_seconds:%.2f rank0_png_encode_seconds:%.2f", o->out,
                 (long long)st->dl_patients, (long long)st->dl_series, (long long)st->dl_slices,
                 (long long)st->dl_key_slices, (long long)st->dl_lesions, (long long)st->dl_zips, st->seconds_dl,
                 st->seconds_dl_png);
    if (o->datasets & SYNTH_IMAGENET)
        LOG_INFO("synth:imagenet dir:%s/imagenet classes:%lld train:%lld val:%lld", o->out,
                 (long long)st->in_classes, (long long)st->in_train, (long long)st->in_val);
    if (o->datasets & SYNTH_COCO)
        LOG_INFO("synth:coco dir:%s/coco train:%lld val:%lld annotations:%lld", o->out, (long long)st->coco_train,
                 (long long)st->coco_val, (long long)st->coco_annotations);
    LOG_INFO("synth:done out:%s ranks:%d seconds:%.2f", o->out, o->size, seconds);
    pl_metrics *m = NULL;
    if (metrics_open(&m, o->out, 1) == 0) {
        metrics_write(m, "synth", "\"scale\":\"%s\",\"seed\":%llu,\"dl_key_slices\":%lld,\"dl_lesions\":%lld,"
                      "\"dl_slices\":%lld,\"imagenet_images\":%lld,\"coco_images\":%lld,\"ranks\":%d,\"seconds\":%.3f",
                      cfg_str(cfg, "synth.scale"), (unsigned long long)o->seed, (long long)st->dl_key_slices,
                      (long long)st->dl_lesions, (long long)st->dl_slices, (long long)(st->in_train + st->in_val),
                      (long long)(st->coco_train + st->coco_val), o->size, seconds);
        metrics_close(m);
    }
}

// Collective over comm. Rank 0 clears a previous run, every rank writes its share (DeepLesion
// zips round-robin, ImageNet and COCO on ranks 1 and 2 when present), rank 0 writes DL_info.csv
// once all shares are complete. The files are the same whatever the rank count.
int stage_synth_run(const pl_cfg *cfg, MPI_Comm comm) {
    int rank = 0, size = 1;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    double t0 = pl_time();
    synth_opts o;
    int code = agree(synth_opts_from_cfg(&o, cfg, rank, size), comm);
    if (code) return code;
    if (rank == 0)
        LOG_INFO("synth:start out:%s scale:%s seed:%llu datasets:%s ranks:%d", o.out, cfg_str(cfg, "synth.scale"),
                 (unsigned long long)o.seed, cfg_str(cfg, "synth.datasets"), size);
    int rc = rank == 0 ? synth_prepare(&o) : 0;
    if (rc) LOG_ERROR("synth:failed out:%s error:%s reason:%s", o.out, pl_err_name(rc), pl_last_error());
    if ((code = agree(rc ? MP3D_EXIT_FAIL : 0, comm))) return code;
    synth_stats st;
    rc = synth_generate_share(&st, &o);
    if (rc) LOG_ERROR("synth:failed out:%s error:%s reason:%s", o.out, pl_err_name(rc), pl_last_error());
    if ((code = agree(rc ? MP3D_EXIT_FAIL : 0, comm))) return code;
    // counts of the shares, summed on rank 0 (the plan-wide DeepLesion counts are rank 0's)
    int64_t part[7] = {st.dl_slices, st.in_train, st.in_val, st.coco_train, st.coco_val, st.coco_annotations,
                       st.in_classes};
    int64_t sum[7] = {0};
    MPI_Reduce(part, sum, 7, MPI_INT64_T, MPI_SUM, 0, comm);
    if (rank == 0) {
        st.dl_slices = sum[0];
        st.in_train = sum[1];
        st.in_val = sum[2];
        st.coco_train = sum[3];
        st.coco_val = sum[4];
        st.coco_annotations = sum[5];
        st.in_classes = sum[6];
        rc = synth_finish(&st, &o);
        if (rc) LOG_ERROR("synth:failed out:%s error:%s reason:%s", o.out, pl_err_name(rc), pl_last_error());
        else log_result(&o, &st, cfg, pl_time() - t0);
    }
    return agree(rc ? MP3D_EXIT_FAIL : 0, comm);
}
