// import / export: see import.h. The name mapping (README "Import and export"):
//   mmdet  backbone.<x>            -> <x>                (conv1, layer1.0.conv1, stem.0.conv, gtm.k, ...;
//                                                         MP3D's conv1_custom/norm1/norm_K/groupconv_K and
//                                                         mmcv's GroupNorm gnK renamed, see backbone_component)
//          neck.<x>                -> neck.<x>           (lateral_convs.i.conv, fpn_convs.i.conv)
//          rpn_head.<x>            -> rpn_head.<x>       (rpn_conv, rpn_cls, rpn_reg)
//          roi_head.bbox_head.<x>  -> roi_head.bbox_head.<x>  (shared_fcs.0/1, fc_cls, fc_reg)
//          bbox_head.<x>           -> roi_head.bbox_head.<x>  (mmdetection 1.x, before roi_head)
//   mmcls  backbone.<x> -> <x>;  head.fc.<x> -> fc.<x>
//   plain  unchanged
// Shape rule applied silently: none. One documented rule, reported per tensor: a 2D weight
// (O, I, kh, kw) loads into a 3D weight (O, I, 1, kh, kw) (the same operator when kd = 1).
// Every other shape difference is reported and the tensor keeps its fresh initialisation.
#include "stages/train/import.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/fileio.h"
#include "mp3d_git.h"   // MP3D_GIT, written at build time
#include "io/h5ckpt.h"
#include "io/pth.h"
#include "nn/net.h"
#include "nn/pl.h"
#include "nn/detector.h"
#include "stages/train/det_common.h"
#include "stages/train/train_ckpt.h"
#include "stages/stages.h"

enum map_kind { MAP_PLAIN = 0, MAP_MMDET, MAP_MMCLS };
static const char *const k_map_names[] = {"plain", "mmdet", "mmcls"};

// Backbone module names of the papers' own code that differ from mp3d's, one dotted component
// at a time: MP3D's modified_P3D (conv1_custom, norm1, norm_1..norm_4, groupconv_1..4) and
// mmcv's build_norm_layer abbreviation for GroupNorm (gn1, gn2, ...) -> mp3d's bnK / gtm.k.
static int backbone_component(char *out, size_t cap, const char *c, int first) {
    if (first && !strcmp(c, "conv1_custom")) return snprintf(out, cap, "conv1");
    if (first && !strcmp(c, "norm1")) return snprintf(out, cap, "bn1");
    if (first && !strncmp(c, "groupconv_", 10) && c[10] >= '1' && c[10] <= '4' && !c[11]) return snprintf(out, cap, "gtm.%d", c[10] - '1');
    if (!strncmp(c, "norm_", 5) && c[5] >= '1' && c[5] <= '9' && !c[6]) return snprintf(out, cap, "bn%c", c[5]);
    if (!strncmp(c, "gn", 2) && c[2] >= '1' && c[2] <= '9' && !c[3]) return snprintf(out, cap, "bn%c", c[2]);
    return snprintf(out, cap, "%s", c);
}

static int backbone_name(char *out, size_t cap, const char *in) {
    size_t n = 0;
    int first = 1;
    out[0] = 0;
    for (const char *p = in; *p;) {
        const char *e = strchr(p, '.');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char comp[128];
        if (len >= sizeof comp) return 0;
        memcpy(comp, p, len);
        comp[len] = 0;
        if (n) { if (n + 1 >= cap) return 0; out[n++] = '.'; out[n] = 0; }
        int w = e ? backbone_component(out + n, cap - n, comp, first) : snprintf(out + n, cap - n, "%s", comp);
        if (w < 0 || (size_t)w >= cap - n) return 0;
        n += (size_t)w;
        first = 0;
        p = e ? e + 1 : p + len;
    }
    return 1;
}

// file name -> mp3d name under a mapping; 0 if the name has no mp3d counterpart.
static int map_name(char *out, size_t cap, const char *in, enum map_kind m) {
    static const struct { enum map_kind m; const char *from, *to; } rules[] = {
        {MAP_MMDET, "neck.", "neck."},
        {MAP_MMDET, "rpn_head.", "rpn_head."},
        {MAP_MMDET, "roi_head.bbox_head.", "roi_head.bbox_head."},
        {MAP_MMDET, "bbox_head.", "roi_head.bbox_head."},
        {MAP_MMCLS, "head.fc.", "fc."},
    };
    if (m == MAP_PLAIN) return snprintf(out, cap, "%s", in) < (int)cap;
    if (!strncmp(in, "backbone.", 9)) return backbone_name(out, cap, in + 9);
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        size_t n = strlen(rules[i].from);
        if (rules[i].m == m && !strncmp(in, rules[i].from, n)) return snprintf(out, cap, "%s%s", rules[i].to, in + n) < (int)cap;
    }
    return 0;
}

// mp3d name -> file name (export): the inverse of the rules above.
static void unmap_name(char *out, size_t cap, const char *in, enum map_kind m) {
    static const char *const heads[] = {"neck.", "rpn_head.", "roi_head."};
    if (m == MAP_PLAIN) { snprintf(out, cap, "%s", in); return; }
    if (m == MAP_MMCLS && !strncmp(in, "fc.", 3)) { snprintf(out, cap, "head.%s", in); return; }
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++)
        if (!strncmp(in, heads[i], strlen(heads[i]))) { snprintf(out, cap, "%s", in); return; }
    snprintf(out, cap, "backbone.%s", in);
}

static int parse_map(enum map_kind *m, const char *s, const pth_state *st) {
    if (!strcmp(s, "auto")) {
        int bb = 0, hf = 0;
        for (int i = 0; st && i < st->n; i++) {
            bb |= !strncmp(st->t[i].name, "backbone.", 9);
            hf |= !strncmp(st->t[i].name, "head.fc.", 8);
        }
        *m = !bb ? MAP_PLAIN : hf ? MAP_MMCLS : MAP_MMDET;
        return 0;
    }
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, k_map_names[i])) { *m = (enum map_kind)i; return 0; }
    return pl_fail(PL_EINVAL, "import.map = \"%s\" (allowed: auto|plain|mmdet|mmcls)", s);
}

// Parts of a model the report counts (by mp3d name prefix; everything else is the backbone).
enum { PART_BACKBONE, PART_GTM, PART_NECK, PART_RPN, PART_ROI, PART_FC, NPARTS };
static const char *const k_parts[NPARTS] = {"backbone", "gtm", "neck", "rpn_head", "roi_head", "fc"};
static int part_of(const char *name) {
    for (int g = 1; g < NPARTS; g++) {
        size_t n = strlen(k_parts[g]);
        if (!strncmp(name, k_parts[g], n) && name[n] == '.') return g;
    }
    return PART_BACKBONE;
}

static void shape_str(char *out, size_t cap, int nd, const int64_t *s) {
    size_t n = (size_t)snprintf(out, cap, "(");
    for (int d = 0; d < nd && n < cap; d++) n += (size_t)snprintf(out + n, cap - n, "%s%lld", d ? ", " : "", (long long)s[d]);
    if (n < cap) snprintf(out + n, cap - n, "%s)", nd == 1 ? "," : "");
}

enum { ST_NEW = 0, ST_LOADED, ST_INFLATED, ST_MISMATCH };

int import_pth_into(nn_params *p, const char *path, const char *map, MPI_Comm comm) {
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    pth_state s;
    double t0 = pl_time();
    int rc = pth_read(&s, path);
    int *status = NULL, *used = NULL;
    enum map_kind m = MAP_PLAIN;
    if (rc) goto done;
    if ((rc = parse_map(&m, map, &s))) goto done;
    status = pl_calloc((size_t)p->n + 1, sizeof *status, "import status");
    used = pl_calloc((size_t)s.n + 1, sizeof *used, "import use");
    if (!status || !used) { rc = PL_ENOMEM; goto done; }
    {
        char dt[160] = "";
        size_t len = 0;
        for (int d = 0; d < PK_NDTYPES; d++)
            if (s.count[d]) len += (size_t)snprintf(dt + len, sizeof dt - len, "%s%s:%d", len ? "," : "", pk_dtype_name((enum pk_dtype)d), s.count[d]);
        int views = 0;
        for (int i = 0; i < s.n; i++) views += s.t[i].view;
        LOG0("import: file:%s format:%s dict:%s tensors:%d dtypes:%s views:%d module_prefix_stripped:%d non_tensor_entries:%d map:%s",
             path, s.format, s.where[0] ? s.where : "top-level", s.n, dt, views, s.stripped_module, s.skipped, k_map_names[m]);
        if (s.count[PK_F64]) LOG0("import: note: %d float64 tensors converted to float32 (values rounded to float32)", s.count[PK_F64]);
        if (s.count[PK_F16] || s.count[PK_BF16]) LOG0("import: note: %d float16 / %d bfloat16 tensors widened to float32 (exact)", s.count[PK_F16], s.count[PK_BF16]);
    }
    for (int i = 0; i < s.n; i++) {
        char nm[PTH_NAME_MAX + 32];
        if (!map_name(nm, sizeof nm, s.t[i].name, m)) continue;
        int j = nn_params_find(p, nm);
        if (j < 0) continue;
        const nn_param_info *e = &p->info[j];
        const pth_tensor *t = &s.t[i];
        used[i] = 1;
        int same = t->ndim == e->ndim, inflate = 0;
        for (int d = 0; same && d < e->ndim; d++) same = t->shape[d] == e->shape[d];
        // Documented rule: 2D (O, I, kh, kw) into 3D (O, I, 1, kh, kw).
        if (!same && t->ndim == 4 && e->ndim == 5 && e->shape[2] == 1 && t->shape[0] == e->shape[0] &&
            t->shape[1] == e->shape[1] && t->shape[2] == e->shape[3] && t->shape[3] == e->shape[4])
            inflate = 1;
        // A 0-dim and a 1-element tensor (num_batches_tracked) are the same value.
        if (!same && e->count == 1 && t->ndim <= 1 && e->ndim <= 1 && (t->ndim == 0 || t->shape[0] == 1)) same = 1;
        if (!same && !inflate) {
            char a[96], b[96];
            shape_str(a, sizeof a, t->ndim, t->shape);
            shape_str(b, sizeof b, e->ndim, e->shape);
            status[j] = ST_MISMATCH;
            LOG0("import: %s <- %s: shape %s in the file, %s in the model: kept its fresh initialisation%s", nm, t->name, a, b,
                 part_of(nm) == PART_GTM ? " (a GTM's second dim is the input depth: 3 for VDT pre-training, 9 for CT)" : "");
            continue;
        }
        float *dst = e->kind == NN_BUFFER ? p->buffers + e->offset : p->params + e->offset;
        memcpy(dst, t->data, sizeof(float) * e->count);
        status[j] = inflate ? ST_INFLATED : ST_LOADED;
        if (inflate) LOG0("import: %s <- %s: 2D weight loaded as 3D with kd = 1", nm, t->name);
    }
    int loaded = 0, fresh = 0, mism = 0, unused = 0;
    for (int g = 0; g < NPARTS; g++) {
        int total = 0, l = 0, n = 0, x = 0;
        for (int j = 0; j < p->n; j++) {
            if (part_of(p->info[j].name) != g) continue;
            total++;
            l += status[j] == ST_LOADED || status[j] == ST_INFLATED;
            n += status[j] == ST_NEW;
            x += status[j] == ST_MISMATCH;
        }
        if (total) LOG0("import: part:%s tensors:%d loaded:%d new:%d shape_mismatched:%d", k_parts[g], total, l, n, x);
        loaded += l;
        fresh += n;
        mism += x;
    }
    for (int j = 0; j < p->n; j++)
        if (status[j] == ST_NEW) LOG_DEBUG("import: %s not in the file: kept its fresh initialisation", p->info[j].name);
    char ex[512] = "";
    size_t len = 0;
    for (int i = 0; i < s.n; i++) {
        if (used[i]) continue;
        if (unused++ < 6 && len < 400) len += (size_t)snprintf(ex + len, sizeof ex - len, "%s%s", len ? " " : "", s.t[i].name);
    }
    LOG0("import: file:%s loaded:%d new:%d shape_mismatched:%d unused_in_file:%d%s%s%s seconds:%.2f", path, loaded, fresh, mism, unused,
         unused ? " (e.g. " : "", ex, unused ? (unused > 6 ? " ...)" : ")") : "", pl_time() - t0);
    if (!loaded)
        rc = pl_fail(PL_EINVAL, "%s: no tensor of the file matches the model (map %s): wrong model.arch/width, or try --map mmdet|mmcls|plain",
                     path, k_map_names[m]);
done:
    free(status);
    free(used);
    pth_state_free(&s);
    // Every rank read the same file: agree on the verdict anyway.
    int bad = rc != 0;
    MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, comm);
    return rc ? rc : bad ? PL_EFORMAT : 0;
}

// ------------------------------------------------------------------------------ mp3d import
// Writes p as an mp3d checkpoint at exactly `out` (through h5ckpt's folder + atomic rename).
static int write_ckpt(const nn_params *p, const pl_cfg *cfg, const char *out, MPI_Comm comm) {
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    char dir[4200], file[4300], latest[4300];
    snprintf(dir, sizeof dir, "%s.import.d", out);
    int np = 0, nb = 0, rc;
    ckpt_tensor *tp = train_ckpt_views(p, NN_PARAM, 0, &np), *tb = train_ckpt_views(p, NN_BUFFER, 0, &nb);
    ckpt_writer *w = NULL;
    if (!tp || !tb) { rc = PL_ENOMEM; goto done; }
    if ((rc = ckpt_writer_open(&w, dir, 0, comm))) goto done;
    if ((rc = ckpt_write_tensors(w, "/params", tp, np))) goto done;
    if (nb && (rc = ckpt_write_tensors(w, "/buffers", tb, nb))) goto done;
    ckpt_state st;
    ckpt_state_init(&st);
    if ((rc = ckpt_write_state(w, &st))) goto done;
    if ((rc = ckpt_write_text(w, "config", cfg_text(cfg)))) goto done;
    if ((rc = ckpt_write_text(w, "imported_from", cfg_str(cfg, "import.from")))) goto done;
    if ((rc = ckpt_write_text(w, "mp3d_version", MP3D_VERSION))) goto done;
    if ((rc = ckpt_write_text(w, "git_commit", MP3D_GIT))) goto done;
    rc = ckpt_writer_commit(w, 0, file, sizeof file);
    w = NULL;
    if (!rc && rank == 0) {
        if (rename(file, out)) rc = pl_fail(PL_EIO, "%s: cannot rename %s to it", out, file);
        snprintf(latest, sizeof latest, "%s/latest", dir);
        unlink(latest);
        rmdir(dir);
    }
    MPI_Bcast(&rc, 1, MPI_INT, 0, comm);
done:
    if (w) {
        ckpt_writer_abort(w);
        if (rank == 0) rmdir(dir);
    }
    free(tp);
    free(tb);
    return rc;
}

int stage_import_run(const pl_cfg *cfg, MPI_Comm comm) {
    if (cfg_require(cfg, "import.from") || cfg_require(cfg, "import.out")) return MP3D_EXIT_USAGE;
    const char *from = cfg_str(cfg, "import.from"), *out = cfg_str(cfg, "import.out"), *task = cfg_str(cfg, "train.task");
    enum map_kind m = MAP_PLAIN;
    if (parse_map(&m, cfg_str(cfg, "import.map"), NULL)) return MP3D_EXIT_USAGE;
    if (!pl_path_exists(from)) { pl_fail(PL_ENOTFOUND, "import.from = \"%s\": no such file", from); return MP3D_EXIT_USAGE; }
    nn_net *net = NULL;
    detector *det = NULL;
    nn_params *p = NULL;
    int rc;
    uint64_t seed = (uint64_t)cfg_int(cfg, "run.seed");
    if (!strcmp(task, "classify")) {
        nn_net_config nc = {0};
        rc = nn_arch_parse(&nc.arch, cfg_str(cfg, "model.arch"));
        nc.width = cfg_float(cfg, "model.width");
        nc.norm = !strcmp(cfg_str(cfg, "model.norm"), "gn") ? NN_NORM_GN : NN_NORM_BN;
        nc.gn_groups = (int)cfg_int(cfg, "model.gn_groups");
        nc.num_classes = (int)cfg_int(cfg, "model.num_classes");
        if (!rc) rc = nn_net_create(&net, &nc, seed);
        if (!rc) p = nn_net_params(net);
    } else {
        det_config dc;
        rc = det_config_from_cfg(&dc, cfg, (int)cfg_int(cfg, "import.depth"));
        if (!rc) rc = detector_create(&det, &dc, seed);
        if (!rc) p = detector_params(det);
    }
    if (rc) { nn_net_destroy(net); detector_destroy(det); return MP3D_EXIT_USAGE; }
    LOG0("import: model:%s task:%s width:%g norm:%s tensors:%d", cfg_str(cfg, "model.arch"), task, cfg_float(cfg, "model.width"),
         cfg_str(cfg, "model.norm"), p->n);
    rc = import_pth_into(p, from, cfg_str(cfg, "import.map"), comm);
    if (!rc) rc = write_ckpt(p, cfg, out, comm);
    if (!rc) LOG0("import: wrote:%s", out);
    nn_net_destroy(net);
    detector_destroy(det);
    return rc ? MP3D_EXIT_FAIL : MP3D_EXIT_OK;
}

// ------------------------------------------------------------------------------ mp3d export
int stage_export_run(const pl_cfg *cfg, MPI_Comm comm) {
    if (cfg_require(cfg, "export.checkpoint") || cfg_require(cfg, "export.out")) return MP3D_EXIT_USAGE;
    enum map_kind m = MAP_PLAIN;
    if (parse_map(&m, cfg_str(cfg, "export.map"), NULL)) return MP3D_EXIT_USAGE;
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    const char *ck = cfg_str(cfg, "export.checkpoint"), *out = cfg_str(cfg, "export.out");
    ckpt_reader *r = NULL;
    ckpt_entry *e[2] = {NULL, NULL};
    int ne[2] = {0, 0}, n = 0;
    ckpt_tensor *t = NULL;
    pth_out *o = NULL;
    char (*names)[CKPT_NAME_MAX + 16] = NULL;
    int rc = ckpt_open(&r, ck, comm, 0);
    static const char *const groups[2] = {"/params", "/buffers"};
    for (int g = 0; g < 2 && !rc; g++) {
        rc = ckpt_list(r, groups[g], &e[g], &ne[g]);
        if (rc == PL_ENOTFOUND && g == 1) rc = 0;
    }
    if (!rc) {
        t = pl_calloc((size_t)(ne[0] + ne[1] + 1), sizeof *t, "export tensors");
        o = pl_calloc((size_t)(ne[0] + ne[1] + 1), sizeof *o, "export list");
        names = pl_calloc((size_t)(ne[0] + ne[1] + 1), sizeof *names, "export names");
        if (!t || !o || !names) rc = PL_ENOMEM;
    }
    for (int g = 0; g < 2 && !rc; g++) {
        ckpt_tensor *tg = t + n;
        for (int i = 0; i < ne[g] && !rc; i++, n++) {
            t[n].name = e[g][i].name;
            t[n].ndim = e[g][i].ndim;
            memcpy(t[n].shape, e[g][i].shape, sizeof t[n].shape);
            int64_t numel = ckpt_tensor_numel(&t[n]);
            t[n].data = pl_malloc(sizeof(float) * (size_t)(numel ? numel : 1), "export tensor");
            if (!t[n].data) rc = PL_ENOMEM;
            unmap_name(names[n], sizeof names[n], e[g][i].name, m);
            o[n].name = names[n];
            o[n].ndim = t[n].ndim;
            o[n].shape = t[n].shape;
            o[n].data = t[n].data;
            o[n].as_int64 = strstr(e[g][i].name, "num_batches_tracked") != NULL;
        }
        if (!rc && ne[g]) rc = ckpt_read_tensors(r, groups[g], tg, ne[g]);
    }
    if (!rc && rank == 0) {
        rc = pth_write(out, o, n);
        if (!rc) LOG0("export: checkpoint:%s wrote:%s tensors:%d map:%s", ck, out, n, k_map_names[m]);
    }
    MPI_Bcast(&rc, 1, MPI_INT, 0, comm);
    for (int i = 0; i < n; i++) free(t[i].data);
    free(t);
    free(o);
    free(names);
    free(e[0]);
    free(e[1]);
    ckpt_close(r);
    return rc ? MP3D_EXIT_FAIL : MP3D_EXIT_OK;
}
