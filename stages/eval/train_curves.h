#pragma once
// train_curves: the curves of a training run, read back from its metrics.jsonl (one JSON object a
// line, written by the trainer: "train" rows with step/loss/lr/images/time, "val" rows with
// step/time and the task's metrics) and drawn as one self-contained SVG of four panels: training
// loss and learning rate against step, the validation metric against step and against wall
// minutes since the run's first row. Pure text in, text out: no MPI, no HDF5.

#include <stdint.h>

typedef struct {
    int64_t n, cap;
    double *step;     // (n)
    double *minutes;  // (n) wall minutes since the first row of the file
    double *v;        // (n)
} curve_series;

typedef struct {
    curve_series loss, lr;        // "train" rows
    curve_series val, val2;       // "val" rows: the primary metric (sens_4 or top1) and a second (mfroc or top5)
    char val_name[32], val2_name[32];
    int64_t bad_lines;            // lines that are not JSON objects (skipped, counted)
} train_curves;

// Reads path; unknown rows are ignored. Errors: the file cannot be read (PL_EIO). A run with no
// "train" row is not an error (n = 0 everywhere).
int train_curves_read(train_curves *c, const char *path);
void train_curves_free(train_curves *c);

// The SVG element (no XML prolog) of the four panels; *out is malloc'ed, NUL-terminated.
// title is drawn above the panels (may be NULL).
int train_curves_svg(char **out, const train_curves *c, const char *title);
