#pragma once
// dlinfo: NIH DeepLesion's DL_info.csv, one row per lesion, all 18 columns as typed fields.
// Multi-value fields are quoted and ", "-separated; coordinates are 1-based pixels in the
// original 512x512 key-slice frame. A malformed row is skipped and listed (line number,
// column, offending text) in dl_table.bad; reading goes on.

#include <stddef.h>
#include <stdint.h>

enum { DL_NCOLS = 18 };

typedef struct {
    char file_name[64];      // File_name, e.g. "000001_01_01_109.png"
    int patient, study, series;  // Patient_index, Study_index, Series_ID
    int key_slice;           // Key_slice_index (slice number in the series folder)
    double recist[8];        // Measurement_coordinates: x1,y1,x2,y2 (long axis), x3,y3,x4,y4 (short)
    double bbox[4];          // Bounding_boxes: x1,y1,x2,y2
    double diam_px[2];       // Lesion_diameters_Pixel_: long, short
    double norm_loc[3];      // Normalized_lesion_location: x, y, z in [0,1]
    int type;                // Coarse_lesion_type: 1..8, -1 on train rows
    int noisy;               // Possibly_noisy 0/1
    int slice_range[2];      // Slice_range: first, last slice available around the key slice
    double spacing[3];       // Spacing_mm_px_: x, y (mm/px), z (slice interval, mm)
    int image_size[2];       // Image_size: rows, cols as in the release ("512, 512")
    double window[2];        // DICOM_windows: low, high
    char gender;             // Patient_gender 'M' / 'F' ('?' if empty)
    double age;              // Patient_age (NAN if empty)
    int split;               // Train_Val_Test: 1 train, 2 val, 3 test
    int line;                // 1-based line number in the CSV (header = line 1)
} dl_lesion;

typedef struct {
    int line;
    char msg[256];           // "DL_info.csv:57: column Bounding_boxes: '12, x, 4' is not 4 numbers"
} dl_bad_row;

typedef struct {
    dl_lesion *rows; int64_t n;
    dl_bad_row *bad; int64_t nbad;
} dl_table;

// Reads the whole file; fails only when the file cannot be read or its header is wrong.
int dlinfo_read(dl_table *t, const char *path);
// Parses CSV text already in memory (`label` names it in messages).
int dlinfo_parse(dl_table *t, const char *text, size_t len, const char *label);
void dlinfo_free(dl_table *t);
// Writes rows in the release's exact format (header + quoted multi-value fields), atomically.
int dlinfo_write(const char *path, const dl_lesion *rows, int64_t n);
// "000001_01_01" folder name and "109.png" entry of a row.
void dlinfo_series_dir(const dl_lesion *l, char *out, int cap);
// The same text dlinfo_write writes, in memory (*text malloc'ed, not NUL-terminated past len).
int dlinfo_format(char **text, size_t *len, const dl_lesion *rows, int64_t n);
// "Images_png/000001_01_01/109.png": the archive entry of `slice` in the row's series.
void dlinfo_slice_entry(const dl_lesion *l, int slice, char *out, int cap);
