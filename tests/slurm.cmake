# Slurm job scripts (slurm/): lint, offline logic with stand-in sbatch/scontrol/mp3d, and a real
# single-node cluster (root + Debian's Slurm packages; skipped with 77 otherwise). The cluster
# test uses train_tool (tests/train.cmake) to write the shard its preempted training job reads,
# and fault_preload (tests/reliability.cmake) to kill a rank of a job mid-checkpoint.
mp3d_script_test(test_slurm_lint test_slurm_lint.sh TIMEOUT 60 LABELS slurm)
mp3d_script_test(test_slurm_scripts test_slurm_scripts.sh TIMEOUT 120 LABELS slurm)
mp3d_script_test(test_slurm_cluster test_slurm_cluster.sh TIMEOUT 500 LABELS slurm
                 ARGS $<TARGET_FILE:train_tool> $<TARGET_FILE:fault_preload>)
# README.md as a test: every fenced block run or checked (tests/test_readme.sh lists them).
# About 35 singleton MPI starts (~0.5 s each, mostly waiting): 18 s alone, 79 s beside
# test_slurm_cluster here, over 120 s in one CI run.
mp3d_script_test(test_readme test_readme.sh TIMEOUT 400 LABELS torch)
