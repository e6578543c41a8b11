#pragma once
// froc: the DeepLesion FROC protocol (the 3DCE/MULAN/MP3D reference walk), AP@0.5 (COCO
// 101-point), sub-group sensitivities, patient-bootstrap CIs, the detections CSV. Pure
// computation and files: no MPI, no HDF5. The report is stages/eval/froc_report.h.
// Boxes are x1,y1,x2,y2 in the key slice's original pixel frame (DL_info's Bounding_boxes).
// Ranking ties: score descending, then File_name ascending (strcmp), then input order.

#include <stddef.h>
#include <stdint.h>

#include "io/dlinfo.h"
#include "io/lesion_shard.h"

enum { FROC_NLEVELS = 6, FROC_NAME = 64 };
// FP/image levels reported; mFROC = mean of the first FROC_NMFROC.
extern const double froc_levels[FROC_NLEVELS];   // 0.5, 1, 2, 4, 8, 16
enum { FROC_NMFROC = 4 };

// Sensitivity at an exact integer FP count k:
//   BEFORE_NEXT: lesions found before the (k+1)-th FP (MULAN with current scipy, np.interp);
//   FIRST_AT:    lesions found before the k-th FP, i.e. at the first curve point with k FPs
//                (3DCE/MP3D with old scipy interp1d). Non-integer counts agree in both.
enum froc_fp_rule { FROC_FP_BEFORE_NEXT = 0, FROC_FP_FIRST_AT = 1 };

typedef struct {
    double iou;                 // hit when IoU >= iou (0.5)
    int iou_plus1;              // 1: widths x2-x1+1 (3DCE/MULAN); 0: continuous (MP3D)
    enum froc_fp_rule fp_rule;
    int keep_noisy;             // used when building from DL_info: 0 exclude Possibly_noisy rows
    int split;                  // used when building from DL_info: 0 all, 1 train, 2 val, 3 test
} froc_opts;
void froc_opts_default(froc_opts *o);   // 0.5, +1, before_next, exclude noisy, test

typedef struct {
    char name[FROC_NAME];       // File_name, "000001_01_01_109.png"
    int patient;                // bootstrap unit; < 0 = the image is its own unit
    int64_t gt0, ngt;           // its lesions are set.gt[gt0 .. gt0+ngt) (filled by the builder)
} froc_image;

typedef struct {
    double box[4];              // x1, y1, x2, y2
    int64_t image;              // index into the image list
    int type;                   // Coarse_lesion_type 1..8, -1 unknown
    double long_mm;             // long diameter in mm (Lesion_diameters_Pixel_[0] x spacing x); NAN unknown
    double slice_mm;            // slice interval in mm; NAN unknown
    int noisy;                  // Possibly_noisy
    int line;                   // DL_info.csv line, 0 = built in memory
} froc_gt;

typedef struct {
    char file[FROC_NAME];       // File_name of the key slice
    double box[4];              // x1, y1, x2, y2
    double score;
    int64_t line;               // line in the detections CSV, 0 = built in memory
} froc_det;

// A detections CSV in memory. Malformed lines are skipped and listed in `bad`.
typedef struct {
    froc_det *d; int64_t n, cap;
    char (*bad)[160]; int64_t nbad;   // "dets.csv:12: column y2: 'abc' is not a number"
    int header;                       // the text had the header line (a header alone = no detections)
} froc_dets;

// "File_name,x1,y1,x2,y2,score" with an optional header line; fails only when the file
// cannot be read (PL_EIO/PL_ENOTFOUND). Parses text in memory the same way (`label` in messages).
int froc_dets_read(froc_dets *ds, const char *path);
int froc_dets_parse(froc_dets *ds, const char *text, size_t len, const char *label);
int froc_dets_push(froc_dets *ds, const froc_det *d);
void froc_dets_free(froc_dets *ds);
// Writes the header and one line per detection, atomically (coordinates and scores as %.10g).
int froc_dets_write(const char *path, const froc_det *d, int64_t n);

// What is scored: evaluated images, their lesions grouped by image, detections in rank order.
typedef struct {
    double box[4]; double score;
    int64_t image;              // index into set.images
    int64_t src;                // index in the detections given to the builder
    int64_t line;               // line in the detections CSV
} froc_sdet;

typedef struct {
    froc_image *images; int64_t n_images;
    froc_gt *gt; int64_t n_gt;          // stable-sorted by image
    froc_sdet *det; int64_t n_det;      // rank order
    int64_t n_det_outside;              // detections whose File_name is not an evaluated image (ignored)
    int *unit; int64_t n_units;         // (n_images) bootstrap unit (patient) of each image
} froc_set;

// From plain arrays: images in any order (names unique), lesions with image indices (re-grouped
// stably by image), detections by File_name. PL_EINVAL for a duplicate name or a bad index.
int froc_set_build(froc_set *s, const froc_image *images, int64_t n_images, const froc_gt *gt,
                   int64_t n_gt, const froc_det *dets, int64_t n_dets);
// From DL_info rows: the rows of o->split (0 = all), noisy rows dropped unless o->keep_noisy;
// the evaluated images are the distinct File_names left (sorted).
int froc_set_from_dlinfo(froc_set *s, const dl_lesion *rows, int64_t n_rows, const froc_opts *o,
                         const froc_det *dets, int64_t n_dets);
// From a preprocess shard split: every key slice with at least one scored lesion (noisy ones
// dropped unless o->keep_noisy), as froc_set_from_dlinfo does from DL_info.csv. *labelled = 0
// (and an empty set) when the split has no lesion rows at all.
int froc_set_from_shard(froc_set *set, int *labelled, const lesion_shard *s, const froc_opts *o, const froc_det *dets,
                        int64_t n_dets);
void froc_set_free(froc_set *s);   // accepts a zeroed set

// IoU of two x1,y1,x2,y2 boxes; plus1 adds 1 to widths and heights as 3DCE/MULAN do.
double froc_iou(const double *a, const double *b, int plus1);

// The reference walk over the detections in rank order against the lesions with mask[j] != 0
// (mask NULL = all). One curve point per detection.
typedef struct {
    int64_t n_images, n_lesions, n_dets;   // n_lesions = lesions in the mask
    int64_t *tp;        // (n_dets) lesions found after rank i, cumulative
    int64_t *fp;        // (n_dets) false positives after rank i, cumulative
    int32_t *new_hits;  // (n_dets) lesions rank i found first (0 on a duplicate or an FP)
    uint8_t *is_fp;     // (n_dets) 1 when rank i matched no lesion of its image
    double *best_iou;   // (n_dets) best IoU with a lesion (in the mask) of its image, 0 if none
    int64_t *found_by;  // (n_gt) rank of the detection that found lesion j; -1 missed or not in mask
    double *gt_best_iou;// (n_gt) best IoU of any detection with lesion j
    double sens[FROC_NLEVELS];  // at froc_levels with the options' fp_rule
    double mfroc;
} froc_curve;
int froc_walk(froc_curve *c, const froc_set *s, const uint8_t *mask, const froc_opts *o);
void froc_curve_free(froc_curve *c);   // accepts a zeroed curve
// The first rank whose FP ends the sensitivity read at `fp_per_image`: detections ranked before it
// count (n when the curve never gets there). fp (n) cumulative FP counts.
int64_t froc_level_rank(const int64_t *fp, int64_t n, int64_t n_images, double fp_per_image,
                        enum froc_fp_rule rule);
// Sensitivity at `fp_per_image` from cumulative counts (n points); 0 with no detections.
double froc_sens_at(const int64_t *tp, const int64_t *fp, int64_t n, int64_t n_images,
                    int64_t n_lesions, double fp_per_image, enum froc_fp_rule rule);

// COCO-style AP at o->iou: one-to-one matching per image (a detection takes the unmatched
// lesion of highest IoU), precision envelope, mean over recall 0, 0.01, ..., 1. NAN without lesions.
int froc_ap(double *ap, const froc_set *s, const uint8_t *mask, const froc_opts *o);

// 95% bootstrap intervals over patients (units): `reps` resamples with replacement of the units,
// seeded; index FROC_NLEVELS holds mFROC. Percentiles interpolate linearly (numpy's default).
typedef struct {
    int reps;
    double lo[FROC_NLEVELS + 1], hi[FROC_NLEVELS + 1];
} froc_ci;
int froc_bootstrap(froc_ci *ci, const froc_set *s, const froc_curve *c, const uint8_t *mask,
                   const froc_opts *o, int reps, uint64_t seed);

// Sub-groups: the 8 coarse types, long diameter (< 10, 10-30, > 30 mm), slice interval
// (<= 2, > 2 mm). Lesions are filtered, all detections kept (a hit on another group's lesion
// is an FP, as in the reference code), FP/image over all evaluated images.
enum { FROC_NGROUPS = 13 };
typedef struct {
    char name[32];              // "lung", "10-30 mm", "slice <= 2 mm"
    char kind[16];              // "type", "size", "thickness"
    int64_t n_lesions;
    double sens[FROC_NLEVELS], mfroc;   // NAN when the group is empty
    froc_ci ci;
} froc_group;
// 1 if lesion g belongs to group k (0 <= k < FROC_NGROUPS).
int froc_group_has(int k, const froc_gt *g);
const char *froc_type_name(int type);   // "bone" ... "pelvis", "unknown"

// Everything one scoring run produces.
typedef struct {
    froc_opts opts;
    froc_curve all;
    double ap50;
    froc_ci ci;                 // reps 0 = no bootstrap
    froc_group groups[FROC_NGROUPS];
    double seconds;             // scoring time (walk + AP + groups + bootstrap)
} froc_eval;
int froc_evaluate(froc_eval *ev, const froc_set *s, const froc_opts *o, int boot_reps, uint64_t seed);
void froc_eval_free(froc_eval *ev);
