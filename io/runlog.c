// runlog: progress lines/bars and the JSON-lines metrics file.
#include "io/runlog.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io/fileio.h"
#include "nn/pl.h"

static void fmt_eta(char *out, size_t cap, double s) {
    if (!(s >= 0) || s > 1e7) { snprintf(out, cap, "?"); return; }
    int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(out, cap, "%dh%02dm", t / 3600, (t / 60) % 60);
    else if (t >= 60) snprintf(out, cap, "%dm%02ds", t / 60, t % 60);
    else snprintf(out, cap, "%ds", t);
}

void progress_init(pl_progress *p, const char *what, int64_t total, int enabled, double interval) {
    memset(p, 0, sizeof *p);
    snprintf(p->what, sizeof p->what, "%s", what);
    p->total = total;
    p->enabled = enabled;
    p->interval = interval > 0 ? interval : 10;
    p->t0 = p->last_print = pl_time();
    p->tty = isatty(fileno(stderr));
}

static void progress_print(pl_progress *p, int final) {
    double now = pl_time(), el = now - p->t0;
    double rate = el > 0 ? (double)p->done / el : 0;
    double eta = rate > 0 ? (double)(p->total - p->done) / rate : -1;
    char e[32];
    fmt_eta(e, sizeof e, final ? 0 : eta);
    double frac = p->total > 0 ? (double)p->done / (double)p->total : 1;
    if (p->tty) {
        char bar[31];
        int fill = (int)(frac * 30 + 0.5);
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = 0;
        fprintf(stderr, "\r%s [%s] %lld/%lld %.1f/s eta %s%s", p->what, bar, (long long)p->done,
                (long long)p->total, rate, e, final ? "\n" : "");
        fflush(stderr);
    } else {
        pl_log(PL_INFO, "progress:%s done:%lld total:%lld pct:%.1f rate:%.2f/s elapsed:%.1fs eta:%s", p->what,
               (long long)p->done, (long long)p->total, 100 * frac, rate, el, e);
    }
}

void progress_update(pl_progress *p, int64_t done) {
    if (!p->enabled) return;
    p->done = done;
    double now = pl_time();
    double every = p->tty ? 0.2 : p->interval;
    if (now - p->last_print >= every) {
        p->last_print = now;
        progress_print(p, 0);
    }
}

void progress_finish(pl_progress *p) {
    if (!p->enabled) return;
    p->done = p->total;
    progress_print(p, 1);
}

struct pl_metrics {
    FILE *f;
};

int metrics_open(pl_metrics **m, const char *dir, int enabled) {
    *m = pl_calloc(1, sizeof **m, "metrics");
    if (!*m) return PL_ENOMEM;
    if (!enabled) return 0;
    char path[4096];
    int rc = pl_path_join(path, sizeof path, dir, "metrics.jsonl");
    if (rc) { free(*m); *m = NULL; return rc; }
    (*m)->f = fopen(path, "a");
    if (!(*m)->f) {
        free(*m);
        *m = NULL;
        return pl_fail(PL_EIO, "%s: cannot open metrics file for appending", path);
    }
    return 0;
}

void metrics_write(pl_metrics *m, const char *stage, const char *fmt, ...) {
    if (!m || !m->f) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    fprintf(m->f, "{\"time\":%.3f,\"stage\":\"%s\"", (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec, stage);
    if (fmt && fmt[0]) {
        fputc(',', m->f);
        va_list ap;
        va_start(ap, fmt);
        vfprintf(m->f, fmt, ap);
        va_end(ap);
    }
    fputs("}\n", m->f);
    fflush(m->f);
}

void metrics_close(pl_metrics *m) {
    if (!m) return;
    if (m->f) fclose(m->f);
    free(m);
}
