# The layering rules (README.md "Architecture") checked on every ctest run, so they stay true
# without anyone watching: nn/ without MPI/HDF5, io/ without networks, stages/ wings one way.
add_test(NAME test_layers COMMAND ${CMAKE_COMMAND} -DROOT=${CMAKE_SOURCE_DIR}
                                  -P ${CMAKE_CURRENT_SOURCE_DIR}/layers/check_layers.cmake)
set_tests_properties(test_layers PROPERTIES TIMEOUT 60 LABELS layers)
# ... and the checker itself must catch a violation: a small tree that breaks each rule.
set(_bad ${CMAKE_CURRENT_BINARY_DIR}/layers_bad)
file(WRITE ${_bad}/nn/x.c "#include <mpi.h>\n")
file(WRITE ${_bad}/io/x.c "#include \"nn/net.h\"\n")
file(WRITE ${_bad}/stages/data/x.c "#include \"stages/train/trainer.h\"\n")
add_test(NAME test_layers_catches COMMAND ${CMAKE_COMMAND} -DROOT=${_bad}
                                          -P ${CMAKE_CURRENT_SOURCE_DIR}/layers/check_layers.cmake)
set_tests_properties(test_layers_catches PROPERTIES TIMEOUT 60 LABELS layers WILL_FAIL TRUE)
