# Parallel-HDF5 checkpoints (io/h5ckpt): one test executable run under mpirun at 1, 2 and 3
# ranks (each run works in its own folder ckpt_test_np<N>/), ~2-4 s each; and the benchmark
# bench_ckpt (not a test: run by hand, see results/bench/ckpt.md).
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test_ckpt.c)
  add_executable(test_ckpt test_ckpt.c)
  target_link_libraries(test_ckpt PRIVATE mp3d_io)
  foreach(np 1 2 3)
    mp3d_mpi_test(test_ckpt test_ckpt ${np} TIMEOUT 120)
  endforeach()
endif()
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/bench/bench_ckpt.c)
  add_executable(bench_ckpt bench/bench_ckpt.c)
  target_link_libraries(bench_ckpt PRIVATE mp3d_io)
endif()
