#!/usr/bin/env bash
# mp3d import / export against Debian's python3-torch: tests/import_pth.py MODE in a fresh
# folder (equiv | dtypes | detector | export | hostile | init_from). Skipped (77) without torch / h5py.
set -u
MODE=${1:?usage: test_import.sh MODE [TRAIN_TOOL]}
: "${MP3D_BIN:?}"
PY=/usr/bin/python3
$PY -c "import torch, h5py" 2>/dev/null || { echo "SKIP: python3-torch / python3-h5py not installed"; exit 77; }
T=$(mktemp -d /tmp/mp3d_import.XXXXXX)
trap 'rm -rf "$T"' EXIT
$PY "$(dirname "$0")/import_pth.py" "$MODE" "$T" "${2:-}"
