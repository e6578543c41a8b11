# Fuzzing (issue 16): the corpora of tests/fuzz/corpus/<name>/ (seed inputs and every crash the
# fuzzers found, minimised) replayed through each libFuzzer harness by tests/fuzz/replay.c in the
# normal build; under MP3D_SANITIZE a replayed crash input that regressed is an ASan/UBSan error.
# The fuzzing itself: tests/fuzz/run.sh MINUTES (clang-14, build-fuzz/).
foreach(h dlinfo dets coco config png jpeg archive h5 pth)
  add_executable(fuzz_replay_${h} ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/replay.c ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_${h}.c)
  target_link_libraries(fuzz_replay_${h} PRIVATE mp3d_stages)
  mp3d_test(fuzz_replay_${h} fuzz/replay.c ARGS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/${h} TIMEOUT 120 LABELS fuzz)
endforeach()
# seed generator for the fuzz_h5 corpus (not a test)
add_executable(fuzz_seed_ckpt ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/seed_ckpt.c)
target_link_libraries(fuzz_seed_ckpt PRIVATE mp3d_io)
# a crashed harness's scratch folder is removed by the next harness (tests/fuzz/fuzz_common.h)
add_test(NAME fuzz_scratch_sweep COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/sweep_test.sh
         $<TARGET_FILE:fuzz_replay_h5> ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/h5)
set_tests_properties(fuzz_scratch_sweep PROPERTIES TIMEOUT 120 LABELS fuzz ENVIRONMENT "${MP3D_TEST_ENV}")
