// mp3d inspect FILE: a summary of any file mp3d writes, on stdout (rank 0 only).
// HDF5 (shards, checkpoints): completeness, attributes (provenance, long texts cut), datasets with
// types and shapes; for sample shards also the sample count per split and the quarantine count.
// CSV (detections, quarantine.csv, DL_info.csv): header, row count, rows per first-column value
// for quarantine files. Anything else: size and "unknown format".
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/fileio.h"
#include "io/h5ckpt.h"
#include "io/h5shard.h"
#include "nn/pl.h"
#include "stages/stages.h"

static const unsigned char HDF5_MAGIC[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

static void shard_summary(const char *path, FILE *out) {
    h5shard_reader *r = NULL;
    pl_quiet_begin();
    int rc = h5shard_open(&r, path);
    pl_quiet_end();
    if (rc || !h5shard_exists(r, "images")) {
        h5shard_close(r);
        return;
    }
    int64_t d[8] = {0};
    int nd = h5shard_shape(r, "images", d, 8);
    fprintf(out, "summary:\n  samples: %lld\n  sample_shape: (", (long long)d[0]);
    for (int i = 1; i < nd; i++) fprintf(out, "%s%lld", i > 1 ? ", " : "", (long long)d[i]);
    fprintf(out, ")\n");
    if (h5shard_exists(r, "split") && d[0] > 0) {
        int32_t *sp = malloc(sizeof(int32_t) * (size_t)d[0]);
        pl_quiet_begin();
        int src = sp ? h5shard_read_rows(r, "split", SHARD_I32, sp, 0, d[0], 1) : PL_ENOMEM;   // one value per sample, checked
        pl_quiet_end();
        if (!src) {
            int64_t cnt[4] = {0};
            for (int64_t i = 0; i < d[0]; i++) cnt[sp[i] >= 1 && sp[i] <= 3 ? sp[i] : 0]++;
            fprintf(out, "  samples_per_split: train=%lld val=%lld test=%lld other=%lld\n", (long long)cnt[1], (long long)cnt[2],
                    (long long)cnt[3], (long long)cnt[0]);
        } else {
            fprintf(out, "  samples_per_split: unreadable (%s)\n", pl_last_error());
        }
        free(sp);
    } else {
        char *s = NULL;
        pl_quiet_begin();
        if (h5shard_get_attr_str(r, "split", &s) == 0) fprintf(out, "  samples_per_split: %s=%lld\n", s, (long long)d[0]);
        pl_quiet_end();
        free(s);
    }
    for (const char *rows = "lesion_offsets\0box_offsets\0"; *rows; rows += strlen(rows) + 1) {
        int64_t od[1] = {0};
        if (h5shard_exists(r, rows) && h5shard_shape(r, rows, od, 1) == 1 && od[0] > 0) {
            int64_t last = 0;
            if (h5shard_read(r, rows, SHARD_I64, &last, od[0] - 1, 1) == 0) fprintf(out, "  rows (%s): %lld\n", rows, (long long)last);
        }
    }
    double q = 0;
    int n = 0;
    pl_quiet_begin();
    if (h5shard_get_attr_f64(r, "quarantined", &q, 1, &n) == 0) fprintf(out, "  quarantined_at_write: %.0f\n", q);
    pl_quiet_end();
    h5shard_close(r);
}

// Rows of a CSV file; for quarantine-style files (first column "stage") also rows per stage.
static int csv_summary(const char *path, FILE *out) {
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = pl_read_file(path, &buf, &len);
    if (rc) return rc;
    char *t = pl_realloc(buf, len + 1, "csv text");
    if (!t) { free(buf); return PL_ENOMEM; }
    t[len] = 0;
    char *nl = strchr(t, '\n');
    fprintf(out, "file: %s\nformat: csv\nheader: %.*s\n", path, (int)(nl ? nl - t : (long)strlen(t)), t);
    int64_t rows = 0;
    for (char *p = nl ? nl + 1 : NULL; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) rows++;
    fprintf(out, "rows: %lld\n", (long long)rows);
    if (!strncmp(t, "stage,", 6) && nl) {
        // per-stage counts (rows are grouped by stage: other stages' rows first, then sorted)
        char prev[64] = "";
        int64_t cnt = 0;
        for (char *p = nl + 1; p && *p;) {
            char *c = strchr(p, ',');
            char st[64] = "";
            if (c) snprintf(st, sizeof st, "%.*s", (int)PL_MIN((long)(c - p), 63L), p);
            if (strcmp(st, prev)) {
                if (prev[0]) fprintf(out, "  quarantined[%s]: %lld\n", prev, (long long)cnt);
                snprintf(prev, sizeof prev, "%s", st);
                cnt = 0;
            }
            cnt++;
            char *e = strchr(p, '\n');
            p = e ? e + 1 : NULL;
        }
        if (prev[0]) fprintf(out, "  quarantined[%s]: %lld\n", prev, (long long)cnt);
    }
    free(t);
    return 0;
}

int stage_inspect_run(const pl_cfg *cfg, MPI_Comm comm) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    const char *path = cfg_str(cfg, "inspect.file");
    if (!path[0]) {
        LOG0_ERROR("inspect: no file given (mp3d inspect FILE)");
        return MP3D_EXIT_USAGE;
    }
    int code = MP3D_EXIT_OK;
    if (rank == 0) {
        struct stat st;
        FILE *f = stat(path, &st) == 0 ? fopen(path, "rb") : NULL;
        unsigned char head[8] = {0};
        size_t got = f ? fread(head, 1, 8, f) : 0;
        if (f) fclose(f);
        const char *dot = strrchr(path, '.');
        if (!f) {
            pl_fail(PL_ENOTFOUND, "inspect: %s: cannot open", path);
            code = MP3D_EXIT_FAIL;
        } else if (got == 8 && !memcmp(head, HDF5_MAGIC, 8)) {
            fprintf(stdout, "format: hdf5 (%lld bytes)\n", (long long)st.st_size);
            int described = h5shard_describe(path, stdout) == 0;
            if (!described) code = MP3D_EXIT_FAIL;
            else shard_summary(path, stdout);
            // A checkpoint: every dataset read back and checked against its checksum (what resume
            // and init_from would do); a mismatch makes the file untrustworthy whatever `complete` says.
            ckpt_reader *cr = NULL;
            pl_quiet_begin();
            int crc = described ? ckpt_open(&cr, path, MPI_COMM_SELF, CKPT_VERIFY) : PL_EFORMAT;
            pl_quiet_end();
            if (crc == 0) {
                fprintf(stdout, "checkpoint: valid (every dataset matches its checksum)\n");
            } else if (crc != PL_EFORMAT) {
                fprintf(stdout, "checkpoint: INVALID: %s\n", pl_last_error());
                pl_fail(crc, "inspect: %s: invalid checkpoint: %s", path, pl_last_error());
                code = MP3D_EXIT_FAIL;
            }
            ckpt_close(cr);
            // the quarantine list of the run that wrote the file, if it sits beside it
            char dir[4096], q[4200];
            snprintf(dir, sizeof dir, "%s", path);
            char *sl = strrchr(dir, '/');
            if (sl) *sl = 0;
            else snprintf(dir, sizeof dir, ".");
            snprintf(q, sizeof q, "%s/quarantine.csv", dir);
            if (pl_path_exists(q)) {
                fprintf(stdout, "quarantine:\n");
                csv_summary(q, stdout);
            }
        } else if (dot && !strcmp(dot, ".csv")) {
            if (csv_summary(path, stdout)) code = MP3D_EXIT_FAIL;
        } else {
            fprintf(stdout, "file: %s\nformat: unknown (%lld bytes)\n", path, (long long)st.st_size);
            pl_fail(PL_EFORMAT, "inspect: %s: not a file mp3d writes (neither HDF5 nor .csv; first bytes %02x %02x %02x %02x)",
                    path, head[0], head[1], head[2], head[3]);
            code = MP3D_EXIT_FAIL;
        }
        fflush(stdout);
    }
    MPI_Bcast(&code, 1, MPI_INT, 0, comm);
    return code;
}
