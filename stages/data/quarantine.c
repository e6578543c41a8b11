// quarantine: skipped/patched inputs gathered to rank 0 and written as quarantine.csv.
#include "stages/data/quarantine.h"

#include <stdlib.h>
#include <string.h>

#include "io/fileio.h"
#include "nn/pl.h"

struct quarantine {
    char stage[32];
    char *buf;          // rows "stage,file,entry,reason\n" (CSV-quoted), concatenated
    size_t len, cap;
    int64_t n, nskipped;
};

quarantine *quarantine_create(const char *stage) {
    quarantine *q = pl_calloc(1, sizeof *q, "quarantine");
    if (q) snprintf(q->stage, sizeof q->stage, "%s", stage);
    return q;
}

void quarantine_destroy(quarantine *q) {
    if (!q) return;
    free(q->buf);
    free(q);
}

static int put(quarantine *q, const char *s, size_t n) {
    if (q->len + n + 1 > q->cap) {
        size_t nc = PL_MAX(2 * q->cap, q->len + n + 4096);
        char *b = pl_realloc(q->buf, nc, "quarantine rows");
        if (!b) return PL_ENOMEM;
        q->buf = b;
        q->cap = nc;
    }
    memcpy(q->buf + q->len, s, n);
    q->len += n;
    q->buf[q->len] = 0;
    return 0;
}

// One CSV field, quoted when it holds a comma, quote or line break (RFC 4180); line breaks
// inside a reason become spaces so one row stays one line.
static int put_field(quarantine *q, const char *s, int last) {
    int quote = strpbrk(s, ",\"\n\r") != NULL;
    int rc = quote ? put(q, "\"", 1) : 0;
    for (const char *p = s; *p && !rc; p++) {
        if (*p == '"') rc = put(q, "\"\"", 2);
        else if (*p == '\n' || *p == '\r') rc = put(q, " ", 1);
        else rc = put(q, p, 1);
    }
    if (!rc && quote) rc = put(q, "\"", 1);
    if (!rc) rc = put(q, last ? "\n" : ",", 1);
    return rc;
}

int quarantine_add(quarantine *q, const char *file, const char *entry, const char *reason, int skipped) {
    int rc = put_field(q, q->stage, 0);
    if (!rc) rc = put_field(q, file ? file : "", 0);
    if (!rc) rc = put_field(q, entry ? entry : "", 0);
    if (!rc) rc = put_field(q, reason ? reason : "", 1);
    if (rc) return rc;
    q->n++;
    q->nskipped += skipped != 0;
    LOG_DEBUG("quarantine stage:%s file:%s entry:%s skipped:%d reason:%s", q->stage, file, entry, skipped, reason);
    return 0;
}

int64_t quarantine_count(const quarantine *q) { return q->n; }
int64_t quarantine_skipped(const quarantine *q) { return q->nskipped; }

static int cmp_line(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Splits text into lines in place (NUL-terminated); returns the count, lines in *out.
static int64_t split_lines(char *text, char ***out) {
    int64_t n = 0, cap = 0;
    char **v = NULL;
    for (char *p = text; p && *p;) {
        char *e = strchr(p, '\n');
        if (e) *e = 0;
        if (*p) {
            if (n == cap) {
                cap = cap ? 2 * cap : 256;
                char **nv = realloc(v, sizeof(char *) * (size_t)cap);
                if (!nv) { free(v); *out = NULL; return -1; }
                v = nv;
            }
            v[n++] = p;
        }
        p = e ? e + 1 : NULL;
    }
    *out = v;
    return n;
}

int quarantine_write(quarantine *q, const char *dir, MPI_Comm comm, int64_t *total, int64_t *skipped) {
    int rank, size, rc = 0;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int64_t loc[2] = {q->n, q->nskipped}, glob[2] = {0, 0};
    MPI_Allreduce(loc, glob, 2, MPI_INT64_T, MPI_SUM, comm);
    if (total) *total = glob[0];
    if (skipped) *skipped = glob[1];

    int mylen = (int)q->len;
    int *lens = NULL, *displs = NULL;
    char *all = NULL;
    if (rank == 0) {
        lens = pl_calloc((size_t)size, sizeof(int), "quarantine lengths");
        displs = pl_calloc((size_t)size, sizeof(int), "quarantine offsets");
    }
    MPI_Gather(&mylen, 1, MPI_INT, lens, 1, MPI_INT, 0, comm);
    int64_t sum = 0;
    if (rank == 0) {
        for (int r = 0; r < size; r++) {
            displs[r] = (int)sum;
            sum += lens[r];
        }
        all = pl_malloc((size_t)sum + 1, "quarantine rows");
    }
    MPI_Gatherv(q->buf ? q->buf : "", mylen, MPI_CHAR, all, lens, displs, MPI_CHAR, 0, comm);
    if (rank == 0) {
        all[sum] = 0;
        char path[4096], *old = NULL, **lines = NULL, **oldl = NULL, *out = NULL;
        size_t oldlen = 0;
        int64_t nl = 0, no = 0;
        rc = pl_path_join(path, sizeof path, dir, "quarantine.csv");
        if (!rc && pl_path_exists(path)) rc = pl_read_file(path, (uint8_t **)&old, &oldlen);
        if (!rc) {
            if (old) {
                char *o2 = pl_realloc(old, oldlen + 1, "quarantine old");
                if (o2) { old = o2; old[oldlen] = 0; }
                else rc = PL_ENOMEM;
            }
        }
        if (!rc) nl = split_lines(all, &lines);
        if (!rc && old) no = split_lines(old, &oldl);
        if (nl < 0 || no < 0) rc = PL_ENOMEM;
        if (!rc) {
            if (nl > 1) qsort(lines, (size_t)nl, sizeof(char *), cmp_line);   // qsort(NULL, 0) is UB
            size_t prefix = strlen(q->stage) + 1, cap = (size_t)sum + oldlen + 64, at = 0;
            out = pl_malloc(cap, "quarantine csv");
            if (!out) rc = PL_ENOMEM;
            else {
                at += (size_t)sprintf(out, "stage,file,entry,reason\n");
                for (int64_t i = 0; i < no; i++) {   // other stages' rows, kept in their order
                    if (i == 0 && !strncmp(oldl[i], "stage,", 6)) continue;
                    if (!strncmp(oldl[i], q->stage, prefix - 1) && oldl[i][prefix - 1] == ',') continue;
                    at += (size_t)sprintf(out + at, "%s\n", oldl[i]);
                }
                glob[0] = 0;
                for (int64_t i = 0; i < nl; i++) {
                    if (i > 0 && !strcmp(lines[i], lines[i - 1])) continue;
                    at += (size_t)sprintf(out + at, "%s\n", lines[i]);
                    glob[0]++;
                }
                rc = pl_write_file_atomic(path, out, at);
            }
        }
        free(out);
        free(lines);
        free(oldl);
        free(old);
    }
    free(all);
    free(lens);
    free(displs);
    MPI_Bcast(&rc, 1, MPI_INT, 0, comm);
    MPI_Bcast(glob, 1, MPI_INT64_T, 0, comm);   // rows written (duplicates dropped)
    if (total) *total = glob[0];
    return rc;
}
