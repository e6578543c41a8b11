"""Merges the JSON lines of bench_nn (C) and bench_nn_torch.py into results/bench/nn.md:
every figure beside its same-run reference (cblas_sgemm on the layer's own GEMM calls, and
PyTorch on the same shapes), with the CPU time other processes took during the sample.
Usage: bench_nn_report.py C.json TORCH.json OUT.md [C_AVX512.json]"""
import json
import os
import platform
import subprocess
import sys
import time


def load(path):
    try:
        with open(path) as f:
            return [json.loads(l) for l in f if l.strip()]
    except FileNotFoundError:
        return []


def cpu_model():
    fam = model = name = "?"
    for line in open("/proc/cpuinfo"):
        k, _, v = line.partition(":")
        k, v = k.strip(), v.strip()
        if k == "model name" and name == "?":
            name = v
        elif k == "cpu family" and fam == "?":
            fam = v
        elif k == "model" and model == "?":
            model = v
    return "%s (family %s model %s)" % (name, fam, model)


def main():
    c, t = load(sys.argv[1]), load(sys.argv[2])
    c512 = load(sys.argv[4]) if len(sys.argv) > 4 else []
    tmeta = next((r for r in t if r.get("kind") == "meta"), {})
    key = lambda r: (r["name"], r["threads"])
    tl = {key(r): r for r in t if r.get("kind") in ("layer", "step")}
    c512l = {key(r): r for r in c512 if r.get("kind") == "layer"}
    out = []
    w = out.append
    w("# nn benchmark (issue 9)\n")
    w("Generated %s by `tests/bench/run_bench_nn.sh` on %s, %s, OpenBLAS core `%s`, PyTorch %s (oneDNN %s).\n" % (
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), platform.node() or "?", cpu_model(),
        next((r.get("blas_core", "?") for r in c if r.get("kind") == "meta"), "?"), tmeta.get("torch", "n/a"),
        tmeta.get("mkldnn", "n/a")))
    w("All figures of one table row were measured in the same run, one after the other; best of 3 timed")
    w("repetitions after a warm-up. `other` = CPU cores other processes used during the best sample")
    w("(from /proc/stat minus our own CPU time): on this shared 2-vCPU machine anything above ~0.2 means")
    w("the sample was time-shared and the wall-clock GFLOP/s are lower bounds. The `cpu` columns divide")
    w("the FLOPs by the process's own CPU seconds x threads (time-sharing does not inflate them; SMT")
    w("contention and spinning threads still do): compare each figure with its same-run reference.\n")
    w("## Conv3d layers (GFLOP/s; fwd+bwd counts 3x the forward FLOPs: dX and dW)\n")
    for view, pre in (("wall clock", ""), ("cpu time", "cpu_")):
        w("\n### %s\n" % view)
        w("| layer | thr | fwd | sgemm fwd | % | PyTorch fwd | fwd+bwd | sgemm f+b | % | PyTorch f+b | other (mp3d / torch) |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in c:
            if r.get("kind") != "layer" or pre + "fwd_gflops" not in r:
                continue
            p = tl.get(key(r), {})
            pf = "%.1f" % p[pre + "fwd_gflops"] if pre + "fwd_gflops" in p else "n/a"
            pfb = "%.1f" % p[pre + "fwdbwd_gflops"] if pre + "fwdbwd_gflops" in p else "n/a"
            w("| %s | %d | %.1f | %.1f | %.0f%% | %s | %.1f | %.1f | %.0f%% | %s | %.2f / %s |" % (
                r["name"], r["threads"], r[pre + "fwd_gflops"], r[pre + "sgemm_fwd_gflops"],
                100 * r[pre + "fwd_gflops"] / r[pre + "sgemm_fwd_gflops"], pf, r[pre + "fwdbwd_gflops"],
                r[pre + "sgemm_fwdbwd_gflops"], 100 * r[pre + "fwdbwd_gflops"] / r[pre + "sgemm_fwdbwd_gflops"], pfb,
                r["other_cores"], "%.2f" % p["other_cores"] if p else "n/a"))
    if c512l:
        core512 = next((r.get("blas_core") for r in c512 if r.get("kind") == "meta"), "?")
        w("\nSame layers with `OPENBLAS_CORETYPE=SkylakeX` forced (OpenBLAS core `%s` in that run; the tables" % core512)
        w("above use the core OpenBLAS picks for this CPU by itself, named in the header), reference re-measured")
        w("in that run:\n")
        w("| layer | thr | fwd | sgemm fwd | fwd+bwd | sgemm f+b | other |")
        w("|---|---|---|---|---|---|---|")
        for r in c512:
            if r.get("kind") == "layer":
                w("| %s | %d | %.1f | %.1f | %.1f | %.1f | %.2f |" % (r["name"], r["threads"], r["fwd_gflops"], r["sgemm_fwd_gflops"],
                                                                 r["fwdbwd_gflops"], r["sgemm_fwdbwd_gflops"], r["other_cores"]))
    if any(r.get("dnnl_fwd_gflops", 0) > 0 for r in c if r.get("kind") == "layer"):
        w("\n## Convolution engines (nn.conv_engine): gemm (vol2col + sgemm, the columns above) vs oneDNN\n")
        w("oneDNN 2.6 through nn/conv3d_dnnl.c (plain NCDHW in and out, its own layouts inside, reorders counted);")
        w("`auto picks` = what `nn.conv_engine = \"auto\"` chose for the layer's convolutions in this run.\n")
        w("| layer | thr | gemm fwd | dnnl fwd | PyTorch fwd | gemm f+b | dnnl f+b | PyTorch f+b | dnnl / gemm f+b | auto picks | cpu: gemm / dnnl f+b | other (gemm / dnnl / torch) |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in c:
            if r.get("kind") != "layer" or not r.get("dnnl_fwd_gflops", 0) > 0:
                continue
            p = tl.get(key(r), {})
            w("| %s | %d | %.1f | %.1f | %s | %.1f | %.1f | %s | %.2fx | %s | %.1f / %.1f | %.2f / %.2f / %s |" % (
                r["name"], r["threads"], r["fwd_gflops"], r["dnnl_fwd_gflops"],
                "%.1f" % p["fwd_gflops"] if "fwd_gflops" in p else "n/a", r["fwdbwd_gflops"], r["dnnl_fwdbwd_gflops"],
                "%.1f" % p["fwdbwd_gflops"] if "fwdbwd_gflops" in p else "n/a",
                r["dnnl_fwdbwd_gflops"] / r["fwdbwd_gflops"] if r["fwdbwd_gflops"] else 0, r.get("auto_pick", "?"),
                r["cpu_fwdbwd_gflops"], r["cpu_dnnl_fwdbwd_gflops"], r["other_cores"], r["dnnl_other_cores"],
                "%.2f" % p["other_cores"] if p else "n/a"))
    w("\n## Training steps (forward, CE with label smoothing, backward, SGD), per convolution engine\n")
    if os.environ.get("NN_REPORT_STEP_NOTE"):
        w(os.environ["NN_REPORT_STEP_NOTE"] + "\n")
    w("| network, input | thr | engine | mp3d ms/step | mp3d CPU s/step | mp3d peak RSS MB | PyTorch ms/step | mp3d speed / PyTorch | PyTorch CPU s/step | PyTorch peak RSS MB | other (mp3d / torch) |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in c:
        if r.get("kind") != "step":
            continue
        p = tl.get(key(r), {})
        w("| %s | %d | %s | %.0f | %.2f | %.0f | %s | %s | %s | %s | %.2f / %s |" % (
            r["name"].replace(" step ", ", "), r["threads"], r.get("engine", "gemm"), r["ms"], r.get("cpu_s", 0), r["peak_rss_mb"],
            "%.0f" % p["ms"] if p else "n/a", "%.2fx" % (p["ms"] / r["ms"]) if p else "n/a",
            "%.2f" % p["cpu_s"] if "cpu_s" in p else "n/a",
            "%.0f" % p["peak_rss_mb"] if p else "n/a", r["other_cores"], "%.2f" % p["other_cores"] if p else "n/a"))
    w("\nmp3d peak RSS includes parameters, gradients and momentum (33.7M floats each, 404 MB) and")
    w("the conv workspace (bound 256 MB); activations are planned once per input shape.\n")
    open(sys.argv[3], "w").write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
