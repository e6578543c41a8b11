#pragma once
// coco: COCO 2017 instances JSON (cJSON): images, annotations (bbox [x, y, w, h] in pixels,
// area, iscrowd) and categories, with category ids mapped to contiguous labels 0..K-1 in
// ascending id order. Segmentation polygons are not kept. An annotation that points at a
// missing image or category, or has a malformed bbox, is skipped and listed in coco_set.bad.
// Images are sorted by id; annotations by (image, id), with per-image ranges.

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t id;
    char file_name[64];      // "000000397133.jpg"
    int width, height;
} coco_image;

typedef struct {
    int64_t id, image_id;
    int64_t image;           // index into coco_set.images
    int category_id;         // COCO's id (1..90, not contiguous)
    int label;               // contiguous 0..K-1
    double bbox[4];          // x, y, w, h (pixels, top-left origin)
    double area;
    int iscrowd;             // 1: crowd region (an ignore region, not an object)
} coco_ann;

typedef struct {
    int id;
    char name[64];
} coco_category;             // categories[label] has id ascending with label

typedef struct {
    char msg[256];           // "instances_val2017.json: annotation 2 (index 5): image_id 7 not among the images"
} coco_bad;

typedef struct {
    coco_image *images; int64_t nimages;
    coco_ann *anns; int64_t nanns;
    int64_t *ann_off;        // (nimages + 1): annotations of image i are anns[ann_off[i] .. ann_off[i+1])
    coco_category *cats; int ncats;
    coco_bad *bad; int64_t nbad;
} coco_set;

// Parses JSON text already in memory; `label` names it in messages. Fails on invalid JSON
// or missing top-level arrays; bad individual annotations are listed, not fatal.
int coco_parse(coco_set *s, const char *json, size_t len, const char *label);
int coco_read_file(coco_set *s, const char *path);
// Loads instances_{split}2017.json from ROOT/annotations_trainval2017.zip (entry
// annotations/instances_{split}2017.json) or, if the zip is absent, ROOT/annotations/.
int coco_load(coco_set *s, const char *root, const char *split);
void coco_free(coco_set *s);   // accepts NULL

int coco_label_of(const coco_set *s, int category_id);        // -1 if unknown
int64_t coco_image_index(const coco_set *s, int64_t image_id); // -1 if unknown
