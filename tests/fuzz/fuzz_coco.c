// libFuzzer harness: COCO instances JSON (io/coco.c coco_parse, what coco_read_file / coco_load
// run on the annotation file), then the lookups `mp3d vdt` makes on the result.
#include "tests/fuzz/fuzz_common.h"
#include "io/coco.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) { (void)argc; (void)argv; fuzz_quiet(); return 0; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *json = fuzz_dup(data, size);
    if (!json) return 0;
    coco_set s;
    memset(&s, 0, sizeof s);
    if (coco_parse(&s, json, size, "instances.json") == 0) {
        for (int64_t i = 0; i < s.nimages; ++i) {
            if (coco_image_index(&s, s.images[i].id) < 0) abort();   // every listed image is found
            for (int64_t a = s.ann_off[i]; a < s.ann_off[i + 1]; ++a) {
                const coco_ann *an = &s.anns[a];
                if (an->image != i || an->label < 0 || an->label >= s.ncats) abort();
                if (coco_label_of(&s, an->category_id) != an->label) abort();
            }
        }
    }
    coco_free(&s);
    free(json);
    return 0;
}
