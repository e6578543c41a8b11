// train_curves: metrics.jsonl -> four SVG panels (see train_curves.h).
#include "stages/eval/train_curves.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/strbuf.h"
#include "nn/pl.h"

static int series_push(curve_series *s, double step, double minutes, double v) {
    if (s->n == s->cap) {
        int64_t cap = s->cap ? 2 * s->cap : 64;
        double *a = realloc(s->step, sizeof(double) * (size_t)cap);
        if (!a) return PL_ENOMEM;
        s->step = a;
        if (!(a = realloc(s->minutes, sizeof(double) * (size_t)cap))) return PL_ENOMEM;
        s->minutes = a;
        if (!(a = realloc(s->v, sizeof(double) * (size_t)cap))) return PL_ENOMEM;
        s->v = a;
        s->cap = cap;
    }
    s->step[s->n] = step;
    s->minutes[s->n] = minutes;
    s->v[s->n] = v;
    s->n++;
    return 0;
}

static void series_free(curve_series *s) {
    free(s->step);
    free(s->minutes);
    free(s->v);
    memset(s, 0, sizeof *s);
}

void train_curves_free(train_curves *c) {
    if (!c) return;
    series_free(&c->loss);
    series_free(&c->lr);
    series_free(&c->val);
    series_free(&c->val2);
}

static int num(const cJSON *o, const char *key, double *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(it)) return 0;
    *v = it->valuedouble;
    return 1;
}

int train_curves_read(train_curves *c, const char *path) {
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "r");
    if (!f) return pl_fail(PL_EIO, "%s: cannot read the training metrics", path);
    // the primary / second validation metric: detection (sens_4, mfroc), classification (top1, top5)
    static const char *const k_val[][2] = {{"sens_4", "mfroc"}, {"top1", "top5"}, {"ap", "ap50"}};
    char *line = NULL;
    size_t cap = 0;
    double t0 = NAN;
    int rc = 0;
    while (!rc && getline(&line, &cap, f) > 0) {
        cJSON *o = cJSON_Parse(line);
        if (!cJSON_IsObject(o)) {
            c->bad_lines++;
            cJSON_Delete(o);
            continue;
        }
        const cJSON *stage = cJSON_GetObjectItemCaseSensitive(o, "stage");
        double t = 0, step = 0, v = 0;
        if (cJSON_IsString(stage) && num(o, "time", &t) && num(o, "step", &step) &&
            !cJSON_GetObjectItemCaseSensitive(o, "event")) {
            if (isnan(t0)) t0 = t;
            const double m = (t - t0) / 60.0;
            if (!strcmp(stage->valuestring, "train")) {
                if (num(o, "loss", &v)) rc = series_push(&c->loss, step, m, v);
                if (!rc && num(o, "lr", &v)) rc = series_push(&c->lr, step, m, v);
            } else if (!strcmp(stage->valuestring, "val")) {
                for (int k = 0; k < 3 && !rc; k++) {
                    if (!num(o, k_val[k][0], &v)) continue;
                    if (!c->val_name[0]) {
                        snprintf(c->val_name, sizeof c->val_name, "%s", k_val[k][0]);
                        snprintf(c->val2_name, sizeof c->val2_name, "%s", k_val[k][1]);
                    }
                    if (strcmp(c->val_name, k_val[k][0])) continue;
                    rc = series_push(&c->val, step, m, v);
                    double v2 = 0;
                    if (!rc && num(o, k_val[k][1], &v2)) rc = series_push(&c->val2, step, m, v2);
                    break;
                }
            }
        }
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    if (rc) {
        train_curves_free(c);
        return pl_fail(rc, "%s: out of memory reading the training metrics", path);
    }
    return 0;
}

// ---- drawing -------------------------------------------------------------------------------------
enum { PW = 330, PH = 190, ML = 52, MR = 14, MT = 26, MB = 36, CELLW = ML + PW + MR, CELLH = MT + PH + MB };

// A "nice" tick step (1, 2 or 5 x 10^k) giving about `want` intervals over span.
static double nice_step(double span, int want) {
    if (!(span > 0)) return 1;
    double raw = span / want, p = pow(10.0, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

static void fmt_tick(char *out, size_t cap, double v, double step) {
    if (fabs(v) < 1e-12 * step) v = 0;
    if (step >= 1) snprintf(out, cap, "%.0f", v);
    else if (step >= 0.1) snprintf(out, cap, "%.1f", v);
    else if (step >= 0.01) snprintf(out, cap, "%.2f", v);
    else snprintf(out, cap, "%.1e", v);
}

// One panel at (ox, oy): axes, ticks, labels and up to two series (x from xs, y from ys).
// xspan: the x range at least (so the validation panels span the whole run, not its last val row).
static void panel(strbuf *b, int ox, int oy, const char *title, const char *xlabel, const curve_series *s1,
                  const curve_series *s2, int use_minutes, int unit_y, const char *name1, const char *name2,
                  double xspan) {
    double xmax = xspan, ymax = unit_y ? 1.0 : 0;
    const curve_series *ss[2] = {s1, s2};
    for (int k = 0; k < 2; k++) {
        const curve_series *s = ss[k];
        if (!s) continue;
        const double *xs = use_minutes ? s->minutes : s->step;
        for (int64_t i = 0; i < s->n; i++) {
            if (xs[i] > xmax) xmax = xs[i];
            if (!unit_y && isfinite(s->v[i]) && s->v[i] > ymax) ymax = s->v[i];
        }
    }
    if (!(xmax > 0)) xmax = 1;
    if (!(ymax > 0)) ymax = 1;
    const double xs_step = nice_step(xmax, 5), ys_step = nice_step(ymax, 4);
    xmax = ceil(xmax / xs_step - 1e-9) * xs_step;
    ymax = unit_y ? 1.0 : ceil(ymax / ys_step - 1e-9) * ys_step;
    const int L = ox + ML, T = oy + MT;
    sb_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"13\" font-weight=\"bold\">", L, oy + 16);
    sb_puts(b, title);
    sb_puts(b, "</text>\n");
    sb_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#888\"/>\n", L, T, PW, PH);
    for (double v = 0; v <= xmax + 1e-9 * xmax; v += xs_step) {
        const double x = L + PW * v / xmax;
        char t[32];
        fmt_tick(t, sizeof t, v, xs_step);
        sb_printf(b, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#eee\"/>"
                     "<text x=\"%.1f\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">%s</text>\n",
                  x, T, x, T + PH, x, T + PH + 13, t);
    }
    const double ystep = unit_y ? 0.2 : ys_step;
    for (double v = 0; v <= ymax + 1e-9 * ymax; v += ystep) {
        const double y = T + PH * (1 - v / ymax);
        char t[32];
        fmt_tick(t, sizeof t, v, ystep);
        sb_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#eee\"/>"
                     "<text x=\"%d\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%s</text>\n",
                  L, y, L + PW, y, L - 4, y + 3.5, t);
    }
    sb_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%s</text>\n", L + PW / 2,
              T + PH + 28, xlabel);
    static const char *const col[2] = {"#1f5fbf", "#d9534f"};
    const char *names[2] = {name1, name2};
    for (int k = 0; k < 2; k++) {
        const curve_series *s = ss[k];
        if (!s || s->n == 0) continue;
        const double *xs = use_minutes ? s->minutes : s->step;
        sb_printf(b, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"1.6\" d=\"", col[k]);
        int pen = 0;
        for (int64_t i = 0; i < s->n; i++) {
            if (!isfinite(s->v[i])) { pen = 0; continue; }
            double y = PL_CLAMP(s->v[i], 0.0, ymax);
            sb_printf(b, "%c%.1f %.1f ", pen ? 'L' : 'M', L + PW * xs[i] / xmax, T + PH * (1 - y / ymax));
            pen = 1;
        }
        sb_puts(b, "\"/>\n");
        if (s->n <= 40)
            for (int64_t i = 0; i < s->n; i++)
                if (isfinite(s->v[i]))
                    sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.2\" fill=\"%s\"/>\n", L + PW * xs[i] / xmax,
                              T + PH * (1 - PL_CLAMP(s->v[i], 0.0, ymax) / ymax), col[k]);
        if (names[k]) {
            // legend: the last value beside the name
            sb_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"11\" fill=\"%s\" text-anchor=\"end\">%s %.4g</text>\n",
                      L + PW - 4, T + 14 + 13 * k, col[k], names[k], s->v[s->n - 1]);
        }
    }
}

int train_curves_svg(char **out, const train_curves *c, const char *title) {
    *out = NULL;
    strbuf b = {0};
    const int top = title ? 22 : 0, W = 2 * CELLW, H = 2 * CELLH + top;
    sb_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                  "font-family=\"sans-serif\">\n<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n",
              W, H, W, H, W, H);
    if (title) {
        sb_puts(&b, "<text x=\"8\" y=\"16\" font-size=\"14\">");
        for (const char *p = title; *p; p++) {
            if (*p == '<') sb_puts(&b, "&lt;");
            else if (*p == '&') sb_puts(&b, "&amp;");
            else sb_put(&b, p, 1);
        }
        sb_puts(&b, "</text>\n");
    }
    const char *vn = c->val_name[0] ? c->val_name : "validation";
    const char *v2 = c->val2.n ? c->val2_name : NULL;
    char vt[96];
    snprintf(vt, sizeof vt, "validation %s against step", vn);
    const double steps = c->loss.n ? c->loss.step[c->loss.n - 1] : 0, mins = c->loss.n ? c->loss.minutes[c->loss.n - 1] : 0;
    panel(&b, 0, top, "training loss against step", "step", &c->loss, NULL, 0, 0, "loss", NULL, 0);
    panel(&b, CELLW, top, "learning rate against step", "step", &c->lr, NULL, 0, 0, "lr", NULL, 0);
    panel(&b, 0, top + CELLH, vt, "step", &c->val, c->val2.n ? &c->val2 : NULL, 0, 1, vn, v2, steps);
    snprintf(vt, sizeof vt, "validation %s against wall time", vn);
    panel(&b, CELLW, top + CELLH, vt, "minutes since the run started", &c->val, c->val2.n ? &c->val2 : NULL, 1, 1, vn,
          v2, mins);
    if (c->val.n == 0)
        sb_printf(&b, "<text x=\"%d\" y=\"%d\" font-size=\"12\" fill=\"#888\">no validation rows in the metrics</text>\n",
                  ML + 20, top + CELLH + MT + PH / 2);
    sb_puts(&b, "</svg>\n");
    if (b.err) {
        sb_free(&b);
        return PL_ENOMEM;
    }
    *out = b.p;
    return 0;
}
