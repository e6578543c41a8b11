# Reliability (issue 16): faults a hostile user or a full disk would cause. Hang tests run at 2
# and 3 ranks and must finish well inside their TIMEOUT (a hang is a timeout = failure).
add_executable(rel_tool rel_tool.c)
target_link_libraries(rel_tool PRIVATE mp3d_stages)
foreach(np 2 3)
  mp3d_script_test(test_rel_step_fail_np${np} test_rel.sh TIMEOUT 120 LABELS "mpi;reliability"
                   ARGS step_fail ${np} $<TARGET_FILE:rel_tool>)
endforeach()
# Disk full during a checkpoint write (a 2 MB tmpfs as output.dir; skipped without root).
foreach(np 1 2 3)
  mp3d_script_test(test_rel_ckpt_full_np${np} test_rel.sh TIMEOUT 180 LABELS "mpi;reliability"
                   ARGS ckpt_full ${np} $<TARGET_FILE:rel_tool>)
endforeach()
# Bad DL_info.csv rows (preprocess, serial).
mp3d_script_test(test_rel_pp_rows test_rel.sh TIMEOUT 60 LABELS reliability ARGS pp_rows 1 $<TARGET_FILE:rel_tool>)
# Image decoders: pixel limit, corrupt JPEG data (serial).
mp3d_test(test_rel_image test_rel_image.c TIMEOUT 60 LABELS reliability)
# Data lost in damaged archives is counted (vdt).
foreach(np 1 2)
  mp3d_script_test(test_rel_vdt_loss_np${np} test_rel.sh TIMEOUT 120 LABELS "mpi;reliability"
                   ARGS vdt_loss ${np} $<TARGET_FILE:rel_tool>)
endforeach()
# mp3d froc on files that are not detection CSVs; mp3d infer writing over its input.
mp3d_script_test(test_rel_froc_input test_rel.sh TIMEOUT 60 LABELS reliability ARGS froc_input 1 $<TARGET_FILE:rel_tool>)
mp3d_script_test(test_rel_infer_io test_rel.sh TIMEOUT 60 LABELS reliability
                 ARGS infer_io 1 $<TARGET_FILE:rel_tool> $<TARGET_FILE:train_tool>)
# SIGTERM to mpirun (scancel / time limit under MP3D_LAUNCH=mpirun) and during start-up.
foreach(np 2 3)
  mp3d_script_test(test_rel_term_np${np} test_rel.sh TIMEOUT 150 LABELS "mpi;reliability"
                   ARGS term ${np} $<TARGET_FILE:rel_tool>)
endforeach()
# Faults injected by LD_PRELOAD (tests/fault_preload.c): a rank SIGKILLed in the middle of a
# checkpoint write; the train shard truncated while training reads it.
add_library(fault_preload SHARED fault_preload.c)
target_link_libraries(fault_preload PRIVATE ${CMAKE_DL_LIBS})
set_target_properties(fault_preload PROPERTIES C_VISIBILITY_PRESET default)
foreach(np 2 3)
  mp3d_script_test(test_rel_ckpt_kill_np${np} test_rel.sh TIMEOUT 200 LABELS "mpi;reliability"
                   ARGS ckpt_kill ${np} $<TARGET_FILE:rel_tool> $<TARGET_FILE:fault_preload> $<TARGET_FILE:train_tool>)
  mp3d_script_test(test_rel_shard_trunc_np${np} test_rel.sh TIMEOUT 150 LABELS "mpi;reliability"
                   ARGS shard_trunc ${np} $<TARGET_FILE:rel_tool> $<TARGET_FILE:fault_preload>)
endforeach()
# The path between nodes: Open MPI's TCP transport only (--mca btl tcp,self, as
# OMPI_MCA_btl=tcp,self), for the checkpoint writer (MPI-IO), the preprocess shard writer and a
# per-sample failure agreed across ranks. Run in their own folder (test_ckpt writes ckpt_test_np<N>/).
file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/tcp)
set(MP3D_TCP_ENV "${MP3D_TEST_ENV};OMPI_MCA_btl=tcp,self")
if(TARGET test_ckpt)
  add_test(NAME test_tcp_ckpt_np3 COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 3 $<TARGET_FILE:test_ckpt>
           WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/tcp)
  set_tests_properties(test_tcp_ckpt_np3 PROPERTIES TIMEOUT 120 PROCESSORS 3 LABELS "mpi;reliability;tcp"
                       ENVIRONMENT "${MP3D_TCP_ENV}")
endif()
add_test(NAME test_tcp_shard_pp_np2 COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:test_shard_pp>
         WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/tcp)
set_tests_properties(test_tcp_shard_pp_np2 PROPERTIES TIMEOUT 120 PROCESSORS 2 LABELS "mpi;reliability;tcp"
                     ENVIRONMENT "${MP3D_TCP_ENV}")
add_test(NAME test_tcp_rel_step_fail_np3 COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_rel.sh step_fail 3 $<TARGET_FILE:rel_tool>
         WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/tcp)
set_tests_properties(test_tcp_rel_step_fail_np3 PROPERTIES TIMEOUT 120 LABELS "mpi;reliability;tcp"
                     ENVIRONMENT "${MP3D_TCP_ENV}")
