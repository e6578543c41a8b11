#!/usr/bin/env bash
# The HTML report renders in headless Chromium (Debian `chromium`): the report of
# test_froc_report is screenshotted and the PNG must be non-blank. Skips (77) without chromium.
# Usage: test_froc_html.sh TEST_FROC_REPORT_BINARY
set -u
BIN=$1
CHROME=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROME" ] || { echo "chromium not installed: skipped"; exit 77; }
T=$(mktemp -d /tmp/mp3d_froc_html.XXXXXX)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
MP3D_FROC_KEEP=1 "$BIN" >/dev/null || { echo "FAIL: test_froc_report did not write the report"; exit 1; }
HTML="$T/froc_test_report/report/report.html"
[ -s "$HTML" ] || { echo "FAIL: no report.html"; exit 1; }
HOME="$T" timeout 100 "$CHROME" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
    --user-data-dir="$T/chrome" --window-size=1100,1600 --screenshot="$T/shot.png" "file://$HTML" \
    >"$T/chrome.log" 2>&1
[ -s "$T/shot.png" ] || { echo "FAIL: no screenshot"; tail -5 "$T/chrome.log"; exit 1; }
"$BIN" --check-png "$T/shot.png" || { echo "FAIL: screenshot is blank"; exit 1; }
echo "test_froc_html: ok"
