#!/usr/bin/env python3
"""Curves of the lesion-detector fine-tuning benchmark (tests/bench/bench_finetune_medium.sh):
reads the metrics.jsonl of each run (name=folder pairs) and the `mp3d evaluate` results of its
checkpoints under test_evals/, writes a Markdown table of every scored point (step, wall minutes
since the run started, the same without the time spent in validations, Sens@0.5/1/2/4, mFROC)
and an SVG of mFROC against wall time and against training steps; with CURVES_SENS4=1 also
Sens@4 against wall time with and without the validations. Standard library only. Also reads
the metrics.jsonl of tests/bench/lesion_tta_torch.py (the PyTorch reference).

usage: finetune_curves.py OUT_PREFIX TITLE name=run_dir [name=run_dir ...]
"""
import json
import os
import sys

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def records(run_dir):
    """The records of run_dir/metrics.jsonl, in order (blank lines skipped)."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            line = line.strip()
            if line:
                yield json.loads(line)


def load(run_dir):
    """Validations logged by the run (metrics.jsonl "val" records) plus `mp3d evaluate` results of
    its checkpoints (run_dir/test_evals/step_<N>/report/froc.json), each placed at the wall time
    of its step's train record; sorted by step."""
    start, vals, at_step, val_s = None, [], {}, 0.0
    for r in records(run_dir):
        if r.get("event") == "start" and start is None:
            start = r["time"]
        if r.get("stage") == "train" and "step" in r:
            at_step[r["step"]] = ((r["time"] - start) / 60.0, (r["time"] - start - val_s) / 60.0)
        if r.get("stage") == "val" and "mfroc" in r:
            val_s += r.get("val_seconds", r.get("val_s", 0.0))   # mp3d's / lesion_tta_torch.py's
            r["wall_min"] = (r["time"] - start) / 60.0
            r["train_min"] = (r["time"] - start - val_s) / 60.0   # wall time minus the validations'
            r["source"] = "run"
            vals.append(r)
    ev = os.path.join(run_dir, "test_evals")
    seen = {v["step"] for v in vals}
    for d in sorted(os.listdir(ev)) if os.path.isdir(ev) else []:
        fj = os.path.join(ev, d, "report", "froc.json")
        if not d.startswith("step_") or not os.path.isfile(fj):
            continue
        step = int(d[5:])
        if step in seen or step not in at_step:
            continue
        j = json.load(open(fj))
        r = {"step": step, "mfroc": j["mfroc"], "source": "evaluate"}
        for k in ("0.5", "1", "2", "4"):
            r["sens_" + k] = j["sens"][k]
        r["wall_min"], r["train_min"] = at_step[step]
        vals.append(r)
    return sorted(vals, key=lambda v: v["step"])


def svg(path, title, runs, xkey, xlabel, ykey="mfroc", ylabel="test mFROC", ymax=None, xscale=1.0):
    """Curves of v[ykey] against v[xkey] * xscale, one polyline per (name, points) run; the y axis
    runs to ymax (default: 1.15 x the largest value, at least 0.1). Also used by tta_classify.py."""
    W, H, L, B, T, R = 640, 360, 60, 50, 30, 170
    xmax = max((v[xkey] * xscale for _, vs in runs for v in vs), default=1.0) * 1.05 or 1.0
    if ymax is None:
        ymax = max(0.1, max((v[ykey] for _, vs in runs for v in vs), default=0.1) * 1.15)
    px = lambda x: L + (W - L - R) * x * xscale / xmax
    py = lambda y: H - B - (H - B - T) * y / ymax
    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H),
         '<rect width="100%" height="100%" fill="white"/>',
         '<text x="%d" y="18" font-size="14">%s</text>' % (L, title),
         '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (L, H - B, W - R, H - B),
         '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (L, T, L, H - B),
         '<text x="%d" y="%d" text-anchor="middle">%s</text>' % ((L + W - R) // 2, H - 12, xlabel),
         '<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">%s</text>' % ((T + H - B) // 2, (T + H - B) // 2, ylabel)]
    for i in range(6):
        y = ymax * i / 5
        o.append('<text x="%d" y="%.1f" text-anchor="end">%.2f</text>' % (L - 6, py(y) + 4, y))
        o.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>' % (L, py(y), W - R, py(y)))
        x = xmax * i / 5
        o.append('<text x="%.1f" y="%d" text-anchor="middle">%.0f</text>' % (px(x / xscale), H - B + 16, x))
    for k, (name, vs) in enumerate(runs):
        c = COLORS[k % len(COLORS)]
        pts = " ".join("%.1f,%.1f" % (px(v[xkey]), py(v[ykey])) for v in vs)
        if vs:
            o.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (c, pts))
        for v in vs:
            o.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (px(v[xkey]), py(v[ykey]), c))
        o.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/>' % (W - R + 10, T + 20 * k, c))
        o.append('<text x="%d" y="%d">%s</text>' % (W - R + 28, T + 10 + 20 * k, name))
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    prefix, title = sys.argv[1], sys.argv[2]
    runs = []
    for a in sys.argv[3:]:
        name, d = a.split("=", 1)
        runs.append((name, load(d)))
    md = ["| run | step | wall min | min w/o val | Sens@0.5 | Sens@1 | Sens@2 | Sens@4 | mFROC | scored by |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for name, vs in runs:
        for v in vs:
            md.append("| %s | %d | %.1f | %.1f | %.3f | %.3f | %.3f | %.3f | %.3f | %s |" % (
                name, v["step"], v["wall_min"], v["train_min"], v["sens_0.5"], v["sens_1"], v["sens_2"], v["sens_4"], v["mfroc"],
                "the run's validation" if v["source"] == "run" else "mp3d evaluate of ckpt"))
    with open(prefix + "_table.md", "w") as f:
        f.write("\n".join(md) + "\n")
    svg(prefix + "_wall.svg", title + ": test mFROC vs wall time", runs, "wall_min", "wall minutes since the run started")
    svg(prefix + "_steps.svg", title + ": test mFROC vs training steps", runs, "step", "training steps (batch 4)")
    if os.environ.get("CURVES_SENS4"):
        svg(prefix + "_sens4_wall.svg", title + ": test Sens@4FP vs wall time", runs, "wall_min",
            "wall minutes since the run started", ykey="sens_4", ylabel="test Sens@4")
        svg(prefix + "_sens4_train.svg", title + ": test Sens@4FP vs wall time without validation", runs, "train_min",
            "wall minutes since the run started, validations' time removed", ykey="sens_4", ylabel="test Sens@4")
    print("\n".join(md))


if __name__ == "__main__":
    main()
