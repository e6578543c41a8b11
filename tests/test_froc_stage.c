// stage_froc_run at 1, 2 and 3 ranks: rank 0 scores, and every rank returns the same code —
// 0 on good input (report written), 1 when the ground truth cannot be read, 2 when no detections
// file is named. Rank 0 writes the inputs (the case A in the DL_info format).
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/config.h"
#include "io/fileio.h"
#include "nn/pl.h"
#include "stages/stages.h"

static const char k_truth[] =
    "File_name,Patient_index,Study_index,Series_ID,Key_slice_index,Measurement_coordinates,Bounding_boxes,"
    "Lesion_diameters_Pixel_,Normalized_lesion_location,Coarse_lesion_type,Possibly_noisy,Slice_range,"
    "Spacing_mm_px_,Image_size,DICOM_windows,Patient_gender,Patient_age,Train_Val_Test\n"
    "000001_01_01_010.png,1,1,1,10,\"10, 10, 30, 30, 10, 10, 30, 30\",\"10, 10, 30, 30\",\"20.5, 10.25\","
    "\"0.5, 0.5, 0.5\",4,0,\"1, 60\",\"0.8, 0.8, 5\",\"512, 512\",\"-175, 275\",M,50,3\n"
    "000002_01_01_020.png,2,1,1,20,\"50, 50, 70, 70, 50, 50, 70, 70\",\"50, 50, 70, 70\",\"20.5, 10.25\","
    "\"0.5, 0.5, 0.5\",5,0,\"1, 60\",\"0.8, 0.8, 5\",\"512, 512\",\"-175, 275\",M,50,3\n"
    "000002_01_01_020.png,2,1,1,20,\"100, 100, 120, 120, 100, 100, 120, 120\",\"100, 100, 120, 120\",\"20.5, 10.25\","
    "\"0.5, 0.5, 0.5\",5,0,\"1, 60\",\"0.8, 0.8, 5\",\"512, 512\",\"-175, 275\",M,50,3\n"
    "000004_01_01_040.png,4,1,1,40,\"0, 0, 10, 10, 0, 0, 10, 10\",\"0, 0, 10, 10\",\"20.5, 10.25\","
    "\"0.5, 0.5, 0.5\",2,0,\"1, 60\",\"0.8, 0.8, 5\",\"512, 512\",\"-175, 275\",M,50,3\n";
static const char k_dets[] = "File_name,x1,y1,x2,y2,score\n"
                             "000001_01_01_010.png,10,10,30,30,0.9\n"
                             "000002_01_01_020.png,50,50,120,120,0.95\n"
                             "000002_01_01_020.png,100,100,120,120,0.6\n"
                             "000004_01_01_040.png,0,0,10,10,0.5\n";

static int contains(const uint8_t *b, size_t len, const char *needle) {
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(b + i, needle, n) == 0) return 1;
    return 0;
}

static int run(const char *const *sets, int n, MPI_Comm comm) {
    pl_cfg *cfg = NULL;
    if (cfg_load(&cfg, NULL, sets, n)) {
        fprintf(stderr, "config: %s\n", pl_last_error());
        return -1;
    }
    int code = stage_froc_run(cfg, comm);
    cfg_destroy(cfg);
    return code;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    pl_log_set_rank(rank);
    char dir[256], truth[300], dets[300], out[300], s1[400], s2[400], s3[400];
    snprintf(dir, sizeof dir, "froc_stage_np%d", size);
    snprintf(truth, sizeof truth, "%s/DL_info.csv", dir);
    snprintf(dets, sizeof dets, "%s/dets.csv", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    int fail = 0;
    if (rank == 0) {
        fail |= pl_mkdir_p(dir) != 0;
        fail |= pl_write_file_atomic(truth, k_truth, strlen(k_truth)) != 0;
        fail |= pl_write_file_atomic(dets, k_dets, strlen(k_dets)) != 0;
    }
    MPI_Barrier(MPI_COMM_WORLD);
    snprintf(s1, sizeof s1, "eval.truth=%s", truth);
    snprintf(s2, sizeof s2, "eval.detections=%s", dets);
    snprintf(s3, sizeof s3, "output.dir=%s", out);
    const char *good[] = {s1, s2, s3, "eval.bootstrap=20"};
    int c = run(good, 4, MPI_COMM_WORLD);
    if (c != 0) {
        fprintf(stderr, "FAIL rank %d: good input returned %d\n", rank, c);
        fail = 1;
    }
    if (rank == 0) {
        char p[400];
        snprintf(p, sizeof p, "%s/report/froc.json", out);
        uint8_t *b = NULL;
        size_t len = 0;
        // ranks .95 FP, .9 TP, .6 TP, .5 TP on 3 images with 4 lesions: 3/4 found at 1 FP/image
        if (pl_read_file(p, &b, &len) || !contains(b, len, "\"1\":0.75")) {
            fprintf(stderr, "FAIL: %s missing or without sens@1 = 0.75\n", p);
            fail = 1;
        }
        free(b);
    }
    char bad_truth[400];
    snprintf(bad_truth, sizeof bad_truth, "eval.truth=%s/missing.csv", dir);
    const char *missing[] = {bad_truth, s2};
    pl_quiet_begin();
    c = run(missing, 2, MPI_COMM_WORLD);
    if (c != 1) {
        fprintf(stderr, "FAIL rank %d: unreadable truth returned %d, want 1\n", rank, c);
        fail = 1;
    }
    const char *usage[] = {s1};
    c = run(usage, 1, MPI_COMM_WORLD);
    if (c != 2) {
        fprintf(stderr, "FAIL rank %d: no detections file returned %d, want 2\n", rank, c);
        fail = 1;
    }
    int any = 0;
    MPI_Allreduce(&fail, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (rank == 0) printf("test_froc_stage np:%d %s\n", size, any ? "FAILED" : "all passed");
    if (rank == 0 && !any) {   // keep the folder to look at when something failed
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0) any = 1;
    }
    MPI_Finalize();
    return any ? 1 : 0;
}
