// test_io_coco: a hand-written instances JSON with non-contiguous category ids, an image
// without annotations, crowd regions, polygon and RLE segmentations (blanked before parsing),
// and bad annotations (missing image, unknown category, short bbox, negative size), read from
// memory, from an annotations_trainval2017.zip and from an unpacked annotations/ folder.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/archive.h"
#include "io/coco.h"
#include "io/fileio.h"
#include "nn/pl.h"
#include "test_util.h"

#define HAS(needle) (strstr(pl_last_error(), (needle)) != NULL)

static const char JSON[] =
    "{\"info\": {\"description\": \"COCO 2017 Dataset\", \"year\": 2017},\n"
    " \"licenses\": [{\"id\": 1, \"name\": \"x\"}],\n"
    " \"images\": [\n"
    "  {\"license\": 1, \"file_name\": \"000000397133.jpg\", \"height\": 427, \"width\": 640, \"id\": 397133},\n"
    "  {\"license\": 1, \"file_name\": \"000000037777.jpg\", \"height\": 230, \"width\": 352, \"id\": 37777},\n"
    "  {\"license\": 1, \"file_name\": \"000000252219.jpg\", \"height\": 428, \"width\": 640, \"id\": 252219}],\n"
    " \"annotations\": [\n"
    // 0: ok, polygon segmentation
    "  {\"segmentation\": [[1.0, 2.0, 3.0, 4.0, 5.5, 6.5], [7, 8, 9, 10, 11, 12]], \"area\": 702.1, \"iscrowd\": 0,"
    "   \"image_id\": 397133, \"bbox\": [102.49, 118.47, 7.9, 17.31], \"category_id\": 90, \"id\": 1001},\n"
    // 1: crowd, RLE segmentation whose counts string holds brackets and an escaped quote
    "  {\"segmentation\": {\"counts\": \"ab]]}}\\\"[[{{\", \"size\": [427, 640]}, \"area\": 5000, \"iscrowd\": 1,"
    "   \"image_id\": 397133, \"bbox\": [0, 0, 100, 50], \"category_id\": 1, \"id\": 900},\n"
    // 2: ok on image 37777, no area given (-> w*h)
    "  {\"segmentation\": [], \"iscrowd\": 0, \"image_id\": 37777, \"bbox\": [10, 20, 30, 40], "
    "   \"category_id\": 18, \"id\": 5},\n"
    // 3: missing image
    "  {\"segmentation\": [[1,2,3,4,5,6]], \"area\": 1, \"iscrowd\": 0, \"image_id\": 999, \"bbox\": [1, 2, 3, 4],"
    "   \"category_id\": 1, \"id\": 77},\n"
    // 4: unknown category
    "  {\"area\": 1, \"iscrowd\": 0, \"image_id\": 37777, \"bbox\": [1, 2, 3, 4], \"category_id\": 5, \"id\": 78},\n"
    // 5: short bbox
    "  {\"area\": 1, \"iscrowd\": 0, \"image_id\": 37777, \"bbox\": [1, 2, 3], \"category_id\": 1, \"id\": 79},\n"
    // 6: negative width
    "  {\"area\": 1, \"iscrowd\": 0, \"image_id\": 37777, \"bbox\": [1, 2, -3, 4], \"category_id\": 1, \"id\": 80},\n"
    // 7: ok on image 37777 with a smaller id than annotation 2 (sorted first)
    "  {\"area\": 12, \"iscrowd\": 0, \"image_id\": 37777, \"bbox\": [5, 6, 3, 4], \"category_id\": 90, \"id\": 3}],\n"
    " \"categories\": [\n"
    "  {\"supercategory\": \"indoor\", \"id\": 90, \"name\": \"toothbrush\"},\n"
    "  {\"supercategory\": \"person\", \"id\": 1, \"name\": \"person\"},\n"
    "  {\"supercategory\": \"animal\", \"id\": 18, \"name\": \"segmentation\"}]}\n";

static void check_set(const coco_set *s, const char *what) {
    CHECK(s->ncats == 3, "%s: %d categories", what, s->ncats);
    if (s->ncats == 3) {
        CHECK(s->cats[0].id == 1 && s->cats[1].id == 18 && s->cats[2].id == 90, "%s: category order", what);
        CHECK(strcmp(s->cats[0].name, "person") == 0 && strcmp(s->cats[1].name, "segmentation") == 0 &&
                  strcmp(s->cats[2].name, "toothbrush") == 0,
              "%s: names", what);
        CHECK(coco_label_of(s, 1) == 0 && coco_label_of(s, 18) == 1 && coco_label_of(s, 90) == 2 &&
                  coco_label_of(s, 5) == -1,
              "%s: label mapping", what);
    }
    CHECK(s->nimages == 3, "%s: %lld images", what, (long long)s->nimages);
    if (s->nimages == 3) {
        CHECK(s->images[0].id == 37777 && s->images[1].id == 252219 && s->images[2].id == 397133, "%s: image order",
              what);
        CHECK(strcmp(s->images[2].file_name, "000000397133.jpg") == 0 && s->images[2].width == 640 &&
                  s->images[2].height == 427,
              "%s: image fields", what);
        CHECK(coco_image_index(s, 252219) == 1 && coco_image_index(s, 999) == -1, "%s: image index", what);
    }
    CHECK(s->nanns == 4, "%s: %lld annotations", what, (long long)s->nanns);
    CHECK(s->nbad == 4, "%s: %lld bad", what, (long long)s->nbad);
    if (s->nanns != 4 || s->nimages != 3 || s->nbad != 4) return;
    // Per-image ranges: 37777 -> ids 3, 5; 252219 -> none; 397133 -> ids 900, 1001.
    CHECK(s->ann_off[0] == 0 && s->ann_off[1] == 2 && s->ann_off[2] == 2 && s->ann_off[3] == 4, "%s: offsets %lld %lld %lld %lld",
          what, (long long)s->ann_off[0], (long long)s->ann_off[1], (long long)s->ann_off[2], (long long)s->ann_off[3]);
    const coco_ann *a = s->anns;
    CHECK(a[0].id == 3 && a[1].id == 5 && a[2].id == 900 && a[3].id == 1001, "%s: annotation order", what);
    CHECK(a[0].label == 2 && a[0].area == 12 && a[0].image == 0, "%s: ann 3", what);
    CHECK(a[1].label == 1 && a[1].area == 1200 && a[1].bbox[3] == 40, "%s: ann 5 (area = w*h)", what);
    CHECK(a[2].iscrowd == 1 && a[2].label == 0 && a[2].bbox[2] == 100 && a[2].image == 2, "%s: crowd", what);
    CHECK(a[3].iscrowd == 0 && a[3].category_id == 90 && a[3].bbox[0] == 102.49 && a[3].bbox[3] == 17.31 &&
              a[3].area == 702.1 && a[3].image_id == 397133,
          "%s: ann 1001", what);
    const char *want[4] = {"annotation 77 (index 3): image_id 999 not among the images",
                           "annotation 78 (index 4): category_id 5 not among the categories",
                           "annotation 79 (index 5): bbox is not an array of 4 numbers (3 elements)",
                           "annotation 80 (index 6): bbox [1, 2, -3, 4] has a negative size"};
    for (int i = 0; i < 4; i++)
        CHECK(strstr(s->bad[i].msg, want[i]) != NULL && strstr(s->bad[i].msg, "instances_") != NULL &&
                  strstr(s->bad[i].msg, "skipped") != NULL,
              "%s: bad %d '%s'", what, i, s->bad[i].msg);
}

int main(void) {
    pl_quiet_begin();
    double t0 = pl_time();
    char dir[256], path[640], zip[512], adir[512];
    snprintf(dir, sizeof dir, "tmp_io_coco_%ld", (long)getpid());
    PL_ASSERT(pl_mkdir_p(dir) == 0);

    coco_set s;
    CHECK(coco_parse(&s, JSON, strlen(JSON), "instances_val2017.json") == 0, "%s", pl_last_error());
    check_set(&s, "memory");
    printf("bad annotation example: %s\n", s.nbad ? s.bad[0].msg : "-");
    coco_free(&s);

    // From the zip as shipped (another entry first, then the instances file).
    snprintf(zip, sizeof zip, "%s/annotations_trainval2017.zip", dir);
    arc_writer *w = NULL;
    CHECK(arc_writer_open(&w, zip, ARC_ZIP) == 0, "%s", pl_last_error());
    CHECK(arc_writer_add(w, "annotations/captions_val2017.json", "{}", 2) == 0, "%s", pl_last_error());
    CHECK(arc_writer_add(w, "annotations/instances_val2017.json", JSON, strlen(JSON)) == 0, "%s", pl_last_error());
    CHECK(arc_writer_close(w) == 0, "%s", pl_last_error());
    CHECK(coco_load(&s, dir, "val") == 0, "%s", pl_last_error());
    check_set(&s, "zip");
    CHECK(s.nbad && strstr(s.bad[0].msg, "annotations_trainval2017.zip:annotations/instances_val2017.json"),
          "label '%s'", s.nbad ? s.bad[0].msg : "");
    coco_free(&s);
    int rc = coco_load(&s, dir, "train");
    CHECK(rc == PL_ENOTFOUND && HAS(zip) && HAS("annotations/instances_train2017.json"), "rc %d '%s'", rc,
          pl_last_error());
    unlink(zip);

    // From an unpacked annotations/ folder.
    snprintf(adir, sizeof adir, "%s/annotations", dir);
    PL_ASSERT(pl_mkdir_p(adir) == 0);
    snprintf(path, sizeof path, "%s/instances_train2017.json", adir);
    PL_ASSERT(pl_write_file_atomic(path, JSON, strlen(JSON)) == 0);
    CHECK(coco_load(&s, dir, "train") == 0, "%s", pl_last_error());
    check_set(&s, "folder");
    coco_free(&s);
    rc = coco_load(&s, dir, "val");
    CHECK(rc == PL_ENOTFOUND && HAS("annotations_trainval2017.zip") && HAS("instances_val2017.json"), "rc %d '%s'", rc,
          pl_last_error());

    // Invalid JSON: line number of the error; missing arrays; duplicate ids.
    char broken[sizeof JSON];
    strcpy(broken, JSON);
    char *p = strstr(broken, "\"id\": 37777}");
    p[11] = ']';   // "}," -> "],"  on line 5
    rc = coco_parse(&s, broken, strlen(broken), "broken.json");
    CHECK(rc == PL_EFORMAT && HAS("broken.json: invalid JSON at line 5"), "rc %d '%s'", rc, pl_last_error());
    printf("invalid json: %s\n", pl_last_error());
    const char *noann = "{\"images\": [], \"categories\": []}";
    rc = coco_parse(&s, noann, strlen(noann), "x.json");
    CHECK(rc == PL_EFORMAT && HAS("x.json") && HAS("\"annotations\""), "'%s'", pl_last_error());
    rc = coco_parse(&s, "[1, 2]", 6, "arr.json");
    CHECK(rc == PL_EFORMAT && HAS("arr.json: top level is not a JSON object"), "'%s'", pl_last_error());
    const char *dup = "{\"images\": [{\"id\": 1, \"file_name\": \"a.jpg\", \"width\": 2, \"height\": 2},"
                      "{\"id\": 1, \"file_name\": \"b.jpg\", \"width\": 2, \"height\": 2}],"
                      " \"annotations\": [], \"categories\": []}";
    rc = coco_parse(&s, dup, strlen(dup), "dup.json");
    CHECK(rc == PL_EFORMAT && HAS("dup.json: image id 1 appears twice (a.jpg, b.jpg)"), "'%s'", pl_last_error());
    // An image with a bad width is listed and skipped; its annotations then point at nothing.
    const char *badimg = "{\"images\": [{\"id\": 4, \"file_name\": \"a.jpg\", \"width\": 0, \"height\": 2}],"
                         " \"annotations\": [{\"id\": 1, \"image_id\": 4, \"category_id\": 1, \"bbox\": [0,0,1,1]}],"
                         " \"categories\": [{\"id\": 1, \"name\": \"c\"}]}";
    CHECK(coco_parse(&s, badimg, strlen(badimg), "bi.json") == 0 && s.nimages == 0 && s.nanns == 0 && s.nbad == 2,
          "bad image: %lld images %lld bad", (long long)s.nimages, (long long)s.nbad);
    if (s.nbad == 2)
        CHECK(strstr(s.bad[0].msg, "bi.json: image 0: missing or invalid") &&
                  strstr(s.bad[1].msg, "image_id 4 not among the images"),
              "'%s' / '%s'", s.bad[0].msg, s.bad[1].msg);
    coco_free(&s);
    coco_free(NULL);
    // Nothing at all under the root.
    snprintf(path, sizeof path, "%s/empty", dir);
    PL_ASSERT(pl_mkdir_p(path) == 0);
    rc = coco_load(&s, path, "val");
    CHECK(rc == PL_ENOTFOUND && HAS("neither") && HAS(path), "'%s'", pl_last_error());

    rmdir(path);
    snprintf(path, sizeof path, "%s/instances_train2017.json", adir);
    unlink(path);
    rmdir(adir);
    rmdir(dir);
    printf("test_io_coco: %.2f s\n", pl_time() - t0);
    if (g_fail) fprintf(stderr, "test_io_coco: %d failures\n", g_fail);
    else printf("test_io_coco: all checks passed\n");
    return g_fail ? 1 : 0;
}
