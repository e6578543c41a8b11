#!/bin/bash
# test_shard_inspect: the mp3d command end to end on a tiny synth cohort at 2 ranks:
# preprocess writes complete shards, a re-run skips them, inspect summarises a shard (complete,
# per-split count, provenance, quarantine) and refuses a missing file; an unfinished file shows
# as not complete; a malformed `split` (two values per sample) is reported, not read past.
set -u
[ -x "${MP3D_BIN:-}" ] || { echo "MP3D_BIN not set"; exit 1; }
D=$(pwd)/shard_inspect
rm -rf "$D" && mkdir -p "$D"
fail=0
check() { if ! eval "$1"; then echo "FAIL: $2"; fail=$((fail + 1)); fi; }
echo "# test" > "$D/empty.cfg"
"$MP3D_BIN" synth --out "$D/syn" --scale tiny --set synth.datasets=deeplesion > "$D/synth.log" 2>&1
check '[ -f "$D/syn/deeplesion/DL_info.csv" ]' "synth wrote no DL_info.csv"
mpirun -np 2 "$MP3D_BIN" preprocess "$D/empty.cfg" --set input.root="$D/syn/deeplesion" --set output.dir="$D/pp" > "$D/pp.log" 2>&1
rc=$?
check '[ $rc -eq 0 ]' "preprocess exit $rc"
check '[ -f "$D/pp/train.h5" ] && [ -f "$D/pp/val.h5" ] && [ -f "$D/pp/test.h5" ]' "preprocess did not write the three splits"
check '! ls "$D"/pp/*.tmp "$D"/pp/*.spool.* >/dev/null 2>&1' "temporary files left behind"
mpirun -np 2 "$MP3D_BIN" preprocess "$D/empty.cfg" --set input.root="$D/syn/deeplesion" --set output.dir="$D/pp" > "$D/pp2.log" 2>&1
check 'grep -q "split:train.*status:complete (skipped" "$D/pp2.log"' "re-run did not skip the complete train shard"
"$MP3D_BIN" inspect "$D/pp/train.h5" > "$D/inspect.txt" 2> "$D/inspect.err"
rc=$?
check '[ $rc -eq 0 ]' "inspect exit code $rc"
ntrain=$(awk -F, 'NR > 1 && $NF == 1 {print $1}' "$D/syn/deeplesion/DL_info.csv" | sort -u | wc -l)
check 'grep -q "^complete: yes" "$D/inspect.txt"' "inspect: complete"
check 'grep -q "samples_per_split: train=$ntrain val=0 test=0" "$D/inspect.txt"' "inspect: train count $ntrain"
check 'grep -q "@mp3d_version" "$D/inspect.txt" && grep -q "@config_hash" "$D/inspect.txt" && grep -q "@inputs" "$D/inspect.txt"' "inspect: provenance"
check 'grep -q "/images  *int16  *($ntrain, 9, 128, 128)" "$D/inspect.txt"' "inspect: images shape"
check 'grep -q "^quarantine:" "$D/inspect.txt"' "inspect: quarantine section"
# a damaged HDF5 file and a missing file are errors
head -c 3000 "$D/pp/train.h5" > "$D/cut.h5"
"$MP3D_BIN" inspect "$D/cut.h5" > /dev/null 2>&1
rc=$?
check '[ $rc -ne 0 ]' "inspect of a truncated HDF5 file exits 0"
"$MP3D_BIN" inspect "$D/nonexistent.h5" > /dev/null 2>&1
rc=$?
check '[ $rc -ne 0 ]' "inspect of a missing file exits 0"
# quarantine.csv itself
"$MP3D_BIN" inspect "$D/pp/quarantine.csv" > "$D/inspect_q.txt" 2>/dev/null
check 'grep -q "^header: stage,file,entry,reason" "$D/inspect_q.txt"' "inspect quarantine.csv"
# a shard from outside whose `split` holds two values per sample (malformed): inspect reads one
# value per sample into its buffer, so it must refuse the dataset (before: a heap overflow),
# say so on the summary line, and go on (needs h5py; skipped without it)
if /usr/bin/python3 -c "import h5py" 2>/dev/null; then
    cp "$D/pp/train.h5" "$D/wide_split.h5"
    /usr/bin/python3 -c 'import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r+"); n = f["split"].shape[0]; del f["split"]
f.create_dataset("split", data=np.ones((n, 2), dtype=np.int32)); f.close()' "$D/wide_split.h5"
    "$MP3D_BIN" inspect "$D/wide_split.h5" > "$D/inspect_wide.txt" 2>&1
    rc=$?
    check '[ $rc -eq 0 ] && grep -q "samples_per_split: unreadable (.*split" "$D/inspect_wide.txt" && grep -q "^complete: yes" "$D/inspect_wide.txt"' \
        "inspect of a shard whose split has 2 values per sample: exit $rc, $(grep samples_per_split "$D/inspect_wide.txt")"
else
    echo "h5py missing: the malformed-split case is not run"
fi
# an unpacked Images_png/ folder gives the same shard as the zips
mkdir -p "$D/unpacked"
cp "$D/syn/deeplesion/DL_info.csv" "$D/unpacked/"
python3 -c 'import sys, zipfile, glob
for z in sorted(glob.glob(sys.argv[1] + "/Images_png_*.zip")): zipfile.ZipFile(z).extractall(sys.argv[2])' "$D/syn/deeplesion" "$D/unpacked"
check '[ -d "$D/unpacked/Images_png" ]' "unpacking the zips"
"$MP3D_BIN" preprocess "$D/empty.cfg" --set input.root="$D/unpacked" --set output.dir="$D/pp_folder" > "$D/pp_folder.log" 2>&1
rc=$?
check '[ $rc -eq 0 ]' "preprocess from the unpacked folder: exit $rc"
for s in train val test; do
  for ds in images boxes affine src_slices file_name; do
    h5dump -d "/$ds" "$D/pp/$s.h5" | tail -n +2 > "$D/a.txt"
    h5dump -d "/$ds" "$D/pp_folder/$s.h5" | tail -n +2 > "$D/b.txt"
    check 'cmp -s "$D/a.txt" "$D/b.txt" && [ -s "$D/a.txt" ]' "$s.h5 dataset $ds differs between zips and unpacked folder"
  done
done
cat "$D/inspect.txt" | head -5
echo "train_samples:$ntrain failures:$fail"
[ $fail -eq 0 ]
