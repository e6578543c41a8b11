// test_io_imagenet: LOC_synset_mapping.txt and LOC_val_solution.csv through real files,
// labels by line order, first-synset rule of the prediction string, malformed rows listed,
// fatal errors (bad synset line, duplicate synset/image, wrong header), entry-name helpers.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/fileio.h"
#include "io/imagenet.h"
#include "nn/pl.h"
#include "test_util.h"

#define HAS(needle) (strstr(pl_last_error(), (needle)) != NULL)

// Not in wnid order on purpose: the label is the line order, not the sorted order.
static const char SYNSETS[] = "n01440764 tench, Tinca tinca\r\n"
                              "n01443537 goldfish, Carassius auratus\r\n"
                              "n01751748 sea snake\r\n"
                              "n01530575 brambling, Fringilla montifringilla\r\n";

static const char VAL[] =
    "ImageId,PredictionString\n"
    "ILSVRC2012_val_00008726,n01751748 82 132 342 268 n01751748 3 4 5 6 \n"     // line 2, label 2
    "ILSVRC2012_val_00000001,n01530575 1 2 3 4\n"                               // 3, label 3
    "ILSVRC2012_val_00000003,n01440764 1 2 3 4 n01443537 5 6 7 8\n"             // 4, first synset -> 0
    "ILSVRC2012_val_00000004 n01440764 1 2 3 4\n"                               // 5, no comma
    "ILSVRC2012_val_00000005,n09999999 1 2 3 4\n"                               // 6, unknown synset
    "ILSVRC2012_val_00000006,x01440764 1 2 3 4\n"                               // 7, not a wnid
    ",n01440764 1 2 3 4\n"                                                      // 8, empty id
    "\n"                                                                        // 9, blank
    "ILSVRC2012_val_00000002,n01443537 1 2 3 4";                                // 10, no final newline

int main(void) {
    pl_quiet_begin();
    double t0 = pl_time();
    char dir[256], spath[512], vpath[512];
    snprintf(dir, sizeof dir, "tmp_io_imagenet_%ld", (long)getpid());
    PL_ASSERT(pl_mkdir_p(dir) == 0);
    snprintf(spath, sizeof spath, "%s/LOC_synset_mapping.txt", dir);
    snprintf(vpath, sizeof vpath, "%s/LOC_val_solution.csv", dir);
    PL_ASSERT(pl_write_file_atomic(spath, SYNSETS, strlen(SYNSETS)) == 0);
    PL_ASSERT(pl_write_file_atomic(vpath, VAL, strlen(VAL)) == 0);

    inet_synsets s;
    CHECK(inet_synsets_read(&s, spath) == 0, "%s", pl_last_error());
    CHECK(s.n == 4, "n %d", s.n);
    if (s.n == 4) {
        CHECK(strcmp(s.syn[0].wnid, "n01440764") == 0 && strcmp(s.syn[0].desc, "tench, Tinca tinca") == 0,
              "syn0 '%s' '%s'", s.syn[0].wnid, s.syn[0].desc);
        CHECK(strcmp(s.syn[3].desc, "brambling, Fringilla montifringilla") == 0, "syn3 desc '%s'", s.syn[3].desc);
        CHECK(inet_label_of(&s, "n01440764") == 0 && inet_label_of(&s, "n01443537") == 1 &&
                  inet_label_of(&s, "n01751748") == 2 && inet_label_of(&s, "n01530575") == 3 &&
                  inet_label_of(&s, "n01530576") == -1,
              "labels");
    }

    inet_val v;
    CHECK(inet_val_read(&v, &s, vpath) == 0, "%s", pl_last_error());
    CHECK(v.n == 4 && v.nbad == 4, "val n %lld bad %lld", (long long)v.n, (long long)v.nbad);
    CHECK(inet_val_label(&v, "ILSVRC2012_val_00008726") == 2 && inet_val_label(&v, "ILSVRC2012_val_00000001") == 3 &&
              inet_val_label(&v, "ILSVRC2012_val_00000003") == 0 && inet_val_label(&v, "ILSVRC2012_val_00000002") == 1 &&
              inet_val_label(&v, "ILSVRC2012_val_00000004") == -1,
          "val labels");
    if (v.n == 4) CHECK(strcmp(v.rows[0].image_id, "ILSVRC2012_val_00000001") == 0, "sorted: '%s'", v.rows[0].image_id);
    if (v.nbad == 4) {
        const struct { int line; const char *msg; } want[4] = {
            {5, "LOC_val_solution.csv:5: 'ILSVRC2012_val_00000004 n01440764 1 2 3 4' has no comma"},
            {6, "LOC_val_solution.csv:6: synset 'n09999999' is not in the synset list"},
            {7, "LOC_val_solution.csv:7: 'x01440764' is not a synset id"},
            {8, "LOC_val_solution.csv:8: ImageId '' is empty or too long"}};
        for (int i = 0; i < 4; i++)
            CHECK(v.bad[i].line == want[i].line && strstr(v.bad[i].msg, want[i].msg), "bad %d: %d '%s'", i,
                  v.bad[i].line, v.bad[i].msg);
    }
    inet_val_free(&v);

    // Fatal: wrong header, duplicate image id.
    const char *hdr = "ImageId,Prediction\nILSVRC2012_val_00000001,n01440764 1 2 3 4\n";
    int rc = inet_val_parse(&v, &s, hdr, strlen(hdr), "val.csv");
    CHECK(rc == PL_EFORMAT && HAS("val.csv:1: header is 'ImageId,Prediction'"), "'%s'", pl_last_error());
    const char *dup = "ImageId,PredictionString\nA,n01440764 1\nB,n01440764 1\nA,n01443537 1\n";
    rc = inet_val_parse(&v, &s, dup, strlen(dup), "dup.csv");
    CHECK(rc == PL_EFORMAT && HAS("dup.csv: ImageId A listed twice"), "'%s'", pl_last_error());
    inet_synsets_free(&s);

    // Synset file errors.
    const char *bad = "n01440764 tench\nn0144 goldfish\n";
    rc = inet_synsets_parse(&s, bad, strlen(bad), "syn.txt");
    CHECK(rc == PL_EFORMAT && HAS("syn.txt:2: 'n0144 goldfish' does not start with a synset id"), "'%s'",
          pl_last_error());
    const char *twice = "n01440764 tench\nn01443537 goldfish\nn01440764 again\n";
    rc = inet_synsets_parse(&s, twice, strlen(twice), "syn.txt");
    CHECK(rc == PL_EFORMAT && HAS("syn.txt: synset n01440764 listed twice (lines 1 and 3)"), "'%s'", pl_last_error());
    rc = inet_synsets_parse(&s, "\n", 1, "e.txt");
    CHECK(rc == PL_EFORMAT && HAS("e.txt: no synsets"), "'%s'", pl_last_error());
    char missing[600];
    snprintf(missing, sizeof missing, "%s/nope.txt", dir);
    rc = inet_synsets_read(&s, missing);
    CHECK(rc == PL_ENOTFOUND && HAS(missing), "'%s'", pl_last_error());
    inet_synsets_free(NULL);
    inet_val_free(NULL);

    // Entry-name helpers.
    char w[16], id[48];
    CHECK(inet_synset_from_tar_name(w, "n01440764.tar") == 0 && strcmp(w, "n01440764") == 0, "tar name");
    CHECK(inet_synset_from_tar_name(w, "train/n01440764.tar") == 0 && strcmp(w, "n01440764") == 0, "tar path");
    rc = inet_synset_from_tar_name(w, "n0144076.tar");
    CHECK(rc == PL_EFORMAT && w[0] == 0 && HAS("'n0144076.tar' is not a synset tar name"), "'%s'", pl_last_error());
    CHECK(inet_synset_from_tar_name(w, "n01440764.tgz") == PL_EFORMAT, "tgz accepted");
    CHECK(inet_synset_from_image_name(w, "n01440764_10026.JPEG") == 0 && strcmp(w, "n01440764") == 0, "image name");
    CHECK(inet_synset_from_image_name(w, "n01440764/n01440764_10026.JPEG") == 0, "image path");
    rc = inet_synset_from_image_name(w, "ILSVRC2012_val_00000001.JPEG");
    CHECK(rc == PL_EFORMAT && HAS("is not a train image name"), "'%s'", pl_last_error());
    CHECK(inet_image_id(id, sizeof id, "val/ILSVRC2012_val_00000001.JPEG") == 0 &&
              strcmp(id, "ILSVRC2012_val_00000001") == 0,
          "image id '%s'", id);
    CHECK(inet_image_id(id, 8, "ILSVRC2012_val_00000001.JPEG") == PL_ERANGE, "short buffer");
    CHECK(inet_wnid_ok("n01440764") && !inet_wnid_ok("n0144076") && !inet_wnid_ok("n014407641") &&
              !inet_wnid_ok("m01440764") && !inet_wnid_ok(NULL),
          "wnid_ok");

    unlink(spath);
    unlink(vpath);
    rmdir(dir);
    printf("test_io_imagenet: %.2f s\n", pl_time() - t0);
    if (g_fail) fprintf(stderr, "test_io_imagenet: %d failures\n", g_fail);
    else printf("test_io_imagenet: all checks passed\n");
    return g_fail ? 1 : 0;
}
