// libFuzzer harness: the detections CSV of `mp3d froc` / `mp3d evaluate`
// (stages/score/froc_score.c froc_dets_parse, what froc_dets_read runs on the file's text).
#include "tests/fuzz/fuzz_common.h"
#include "stages/score/froc.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) { (void)argc; (void)argv; fuzz_quiet(); return 0; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_dup(data, size);
    if (!text) return 0;
    froc_dets ds;
    memset(&ds, 0, sizeof ds);
    if (froc_dets_parse(&ds, text, size, "dets.csv") == 0) {
        for (int64_t i = 0; i < ds.n; ++i)
            if (strnlen(ds.d[i].file, sizeof ds.d[i].file) == sizeof ds.d[i].file) {
                fprintf(stderr, "fuzz_dets: detection %lld: File_name not terminated\n", (long long)i);
                abort();
            }
    }
    froc_dets_free(&ds);
    free(text);
    return 0;
}
