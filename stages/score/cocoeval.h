#pragma once
// cocoeval: COCO-style bbox evaluation, the algorithm of pycocotools COCOeval (evaluateImg,
// accumulate, summarize) reproduced step for step: AP over IoU 0.50:0.05:0.95 and 101 recall
// points, AP50/AP75, AP/AR per area range, AR at 1/10/max_dets detections per image.
// Pure computation on gathered arrays: no MPI (the caller gathers detections first), no files
// except coco_eval_write_json. Boxes are x1,y1,x2,y2 (pycocotools' bbox is x,y,w,h: w = x2-x1).

#include <stdint.h>

typedef struct {
    int64_t image;          // image id (as in image_ids)
    int32_t category;       // category id
    double box[4];          // x1, y1, x2, y2
    double score;
} coco_eval_det;

typedef struct {
    int64_t image;
    int32_t category;
    double box[4];          // x1, y1, x2, y2
    double area;            // segmentation area (area ranges use it); <= 0: box area
    int iscrowd;            // 1: crowd region, never a positive; dets inside it are ignored
} coco_eval_gt;

typedef struct {
    int max_dets;           // detections kept per image and category (COCO: 100); AR also at 1, 10
    int plus1;              // 0: continuous widths x2-x1 (COCO); 1: x2-x1+1 (IoU and box areas)
} coco_eval_opts;
void coco_eval_opts_default(coco_eval_opts *o);   // 100, 0

// Every figure is in [0, 1], or -1 where pycocotools gives -1 (no non-crowd gt in range for any
// category). ar100 is AR at max_dets. Means are over categories with a defined value.
typedef struct {
    double ap, ap50, ap75, ap_small, ap_medium, ap_large;
    double ar1, ar10, ar100, ar_small, ar_medium, ar_large;
    int max_dets;
    int64_t nimages, ngt, ndet;   // evaluated images, gts and dets on them (before the max_dets cut)
    int ncat;                     // categories present in the evaluated gts or dets, ascending id
    int32_t *cat_ids;             // (ncat)
    double *ap_per_cat;           // (ncat) AP (area all, max_dets); -1: no non-crowd gt
    double *ap50_per_cat;         // (ncat) AP at IoU 0.5; -1: no non-crowd gt
} coco_eval_result;

// Evaluates dets against gt on the images image_ids (sorted and de-duplicated internally; gts and
// dets on other images are ignored; an image without gt still counts its dets as FPs).
// Categories: those of the evaluated gts and dets (pycocotools: the dataset's category list);
// a category without non-crowd gt gives -1 and is left out of every mean.
// Ties in score keep (image id ascending, input order), as pycocotools' mergesort does.
// Returns 0, or PL_EINVAL (NaN/inf values, x2 < x1, max_dets < 1) / PL_ENOMEM; on failure *r is
// zeroed (safe to free). Not collective.
int coco_eval_run(coco_eval_result *r, const coco_eval_gt *gt, int64_t ngt, const coco_eval_det *dets,
                  int64_t ndet, const int64_t *image_ids, int64_t nimages, const coco_eval_opts *o);
void coco_eval_result_free(coco_eval_result *r);   // accepts a zeroed or freed result

// {"ap":..,"ap50":..,...,"per_category":[{"id":1,"ap":..,"ap50":..},..]}, %.17g, atomic write.
int coco_eval_write_json(const char *path, const coco_eval_result *r);
