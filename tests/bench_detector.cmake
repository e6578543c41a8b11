# Whole-detector benchmark (issue 5; not a test): training and inference images/s and peak RSS of
# the demo and paper-scale detectors beside a torchvision Faster R-CNN with the same backbone.
#   tests/bench/bench_detector.sh BUILD_DIR   -> results/bench/detector.md (+ .json)
add_executable(bench_detector bench/bench_detector.c)
target_link_libraries(bench_detector PRIVATE mp3d_stages)
