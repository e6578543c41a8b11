#!/usr/bin/env bash
# README as a test (issue 16): every fenced block of README.md is either a command block, run or
# checked here line by line, or explicitly not one.
#
# The rule (mechanical): every ``` fence of README.md carries a language tag.
#   ```sh      shell commands: every (joined, `\`-continued) line must match a case below, else FAIL
#   ```python  run against a real checkpoint (the one python block: loading into torch)
#   ```text / ```cfg / ```console   output, syntax or config excerpts: not run
# An untagged fence, another tag, or a command line this test does not know makes it FAIL, so a new
# README command cannot be added without a check here.
#
# Every block and what is done with it (README order):
#   sh   bash pipeline/demo.sh, bash pipeline/test.sh   not run here (they are the demo and the whole
#        suite: CI runs them; tests/test_run_groups.sh runs the demo pipeline at tiny scale);
#        checked: the scripts exist and parse (bash -n)
#   text mp3d usage synopsis; cfg the pipeline excerpt; text the --dry-run waves    not run
#   python h5py -> torch load_state_dict   run as written on a real demo_pretrain checkpoint
#        (a 2-step run of configs/demo_pretrain.cfg on the tiny cohort, placed at the path the block
#        names) into tests/torch_equiv.py's ResNet3DV1c-18: strict load, every name and shape
#   sh   mp3d import ... (2 lines)   run as written: the released .pth files are not here, so each
#        must stop at exit 2 naming its missing --from file (options and --set keys accepted)
#   sh   mp3d export --checkpoint runs/ft/ckpt_00012000.h5 --out ft.pth   run as written on a real
#        checkpoint placed there; torch.load(ft.pth, weights_only=True) holds every /params tensor
#   text import report; text init_from report   not run
#   sh   mpirun -np 4 mp3d train configs/finetune_deeplesion_mp3d.cfg ... (2 commands) and
#        mp3d import ... --set train.task=detect    paper scale: the config with the line's --set
#        values is validated by `mp3d run --dry-run` of a one-stage pipeline; the import as above
#   sh   COCO block: the two demo-scale `mpirun -np 2 mp3d train` lines and `srun mp3d train
#        configs/pretrain_coco_vdt.cfg` validated the same way (their shards are not here);
#        `mpirun -np 2 mp3d run configs/demo_coco.cfg` run as written plus --dry-run (every stage
#        config validated, the plan printed)
#   sh   slurm/submit.sh lines (2)   run as written plus --print (no Slurm here): exit 0, one sbatch
#        line per stage, the MP3D_*_SBATCH options of the line in them
#   sh   mkdir -p logs; sbatch slurm/*.sbatch ... (5 lines)   mkdir run; for sbatch: the script
#        exists and parses, and the mp3d command it would run (its subcommand or the script's
#        default, the config, the --set values; for --list every line of the list) is validated
#        as above
#   sh   local-cluster.sh up / export / submit.sh / down   needs root and Slurm daemons: run by
#        tests/test_slurm_cluster.sh, which submits the demo with exactly these MP3D_SBATCH_ARGS and
#        --set values (checked here: the test file holds them)
#   text the source layout   not run
set -u
BIN=${MP3D_BIN:?MP3D_BIN not set}
SRC=${MP3D_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
PY=/usr/bin/python3
README=${MP3D_README:-$SRC/README.md}
T=$(mktemp -d /tmp/mp3d_readme.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }

# The blocks: "B <line> <tag>" per fence, then "L <command line>" per joined line of sh blocks.
extract() {
    "$PY" - "$1" <<'EOF'
import sys
lines = open(sys.argv[1], encoding="utf-8").read().split("\n")
i, bad = 0, 0
while i < len(lines):
    if lines[i].startswith("```"):
        tag, start = lines[i][3:].strip(), i + 1
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i]); i += 1
        print(f"B {start} {tag or '-'}")
        if tag == "sh":
            cur = ""
            for b in body:
                cur += b
                if cur.endswith("\\"):
                    cur = cur[:-1]
                    continue
                if cur.strip():
                    print("L " + cur.strip())
                cur = ""
        elif tag == "python":
            print("P " + "\\n".join(body))
    i += 1
EOF
}

# Scratch working folder: the files the commands name; mp3d on PATH.
W=$T/w
mkdir -p "$W" "$T/bin"
cp -r "$SRC/configs" "$SRC/slurm" "$SRC/pipeline" "$W/"
ln -s "$BIN" "$T/bin/mp3d"
export PATH="$T/bin:$PATH"
export MP3D_BIN="$BIN"
cd "$W" || exit 1

# check_cmd WORDS...: validates `[mpirun -np N | srun] mp3d SUB CONFIG [--set k=v ...]` without
# running it: a one-stage pipeline with that config and those --set values, `mp3d run --dry-run`.
check_cmd() {
    local sub cfg sets=() w
    while [ $# -gt 0 ]; do
        case "$1" in
            mpirun) shift 3 ;;
            srun) shift ;;
            mp3d) shift; break ;;
            *) echo "check_cmd: unexpected '$1'"; return 1 ;;
        esac
    done
    sub=$1 cfg=$2
    shift 2
    while [ $# -gt 0 ]; do
        case "$1" in
            --set) sets+=("\"$2\""); shift 2 ;;
            *) echo "check_cmd: unexpected option '$1'"; return 1 ;;
        esac
    done
    [ -r "$cfg" ] || { echo "check_cmd: no config $cfg"; return 1; }
    w=$(IFS=,; echo "${sets[*]:-}")
    printf 'pipeline = { dir = "%s/run"; stages = ( { name = "c"; command = "%s"; config = "%s"; set = [%s]; } ); };\n' \
        "$T" "$sub" "$W/$cfg" "$w" >"$T/one.cfg"
    "$BIN" run "$T/one.cfg" --dry-run >"$T/one.log" 2>&1 && grep -q "stage:c command:$sub .*action:would-run" "$T/one.log" ||
        { sed 's/^/  | /' "$T/one.log" | grep -v "config|" | tail -n 5; return 1; }
}

# The check can fail: a misspelt key and an out-of-range value are rejected.
check_cmd mp3d train configs/demo_finetune.cfg --set train.bacth=4 >/dev/null 2>&1 && bad "check_cmd accepts train.bacth" ||
    ok "control: check_cmd rejects a misspelt key"
check_cmd mp3d train configs/demo_finetune.cfg --set train.lr=-1 >/dev/null 2>&1 && bad "check_cmd accepts train.lr=-1" ||
    ok "control: check_cmd rejects train.lr=-1"
# The rule can fail: an untagged fence and an unknown command line.
printf '# x\n```\nls\n```\n' >"$T/untagged.md"
extract "$T/untagged.md" | grep -q "^B 2 -$" && ok "control: an untagged fence is seen as tag '-'" || bad "untagged fence not seen"

# A real checkpoint of configs/demo_pretrain.cfg's network: the tiny cohort's ImageNet, 2 steps.
mk_ckpt() {
    mpirun -np 2 "$BIN" synth --out "$T/data" --scale tiny --set synth.datasets=imagenet >"$T/ck.log" 2>&1 &&
        mpirun -np 2 "$BIN" vdt configs/demo_vdt_imagenet.cfg --set input.root="$T/data/imagenet" --set output.dir="$T/vdt" >>"$T/ck.log" 2>&1 &&
        mpirun -np 2 "$BIN" train configs/demo_pretrain.cfg --set input.root="$T/vdt" --set output.dir="$T/pre" \
            --set train.max_steps=2 --set train.ckpt_every=2 >>"$T/ck.log" 2>&1 && [ -f "$T/pre/ckpt_00000002.h5" ]
}
CKPT=""
mk_ckpt && CKPT=$T/pre/ckpt_00000002.h5 || { bad "could not make a demo_pretrain checkpoint"; tail -n 5 "$T/ck.log"; }

blocks=0 cmds=0 unknown=0
while IFS= read -r rec <&3; do
    kind=${rec%% *} rest=${rec#* }
    case "$kind" in
        B)
            blocks=$((blocks + 1))
            tag=${rest#* }
            case "$tag" in
                sh | python | text | cfg | console) ;;
                *) bad "README.md:${rest%% *}: fence tagged '$tag' (must be sh, python, text, cfg or console)" ;;
            esac
            continue ;;
        P)
            cmds=$((cmds + 1))
            if [ -z "$CKPT" ]; then bad "python block: no checkpoint"; continue; fi
            mkdir -p results/demo/pretrain && cp "$CKPT" results/demo/pretrain/ckpt_00000240.h5
            code=$(printf '%b' "$rest")
            grep -q "results/demo/pretrain/ckpt_00000240.h5" <<<"$code" || bad "python block names another checkpoint"
            if out=$(printf 'import sys\nsys.path.insert(0, "%s/tests")\nfrom torch_equiv import ResNet3D18\nmodel = ResNet3D18("resnet3dv1c18", 0.25, "bn", 1, 10)\n%s\nprint("loaded", len(sd), sum(v.numel() for v in sd.values()))\n' "$SRC" "$code" |
                     nice -n 19 "$PY" - 2>&1); then
                ok "python block: strict load_state_dict of a demo_pretrain checkpoint: ${out##*$'\n'}"
            else
                bad "python block failed:"; echo "$out" | tail -n 5 | sed 's/^/  | /'
            fi
            continue ;;
    esac
    line=$rest
    case "$line" in "#"*) continue ;; esac # a comment line of a block
    cmds=$((cmds + 1))
    eval "set -- $line"
    case "$line" in
        "bash pipeline/demo.sh" | "bash pipeline/test.sh")
            bash -n "${line#bash }" && ok "'$line': not run here (CI); exists and parses" || bad "'$line' does not parse" ;;
        "mp3d import --from "*)
            "$@" >"$T/imp.log" 2>&1
            rc=$?
            if [ "$rc" = 2 ] && grep -q "import.from = \"$4\": no such file" "$T/imp.log" && ! grep -q "unknown" "$T/imp.log"; then
                ok "'$line': options and keys accepted, stops at the missing $4 (exit 2)"
            else
                bad "'$line': exit $rc"; grep -v "config|" "$T/imp.log" | tail -n 3 | sed 's/^/  | /'
            fi ;;
        "mp3d export --checkpoint runs/ft/ckpt_00012000.h5 --out ft.pth"*)
            mkdir -p runs/ft && cp "$CKPT" runs/ft/ckpt_00012000.h5
            if eval "$line" >"$T/exp.log" 2>&1 &&
                got=$("$PY" -c 'import torch,h5py,sys
sd = torch.load("ft.pth", weights_only=True)
f = h5py.File("runs/ft/ckpt_00012000.h5", "r")
n = [k for k in f["params"]]
assert all(torch.equal(sd[k], torch.as_tensor(f["params"][k][()])) for k in n)
print(len(sd), len(n))' 2>&1); then
                ok "'$line': run as written; torch.load(weights_only=True): $got (tensors, of them /params equal)"
            else
                bad "'$line'"; tail -n 3 "$T/exp.log" | sed 's/^/  | /'; echo "  | $got"
            fi ;;
        "mpirun -np 4 mp3d train configs/finetune_deeplesion_mp3d.cfg "* | "mpirun -np 2 mp3d train configs/demo_"* | \
            "srun mp3d train configs/pretrain_coco_vdt.cfg"*)
            check_cmd "$@" && ok "'$line': config and --set values valid (mp3d run --dry-run)" || bad "'$line': invalid" ;;
        "mpirun -np 2 mp3d run configs/demo_coco.cfg"*)
            mpirun -np 2 "$BIN" run configs/demo_coco.cfg --dry-run >"$T/coco.log" 2>&1 && n=$(grep -c "action:would-run" "$T/coco.log") &&
                [ "$n" -ge 5 ] && ok "'$line' --dry-run: $n stages planned" || { bad "'$line' --dry-run"; tail -n 3 "$T/coco.log"; } ;;
        "mkdir -p logs"*)
            eval "$line" && [ -d logs ] && ok "'$line': run" || bad "'$line'" ;;
        "sbatch "*)
            args=("$@")
            k=0
            while [ $k -lt ${#args[@]} ] && [ "${args[$k]}" != "${args[$k]%.sbatch}.sbatch" ]; do k=$((k + 1)); done
            script=${args[$k]:-}
            rest_args=("${args[@]:$((k + 1))}")
            if [ ! -r "$script" ] || ! bash -n "$script"; then bad "'$line': no script $script"; continue; fi
            sub=""
            case " ${rest_args[0]} " in " synth " | " preprocess " | " vdt " | " train " | " anchors " | " evaluate ") sub=${rest_args[0]}; rest_args=("${rest_args[@]:1}") ;; esac
            case "$script" in *pretrain.sbatch) sub=${sub:-train} ;; *evaluate.sbatch) sub=${sub:-evaluate} ;; esac
            if [ "${rest_args[0]}" = --list ]; then
                good=1 n=0
                while read -r lsub lcfg lrest; do
                    n=$((n + 1))
                    # shellcheck disable=SC2086  # the list line's words
                    check_cmd mp3d "$lsub" "$lcfg" $lrest >/dev/null || { good=0; bad "'$line': list entry '$lsub $lcfg $lrest' invalid"; }
                done < <(sed 's/#.*//' "${rest_args[1]}" | grep -v '^[[:space:]]*$')
                [ "$good" = 1 ] && [ "$n" -gt 0 ] && ok "'$line': $script parses, its $n list entries valid"
            else
                check_cmd mp3d "$sub" "${rest_args[@]}" && ok "'$line': $script parses, 'mp3d $sub ${rest_args[*]}' valid" ||
                    bad "'$line': the mp3d command is invalid"
            fi ;;
        "slurm/local-cluster.sh up /tmp/mp3d-cluster"* | "export SLURM_CONF=/tmp/mp3d-cluster/slurm.conf" | \
            "slurm/local-cluster.sh down /tmp/mp3d-cluster"*)
            bash -n slurm/local-cluster.sh && grep -q "lc_up\b" slurm/local-cluster.sh &&
                ok "'$line': run by test_slurm_cluster.sh (root + Slurm daemons)" || bad "'$line'" ;;
        "export MP3D_SBATCH_ARGS="*)
            grep -qF "${line%%   #*}" "$SRC/tests/test_slurm_cluster.sh" && ok "'$line': test_slurm_cluster.sh exports the same" ||
                bad "'$line': tests/test_slurm_cluster.sh does not run it as written" ;;
        "slurm/submit.sh configs/demo.cfg --set synth.scale=tiny --set pipeline.dir=/tmp/demo")
            grep -qF 'slurm/submit.sh" "$PIPE" --set synth.scale=tiny --set pipeline.dir=' "$SRC/tests/test_slurm_cluster.sh" &&
                ok "'$line': test_slurm_cluster.sh submits the demo with exactly these --set values (its own pipeline.dir)" ||
                bad "'$line': tests/test_slurm_cluster.sh does not run it as written" ;;
        "slurm/submit.sh configs/"* | "MP3D_SBATCH_ARGS="*"slurm/submit.sh configs/"*)
            out=$(env "$@" --print 2>"$T/sub.err")
            rc=$?
            n=$(grep -c '^sbatch --parsable' <<<"$out")
            words=("$@")
            k=0
            while [ "${words[$k]}" != slurm/submit.sh ]; do k=$((k + 1)); done
            stages=$(mp3d run "${words[@]:$((k + 1))}" --dry-run 2>&1 | grep -c "pipeline: stage:")
            if [ "$rc" = 0 ] && [ "$n" -gt 0 ] && [ "$n" = "$stages" ]; then
                ok "'$line' --print: $n sbatch lines, one per stage"
            else
                bad "'$line' --print: exit $rc, $n sbatch lines for $stages stages"; tail -n 3 "$T/sub.err"
            fi
            case "$line" in *MP3D_PRETRAIN_SBATCH=*)
                grep "pretrain.sbatch" <<<"$out" | grep -q -- "--partition=cpu --account=mylab --nodes=16 --time=48:00:00" &&
                    ok "  the training jobs carry MP3D_SBATCH_ARGS then MP3D_PRETRAIN_SBATCH" || bad "  overrides missing from the train jobs" ;;
            esac ;;
        *)
            unknown=$((unknown + 1))
            bad "README.md command line with no check in tests/test_readme.sh: $line" ;;
    esac
done 3< <(extract "$README")

[ "$blocks" -ge 10 ] && [ "$cmds" -ge 20 ] && ok "README: $blocks blocks, $cmds command lines checked" ||
    bad "README: only $blocks blocks, $cmds command lines found"
echo "test_readme: $fail failed"
[ "$fail" -eq 0 ]
