# Time-to-train on paper (issue 15 item 5): the all-reduce benchmark bench_allreduce (run by
# tests/bench/scale.sh, which writes results/scale.md) and one short test of it: 2 ranks, tiny
# buffers (one of an odd size, so the last bucket is partial), shared memory and TCP; the program
# fails when any reduced value or the number of buckets gradsync started is wrong.
add_executable(bench_allreduce bench/bench_allreduce.c)
target_link_libraries(bench_allreduce PRIVATE mp3d_stages)
mp3d_mpi_test(bench_allreduce bench_allreduce 2 TIMEOUT 60
              ARGS --model tiny:1000 --model odd:123457 --bucket-mb 0.004 --bucket-mb 0.1 --bucket-mb 1 --reps 2
                   --overlap-ms 5)
add_test(NAME bench_allreduce_tcp_np2
         COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:bench_allreduce>
                 --model odd:123457 --bucket-mb 0.1 --reps 1 --overlap-ms 5
         WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
set_tests_properties(bench_allreduce_tcp_np2 PROPERTIES TIMEOUT 60 PROCESSORS 2 LABELS "mpi;tcp"
                     ENVIRONMENT "${MP3D_TEST_ENV};OMPI_MCA_btl=tcp,self")
