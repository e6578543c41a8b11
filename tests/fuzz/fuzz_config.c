// libFuzzer harness: config text and `--set key=value` strings (io/config.c cfg_load_text, the
// parse cfg_load runs on a file's text, and cfg_set). Input layout: the config text, then
// optionally a NUL byte and NUL-separated --set strings. On success every set key is read
// through its typed getter, the resolved text and hash are built, and the overrides mp3d run
// hands to its stages (cfg_overrides) must load again.
#include "tests/fuzz/fuzz_common.h"
#include "io/config.h"

enum { MAX_SETS = 8 };

int LLVMFuzzerInitialize(int *argc, char ***argv) { (void)argc; (void)argv; fuzz_quiet(); return 0; }

static void read_all(const pl_cfg *c) {
    for (int i = 0; i < cfg_schema_len; i++) {
        const cfg_key *k = &cfg_schema[i];
        if (!cfg_has(c, k->key)) continue;
        switch (k->type) {
        case CFG_INT: (void)cfg_int(c, k->key); break;
        case CFG_FLOAT: (void)cfg_float(c, k->key); break;
        case CFG_BOOL: (void)cfg_bool(c, k->key); break;
        case CFG_STRING: if (!cfg_str(c, k->key)) abort(); break;
        case CFG_FLOATS:
        case CFG_INTS: {
            int n = cfg_list_len(c, k->key);
            for (int j = 0; j < n; j++) (void)cfg_list_float(c, k->key, j);
            break;
        }
        }
    }
    (void)cfg_hash(c, "");
    (void)cfg_hash(c, "train.,det.");
    if (!cfg_text(c)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 1);   // NUL-terminated pieces
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    const char *sets[MAX_SETS];
    int nsets = 0;
    size_t textlen = strlen(buf);
    for (size_t p = textlen + 1; p <= size && nsets < MAX_SETS; p += strlen(buf + p) + 1) sets[nsets++] = buf + p;

    pl_cfg *c = NULL;
    if (cfg_load_text(&c, buf, "fuzz.cfg", sets, nsets) == 0) {
        read_all(c);
        char **ov = NULL;
        int nov = cfg_overrides(c, &ov);
        if (nov > 0) {
            pl_cfg *c2 = NULL;
            if (cfg_load_text(&c2, buf, "fuzz.cfg", (const char *const *)ov, nov) != 0) {
                fprintf(stderr, "fuzz_config: the overrides of a loaded config do not load again: %s\n", pl_last_error());
                abort();
            }
            cfg_destroy(c2);
        }
        for (int i = 0; i < nov; i++) free(ov[i]);
        free(ov);
        // --set after loading, as stages apply late overrides
        for (int i = 0; i < nsets; i++) (void)cfg_set(c, sets[i]);
        read_all(c);
    }
    cfg_destroy(c);
    free(buf);
    return 0;
}
