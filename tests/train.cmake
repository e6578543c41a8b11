# Trainer: exactness (bit-identical reruns, 1 vs 2 ranks), resume after SIGKILL, SIGTERM
# preemption, truncated checkpoints. A helper program builds the data and compares checkpoints.
add_executable(train_tool train_tool.c)
target_link_libraries(train_tool PRIVATE mp3d_stages)
mp3d_script_test(test_train test_train.sh TIMEOUT 600 ARGS $<TARGET_FILE:train_tool>)
mp3d_script_test(test_torch_equiv test_torch_equiv.sh TIMEOUT 300 ARGS $<TARGET_FILE:train_tool>)
mp3d_script_test(test_torch_parity test_torch_parity.sh TIMEOUT 120 ARGS $<TARGET_FILE:train_tool> LABELS torch)
mp3d_test(test_augment test_augment.c TIMEOUT 60)
