// froc_report: the evaluation report under output.dir/report/: report.md and a self-contained
// report.html (inline CSS, inline SVG, overlays as data: URIs), froc.svg, froc.json,
// per_lesion.csv, per_detection.csv and overlay PNGs of missed lesions and top false positives
// drawn on the key slice (read from Images_png_*.zip) with a small built-in bitmap font.
#include "stages/eval/froc_report.h"

#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "io/archive.h"
#include "io/fileio.h"
#include "io/strbuf.h"
#include "io/image.h"
#include "nn/pl.h"

// Windows (width, level) in HU: soft tissue W400 L40, lung W1500 L-600 (radiology defaults).
static const double k_soft_w = 400, k_soft_l = 40, k_lung_w = 1500, k_lung_l = -600;
static const int k_lung_type = 5;          // Coarse_lesion_type 5 = lung
static const int k_oper_level = 3;         // froc_levels[3] = 4 FP/image: "missed" means not found there
static const int k_max_dets_drawn = 10;    // per overlay, highest scores first
static const int k_hu_offset = 32768;      // DeepLesion PNG value = HU + 32768

// ---------------------------------------------------------------------------------------
// growing text buffer

// XML/HTML text escaping.
static void sb_xml(strbuf *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '<': sb_puts(b, "&lt;"); break;
        case '>': sb_puts(b, "&gt;"); break;
        case '&': sb_puts(b, "&amp;"); break;
        case '"': sb_puts(b, "&quot;"); break;
        default: sb_put(b, s, 1);
        }
    }
}

static void sb_json_str(strbuf *b, const char *s) {
    sb_puts(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            sb_put(b, "\\", 1);
            sb_put(b, s, 1);
        } else if (c < 0x20) {
            sb_printf(b, "\\u%04x", c);
        } else {
            sb_put(b, s, 1);
        }
    }
    sb_puts(b, "\"");
}

static void sb_json_num(strbuf *b, double v) {
    if (isfinite(v)) sb_printf(b, "%.6g", v);
    else sb_puts(b, "null");
}

static void sb_base64(strbuf *b, const uint8_t *d, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char q[4];
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16;
        if (i + 1 < n) v |= (uint32_t)d[i + 1] << 8;
        if (i + 2 < n) v |= d[i + 2];
        q[0] = tab[(v >> 18) & 63];
        q[1] = tab[(v >> 12) & 63];
        q[2] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        q[3] = i + 2 < n ? tab[v & 63] : '=';
        sb_put(b, q, 4);
    }
}

static int sb_write(const strbuf *b, const char *dir, const char *name) {
    if (b->err) return b->err;
    char path[1024];
    int rc = pl_path_join(path, sizeof path, dir, name);
    if (rc) return rc;
    return pl_write_file_atomic(path, b->p ? b->p : "", b->n);
}

// "79.6" (percent, one decimal) or "n/a".
static void fmt_pct(char *out, size_t cap, double v) {
    if (isfinite(v)) snprintf(out, cap, "%.1f", 100.0 * v);
    else snprintf(out, cap, "n/a");
}
// "79.6 [77.1, 82.0]" when the interval exists.
static void fmt_pct_ci(char *out, size_t cap, double v, double lo, double hi) {
    if (!isfinite(v)) snprintf(out, cap, "n/a");
    else if (isfinite(lo) && isfinite(hi)) snprintf(out, cap, "%.1f [%.1f, %.1f]", 100 * v, 100 * lo, 100 * hi);
    else snprintf(out, cap, "%.1f", 100 * v);
}

static const char *rule_name(enum froc_fp_rule r) { return r == FROC_FP_FIRST_AT ? "first_at" : "before_next"; }
static const char *split_name(int s) {
    static const char *const n[4] = {"all", "train", "val", "test"};
    return s >= 0 && s <= 3 ? n[s] : "?";
}

// ---------------------------------------------------------------------------------------
// curve helpers

// First rank whose cumulative FP count ends each level (n_det when never): ranks below it count.
static void level_ranks(int64_t *out, const froc_set *s, const froc_eval *ev) {
    for (int k = 0; k < FROC_NLEVELS; k++)
        out[k] = froc_level_rank(ev->all.fp, ev->all.n_dets, s->n_images, froc_levels[k], ev->opts.fp_rule);
}

// ---------------------------------------------------------------------------------------
// SVG

static const double k_xmin_log2 = -3, k_xmax_log2 = 4;   // 0.125 .. 16 FP/image

static double svg_x(double f, double x0, double pw) {
    double l = f > 0 ? log2(f) : k_xmin_log2;
    l = PL_CLAMP(l, k_xmin_log2, k_xmax_log2);
    return x0 + (l - k_xmin_log2) / (k_xmax_log2 - k_xmin_log2) * pw;
}

static void svg_body(strbuf *b, const froc_set *s, const froc_eval *ev) {
    const double W = 640, H = 440, L = 70, R = 30, T = 44, B = 62;
    const double pw = W - L - R, ph = H - T - B;
    const froc_curve *c = &ev->all;
    sb_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
                 "font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n", W, H, W, H);
    sb_printf(b, "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#ffffff\"/>\n", W, H);
    sb_printf(b, "<text x=\"%.0f\" y=\"20\" font-size=\"15\" font-weight=\"bold\">FROC: %lld lesions on %lld images, "
                 "mFROC %.1f%%</text>\n", L, (long long)c->n_lesions, (long long)c->n_images,
              isfinite(c->mfroc) ? 100 * c->mfroc : 0.0);
    sb_printf(b, "<text x=\"%.0f\" y=\"36\" font-size=\"11\" fill=\"#555\">IoU %s %.2f, noisy %s, %s rule, split %s</text>\n",
              L, ev->opts.iou_plus1 ? "+1 &#8805;" : "continuous &#8805;", ev->opts.iou,
              ev->opts.keep_noisy ? "kept" : "excluded", rule_name(ev->opts.fp_rule), split_name(ev->opts.split));
    // grid and axes
    for (int e = (int)k_xmin_log2; e <= (int)k_xmax_log2; e++) {
        double f = ldexp(1.0, e), x = svg_x(f, L, pw);
        sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", x, T, x, T + ph);
        sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", x, T + ph + 16, f);
    }
    for (int i = 0; i <= 10; i++) {
        double y = T + ph * (1 - i / 10.0);
        sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, y, L + pw, y);
        sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.1f</text>\n", L - 6, y + 4, i / 10.0);
    }
    sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", L, T, pw, ph);
    sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">False positives per image (log scale)</text>\n",
              L + pw / 2, H - 18);
    sb_printf(b, "<text x=\"16\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 16 %.1f)\">Sensitivity</text>\n",
              T + ph / 2, T + ph / 2);
    // the curve: sensitivity before the next FP as a staircase (points only where it changes)
    if (s->n_images > 0 && c->n_lesions > 0) {
        double N = (double)s->n_images, Lz = (double)c->n_lesions;
        sb_puts(b, "<path fill=\"none\" stroke=\"#c0392b\" stroke-width=\"2\" d=\"");
        int64_t T0 = 0, F = 0;
        int64_t i = 0;
        while (i < c->n_dets && !c->is_fp[i]) T0 = c->tp[i++];
        sb_printf(b, "M%.1f %.1f", svg_x(0, L, pw), T + ph * (1 - T0 / Lz));
        int64_t last = T0;
        for (; i < c->n_dets; i++) {
            if (c->is_fp[i]) {
                F = c->fp[i];
                if (F / N > 16) break;
            } else if (c->tp[i] != last) {
                sb_printf(b, " H%.1f V%.1f", svg_x(F / N, L, pw), T + ph * (1 - c->tp[i] / Lz));
                last = c->tp[i];
            }
        }
        sb_printf(b, " H%.1f\"/>\n", svg_x(PL_MIN(F / N, 16.0), L, pw));
        if (F / N < 16)   // past the last detection the sensitivity stays where it ended
            sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#c0392b\" "
                         "stroke-dasharray=\"4 4\"/>\n", svg_x(F / N, L, pw), T + ph * (1 - last / Lz),
                      L + pw, T + ph * (1 - last / Lz));
        // standard levels with their CIs
        for (int k = 0; k < FROC_NLEVELS; k++) {
            double x = svg_x(froc_levels[k], L, pw), y = T + ph * (1 - c->sens[k]);
            if (ev->ci.reps > 0 && isfinite(ev->ci.lo[k])) {
                sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1f4e79\" stroke-width=\"1.5\"/>\n",
                          x, T + ph * (1 - ev->ci.lo[k]), x, T + ph * (1 - ev->ci.hi[k]));
            }
            sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"#1f4e79\"/>\n", x, y);
            sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"%s\" fill=\"#1f4e79\">%.1f</text>\n",
                      x + (k == FROC_NLEVELS - 1 ? -6 : 6), y + 16, k == FROC_NLEVELS - 1 ? "end" : "start",
                      100 * c->sens[k]);
        }
    } else {
        sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">no lesions to score</text>\n", L + pw / 2, T + ph / 2);
    }
    sb_puts(b, "</svg>\n");
}

int froc_svg(char **out, const froc_set *s, const froc_eval *ev) {
    strbuf b = {0};
    sb_puts(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    svg_body(&b, s, ev);
    if (b.err) {
        free(b.p);
        return b.err;
    }
    *out = b.p;
    return 0;
}

// ---------------------------------------------------------------------------------------
// JSON

static void json_levels(strbuf *b, const double *v) {
    sb_puts(b, "{");
    for (int k = 0; k < FROC_NLEVELS; k++) {
        sb_printf(b, "%s\"%g\":", k ? "," : "", froc_levels[k]);
        sb_json_num(b, v[k]);
    }
    sb_puts(b, "}");
}

static void json_ci(strbuf *b, const froc_ci *ci) {
    sb_printf(b, "{\"reps\":%d,\"sens\":{", ci->reps);
    for (int k = 0; k < FROC_NLEVELS; k++) {
        sb_printf(b, "%s\"%g\":[", k ? "," : "", froc_levels[k]);
        sb_json_num(b, ci->lo[k]);
        sb_puts(b, ",");
        sb_json_num(b, ci->hi[k]);
        sb_puts(b, "]");
    }
    sb_puts(b, "},\"mfroc\":[");
    sb_json_num(b, ci->lo[FROC_NLEVELS]);
    sb_puts(b, ",");
    sb_json_num(b, ci->hi[FROC_NLEVELS]);
    sb_puts(b, "]}");
}

int froc_json(char **out, const froc_set *s, const froc_eval *ev) {
    strbuf b = {0};
    const froc_curve *c = &ev->all;
    sb_printf(&b, "{\"n_images\":%lld,\"n_lesions\":%lld,\"n_detections\":%lld,\"n_detections_outside\":%lld,\"sens\":",
              (long long)s->n_images, (long long)c->n_lesions, (long long)s->n_det, (long long)s->n_det_outside);
    json_levels(&b, c->sens);
    sb_puts(&b, ",\"mfroc\":");
    sb_json_num(&b, c->mfroc);
    sb_puts(&b, ",\"ap50\":");
    sb_json_num(&b, ev->ap50);
    sb_puts(&b, ",\"ci\":");
    json_ci(&b, &ev->ci);
    sb_printf(&b, ",\"conventions\":{\"iou\":%g,\"iou_plus1\":%s,\"noisy\":\"%s\",\"fp_rule\":\"%s\",\"split\":\"%s\","
                  "\"ties\":\"score desc, File_name asc, input order\",\"ap\":\"COCO 101-point, one-to-one\"}",
              ev->opts.iou, ev->opts.iou_plus1 ? "true" : "false", ev->opts.keep_noisy ? "keep" : "exclude",
              rule_name(ev->opts.fp_rule), split_name(ev->opts.split));
    sb_puts(&b, ",\"groups\":[");
    for (int k = 0; k < FROC_NGROUPS; k++) {
        const froc_group *g = &ev->groups[k];
        sb_printf(&b, "%s{\"name\":", k ? "," : "");
        sb_json_str(&b, g->name);
        sb_printf(&b, ",\"kind\":\"%s\",\"n_lesions\":%lld,\"sens\":", g->kind, (long long)g->n_lesions);
        json_levels(&b, g->sens);
        sb_puts(&b, ",\"mfroc\":");
        sb_json_num(&b, g->mfroc);
        sb_puts(&b, ",\"ci\":");
        json_ci(&b, &g->ci);
        sb_puts(&b, "}");
    }
    sb_printf(&b, "],\"seconds\":%.4f}\n", ev->seconds);
    if (b.err) {
        free(b.p);
        return b.err;
    }
    *out = b.p;
    return 0;
}

// ---------------------------------------------------------------------------------------
// per-lesion and per-detection CSVs

static int write_per_lesion(const char *dir, const froc_set *s, const froc_eval *ev, const int64_t *lr) {
    const froc_curve *c = &ev->all;
    strbuf b = {0};
    sb_puts(&b, "File_name,line,x1,y1,x2,y2,type,type_name,long_mm,slice_mm,noisy,found,found_rank,found_score,"
                "found_fp_per_image,found_at_level,best_iou\n");
    for (int64_t i = 0; i < s->n_images; i++) {
        const froc_image *im = &s->images[i];
        for (int64_t j = im->gt0; j < im->gt0 + im->ngt; j++) {
            const froc_gt *g = &s->gt[j];
            int64_t r = c->found_by[j];
            char lvl[16] = "missed";
            for (int k = 0; k < FROC_NLEVELS && r >= 0; k++)
                if (r < lr[k]) {
                    snprintf(lvl, sizeof lvl, "%g", froc_levels[k]);
                    break;
                }
            if (r >= 0 && strcmp(lvl, "missed") == 0) snprintf(lvl, sizeof lvl, ">16");
            sb_printf(&b, "%s,%d,%g,%g,%g,%g,%d,%s,%.2f,%.2f,%d,%d,%lld,", im->name, g->line, g->box[0], g->box[1],
                      g->box[2], g->box[3], g->type, froc_type_name(g->type), g->long_mm, g->slice_mm, g->noisy,
                      r >= 0, (long long)(r >= 0 ? r + 1 : -1));
            if (r >= 0) sb_printf(&b, "%.6g,%.4f,", s->det[r].score, (double)c->fp[r] / (double)s->n_images);
            else sb_puts(&b, ",,");
            sb_printf(&b, "%s,%.4f\n", lvl, c->gt_best_iou[j]);
        }
    }
    int rc = sb_write(&b, dir, "per_lesion.csv");
    free(b.p);
    return rc;
}

static int write_per_detection(const char *dir, const froc_set *s, const froc_eval *ev) {
    const froc_curve *c = &ev->all;
    strbuf b = {0};
    sb_puts(&b, "rank,File_name,x1,y1,x2,y2,score,outcome,new_hits,best_iou,fp_per_image,sensitivity,input_line\n");
    for (int64_t i = 0; i < s->n_det; i++) {
        const froc_sdet *d = &s->det[i];
        const char *oc = c->is_fp[i] ? "FP" : c->new_hits[i] ? "TP" : "dup";
        sb_printf(&b, "%lld,%s,%.10g,%.10g,%.10g,%.10g,%.10g,%s,%d,%.4f,%.6g,%.6g,%lld\n", (long long)i + 1,
                  s->images[d->image].name, d->box[0], d->box[1], d->box[2], d->box[3], d->score, oc,
                  (int)c->new_hits[i], c->best_iou[i], (double)c->fp[i] / (double)PL_MAX(s->n_images, 1),
                  c->n_lesions ? (double)c->tp[i] / (double)c->n_lesions : NAN, (long long)d->line);
    }
    int rc = sb_write(&b, dir, "per_detection.csv");
    free(b.p);
    return rc;
}

// ---------------------------------------------------------------------------------------
// overlays: window, rectangles, a 5x7 bitmap font

void froc_window_gray(uint8_t *out, const uint16_t *px, int64_t n, double width, double level) {
    double lo = level - width / 2;
    for (int64_t i = 0; i < n; i++) {
        double hu = (double)px[i] - k_hu_offset;
        double v = (hu - lo) / width * 255.0;
        out[i] = (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : (int)(v + 0.5));
    }
}

static void put_px(uint8_t *rgb, int w, int h, int x, int y, const uint8_t *col) {
    if (x < 0 || y < 0 || x >= w || y >= h) return;
    uint8_t *p = rgb + ((size_t)y * (size_t)w + (size_t)x) * 3;
    p[0] = col[0], p[1] = col[1], p[2] = col[2];
}

// box in 1-based pixel coordinates (DL_info's convention): pixel (x-1, y-1) of the buffer.
void froc_draw_rect(uint8_t *rgb, int w, int h, const double *box, const uint8_t *color, int thick) {
    int x1 = (int)lround(box[0]) - 1, y1 = (int)lround(box[1]) - 1;
    int x2 = (int)lround(box[2]) - 1, y2 = (int)lround(box[3]) - 1;
    for (int t = 0; t < thick; t++) {
        for (int x = x1 - t; x <= x2 + t; x++) {
            put_px(rgb, w, h, x, y1 - t, color);
            put_px(rgb, w, h, x, y2 + t, color);
        }
        for (int y = y1 - t; y <= y2 + t; y++) {
            put_px(rgb, w, h, x1 - t, y, color);
            put_px(rgb, w, h, x2 + t, y, color);
        }
    }
}

// 5x7 glyphs, rows top to bottom, '#' = ink. Lower-case letters draw as upper case.
static const struct {
    char c;
    const char *rows;   // 35 chars
} k_font[] = {
    {'0', ".###.#...##..###.#.###..##...#.###."}, {'1', "..#...##....#....#....#....#...###."},
    {'2', ".###.#...#....#...#...#...#...#####"}, {'3', "####.....#....#.###.....#....#####."},
    {'4', "...#...##..#.#.#..#.#####...#....#."}, {'5', "######....####.....#....##...#.###."},
    {'6', "..##..#...#....####.#...##...#.###."}, {'7', "#####....#...#...#...#....#....#..."},
    {'8', ".###.#...##...#.###.#...##...#.###."}, {'9', ".###.#...##...#.####....#...#..##.."},
    {'A', ".###.#...##...#######...##...##...#"}, {'B', "####.#...##...#####.#...##...#####."},
    {'C', ".###.#...##....#....#....#...#.###."}, {'D', "###..#..#.#...##...##...##..#.###.."},
    {'E', "######....#....####.#....#....#####"}, {'F', "######....#....####.#....#....#...."},
    {'G', ".###.#...##....#.####...##...#.####"}, {'H', "#...##...##...#######...##...##...#"},
    {'I', ".###...#....#....#....#....#...###."}, {'J', "..###...#....#....#....##..#..##..."},
    {'K', "#...##..#.#.#..##...#.#..#..#.#...#"}, {'L', "#....#....#....#....#....#....#####"},
    {'M', "#...###.###.#.##.#.##...##...##...#"}, {'N', "#...##...###..##.#.##..###...##...#"},
    {'O', ".###.#...##...##...##...##...#.###."}, {'P', "####.#...##...#####.#....#....#...."},
    {'Q', ".###.#...##...##...##.#.##..#..##.#"}, {'R', "####.#...##...#####.#.#..#..#.#...#"},
    {'S', ".#####....#.....###.....#....#####."}, {'T', "#####..#....#....#....#....#....#.."},
    {'U', "#...##...##...##...##...##...#.###."}, {'V', "#...##...##...##...##...#.#.#...#.."},
    {'W', "#...##...##...##.#.##.#.##.#.#.#.#."}, {'X', "#...##...#.#.#...#...#.#.#...##...#"},
    {'Y', "#...##...#.#.#...#....#....#....#.."}, {'Z', "#####....#...#...#...#...#....#####"},
    {'.', "..........................##...##.."}, {'-', "...............#####..............."},
    {':', ".....##...##.........##...##......."}, {'/', "....#...#....#...#...#....#...#...."},
    {'=', "..........#####.....#####.........."}, {'%', "##...##..#...#...#...#...#..##...##"},
    {'_', "..............................#####"}, {'#', ".#.#..#.#.#####.#.#.#####.#.#..#.#."},
    {'<', "...#...#...#...#.....#.....#.....#."}, {'>', ".#.....#.....#.....#...#...#...#..."},
    {'(', "...#...#...#....#....#.....#.....#."}, {')', ".#.....#.....#....#....#...#...#..."},
    {'+', ".......#....#..#####..#....#......."}, {',', "....................##....#...#...."},
    {'@', ".###.#...##.###.#.###.####.....###."},
};

static const char *glyph(char c) {
    if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
    for (size_t i = 0; i < sizeof k_font / sizeof k_font[0]; i++)
        if (k_font[i].c == c) return k_font[i].rows;
    return NULL;   // space and unknown characters leave a gap
}

// Text at (x, y) = top-left, on a dark backing box so it reads on any window.
void froc_draw_text(uint8_t *rgb, int w, int h, int x, int y, const char *text, const uint8_t *color, int scale) {
    static const uint8_t back[3] = {0, 0, 0};
    int n = (int)strlen(text);
    for (int yy = y - scale; yy < y + 8 * scale; yy++)
        for (int xx = x - scale; xx < x + 6 * scale * n; xx++) put_px(rgb, w, h, xx, yy, back);
    for (int i = 0; i < n; i++) {
        const char *g = glyph(text[i]);
        if (!g) continue;
        for (int r = 0; r < 7; r++)
            for (int col = 0; col < 5; col++)
                if (g[r * 5 + col] == '#')
                    for (int a = 0; a < scale; a++)
                        for (int b2 = 0; b2 < scale; b2++)
                            put_px(rgb, w, h, x + (i * 6 + col) * scale + b2, y + r * scale + a, color);
    }
}

// "000001_01_01_109.png" -> "Images_png/000001_01_01/109.png"
static int entry_of(char *out, size_t cap, const char *file) {
    const char *us = strrchr(file, '_');
    if (!us || us == file) return PL_EFORMAT;
    int n = snprintf(out, cap, "Images_png/%.*s/%s", (int)(us - file), file, us + 1);
    return n > 0 && (size_t)n < cap ? 0 : PL_ERANGE;
}

typedef struct {
    char entry[128];
    int64_t image;
    uint8_t *png;
    size_t len;
} slice_want;

static int cmp_want(const void *a, const void *b) { return strcmp(((const slice_want *)a)->entry, ((const slice_want *)b)->entry); }
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Streams Images_png_*.zip under root once, keeping the entries in `want` (sorted by entry).
static int fetch_slices(slice_want *want, int64_t n, const char *root, int64_t *found) {
    *found = 0;
    DIR *d = opendir(root);
    if (!d) return pl_fail(PL_ENOTFOUND, "%s: cannot open the images folder", root);
    char **zips = NULL;
    int nz = 0, rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (strncmp(e->d_name, "Images_png", 10) == 0 && l > 4 && strcmp(e->d_name + l - 4, ".zip") == 0) {
            char **nzp = pl_realloc(zips, (size_t)(nz + 1) * sizeof *zips, "zip list");
            if (!nzp) {
                rc = PL_ENOMEM;
                break;
            }
            zips = nzp;
            zips[nz++] = pl_strdup(e->d_name);
        }
    }
    closedir(d);
    if (nz > 1) qsort(zips, (size_t)nz, sizeof *zips, cmp_str);
    for (int z = 0; z < nz && !rc && *found < n; z++) {
        char path[1024];
        if (pl_path_join(path, sizeof path, root, zips[z])) continue;
        arc_reader *r = NULL;
        if (arc_open_file(&r, path)) {
            LOG_WARN("froc overlays: skipping unreadable archive %s", path);
            continue;
        }
        const char *name;
        int64_t size;
        int st;
        while (*found < n && (st = arc_next(r, &name, &size)) == 1) {
            slice_want key;
            snprintf(key.entry, sizeof key.entry, "%s", name);
            slice_want *w = bsearch(&key, want, (size_t)n, sizeof *want, cmp_want);
            if (!w || w->png) continue;
            if (arc_read_entry(r, &w->png, &w->len) == 0) (*found)++;
        }
        arc_close(r);
    }
    for (int z = 0; z < nz; z++) free(zips[z]);
    free(zips);
    return rc;
}

typedef struct {
    int64_t image;
    int64_t lesion;     // missed lesion (or -1)
    int64_t det_rank;   // false positive (or -1)
    char file[160];     // overlay file name
} overlay_item;

// Renders one overlay: soft-tissue window, plus the lung window to its right for lung lesions.
static int render_overlay(uint8_t **png, size_t *plen, const uint16_t *px, int w, int h, const froc_set *s,
                          const froc_eval *ev, const overlay_item *it, int64_t oper_rank) {
    static const uint8_t green[3] = {40, 230, 40}, red[3] = {255, 40, 40}, yellow[3] = {255, 220, 0},
                         orange[3] = {255, 140, 0}, white[3] = {255, 255, 255}, cyan[3] = {0, 230, 255};
    const froc_image *im = &s->images[it->image];
    int lung = 0;
    for (int64_t j = im->gt0; j < im->gt0 + im->ngt; j++) lung |= s->gt[j].type == k_lung_type;
    int panels = lung ? 2 : 1, W = w * panels;
    int ts = w >= 400 ? 2 : 1;   // label scale: 2 on full-size 512 px slices
    uint8_t *rgb = pl_malloc((size_t)W * (size_t)h * 3, "overlay pixels");
    uint8_t *gray = pl_malloc((size_t)w * (size_t)h, "overlay window");
    if (!rgb || !gray) {
        free(rgb);
        free(gray);
        return PL_ENOMEM;
    }
    for (int p = 0; p < panels; p++) {
        froc_window_gray(gray, px, (int64_t)w * h, p ? k_lung_w : k_soft_w, p ? k_lung_l : k_soft_l);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                uint8_t *q = rgb + ((size_t)y * (size_t)W + (size_t)(x + p * w)) * 3;
                q[0] = q[1] = q[2] = gray[(size_t)y * (size_t)w + (size_t)x];
            }
    }
    // the title band first: boxes near the top edge are drawn over it, never hidden by it
    int title_bottom = 2 + 2 * ts + 8 * ts;
    for (int p = 0; p < panels; p++) {
        char t[96];
        snprintf(t, sizeof t, "%s %s", p ? "W1500 L-600" : "W400 L40", im->name);
        froc_draw_text(rgb, W, h, p * w + 2 + 2 * ts, 2 + 2 * ts, t, white, ts);
    }
    // detections of this image within the operating point (plus the FP shown), best first
    int drawn = 0;
    for (int64_t r = 0; r < s->n_det && drawn < k_max_dets_drawn; r++) {
        if (s->det[r].image != it->image || (r >= oper_rank && r != it->det_rank)) continue;
        const uint8_t *col = ev->all.is_fp[r] ? red : ev->all.new_hits[r] ? yellow : orange;
        if (r == it->det_rank) col = cyan;
        for (int p = 0; p < panels; p++) {
            double bx[4] = {s->det[r].box[0] + p * w, s->det[r].box[1], s->det[r].box[2] + p * w, s->det[r].box[3]};
            froc_draw_rect(rgb, W, h, bx, col, r == it->det_rank ? 2 : 1);
            char lab[32];
            snprintf(lab, sizeof lab, "%.2f", s->det[r].score);
            froc_draw_text(rgb, W, h, (int)bx[0], (int)bx[3] + 1 + 2 * ts, lab, col, ts);
        }
        drawn++;
    }
    for (int64_t j = im->gt0; j < im->gt0 + im->ngt; j++) {
        for (int p = 0; p < panels; p++) {
            const double *g = s->gt[j].box;
            double bx[4] = {g[0] + p * w, g[1], g[2] + p * w, g[3]};
            froc_draw_rect(rgb, W, h, bx, green, j == it->lesion ? 2 : 1);
            const char *lab = j == it->lesion ? "GT MISSED" : "GT";
            int ly = (int)bx[1] - 2 - 9 * ts;
            if (ly - ts < title_bottom) froc_draw_text(rgb, W, h, (int)bx[2] + 3 * ts, (int)bx[1], lab, green, ts);
            else froc_draw_text(rgb, W, h, (int)bx[0], ly, lab, green, ts);
        }
    }
    int rc = img_encode_png_rgb8(png, plen, rgb, W, h);
    free(rgb);
    free(gray);
    return rc;
}

// Half-size copy of an RGB PNG for the HTML page (2x2 box filter).
static int thumb_png(uint8_t **out, size_t *olen, const uint8_t *png, size_t len) {
    uint8_t *px = NULL;
    int w, h;
    int rc = img_decode_rgb8(&px, &w, &h, png, len, "overlay");
    if (rc) return rc;
    int tw = PL_MAX(w / 2, 1), th = PL_MAX(h / 2, 1);
    uint8_t *t = pl_malloc((size_t)tw * (size_t)th * 3, "thumbnail");
    if (!t) {
        free(px);
        return PL_ENOMEM;
    }
    for (int y = 0; y < th; y++)
        for (int x = 0; x < tw; x++)
            for (int c = 0; c < 3; c++) {
                int s = 0, n = 0;
                for (int dy = 0; dy < 2; dy++)
                    for (int dx = 0; dx < 2; dx++) {
                        int yy = 2 * y + dy, xx = 2 * x + dx;
                        if (yy < h && xx < w) {
                            s += px[((size_t)yy * (size_t)w + (size_t)xx) * 3 + (size_t)c];
                            n++;
                        }
                    }
                t[((size_t)y * (size_t)tw + (size_t)x) * 3 + (size_t)c] = (uint8_t)((s + n / 2) / n);
            }
    rc = img_encode_png_rgb8(out, olen, t, tw, th);
    free(px);
    free(t);
    return rc;
}

// ---------------------------------------------------------------------------------------
// the md + html document, built side by side

typedef struct {
    strbuf md, html;
} doc;

static void doc_h(doc *d, int level, const char *text) {
    for (int i = 0; i < level; i++) sb_puts(&d->md, "#");
    sb_printf(&d->md, " %s\n\n", text);
    sb_printf(&d->html, "<h%d>", level);
    sb_xml(&d->html, text);
    sb_printf(&d->html, "</h%d>\n", level);
}

static void doc_p(doc *d, const char *text) {
    sb_printf(&d->md, "%s\n\n", text);
    sb_puts(&d->html, "<p>");
    sb_xml(&d->html, text);
    sb_puts(&d->html, "</p>\n");
}

static void doc_pre(doc *d, const char *text) {
    sb_printf(&d->md, "```\n%s%s```\n\n", text, (*text && text[strlen(text) - 1] == '\n') ? "" : "\n");
    sb_puts(&d->html, "<pre>");
    sb_xml(&d->html, text);
    sb_puts(&d->html, "</pre>\n");
}

// cells: nrows x ncols strings, row-major; the first row is the header.
static void doc_table(doc *d, int ncols, int nrows, char (*cells)[64]) {
    for (int r = 0; r < nrows; r++) {
        sb_puts(&d->md, "|");
        for (int c = 0; c < ncols; c++) sb_printf(&d->md, " %s |", cells[r * ncols + c]);
        sb_puts(&d->md, "\n");
        if (r == 0) {
            sb_puts(&d->md, "|");
            for (int c = 0; c < ncols; c++) sb_puts(&d->md, c ? "---:|" : "---|");
            sb_puts(&d->md, "\n");
        }
    }
    sb_puts(&d->md, "\n");
    sb_puts(&d->html, "<table>\n");
    for (int r = 0; r < nrows; r++) {
        sb_puts(&d->html, "<tr>");
        for (int c = 0; c < ncols; c++) {
            sb_puts(&d->html, r == 0 ? "<th>" : "<td>");
            sb_xml(&d->html, cells[r * ncols + c]);
            sb_puts(&d->html, r == 0 ? "</th>" : "</td>");
        }
        sb_puts(&d->html, "</tr>\n");
    }
    sb_puts(&d->html, "</table>\n");
}

// Splits one CSV line (quotes allowed) into at most maxf fields, in place.
static int csv_split(char *line, char **f, int maxf) {
    int n = 0;
    char *p = line;
    while (n < maxf) {
        f[n++] = p;
        char *o = p;
        int q = 0;
        while (*p && (q || *p != ',')) {
            if (*p == '"') {
                if (q && p[1] == '"') {
                    *o++ = '"';
                    p += 2;
                    continue;
                }
                q = !q;
                p++;
                continue;
            }
            *o++ = *p++;
        }
        int end = *p == 0;
        *o = 0;
        if (end) break;
        p++;
    }
    return n;
}

// The quarantine list of preprocessing: row count, counts per "reason" column, first rows.
static void doc_quarantine(doc *d, const char *path) {
    doc_h(d, 2, "Quarantine (preprocessing)");
    if (!path || !*path) {
        doc_p(d, "No quarantine list was given or found: the preprocessing quarantine summary is not available.");
        return;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    if (pl_read_file(path, &buf, &len)) {
        char t[1200];
        snprintf(t, sizeof t, "Quarantine list %s could not be read: %s", path, pl_last_error());
        doc_p(d, t);
        return;
    }
    enum { MAXF = 8, MAXROWS = 20, MAXREASONS = 32 };
    char (*cells)[64] = pl_calloc((MAXROWS + 1) * MAXF, 64, "quarantine table");
    char reasons[MAXREASONS][64];
    int64_t rcount[MAXREASONS] = {0};
    int nreasons = 0, reason_col = -1, ncols = 0, shown = 0;
    int64_t nrows = 0;
    char *text = pl_malloc(len + 1, "quarantine text");   // pl_read_file does not NUL-terminate
    if (text) {
        memcpy(text, buf, len);
        text[len] = 0;
    }
    char *save = NULL;
    int first = 1;
    for (char *line = text ? strtok_r(text, "\n", &save) : NULL; line && cells; line = strtok_r(NULL, "\n", &save)) {
        size_t l = strlen(line);
        if (l && line[l - 1] == '\r') line[--l] = 0;
        if (!l) continue;
        char *f[MAXF];
        int nf = csv_split(line, f, MAXF);
        if (first) {
            first = 0;
            ncols = nf;
            for (int c = 0; c < nf; c++) {
                snprintf(cells[c], 64, "%s", f[c]);
                if (strcasecmp(f[c], "reason") == 0) reason_col = c;
            }
            continue;
        }
        nrows++;
        if (shown < MAXROWS) {
            for (int c = 0; c < ncols; c++) snprintf(cells[(shown + 1) * MAXF + c], 64, "%s", c < nf ? f[c] : "");
            shown++;
        }
        if (reason_col >= 0 && reason_col < nf) {
            int k = 0;
            while (k < nreasons && strcmp(reasons[k], f[reason_col]) != 0) k++;
            if (k == nreasons && nreasons < MAXREASONS) snprintf(reasons[nreasons++], 64, "%s", f[reason_col]);
            if (k < nreasons) rcount[k]++;
        }
    }
    char t[1200];
    snprintf(t, sizeof t, "%lld sample(s) quarantined by preprocessing (%s).", (long long)nrows, path);
    doc_p(d, t);
    if (nreasons > 0) {
        char (*rt)[64] = pl_calloc((size_t)(nreasons + 1) * 2, 64, "reasons table");
        if (rt) {
            snprintf(rt[0], 64, "reason");
            snprintf(rt[1], 64, "samples");
            for (int k = 0; k < nreasons; k++) {
                snprintf(rt[(k + 1) * 2], 64, "%.63s", reasons[k]);
                snprintf(rt[(k + 1) * 2 + 1], 64, "%lld", (long long)rcount[k]);
            }
            doc_table(d, 2, nreasons + 1, rt);
            free(rt);
        }
    }
    if (shown > 0 && ncols > 0 && cells) {
        // compact copy with ncols columns
        char (*tc)[64] = pl_calloc((size_t)(shown + 1) * (size_t)ncols, 64, "quarantine rows");
        if (tc) {
            for (int r = 0; r <= shown; r++)
                for (int c = 0; c < ncols && c < MAXF; c++) memcpy(tc[r * ncols + c], cells[r * MAXF + c], 64);
            if (nrows > shown) {
                snprintf(t, sizeof t, "First %d of %lld rows:", shown, (long long)nrows);
                doc_p(d, t);
            }
            doc_table(d, PL_MIN(ncols, MAXF), shown + 1, tc);
            free(tc);
        }
    }
    free(cells);
    free(text);
    free(buf);
}

static const char k_css[] =
    "body{font-family:Helvetica,Arial,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;color:#222}"
    "h1{font-size:24px;border-bottom:2px solid #1f4e79;padding-bottom:6px}h2{font-size:18px;margin-top:28px;color:#1f4e79}"
    "table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #bbb;padding:4px 10px;font-size:13px}"
    "th{background:#e8eef5}td{text-align:right}td:first-child{text-align:left}"
    "pre{background:#f6f6f6;border:1px solid #ddd;padding:8px;font-size:11px;overflow-x:auto;max-height:360px}"
    ".ov{display:inline-block;margin:6px;vertical-align:top;font-size:12px}.ov img{display:block;border:1px solid #999}";

int froc_report_write(const char *dir, const froc_set *s, const froc_eval *ev, const froc_report_info *info) {
    int rc = pl_mkdir_p(dir);
    if (rc) return rc;
    const froc_curve *c = &ev->all;
    int64_t lr[FROC_NLEVELS];
    level_ranks(lr, s, ev);
    doc d;
    memset(&d, 0, sizeof d);
    char *svg = NULL, *json = NULL;
    overlay_item *items = NULL;
    slice_want *want = NULL;
    int n_items = 0;
    char t[2048];
    char (*cells)[64] = pl_calloc(16 * 16, 64, "report table");
    if (!cells) return PL_ENOMEM;

    sb_printf(&d.html, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>mp3d FROC report</title>"
                       "<style>%s</style></head><body>\n", k_css);
    doc_h(&d, 1, "mp3d lesion detection report (DeepLesion FROC)");
    time_t now = time(NULL);
    struct tm tmv;
    gmtime_r(&now, &tmv);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    snprintf(t, sizeof t, "Written %s by mp3d%s%s. Ground truth: %s. Detections: %s.", when,
             info && info->version ? " " : "", info && info->version ? info->version : "",
             info && info->truth_path ? info->truth_path : "(in memory)",
             info && info->dets_path ? info->dets_path : "(in memory)");
    doc_p(&d, t);
    snprintf(t, sizeof t, "Split %s: %lld key slices, %lld lesions, %lld detections scored (%lld on other images ignored; "
                          "%lld malformed ground-truth rows and %lld malformed detection lines skipped). Scoring took %.3f s.",
             split_name(ev->opts.split), (long long)s->n_images, (long long)c->n_lesions, (long long)s->n_det,
             (long long)s->n_det_outside, (long long)(info ? info->n_truth_bad : 0),
             (long long)(info ? info->n_dets_bad : 0), ev->seconds);
    doc_p(&d, t);

    // headline table, the papers' layout
    doc_h(&d, 2, "Headline (sensitivity in %, 95% bootstrap CI over patients)");
    {
        const char *hd[6] = {"Sens@0.5", "Sens@1", "Sens@2", "Sens@4", "mFROC", "AP@0.5"};
        for (int k = 0; k < 6; k++) snprintf(cells[k], 64, "%s", hd[k]);
        for (int k = 0; k < 4; k++) fmt_pct_ci(cells[6 + k], 64, c->sens[k], ev->ci.lo[k], ev->ci.hi[k]);
        fmt_pct_ci(cells[10], 64, c->mfroc, ev->ci.lo[FROC_NLEVELS], ev->ci.hi[FROC_NLEVELS]);
        fmt_pct(cells[11], 64, ev->ap50);
        doc_table(&d, 6, 2, cells);
        snprintf(cells[0], 64, "Sens@8");
        snprintf(cells[1], 64, "Sens@16");
        fmt_pct_ci(cells[2], 64, c->sens[4], ev->ci.lo[4], ev->ci.hi[4]);
        fmt_pct_ci(cells[3], 64, c->sens[5], ev->ci.lo[5], ev->ci.hi[5]);
        doc_table(&d, 2, 2, cells);
    }
    if (ev->ci.reps > 0)
        snprintf(t, sizeof t, "Confidence intervals: %d bootstrap resamples of the %lld patients with replacement "
                              "(2.5th and 97.5th percentiles).", ev->ci.reps, (long long)s->n_units);
    else snprintf(t, sizeof t, "No confidence intervals (eval.bootstrap = 0).");
    doc_p(&d, t);

    // the curve
    rc = froc_svg(&svg, s, ev);
    if (rc) goto done;
    doc_h(&d, 2, "FROC curve");
    sb_puts(&d.md, "![FROC curve](froc.svg)\n\n");
    sb_puts(&d.html, "<div>");
    svg_body(&d.html, s, ev);
    sb_puts(&d.html, "</div>\n");
    if (info && info->curves_svg) {
        doc_h(&d, 2, "Training curves");
        char ct[4400];
        snprintf(ct, sizeof ct, "Loss, learning rate and the validation metric of the training run, against step and wall "
                 "time (from %s).", info->curves_source ? info->curves_source : "the training metrics");
        doc_p(&d, ct);
        sb_puts(&d.md, "![training curves](train_curves.svg)\n\n");
        sb_puts(&d.html, "<div>");
        sb_puts(&d.html, info->curves_svg);
        sb_puts(&d.html, "</div>\n");
    }

    // sub-groups
    doc_h(&d, 2, "Sub-groups (lesions filtered, all detections kept)");
    {
        const char *hd[8] = {"group", "kind", "lesions", "Sens@0.5", "Sens@1", "Sens@2", "Sens@4", "mFROC [95% CI]"};
        for (int k = 0; k < 8; k++) snprintf(cells[k], 64, "%s", hd[k]);
        for (int g = 0; g < FROC_NGROUPS; g++) {
            const froc_group *gr = &ev->groups[g];
            char (*row)[64] = cells + (g + 1) * 8;
            snprintf(row[0], 64, "%s", gr->name);
            snprintf(row[1], 64, "%s", gr->kind);
            snprintf(row[2], 64, "%lld", (long long)gr->n_lesions);
            for (int k = 0; k < 4; k++) fmt_pct(row[3 + k], 64, gr->n_lesions ? gr->sens[k] : NAN);
            fmt_pct_ci(row[7], 64, gr->mfroc, gr->ci.lo[FROC_NLEVELS], gr->ci.hi[FROC_NLEVELS]);
        }
        doc_table(&d, 8, FROC_NGROUPS + 1, cells);
        doc_p(&d, "Types are DeepLesion's Coarse_lesion_type (test and validation rows only; -1 on train rows). "
                  "Size is the long diameter in mm (Lesion_diameters_Pixel_ x in-plane spacing): < 10, 10-30 "
                  "(inclusive), > 30. Thickness is the slice interval of the series. A detection that hits a lesion "
                  "of another group counts as a false positive for this group, as in the reference code.");
    }

    // conventions
    doc_h(&d, 2, "Conventions used");
    snprintf(t, sizeof t,
             "Hit: IoU >= %g, %s. Possibly_noisy lesions: %s. Sensitivity at an exact integer FP count: %s. "
             "One global ranking of all detections by score; ties broken by File_name (ascending), then input order. "
             "A detection marks every unfound lesion it hits (one detection may find two); a detection whose lesions "
             "were all found already is neither TP nor FP; a detection hitting nothing is a false positive, also on "
             "images without lesions. FP per image = FPs / %lld evaluated key slices. mFROC = mean of Sens@0.5, 1, 2, 4. "
             "AP@0.5: COCO-style 101-point interpolated precision with one-to-one matching per image.",
             ev->opts.iou,
             ev->opts.iou_plus1 ? "widths and heights counted with +1 (3DCE/MULAN)" : "continuous boxes (MP3D)",
             ev->opts.keep_noisy ? "kept (MP3D)" : "excluded (3DCE/MULAN)",
             ev->opts.fp_rule == FROC_FP_FIRST_AT
                 ? "first_at, the sensitivity at the first curve point with k FPs (3DCE/MP3D with old scipy)"
                 : "before_next, the sensitivity before the (k+1)-th FP (MULAN with current scipy)",
             (long long)s->n_images);
    doc_p(&d, t);

    // quarantine
    doc_quarantine(&d, info ? info->quarantine_csv : NULL);

    // overlays
    doc_h(&d, 2, "Overlays: missed lesions and top-scoring false positives");
    int nov = info ? info->n_overlays : 0;
    const char *root = info ? info->images_root : NULL;
    if (nov <= 0) {
        doc_p(&d, "Overlays are off (eval.overlays = 0).");
    } else if (!root || !*root) {
        doc_p(&d, "Overlays skipped: no images folder (input.root) was given to read the key slices from.");
    } else {
        items = pl_calloc((size_t)nov * 2, sizeof *items, "overlay list");
        want = pl_calloc((size_t)nov * 2, sizeof *want, "overlay slices");
        if (!items || !want) {
            rc = PL_ENOMEM;
            goto done;
        }
        int nm = 0, nf = 0;
        for (int64_t j = 0; j < s->n_gt && nm < nov; j++) {
            int64_t r = c->found_by[j];
            if (r >= 0 && r < lr[k_oper_level]) continue;
            int64_t im = 0;
            while (!(j >= s->images[im].gt0 && j < s->images[im].gt0 + s->images[im].ngt)) im++;
            overlay_item *it = &items[n_items++];
            it->image = im, it->lesion = j, it->det_rank = -1;
            snprintf(it->file, sizeof it->file, "missed_%02d_%s", ++nm, s->images[im].name);
        }
        for (int64_t r = 0; r < s->n_det && nf < nov; r++) {
            if (!c->is_fp[r]) continue;
            overlay_item *it = &items[n_items++];
            it->image = s->det[r].image, it->lesion = -1, it->det_rank = r;
            snprintf(it->file, sizeof it->file, "fp_%02d_%s", ++nf, s->images[it->image].name);
        }
        int nw = 0;
        for (int i = 0; i < n_items; i++) {
            char e[128];
            if (entry_of(e, sizeof e, s->images[items[i].image].name)) continue;
            int dup = 0;
            for (int k = 0; k < nw; k++) dup |= strcmp(want[k].entry, e) == 0;
            if (dup) continue;
            snprintf(want[nw].entry, sizeof want[nw].entry, "%s", e);
            want[nw++].image = items[i].image;
        }
        qsort(want, (size_t)nw, sizeof *want, cmp_want);
        int64_t found = 0;
        char ovdir[1024];
        if ((rc = pl_path_join(ovdir, sizeof ovdir, dir, "overlays")) || (rc = pl_mkdir_p(ovdir))) goto done;
        if (fetch_slices(want, nw, root, &found)) {
            snprintf(t, sizeof t, "Overlays skipped: %s", pl_last_error());
            doc_p(&d, t);
        } else {
            snprintf(t, sizeof t, "%d missed lesion(s) (not found at %g FP/image) and %d top false positive(s); "
                                  "key slices found for %lld of %d images in %s. Green: ground truth; yellow: true "
                                  "positive; orange: duplicate; red: false positive; cyan: the false positive shown. "
                                  "Soft-tissue window W400 L40, lung window W1500 L-600 beside it for lung lesions.",
                     nm, froc_levels[k_oper_level], nf, (long long)found, nw, root);
            doc_p(&d, t);
            sb_puts(&d.html, "<div>\n");
            for (int i = 0; i < n_items; i++) {
                char e[128];
                slice_want key, *w = NULL;
                if (!entry_of(e, sizeof e, s->images[items[i].image].name)) {
                    snprintf(key.entry, sizeof key.entry, "%s", e);
                    w = bsearch(&key, want, (size_t)nw, sizeof *want, cmp_want);
                }
                if (!w || !w->png) {
                    sb_printf(&d.md, "- %s: key slice %s not found\n", items[i].file, e);
                    continue;
                }
                uint16_t *px = NULL;
                int iw, ih;
                if (img_decode_gray16(&px, &iw, &ih, w->png, w->len, w->entry)) {
                    sb_printf(&d.md, "- %s: key slice %s unreadable\n", items[i].file, e);
                    continue;
                }
                uint8_t *png = NULL, *th = NULL;
                size_t plen = 0, tlen = 0;
                rc = render_overlay(&png, &plen, px, iw, ih, s, ev, &items[i], lr[k_oper_level]);
                free(px);
                if (rc) goto done;
                char path[1200];
                if (!(rc = pl_path_join(path, sizeof path, ovdir, items[i].file))) rc = pl_write_file_atomic(path, png, plen);
                if (!rc) rc = thumb_png(&th, &tlen, png, plen);
                free(png);
                if (rc) {
                    free(th);
                    goto done;
                }
                const char *what = items[i].lesion >= 0 ? "missed lesion" : "false positive";
                char cap[256];
                if (items[i].lesion >= 0)
                    snprintf(cap, sizeof cap, "%s: %s (%s, best IoU %.2f)", what, s->images[items[i].image].name,
                             froc_type_name(s->gt[items[i].lesion].type), c->gt_best_iou[items[i].lesion]);
                else
                    snprintf(cap, sizeof cap, "%s: %s (rank %lld, score %.3f)", what, s->images[items[i].image].name,
                             (long long)items[i].det_rank + 1, s->det[items[i].det_rank].score);
                sb_printf(&d.md, "- [%s](overlays/%s)\n", cap, items[i].file);
                sb_puts(&d.html, "<div class=\"ov\"><img alt=\"overlay\" src=\"data:image/png;base64,");
                sb_base64(&d.html, th, tlen);
                sb_puts(&d.html, "\"/>");
                sb_xml(&d.html, cap);
                sb_puts(&d.html, "</div>\n");
                free(th);
            }
            sb_puts(&d.md, "\n");
            sb_puts(&d.html, "</div>\n");
        }
    }

    // files and provenance
    doc_h(&d, 2, "Files");
    doc_p(&d, "froc.svg (the curve), froc.json (all figures), per_lesion.csv (each lesion: found or missed, the "
              "rank, score and FP/image of the detection that found it, the lowest standard FP level at which it "
              "counts as found, best IoU, size, type, thickness), per_detection.csv (each detection in rank order: "
              "TP, dup or FP, best IoU, the curve point), overlays/.");
    doc_h(&d, 2, "Provenance: resolved configuration");
    doc_pre(&d, info && info->config_text ? info->config_text : "(not given)\n");
    sb_puts(&d.html, "</body></html>\n");

    rc = d.md.err ? d.md.err : d.html.err;
    if (!rc) rc = sb_write(&d.md, dir, "report.md");
    if (!rc) rc = sb_write(&d.html, dir, "report.html");
    if (!rc) {
        strbuf b = {.p = svg, .n = strlen(svg)};
        rc = sb_write(&b, dir, "froc.svg");
    }
    if (!rc && info && info->curves_svg) {
        strbuf b = {0};
        sb_puts(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        sb_puts(&b, info->curves_svg);
        rc = b.err ? b.err : sb_write(&b, dir, "train_curves.svg");
        sb_free(&b);
    }
    if (!rc) rc = froc_json(&json, s, ev);
    if (!rc) {
        strbuf b = {.p = json, .n = strlen(json)};
        rc = sb_write(&b, dir, "froc.json");
    }
    if (!rc) rc = write_per_lesion(dir, s, ev, lr);
    if (!rc) rc = write_per_detection(dir, s, ev);
done:
    if (want)
        for (int i = 0; i < nov * 2; i++) free(want[i].png);
    free(want);
    free(items);
    free(svg);
    free(json);
    free(cells);
    free(d.md.p);
    free(d.html.p);
    return rc;
}
