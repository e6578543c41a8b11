#pragma once
// froc_report: the evaluation report of one scoring run (stages/score/froc.h) — report.md, a
// self-contained report.html, froc.svg, per-lesion and per-detection CSVs, froc.json and overlay
// PNGs of missed lesions and top false positives. Files only: no MPI, no HDF5.

#include <stdint.h>

#include "stages/score/froc.h"

typedef struct {
    const char *truth_path, *dets_path;   // inputs, named in the report
    const char *config_text;              // resolved config (provenance), may be NULL
    const char *version;                  // tool version string, may be NULL
    const char *images_root;              // folder with Images_png_*.zip for overlays; NULL/"" = none
    const char *quarantine_csv;           // preprocessing quarantine list; NULL = none
    int n_overlays;                       // missed lesions and top FPs drawn (each)
    int64_t n_truth_bad, n_dets_bad;      // skipped input lines
    const char *curves_svg;               // training curves (an <svg> element), NULL = none
    const char *curves_source;            // the metrics file they were drawn from
} froc_report_info;

// Writes dir/report.md, report.html (self-contained), froc.svg, per_lesion.csv,
// per_detection.csv, froc.json and dir/overlays/*.png. Creates dir.
int froc_report_write(const char *dir, const froc_set *s, const froc_eval *ev, const froc_report_info *info);
// The curve as a standalone SVG document (malloc'ed, NUL-terminated).
int froc_svg(char **out, const froc_set *s, const froc_eval *ev);
// The figures as one JSON object (malloc'ed): n_images, n_lesions, sens{"0.5":..}, mfroc, ap50, ci, conventions.
int froc_json(char **out, const froc_set *s, const froc_eval *ev);
// Overlay helpers, exposed for tests. px: DeepLesion 16-bit values (HU = v - 32768), n pixels;
// out (n) gray in [0, 255] for the window (width, level). rgb (h, w, 3).
void froc_window_gray(uint8_t *out, const uint16_t *px, int64_t n, double width, double level);
void froc_draw_rect(uint8_t *rgb, int w, int h, const double *box, const uint8_t *color, int thick);
void froc_draw_text(uint8_t *rgb, int w, int h, int x, int y, const char *text, const uint8_t *color, int scale);
