# Detection operators (issue 5): boxes/NMS, anchors/assignment/sampling/k-means, RoIAlign,
# FPN / RPN head / box head. nn only, serial, all together a few seconds.
foreach(t boxes anchors roialign heads)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test_det_${t}.c)
    mp3d_test(test_det_${t} test_det_${t}.c LIBS mp3d_nn TIMEOUT 60 LABELS det)
  endif()
endforeach()
# Benchmark (not a test): OPENBLAS_NUM_THREADS=1 build-*/tests/bench_det [size] [reps]
add_executable(bench_det bench/bench_det.c)
target_link_libraries(bench_det PRIVATE mp3d_nn)
