// libFuzzer harness: DL_info.csv (io/dlinfo.c), the text `mp3d preprocess` and `mp3d froc`
// parse; then what preprocess derives from each row (series folder, slice entry names) and the
// writer's formatting of the parsed rows.
#include "tests/fuzz/fuzz_common.h"
#include "io/dlinfo.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) { (void)argc; (void)argv; fuzz_quiet(); return 0; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_dup(data, size);
    if (!text) return 0;
    dl_table t;
    memset(&t, 0, sizeof t);
    if (dlinfo_parse(&t, text, size, "DL_info.csv") == 0) {
        char buf[512];
        for (int64_t i = 0; i < t.n; ++i) {
            const dl_lesion *l = &t.rows[i];
            dlinfo_series_dir(l, buf, (int)sizeof buf);
            dlinfo_slice_entry(l, l->key_slice, buf, (int)sizeof buf);
            dlinfo_slice_entry(l, l->slice_range[0], buf, (int)sizeof buf);
            dlinfo_slice_entry(l, l->slice_range[1], buf, (int)sizeof buf);
        }
        char *out = NULL;
        size_t len = 0;
        if (dlinfo_format(&out, &len, t.rows, t.n) == 0) {
            dl_table t2;
            memset(&t2, 0, sizeof t2);
            if (dlinfo_parse(&t2, out, len, "formatted") == 0 && t2.n != t.n) {
                fprintf(stderr, "fuzz_dlinfo: %lld rows parsed, %lld after format + parse\n",
                        (long long)t.n, (long long)t2.n);
                abort();
            }
            dlinfo_free(&t2);
        }
        free(out);
    }
    dlinfo_free(&t);
    free(text);
    return 0;
}
