#pragma once
// runlog: progress of long work and the per-run metrics file.
// Progress: rank 0 draws a live bar (done/total, items/s, ETA) when stderr is a terminal and
// prints a plain line every `interval` seconds otherwise (batch logs, Slurm).
// Metrics: one JSON object per line in OUTPUT_DIR/metrics.jsonl, appended by rank 0 only.

#include <stdint.h>

typedef struct {
    char what[64];
    int64_t total, done;
    double t0, last_print, interval;
    int enabled;   // rank 0 only
    int tty;
} pl_progress;

void progress_init(pl_progress *p, const char *what, int64_t total, int enabled, double interval);
void progress_update(pl_progress *p, int64_t done);   // absolute count
void progress_finish(pl_progress *p);

typedef struct pl_metrics pl_metrics;
// Opens (appends to) DIR/metrics.jsonl; `enabled` = 0 gives a handle that writes nothing.
int metrics_open(pl_metrics **m, const char *dir, int enabled);
// Writes {"time":..., "stage":stage, <fields>} where fields is a JSON fragment such as
// "\"step\":12,\"loss\":0.43". Flushed every line.
void metrics_write(pl_metrics *m, const char *stage, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void metrics_close(pl_metrics *m);   // accepts NULL
