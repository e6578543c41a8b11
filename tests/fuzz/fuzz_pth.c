// libFuzzer harness: PyTorch checkpoints as `mp3d import` and model.init_from read them
// (io/pth.c pth_read: torch.save's zip layout through libarchive, or the legacy format) and the
// restricted unpickler alone on the same bytes (io/pickle.c pk_load, default limits). pth_read
// takes a path, so the input goes to a scratch file in /dev/shm.
#include "tests/fuzz/fuzz_common.h"
#include "io/pickle.h"
#include "io/pth.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) { (void)argc; (void)argv; fuzz_quiet(); return 0; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = (uint8_t *)fuzz_dup(data, size);
    if (!buf) return 0;
    pk_arena *a = NULL;
    if (pk_arena_create(&a) == 0) {
        pk_obj *o = NULL;
        size_t used = 0;
        if (pk_load(&o, &used, a, buf, size, "fuzz.pkl", NULL) == 0 && (!o || used > size)) abort();
        pk_arena_destroy(a);
    }
    free(buf);

    const char *path = fuzz_write_file("fuzz.pth", data, size);
    if (!path) return 0;
    pth_state s;
    memset(&s, 0, sizeof s);
    if (pth_read(&s, path) == 0) {
        for (int i = 0; i < s.n; i++) {
            int64_t numel = 1;
            for (int d = 0; d < s.t[i].ndim; d++) numel *= s.t[i].shape[d];
            volatile float sum = 0;
            for (int64_t k = 0; k < numel; k++) sum += s.t[i].data[k];   // every element is readable
        (void)sum;
        }
    }
    pth_state_free(&s);
    return 0;
}
