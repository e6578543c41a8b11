#!/usr/bin/env bash
# `mp3d froc` end to end: a DL_info.csv in the release format holding the issue's case A (image 2
# moved to the val split, a noisy lesion added), detections with a malformed line, the JSON figures
# checked, the report files, the quarantine summary, noisy kept, usage and input errors, and the
# same figures at 2 and 3 ranks (printed once).
set -u
BIN=${MP3D_BIN:?MP3D_BIN not set}
T=$(mktemp -d /tmp/mp3d_froc_cli.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; [ -f "$2" ] && sed 's/^/  | /' "$2"; fail=$((fail+1)); }

# row FILE PATIENT SLICE "x1, y1, x2, y2" TYPE NOISY SPLIT
row() {
    printf '%s,%d,1,1,%d,"%s, %s","%s","20.5, 10.25","0.5, 0.5, 0.5",%d,%d,"1, 60","0.8, 0.8, 5","512, 512","-175, 275",M,50,%d\n' \
        "$1" "$2" "$3" "$4" "$4" "$4" "$5" "$6" "$7"
}
{
    echo "File_name,Patient_index,Study_index,Series_ID,Key_slice_index,Measurement_coordinates,Bounding_boxes,Lesion_diameters_Pixel_,Normalized_lesion_location,Coarse_lesion_type,Possibly_noisy,Slice_range,Spacing_mm_px_,Image_size,DICOM_windows,Patient_gender,Patient_age,Train_Val_Test"
    row 000001_01_01_010.png 1 10 "10, 10, 30, 30" 4 0 3
    row 000002_01_01_020.png 2 20 "50, 50, 70, 70" 5 0 3
    row 000002_01_01_020.png 2 20 "100, 100, 120, 120" 5 0 3
    row 000003_01_01_030.png 3 30 "5, 5, 25, 25" 1 0 2
    row 000004_01_01_040.png 4 40 "0, 0, 10, 10" 2 0 3
    row 000004_01_01_040.png 4 40 "300, 300, 310, 310" 2 1 3
} >"$T/DL_info.csv"
cat >"$T/dets.csv" <<'CSV'
File_name,x1,y1,x2,y2,score
000001_01_01_010.png,10,10,30,30,0.9
000001_01_01_010.png,11,11,31,31,0.8
000001_01_01_010.png,200,200,220,220,0.7
000002_01_01_020.png,50,50,120,120,0.95
000002_01_01_020.png,100,100,120,120,0.6
000002_01_01_020.png,0,0,5,5,0.3
000003_01_01_030.png,5,5,25,25,0.85
000003_01_01_030.png,1,1,2,2,0.2
000004_01_01_040.png,0,0,10,10,0.5
000004_01_01_040.png,0,0,10,oops,0.5
CSV
mkdir -p "$T/preprocess"
printf 'sample,reason\n000009_01_01_001.png,missing_neighbour\n' >"$T/preprocess/quarantine.csv"

# ranks .95 FP, .9 TP, .8 dup, .7 FP, .6 TP, .5 TP, .3 FP on 3 test images, 4 lesions
check_json() { # NAME FILE NIMG NLES S05 S1 MFROC
    if python3 - "$2" "$3" "$4" "$5" "$6" "$7" <<'PY'
import json, sys
d = json.loads(open(sys.argv[1]).read())
ni, nl, s05, s1, mf = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
assert d["n_images"] == ni and d["n_lesions"] == nl, (d["n_images"], d["n_lesions"])
assert abs(d["sens"]["0.5"] - s05) < 1e-6 and abs(d["sens"]["1"] - s1) < 1e-6, d["sens"]
assert abs(d["mfroc"] - mf) < 1e-6, d["mfroc"]
assert d["n_detections_outside"] == 2
PY
    then ok "$1"; else bad "$1" "$2"; fi
}

"$BIN" froc --truth "$T/DL_info.csv" --detections "$T/dets.csv" --json --out "$T/out" \
    --set eval.bootstrap=100 >"$T/o.json" 2>"$T/e"
rc=$?
[ $rc = 0 ] && ok "exit 0" || bad "exit $rc" "$T/e"
check_json json "$T/o.json" 3 4 0.25 0.75 0.625
grep -q "dets.csv:11: column y2: 'oops'" "$T/e" && ok "bad line reported" || bad "bad line reported" "$T/e"
for f in report.md report.html froc.svg froc.json per_lesion.csv per_detection.csv; do
    [ -s "$T/out/report/$f" ] && ok "file $f" || bad "file $f" "$T/e"
done
grep -q "1 sample(s) quarantined" "$T/out/report/report.md" && ok quarantine || bad quarantine "$T/out/report/report.md"
grep -q "Overlays skipped: no images folder" "$T/out/report/report.md" && ok "overlays skipped" || bad "overlays skipped" "$T/out/report/report.md"
python3 -c 'import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])' "$T/out/report/froc.svg" && ok "svg is XML" || bad "svg is XML" /dev/null
[ "$(wc -l <"$T/out/report/per_lesion.csv")" = 5 ] && ok per_lesion || bad per_lesion "$T/out/report/per_lesion.csv"

# noisy kept: 5 lesions, the noisy one is never found
"$BIN" froc --truth "$T/DL_info.csv" --detections "$T/dets.csv" --json --keep-noisy \
    --set eval.bootstrap=0 >"$T/k.json" 2>"$T/e"
check_json keep-noisy "$T/k.json" 3 5 0.2 0.6 0.5

# errors: missing detections (usage), unreadable truth (failure)
"$BIN" froc --truth "$T/DL_info.csv" >"$T/o" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "eval.detections" "$T/o" && ok "usage error" || bad "usage error exit $rc" "$T/o"
"$BIN" froc --truth "$T/nope.csv" --detections "$T/dets.csv" >"$T/o" 2>&1; rc=$?
[ $rc = 1 ] && grep -q "nope.csv" "$T/o" && ok "missing truth" || bad "missing truth exit $rc" "$T/o"

# the same at 2 and 3 ranks: rank 0 scores, every rank returns its code, JSON printed once
for np in 2 3; do
    mpirun -np $np "$BIN" froc --truth "$T/DL_info.csv" --detections "$T/dets.csv" --json \
        --set eval.bootstrap=20 >"$T/m.json" 2>"$T/e"; rc=$?
    [ $rc = 0 ] && ok "np$np exit 0" || bad "np$np exit $rc" "$T/e"
    [ "$(grep -c n_images "$T/m.json")" = 1 ] && ok "np$np printed once" || bad "np$np printed once" "$T/m.json"
    check_json "np$np json" "$T/m.json" 3 4 0.25 0.75 0.625
done
# (every rank returning rank 0's code, also on failure, is test_froc_stage at 1, 2 and 3 ranks)
[ $fail = 0 ] && echo "test_froc_cli: all passed" || echo "test_froc_cli: $fail failed"
exit $((fail > 0))
