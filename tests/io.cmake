# io format readers/writers: archives, PNG/JPEG, DL_info.csv, COCO JSON, ImageNet layout files.
# Serial tests, each makes and removes its own folder under the build tree; all together < 15 s.
foreach(t fileio archive image dlinfo coco imagenet)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test_io_${t}.c)
    mp3d_test(test_io_${t} test_io_${t}.c LIBS mp3d_io TIMEOUT 60 LABELS io)
  endif()
endforeach()
