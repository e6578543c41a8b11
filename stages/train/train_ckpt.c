// train_ckpt: nn_params <-> io/h5ckpt. Groups: /params (trainable, PyTorch names), /buffers
// (BatchNorm running statistics, num_batches_tracked), /optim/momentum (SGD buffers, same names).
#include "stages/train/train_ckpt.h"

#include <stdlib.h>
#include <string.h>

#include "io/fileio.h"
#include "mp3d_git.h"   // MP3D_GIT, written at build time
#include "io/h5ckpt.h"
#include "nn/pl.h"
#include "stages/train/import.h"


// Tensor views of one kind of entry; `momentum` selects the momentum buffer of NN_PARAMs.
ckpt_tensor *train_ckpt_views(const nn_params *p, enum nn_param_kind kind, int momentum, int *n) {
    ckpt_tensor *t = pl_calloc((size_t)(p->n ? p->n : 1), sizeof *t, "checkpoint views");
    *n = 0;
    if (!t) return NULL;
    for (int i = 0; i < p->n; i++) {
        const nn_param_info *e = &p->info[i];
        if (e->kind != kind) continue;
        ckpt_tensor *v = &t[(*n)++];
        v->name = e->name;
        v->ndim = e->ndim;
        for (int d = 0; d < e->ndim; d++) v->shape[d] = e->shape[d];
        v->data = kind == NN_BUFFER ? p->buffers + e->offset : (momentum ? p->momentum : p->params) + e->offset;
    }
    return t;
}

int train_ckpt_save(const train_state *st, const nn_params *p, const pl_cfg *cfg, MPI_Comm comm) {
    const char *dir = cfg_str(cfg, "output.dir");
    ckpt_writer *w = NULL;
    int np = 0, nb = 0, nm = 0, rc;
    ckpt_tensor *tp = train_ckpt_views(p, NN_PARAM, 0, &np), *tb = train_ckpt_views(p, NN_BUFFER, 0, &nb), *tm = train_ckpt_views(p, NN_PARAM, 1, &nm);
    // Every rank learns of a failed allocation before the collective open (issue 16).
    rc = !tp || !tb || !tm ? PL_ENOMEM : 0;
    MPI_Allreduce(MPI_IN_PLACE, &rc, 1, MPI_INT, MPI_MIN, comm);
    if (rc) goto done;
    if ((rc = ckpt_writer_open(&w, dir, st->step, comm))) goto done;
    if ((rc = ckpt_write_tensors(w, "/params", tp, np))) goto done;
    if (nb && (rc = ckpt_write_tensors(w, "/buffers", tb, nb))) goto done;
    if ((rc = ckpt_write_tensors(w, "/optim/momentum", tm, nm))) goto done;
    ckpt_state s;
    ckpt_state_init(&s);
    s.step = st->step;
    if ((rc = ckpt_write_state(w, &s))) goto done;
    if ((rc = ckpt_write_text(w, "config", cfg_text(cfg)))) goto done;
    if ((rc = ckpt_write_text(w, "mp3d_version", MP3D_VERSION))) goto done;
    if ((rc = ckpt_write_text(w, "git_commit", MP3D_GIT))) goto done;
    rc = ckpt_writer_commit(w, (int)cfg_int(cfg, "train.ckpt_keep"), NULL, 0);
    w = NULL;
done:
    if (w) ckpt_writer_abort(w);
    free(tp);
    free(tb);
    free(tm);
    return rc;
}

// The parts of a model a transfer reports on, by parameter-name prefix (the rest is the backbone).
enum { INIT_BACKBONE, INIT_GTM, INIT_NECK, INIT_RPN, INIT_ROI, INIT_NGROUPS };
static const char *const k_init_groups[INIT_NGROUPS] = {"backbone", "gtm", "neck", "rpn_head", "roi_head"};
static int init_group(const char *name) {
    for (int g = 1; g < INIT_NGROUPS; g++) {
        size_t n = strlen(k_init_groups[g]);
        if (!strncmp(name, k_init_groups[g], n) && name[n] == '.') return g;
    }
    return INIT_BACKBONE;
}

// model.init_from: parameters (and buffers) by name; momentum starts fresh.
static int init_from(nn_params *p, const char *path, MPI_Comm comm) {
    ckpt_reader *r = NULL;
    int rc = ckpt_open(&r, path, comm, 0);
    if (rc) return rc;
    int np = 0, nb = 0;
    ckpt_tensor *tp = train_ckpt_views(p, NN_PARAM, 0, &np), *tb = train_ckpt_views(p, NN_BUFFER, 0, &nb);
    int *sp = pl_calloc((size_t)(np + 1), sizeof(int), "status"), *sb = pl_calloc((size_t)(nb + 1), sizeof(int), "status");
    ckpt_match_report rp = {0}, rb = {0};
    if (!tp || !tb || !sp || !sb) { rc = PL_ENOMEM; goto done; }
    if ((rc = ckpt_read_matching(r, "/params", tp, np, sp, &rp))) goto done;
    if (nb && ckpt_read_matching(r, "/buffers", tb, nb, sb, &rb) == 0) { /* buffers are optional */ }
    for (int i = 0; i < np; i++)
        if (sp[i] != CKPT_LOADED)
            LOG0("init_from: %s %s", tp[i].name, sp[i] == CKPT_ABSENT ? "absent: kept its fresh initialisation" : "shape differs: kept its fresh initialisation");
    // Per part of the model: what came from the file and what starts fresh (a detector's GTM
    // is new when the source was trained on another input depth, e.g. 3 VDT slices vs 9 CT slices).
    for (int g = 0; g < INIT_NGROUPS; g++) {
        int total = 0, loaded = 0, absent = 0, shape = 0;
        for (int i = 0; i < np; i++) {
            if (init_group(tp[i].name) != g) continue;
            total++;
            loaded += sp[i] == CKPT_LOADED;
            absent += sp[i] == CKPT_ABSENT;
            shape += sp[i] == CKPT_SHAPE_MISMATCH;
        }
        if (total)
            LOG0("init_from: part:%s tensors:%d loaded:%d new:%d%s", k_init_groups[g], total, loaded, total - loaded,
                 loaded == total ? "" : shape && !absent ? " (shape differs)" : absent && !shape ? " (absent from the file)" : " (absent or shape differs)");
    }
    LOG0("init_from: file:%s loaded:%d absent:%d shape_mismatch:%d unused_in_file:%d buffers_loaded:%d",
         path, rp.loaded, rp.absent, rp.mismatched, rp.unused, rb.loaded);
done:
    free(tp);
    free(tb);
    free(sp);
    free(sb);
    ckpt_close(r);
    return rc;
}

int train_ckpt_resume(train_state *st, nn_params *p, const pl_cfg *cfg, MPI_Comm comm) {
    memset(st, 0, sizeof *st);
    int size = 1;
    MPI_Comm_size(comm, &size);
    st->world_size = size;
    ckpt_reader *r = NULL;
    int skipped = 0;
    int rc = ckpt_open_latest(&r, cfg_str(cfg, "output.dir"), comm, &skipped);
    if (rc == PL_ENOTFOUND) {
        const char *src = cfg_str(cfg, "model.init_from");
        char file[4096];
        if (src[0]) {
            rc = train_ckpt_resolve(file, sizeof file, src, comm);
            size_t fl = strlen(file);
            int pth = (fl > 4 && !strcmp(file + fl - 4, ".pth")) || (fl > 3 && !strcmp(file + fl - 3, ".pt"));
            if (!rc) rc = pth ? import_pth_into(p, file, cfg_str(cfg, "import.map"), comm) : init_from(p, file, comm);
            if (rc) return rc;
        }
        return 0;
    }
    if (rc) return rc;
    if (skipped) LOG0("resume: skipped %d invalid newer checkpoint(s) (see warnings above)", skipped);
    int np = 0, nb = 0, nm = 0;
    ckpt_tensor *tp = train_ckpt_views(p, NN_PARAM, 0, &np), *tb = train_ckpt_views(p, NN_BUFFER, 0, &nb), *tm = train_ckpt_views(p, NN_PARAM, 1, &nm);
    ckpt_state s;
    if (!tp || !tb || !tm) { rc = PL_ENOMEM; goto done; }
    if ((rc = ckpt_read_tensors(r, "/params", tp, np))) goto done;
    if (nb && (rc = ckpt_read_tensors(r, "/buffers", tb, nb))) goto done;
    if ((rc = ckpt_read_tensors(r, "/optim/momentum", tm, nm))) goto done;
    if ((rc = ckpt_read_state(r, &s))) goto done;
    // Say so when the run resumes under settings other than those the checkpoint was written
    // with (a changed schedule continues from the stored step with the new settings).
    char *old = NULL;
    pl_cfg *oc = NULL;
    if (ckpt_read_text(r, "config", &old) == 0 && cfg_load_text(&oc, old, "checkpoint config", NULL, 0) == 0) {
        char diff[1024] = "";
        size_t len = 0;
        static const char *const skip[] = {"train.max_minutes", "train.ckpt_every", "train.ckpt_keep", "train.val_every",
                                           "train.check_every", "train.threads", "train.bucket_mb"};
        for (int i = 0; i < cfg_schema_len; i++) {
            const char *k = cfg_schema[i].key;
            if (strncmp(k, "train.", 6) && strncmp(k, "model.", 6)) continue;
            int skipped_key = 0;
            for (size_t j = 0; j < sizeof skip / sizeof skip[0]; j++) skipped_key |= !strcmp(k, skip[j]);
            if (skipped_key || cfg_hash(oc, k) == cfg_hash(cfg, k)) continue;
            if (len + strlen(k) + 2 < sizeof diff) len += (size_t)snprintf(diff + len, sizeof diff - len, "%s%s", len ? "," : "", k);
        }
        if (len) LOG0("resume: WARN the newest checkpoint was written with other values of: %s (training continues from its step with the current values; use a new output.dir to start afresh)", diff);
    }
    cfg_destroy(oc);
    free(old);
    st->step = s.step;
    st->world_size = (int)s.world_size;
    snprintf(st->from, sizeof st->from, "ckpt_%08lld.h5", (long long)s.step);
    rc = 1;
done:
    free(tp);
    free(tb);
    free(tm);
    ckpt_close(r);
    return rc;
}

int train_ckpt_read_config(const char *path, MPI_Comm comm, char **text) {
    *text = NULL;
    ckpt_reader *r = NULL;
    int rc = ckpt_open(&r, path, comm, 0);
    if (!rc) rc = ckpt_read_text(r, "config", text);
    ckpt_close(r);
    return rc;
}

int train_ckpt_load_weights(nn_params *p, const char *path, MPI_Comm comm) {
    ckpt_reader *r = NULL;
    int rc = ckpt_open(&r, path, comm, 0);
    if (rc) return rc;
    int np = 0, nb = 0;
    ckpt_tensor *tp = train_ckpt_views(p, NN_PARAM, 0, &np), *tb = train_ckpt_views(p, NN_BUFFER, 0, &nb);
    if (!tp || !tb) rc = PL_ENOMEM;
    if (!rc) rc = ckpt_read_tensors(r, "/params", tp, np);
    if (!rc && nb) rc = ckpt_read_tensors(r, "/buffers", tb, nb);
    free(tp);
    free(tb);
    ckpt_close(r);
    return rc;
}

int train_ckpt_resolve(char *out, size_t cap, const char *path, MPI_Comm comm) {
    if (!pl_path_is_dir(path)) {
        if (snprintf(out, cap, "%s", path) >= (int)cap) return pl_fail(PL_ERANGE, "%s: path too long", path);
        return 0;
    }
    ckpt_reader *r = NULL;
    int rc = ckpt_open_latest(&r, path, comm, NULL);
    if (rc == PL_ENOTFOUND) return pl_fail(PL_ENOTFOUND, "%s: no checkpoint in this folder", path);
    if (rc) return rc;
    if (snprintf(out, cap, "%s", ckpt_reader_path(r)) >= (int)cap) rc = pl_fail(PL_ERANGE, "%s: path too long", path);
    ckpt_close(r);
    return rc;
}
