// bench_shard: throughput of `mp3d preprocess` (key slices/s) and `mp3d vdt` (images/s) at 1 and
// 2 ranks, each beside a decode-only pass over the same inputs measured in the same run
// (PNG decode of exactly the slices preprocess reads; JPEG decode of the same images).
// Usage: mpirun -np 2 bench_shard DATA_DIR OUT_DIR [REPS] [fresh|overwrite]   (DATA_DIR from `mp3d synth`, holding
// deeplesion/ and imagenet/). Prints markdown rows; not a test. Results: results/bench/*.md.
#include <dirent.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#include "io/archive.h"
#include "io/config.h"
#include "io/dlinfo.h"
#include "io/image.h"
#include "io/worksplit.h"
#include "nn/pl.h"
#include "stages/stages.h"

static double cpu_self(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + 1e-6 * (double)u.ru_utime.tv_usec + (double)u.ru_stime.tv_sec + 1e-6 * (double)u.ru_stime.tv_usec;
}

// Machine-wide busy CPU seconds (from /proc/stat), to report what other processes used.
static double cpu_machine(void) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 8) return 0;
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / 100.0;   // USER_HZ = 100
}

// --- the PNG set preprocess decodes: per key slice the window of its 9 slices at 2.5 mm
typedef struct { char name[96]; } pname;

static int cmp_pname(const void *a, const void *b) { return strcmp(((const pname *)a)->name, ((const pname *)b)->name); }

static int64_t needed_pngs(pname **out, const char *dl_dir, int64_t *keys) {
    char p[1200];
    snprintf(p, sizeof p, "%s/DL_info.csv", dl_dir);
    dl_table t = {0};
    if (dlinfo_read(&t, p)) return -1;
    int64_t n = 0, cap = 0;
    pname *v = NULL;
    *keys = 0;
    for (int64_t i = 0; i < t.n; i++) {
        int first = 1;
        for (int64_t j = i - 1; j >= 0 && j >= i - 16; j--) first &= strcmp(t.rows[j].file_name, t.rows[i].file_name) != 0;
        if (!first) continue;
        (*keys)++;
        const dl_lesion *l = &t.rows[i];
        double dz = l->spacing[2] > 0 ? l->spacing[2] : 1;
        int lo = (int)floor(l->key_slice - 4 * 2.5 / dz + 1e-6), hi = (int)ceil(l->key_slice + 4 * 2.5 / dz - 1e-6);
        for (int s = lo; s <= hi; s++) {
            if (n == cap) {
                cap = cap ? 2 * cap : 4096;
                v = realloc(v, sizeof *v * (size_t)cap);
            }
            dlinfo_slice_entry(l, s, v[n].name, sizeof v[n].name);
            n++;
        }
    }
    qsort(v, (size_t)n, sizeof *v, cmp_pname);
    int64_t u = 0;
    for (int64_t i = 0; i < n; i++)
        if (u == 0 || strcmp(v[i].name, v[u - 1].name)) v[u++] = v[i];
    dlinfo_free(&t);
    *out = v;
    return u;
}

// Decodes the needed PNGs of zips [z0, z1) (each rank its own zips); returns slices decoded.
static int64_t decode_pngs(const char *dl_dir, const pname *need, int64_t nneed, int rank, int size, double *t_decode) {
    int64_t done = 0;
    *t_decode = 0;
    for (int z = 1; z < 1000; z++) {
        char p[1200];
        snprintf(p, sizeof p, "%s/Images_png_%02d.zip", dl_dir, z);
        arc_reader *r = NULL;
        pl_quiet_begin();
        int rc = arc_open_file(&r, p);
        pl_quiet_end();
        if (rc) break;
        if ((z - 1) % size != rank) {
            arc_close(r);
            continue;
        }
        const char *name;
        int64_t sz;
        while (arc_next(r, &name, &sz) == 1) {
            pname key;
            snprintf(key.name, sizeof key.name, "%s", name);
            if (!bsearch(&key, need, (size_t)nneed, sizeof *need, cmp_pname)) continue;
            uint8_t *buf = NULL;
            size_t len = 0;
            if (arc_read_entry(r, &buf, &len)) continue;
            uint16_t *px = NULL;
            int w, h;
            double t0 = pl_time();
            if (img_decode_gray16(&px, &w, &h, buf, len, name) == 0) done++;
            *t_decode += pl_time() - t0;
            free(px);
            free(buf);
        }
        arc_close(r);
    }
    return done;
}

// Decodes every image of the ImageNet val tar and the train tars (round-robin over ranks).
static int64_t decode_jpegs(const char *in_dir, int rank, int size, double *t_decode) {
    int64_t done = 0, idx = 0;
    *t_decode = 0;
    const char *tars[2] = {"ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"};
    for (int k = 0; k < 2; k++) {
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", in_dir, tars[k]);
        arc_reader *r = NULL;
        if (arc_open_file(&r, p)) continue;
        const char *name;
        int64_t sz;
        while (arc_next(r, &name, &sz) == 1) {
            if (idx++ % size != rank) continue;
            uint8_t *buf = NULL;
            size_t len = 0;
            if (arc_read_entry(r, &buf, &len)) continue;
            arc_reader *in = NULL;
            int inner = k == 0 && arc_open_memory(&in, buf, len, name) == 0;
            const char *iname;
            int64_t isz;
            do {
                uint8_t *ib = buf;
                size_t il = len;
                if (inner) {
                    if (arc_next(in, &iname, &isz) != 1) break;
                    if (arc_read_entry(in, &ib, &il)) break;
                }
                uint8_t *px = NULL;
                int w, h;
                double t0 = pl_time();
                if (img_decode_rgb8(&px, &w, &h, ib, il, name) == 0) done++;
                *t_decode += pl_time() - t0;
                free(px);
                if (inner) free(ib);
            } while (inner);
            arc_close(in);
            free(buf);
        }
        arc_close(r);
    }
    return done;
}

// Deletes the regular files directly in dir (rank 0 of comm), then syncs the file system so the
// deletion's own work is not done during the timed run; everyone waits.
static void clear_dir(const char *dir, MPI_Comm comm) {
    int crank = 0;
    MPI_Comm_rank(comm, &crank);
    DIR *d = crank == 0 ? opendir(dir) : NULL;
    if (d) {
        struct dirent *e;
        char p[1200];
        struct stat st;
        while ((e = readdir(d)) != NULL) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) unlink(p);
        }
        closedir(d);
        sync();
    }
    MPI_Barrier(comm);
}

static int run(int (*stage)(const pl_cfg *, MPI_Comm), MPI_Comm comm, const char *root, const char *out, const char *extra) {
    char s1[700], s2[700];
    snprintf(s1, sizeof s1, "input.root=%s", root);
    snprintf(s2, sizeof s2, "output.dir=%s", out);
    const char *sets[5] = {s1, s2, "run.force=true", "run.max_bad_fraction=1", extra};
    pl_cfg *cfg = NULL;
    if (cfg_load(&cfg, NULL, sets, extra ? 5 : 4)) return -1;
    int rc = stage(cfg, comm);
    cfg_destroy(cfg);
    return rc;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    pl_log_set_rank(rank);
    pl_log_set_level(PL_WARN);
    // the stages set this allocator behaviour for themselves; the decode-only references run
    // under it from the start, so both sides of every ratio allocate alike
    pl_malloc_reuse(64u << 20);
    if (argc < 3) {
        if (rank == 0) fprintf(stderr, "usage: mpirun -np 2 bench_shard DATA_DIR OUT_DIR [REPS] [fresh|overwrite]\n");
        MPI_Finalize();
        return 2;
    }
    char dl[600], in[600], o1[600], o2[600];
    snprintf(dl, sizeof dl, "%s/deeplesion", argv[1]);
    snprintf(in, sizeof in, "%s/imagenet", argv[1]);
    snprintf(o1, sizeof o1, "%s/np1", argv[2]);
    snprintf(o2, sizeof o2, "%s/np%d", argv[2], size);
    MPI_Comm c1;
    MPI_Comm_split(MPI_COMM_WORLD, rank == 0 ? 0 : MPI_UNDEFINED, rank, &c1);
    int reps = argc > 3 ? atoi(argv[3]) : 3;
    // fresh (default): the stage's earlier output files are deleted (untimed) before each timed
    // run, as in a first run; overwrite: they stay, and the stage replaces them (a re-run). On
    // ext4 replacing a file by rename costs the old file's deletion and, by ext4's auto_da_alloc,
    // starting the new file's writeback: 0.17 s for 271 MB here, which tmpfs does not pay.
    const int overwrite = argc > 4 && strcmp(argv[4], "overwrite") == 0;
    if (argc > 4 && !overwrite && strcmp(argv[4], "fresh") != 0) {
        if (rank == 0) fprintf(stderr, "bench_shard: output mode \"%s\" (must be fresh or overwrite)\n", argv[4]);
        MPI_Finalize();
        return 2;
    }
    if (rank == 0) printf("output: %s (%s)\n", argv[2], overwrite ? "overwrite: earlier output replaced" : "fresh: earlier output deleted first, untimed");

    // ---- preprocess
    pname *need = NULL;
    int64_t keys = 0, nneed = needed_pngs(&need, dl, &keys);
    if (nneed < 0 && rank == 0) printf("preprocess: no %s/DL_info.csv, skipped\n", dl);
    if (nneed >= 0 && rank == 0) {
        printf("preprocess: key_slices:%lld pngs_read:%lld ranks:%d reps:%d\n", (long long)keys, (long long)nneed, size, reps);
        printf("| rep | ranks | decode-only slices/s | decode-only key slices/s | preprocess key slices/s | preprocess / decode-only | other CPU s |\n");
        printf("|---|---|---|---|---|---|---|\n");
    }
    for (int rep = 0; rep < reps && nneed >= 0; rep++) {
        for (int np = 1; np <= size; np += size - 1 > 0 ? size - 1 : 1) {
            MPI_Comm comm = np == 1 ? c1 : MPI_COMM_WORLD;
            MPI_Barrier(MPI_COMM_WORLD);
            double m0 = cpu_machine(), s0 = cpu_self();
            double t0 = pl_time(), td = 0, dec = 0, pp = 0;
            int64_t ndec = 0;
            if (comm != MPI_COMM_NULL) {
                int64_t mine = decode_pngs(dl, need, nneed, rank, np, &td);
                MPI_Allreduce(&mine, &ndec, 1, MPI_INT64_T, MPI_SUM, comm);
                MPI_Barrier(comm);
                dec = pl_time() - t0;
                if (!overwrite) clear_dir(np == 1 ? o1 : o2, comm);
                double t1 = pl_time();
                run(stage_preprocess_run, comm, dl, np == 1 ? o1 : o2, NULL);
                MPI_Barrier(comm);
                pp = pl_time() - t1;
            }
            MPI_Barrier(MPI_COMM_WORLD);
            double own = cpu_self() - s0, own_all = 0;
            MPI_Allreduce(&own, &own_all, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
            double other = cpu_machine() - m0 - own_all;
            if (rank == 0)
                printf("| %d | %d | %.1f | %.1f | %.1f | %.2f | %.1f |\n", rep, np, ndec / dec, keys / dec, keys / pp, dec / pp, other);
            fflush(stdout);
            if (size == 1) break;
        }
    }
    free(need);

    // ---- vdt (ImageNet, train + val)
    if (rank == 0) {
        printf("\nvdt imagenet (short side 256, crop 224)\n");
        printf("| rep | ranks | images | decode-only images/s | vdt images/s | vdt / decode-only | other CPU s |\n|---|---|---|---|---|---|---|\n");
    }
    for (int rep = 0; rep < reps; rep++) {
        for (int np = 1; np <= size; np += size - 1 > 0 ? size - 1 : 1) {
            MPI_Comm comm = np == 1 ? c1 : MPI_COMM_WORLD;
            MPI_Barrier(MPI_COMM_WORLD);
            double m0 = cpu_machine(), s0 = cpu_self();
            double t0 = pl_time(), td = 0, dec = 0, vd = 0;
            int64_t ndec = 0;
            if (comm != MPI_COMM_NULL) {
                int64_t mine = decode_jpegs(in, rank, np, &td);
                MPI_Allreduce(&mine, &ndec, 1, MPI_INT64_T, MPI_SUM, comm);
                MPI_Barrier(comm);
                dec = pl_time() - t0;
                if (!overwrite) clear_dir(np == 1 ? o1 : o2, comm);
                double t1 = pl_time();
                run(stage_vdt_run, comm, in, np == 1 ? o1 : o2, "vdt.crop=224");
                MPI_Barrier(comm);
                vd = pl_time() - t1;
            }
            MPI_Barrier(MPI_COMM_WORLD);
            double own = cpu_self() - s0, own_all = 0;
            MPI_Allreduce(&own, &own_all, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
            double other = cpu_machine() - m0 - own_all;
            if (rank == 0)
                printf("| %d | %d | %lld | %.1f | %.1f | %.2f | %.1f |\n", rep, np, (long long)ndec, ndec / dec, ndec / vd, dec / vd, other);
            fflush(stdout);
            if (size == 1) break;
        }
    }
    if (c1 != MPI_COMM_NULL) MPI_Comm_free(&c1);
    MPI_Finalize();
    return 0;
}
