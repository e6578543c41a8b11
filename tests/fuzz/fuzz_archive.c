// libFuzzer harness: zip and tar archives (io/archive.c) read from memory, as `mp3d vdt` reads a
// synset tar inside ILSVRC2012_img_train.tar and `mp3d preprocess` walks Images_png_NN.zip:
// every entry is listed and read whole; an entry that is itself a tar is opened and walked once
// (one level, like the ImageNet train archive).
#include "tests/fuzz/fuzz_common.h"
#include "io/archive.h"

enum { MAX_ENTRIES = 256 };

int LLVMFuzzerInitialize(int *argc, char ***argv) { (void)argc; (void)argv; fuzz_quiet(); return 0; }

static void walk(const uint8_t *buf, size_t len, int depth) {
    arc_reader *r = NULL;
    if (arc_open_memory(&r, buf, len, "fuzz.tar") != 0) return;
    for (int k = 0; k < MAX_ENTRIES; k++) {
        const char *name = NULL;
        int64_t size = 0;
        int rc = arc_next(r, &name, &size);
        if (rc <= 0) break;
        if (!name || !arc_name_ok(name)) abort();   // arc_next returns only safe names
        uint8_t *e = NULL;
        size_t elen = 0;
        if (arc_read_entry(r, &e, &elen) != 0) { free(e); break; }
        if (size >= 0 && (size_t)size != elen) abort();   // a declared size is checked at the end
        if (depth == 0 && elen > 0) walk(e, elen, 1);
        free(e);
    }
    arc_close(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = (uint8_t *)fuzz_dup(data, size);
    if (!buf) return 0;
    walk(buf, size, 0);
    free(buf);
    return 0;
}
