# MP3D lesion detector (issue 5) and mp3d evaluate / mp3d anchors (issue 6), on the synthetic
# tiny cohort: geometry and the composed detector (serial), the detections gather at 1-3 ranks,
# and the learnability / evaluate-at-1-and-2-ranks / anchors script. Together well under 3 minutes.
mp3d_test(test_detect test_detect.c TIMEOUT 300 LABELS det)
add_executable(test_detect_gather test_detect_gather.c)
target_link_libraries(test_detect_gather PRIVATE mp3d_stages)
foreach(np 1 2 3)
  mp3d_mpi_test(test_detect_gather test_detect_gather ${np} TIMEOUT 60)
endforeach()
mp3d_script_test(test_detect_learn test_detect_learn.sh TIMEOUT 600 LABELS det ARGS $<TARGET_FILE:test_detect>)
mp3d_script_test(test_detect_coco test_detect_coco.sh TIMEOUT 300 LABELS det)
