# mp3d run (pipeline/runner.c, pipeline/watch.c): rank groups, the watch stage, the demo pipeline at tiny scale with and
# without groups (tests/test_run_groups.sh; 2 ranks, about 1-2 minutes on a quiet 2-core machine).
mp3d_script_test(test_run_groups test_run_groups.sh TIMEOUT 400 LABELS mpi)
set_tests_properties(test_run_groups PROPERTIES PROCESSORS 2)
mp3d_script_test(test_run_stale test_run_stale.sh TIMEOUT 300 LABELS run)
mp3d_script_test(test_run_inputs test_run_inputs.sh TIMEOUT 60 LABELS run)
