#pragma once
// imagenet: ILSVRC2012 layout files. LOC_synset_mapping.txt ("n01440764 tench, Tinca tinca" per
// line) gives the label = line order; LOC_val_solution.csv ("ImageId,PredictionString", the
// first synset of the prediction string is the image's class) gives the val labels; train
// labels come from entry names ("n01440764.tar" inner tars of "n01440764_10026.JPEG").
// Malformed val rows are skipped and listed in inet_val.bad; a malformed synset line is fatal.

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char wnid[16];           // "n01440764"
    char desc[112];          // "tench, Tinca tinca" (truncated if longer)
} inet_synset;

typedef struct {
    inet_synset *syn; int n; // syn[label]
    int *by_wnid;            // (n) labels sorted by wnid, for lookups
} inet_synsets;

int inet_synsets_parse(inet_synsets *s, const char *text, size_t len, const char *label);
int inet_synsets_read(inet_synsets *s, const char *path);
void inet_synsets_free(inet_synsets *s);                        // accepts NULL
int inet_label_of(const inet_synsets *s, const char *wnid);     // -1 if unknown

typedef struct {
    char image_id[48];       // "ILSVRC2012_val_00008726"
    int label;
} inet_val_row;

typedef struct {
    int line;
    char msg[256];           // "LOC_val_solution.csv:7: synset 'n0000' is not in the synset list"
} inet_bad_row;

typedef struct {
    inet_val_row *rows; int64_t n;   // sorted by image_id
    inet_bad_row *bad; int64_t nbad;
} inet_val;

// Needs the synsets to map wnids to labels; fails only on an unreadable file or wrong header.
int inet_val_parse(inet_val *v, const inet_synsets *s, const char *text, size_t len, const char *label);
int inet_val_read(inet_val *v, const inet_synsets *s, const char *path);
void inet_val_free(inet_val *v);                                // accepts NULL
int inet_val_label(const inet_val *v, const char *image_id);    // -1 if not listed

// "n01440764.tar" (any folder prefix) -> "n01440764"; 0 or PL_EFORMAT naming the entry.
int inet_synset_from_tar_name(char wnid[16], const char *entry);
// "n01440764_10026.JPEG" (any folder prefix) -> "n01440764"; 0 or PL_EFORMAT.
int inet_synset_from_image_name(char wnid[16], const char *entry);
// "val/ILSVRC2012_val_00000001.JPEG" -> "ILSVRC2012_val_00000001" (base name without extension).
int inet_image_id(char *out, size_t cap, const char *entry);
// 1 if `wnid` is 'n' followed by 8 digits.
int inet_wnid_ok(const char *wnid);
