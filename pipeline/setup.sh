#!/usr/bin/env bash
# Installs what mp3d needs (Debian 12 packages) when missing, then configures and builds.
#   bash pipeline/setup.sh [BUILD_DIR]        (MP3D_SANITIZE=1 for an ASan+UBSan build)
# Uses sudo for apt-get when not root. Prints the build folder on its last line.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$here/build}
pkgs=(build-essential cmake pkg-config git python3 libopenmpi-dev openmpi-bin libhdf5-openmpi-dev hdf5-tools
      libopenblas-dev libarchive-dev libconfig-dev libpng-dev libjpeg-dev libcjson-dev libdnnl-dev)
pkgs+=(${MP3D_EXTRA_PACKAGES:-})
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
san=OFF
[ "${MP3D_SANITIZE:-0}" = 1 ] && san=ON
type=${MP3D_BUILD_TYPE:-Release}
[ "$san" = ON ] && type=${MP3D_BUILD_TYPE:-RelWithDebInfo}
cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE="$type" -DMP3D_SANITIZE="$san" -DMP3D_WERROR=ON >&2
cmake --build "$build" -j"$(nproc)" >&2
echo "$build"
