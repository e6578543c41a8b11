#!/usr/bin/env bash
# The main job on a demo cohort: installs what is missing, builds, generates a small cohort in
# the real public layouts (DeepLesion zips + DL_info.csv, ImageNet tars, COCO zips) and runs the
# pipeline stages on it with 2 MPI ranks. Prints where the outputs and the report are.
#   bash pipeline/demo.sh            (MP3D_DEMO_SCALE=tiny for a smoke run; MP3D_RANKS=N)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
build=$(bash pipeline/setup.sh "$here/build" | tail -n 1)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1 OPENBLAS_NUM_THREADS=1
ranks=${MP3D_RANKS:-2}
scale=${MP3D_DEMO_SCALE:-small}
out=results/demo
mp3d() { mpirun -np "$ranks" "$build/mp3d" "$@"; }
t0=$(date +%s)
mp3d synth --out "$out/data" --scale "$scale" --seed 1
mp3d preprocess configs/demo_preprocess.cfg --set input.root="$out/data/deeplesion" --set output.dir="$out/preprocess"
mp3d vdt configs/demo_vdt_imagenet.cfg --set input.root="$out/data/imagenet" --set output.dir="$out/vdt_imagenet"
mp3d vdt configs/demo_vdt_coco.cfg --set input.root="$out/data/coco" --set output.dir="$out/vdt_coco"
for f in "$out"/preprocess/*.h5 "$out"/vdt_imagenet/*.h5 "$out"/vdt_coco/*.h5; do
    "$build/mp3d" inspect "$f"
done | tee "$out/inspect.txt"
t1=$(date +%s)
echo
echo "demo: finished in $((t1 - t0)) s with $ranks ranks (scale $scale)"
echo "demo: cohort      $here/$out/data"
echo "demo: shards      $here/$out/preprocess  $here/$out/vdt_imagenet  $here/$out/vdt_coco"
echo "demo: summary     $here/$out/inspect.txt"
