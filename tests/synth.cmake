# synth: the demo-cohort generator (`mp3d synth`), tiny scale, in folders under the build tree.
# test_synth: every format rule re-read through the io readers, determinism (same seed = same
#   bytes, other seed = other bytes), the work split of 2 and 3 ranks played in one process
#   (same bytes as 1), re-runs into a used folder, and the stage at 1 rank (~5 s).
# test_synth_stage_np2/np3: stage_synth_run under mpirun: exit codes agree on every rank (done,
#   bad option, unwritable folder) and the files equal one process's.
mp3d_test(test_synth test_synth.c TIMEOUT 120 LABELS synth)
mp3d_mpi_test(test_synth_stage test_synth 2 ARGS stage TIMEOUT 120)
mp3d_mpi_test(test_synth_stage test_synth 3 ARGS stage TIMEOUT 120)
