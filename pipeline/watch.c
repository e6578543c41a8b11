// watch: the follow stage of `mp3d run` — an evaluation group scoring each new checkpoint of a
// training stage while it trains (the behaviour is described in pipeline/runner.c's file comment,
// "Follow (\"watch\") stage").
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "io/fileio.h"
#include "nn/pl.h"
#include "pipeline/runner.h"
#include "stages/stages.h"

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
int run_watch(const plan *P, int i, MPI_Comm gcomm) {
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

