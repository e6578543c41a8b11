#pragma once
// config: libconfig files validated against one schema table (io/config_schema.c) listing
// every key with its type, range, default and meaning. Errors name file, line, key, value and
// the allowed range; a missing required key is an error; an unknown key warns with the
// nearest known key. `--set key=value` overrides go through the same table.
// Keys are dotted paths ("train.lr" = group train, setting lr). Not collective: every rank
// loads the same file itself.

#include <stddef.h>
#include <stdint.h>

enum cfg_type { CFG_INT, CFG_FLOAT, CFG_BOOL, CFG_STRING, CFG_FLOATS, CFG_INTS };

typedef struct {
    const char *key;         // "train.lr"
    enum cfg_type type;
    const char *def;         // default as text ("0.1", "true", "\"cosine\"" -> write cosine); NULL = required where used
    double min, max;         // numeric range (inclusive) for numbers and list elements
    const char *choices;     // for strings: "a|b|c", NULL = any
    const char *help;        // one line
} cfg_key;

extern const cfg_key cfg_schema[];
extern const int cfg_schema_len;

typedef struct pl_cfg pl_cfg;

// Loads `path` (NULL = defaults only), then applies `sets` ("key=value" each).
// Returns 0 or a negative pl_err with the message in pl_last_error().
int cfg_load(pl_cfg **out, const char *path, const char *const *sets, int nsets);
// The same from config text held in memory (a checkpoint's stored config); label names it.
int cfg_load_text(pl_cfg **out, const char *text, const char *label, const char *const *sets, int nsets);
void cfg_destroy(pl_cfg *c);   // accepts NULL

// Getters for keys in the schema. A key without a value (required, not given) makes the
// getter fail: use cfg_require first in a stage to report it cleanly.
int cfg_require(const pl_cfg *c, const char *key);      // 0 or PL_ENOTFOUND naming file and key
int cfg_has(const pl_cfg *c, const char *key);          // 1 if given or defaulted
// Typed getters: the key must be in the schema with this type (the list getters take either list
// type); a mismatch is a caller bug, logged with the key and both types, then PL_ASSERT aborts.
int64_t cfg_int(const pl_cfg *c, const char *key);
double cfg_float(const pl_cfg *c, const char *key);
int cfg_bool(const pl_cfg *c, const char *key);
const char *cfg_str(const pl_cfg *c, const char *key);  // "" when unset
int cfg_list_len(const pl_cfg *c, const char *key);
double cfg_list_float(const pl_cfg *c, const char *key, int i);
int cfg_set(pl_cfg *c, const char *assignment);         // "key=value", validated
// det.anchors_from (the anchors.cfg `mp3d anchors` wrote), when set: its det.anchor_scale and
// det.anchor_ratios replace the config's own. 0, or an error naming the file.
int cfg_resolve_anchors(pl_cfg *c);

// The fully resolved config as libconfig text (every schema key that has a value), sorted by
// key: what every output stores as provenance. Valid until the config changes.
const char *cfg_text(const pl_cfg *c);
const char *cfg_path(const pl_cfg *c);                  // file it came from ("" = none)
// Hash of the values of the keys whose names start with one of the comma-separated prefixes
// (e.g. "input.,preprocess.") — what decides whether a stage output is still current; "" = all.
uint64_t cfg_hash(const pl_cfg *c, const char *prefixes);
// Writes the resolved config line by line to the log (rank 0 does it).
void cfg_log(const pl_cfg *c);

// "key=value" texts of the values that came from --set (for passing run-level overrides on to
// the stages of a pipeline). Returns the count; *out is an array of malloc'ed strings.
int cfg_overrides(const pl_cfg *c, char ***out);

// A pipeline config's stage list:
//   pipeline = { dir = "results/demo";
//                stages = ( { name = "prep"; command = "preprocess"; config = "x.cfg";
//                             set = ["output.dir=@dir/prep"]; after = ["synth"]; ranks = 0; }, ... ); };
// `config` is relative to the pipeline file's folder; "@dir" in set values is the run folder.
// `after` and `follow` name earlier stages only (checked here); `follow` = a stage that runs
// beside the named one, scoring its checkpoints (pipeline/watch.c decides what that means).
typedef struct {
    char name[64];
    char command[32];
    char config[1024];      // "" = defaults only
    char **sets; int nsets;
    char **after; int nafter;
    int after_given;        // 1 when the stage has an `after` list (possibly empty)
    char follow[64];        // "" = none
    int ranks;              // 0 = all ranks
    int line;               // line of the stage's group in the pipeline file
} cfg_stage;
int cfg_pipeline_read(const char *path, cfg_stage **stages, int *n);
void cfg_pipeline_free(cfg_stage *stages, int n);
