#!/usr/bin/env bash
# Every script in slurm/ (and the Slurm test scripts) parses with `bash -n` and is clean under
# Debian's shellcheck at every severity. A missing shellcheck skips (77) only after
# `bash -n` has passed on all of them.
set -u
SRC=${MP3D_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
fail=0
log=$(mktemp /tmp/mp3d_slurm_lint.XXXXXX)
trap 'rm -f "$log"' EXIT
files=()
for f in "$SRC"/slurm/* "$SRC"/tests/test_slurm*.sh; do
    [ -f "$f" ] || continue
    case "$f" in
        *.sh | *.sbatch) files+=("$f") ;;
        *) head -n 1 "$f" | grep -q '^#!.*bash' && files+=("$f") ;;
    esac
done
if [ ${#files[@]} -lt 6 ]; then
    echo "FAIL: found only ${#files[@]} scripts under $SRC/slurm and tests/"
    exit 1
fi
for f in "${files[@]}"; do
    if bash -n "$f" 2>"$log"; then
        echo "ok   bash -n ${f#"$SRC"/}"
    else
        echo "FAIL bash -n ${f#"$SRC"/}"; sed 's/^/  | /' "$log"; fail=$((fail + 1))
    fi
done
if ! command -v shellcheck >/dev/null; then
    echo "SKIP: shellcheck not installed (apt-get install shellcheck); bash -n: $fail failed"
    [ "$fail" -eq 0 ] && exit 77
    exit 1
fi
for f in "${files[@]}"; do
    # -x follows the `source` directives (common.sh, local-cluster.sh, test_slurm_lib.sh).
    if (cd "$(dirname "$f")" && shellcheck -x -S style "$(basename "$f")") >"$log" 2>&1; then
        echo "ok   shellcheck ${f#"$SRC"/}"
    else
        echo "FAIL shellcheck ${f#"$SRC"/}"; sed 's/^/  | /' "$log"; fail=$((fail + 1))
    fi
done
echo "test_slurm_lint: ${#files[@]} scripts ($(shellcheck --version | sed -n 's/^version: //p')), $fail failed"
[ "$fail" -eq 0 ]
