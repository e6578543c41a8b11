# nn core (issue 9): one executable per test, nn only; the benchmark is built, never run as a test.
mp3d_test(test_nn_conv test_nn_conv.c LIBS mp3d_nn TIMEOUT 120 LABELS nn)
mp3d_test(test_nn_layers test_nn_layers.c LIBS mp3d_nn TIMEOUT 120 LABELS nn)
mp3d_test(test_nn_parallel test_nn_parallel.c LIBS mp3d_nn TIMEOUT 60 LABELS nn)
mp3d_test(test_nn_transpose test_nn_transpose.c LIBS mp3d_nn TIMEOUT 60 LABELS nn)
mp3d_test(test_nn_net test_nn_net.c LIBS mp3d_nn TIMEOUT 300 LABELS nn)
# oneDNN engine (issue 15 item 3): only in builds that have it (MP3D_DNNL)
if(MP3D_HAVE_DNNL)
  mp3d_test(test_nn_dnnl test_nn_dnnl.c LIBS mp3d_nn TIMEOUT 120 LABELS nn)
endif()
# Benchmark (not a test): tests/bench/bench_nn.c -> results/bench/nn.md via tests/bench/run_bench_nn.sh
add_executable(bench_nn bench/bench_nn.c)
target_link_libraries(bench_nn PRIVATE mp3d_nn)
