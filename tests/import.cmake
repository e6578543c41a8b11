# .pth import / export (issue 17): the restricted unpickler on hand-built byte strings, and
# mp3d import / infer / export against PyTorch-written files (python3-torch; skipped without it).
mp3d_test(test_io_pickle test_io_pickle.c TIMEOUT 60)
add_executable(import_tool import_tool.c)
target_link_libraries(import_tool PRIVATE mp3d_stages)
foreach(mode equiv dtypes export hostile)
  mp3d_script_test(test_import_${mode} test_import.sh TIMEOUT 120 ARGS ${mode})
endforeach()
mp3d_script_test(test_import_detector test_import.sh TIMEOUT 120 ARGS detector $<TARGET_FILE:import_tool>)
mp3d_script_test(test_import_init_from test_import.sh TIMEOUT 120 ARGS init_from $<TARGET_FILE:train_tool>)
