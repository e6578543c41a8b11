# COCO bbox evaluation (issue 8): hand-computed cases, and a random case cross-checked against
# an independent numpy implementation of pycocotools' COCOeval (test_cocoeval_reference.py).
mp3d_test(test_cocoeval test_cocoeval.c TIMEOUT 60 LABELS cocoeval)
mp3d_script_test(test_cocoeval_reference test_cocoeval_reference.sh ARGS $<TARGET_FILE:test_cocoeval>
                 TIMEOUT 120 LABELS cocoeval)
