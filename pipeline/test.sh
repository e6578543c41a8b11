#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (ctest).
#   bash pipeline/test.sh                  Release build in ./build
#   MP3D_SANITIZE=1 bash pipeline/test.sh  ASan+UBSan build in ./build-asan
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=$here/build
[ "${MP3D_SANITIZE:-0}" = 1 ] && dir=$here/build-asan
# Test-only tools: shellcheck (job-script lint), Slurm + munge (a real single-node cluster),
# chromium (renders the HTML report), h5py + torch (checkpoints load into PyTorch models).
export MP3D_EXTRA_PACKAGES="${MP3D_EXTRA_PACKAGES:-shellcheck slurmctld slurmd slurm-client munge chromium python3-h5py python3-numpy python3-torch}"
build=$(bash "$here/pipeline/setup.sh" "$dir" | tail -n 1)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cd "$build"
ctest --output-on-failure -j"${MP3D_TEST_JOBS:-2}" ${MP3D_CTEST_ARGS:-}
