"""PyTorch (CPU) side of the nn benchmark: the same layer shapes and the same ResNet3D-18
training step as tests/bench/bench_nn.c, at 1 and 2 threads, written as JSON lines for
tests/bench/bench_nn_report.py. Run with Debian's /usr/bin/python3 (python3-torch).
Usage: bench_nn_torch.py OUT.json [--quick]"""
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nn_torch_models import Net  # noqa: E402


def other_cores(t0, t1, busy0, busy1, self0, self1):
    wall = t1 - t0
    return max(0.0, (busy1 - busy0) - (self1 - self0)) / wall if wall > 0 else 0.0


def busy():
    with open("/proc/stat") as f:
        v = list(map(int, f.readline().split()[1:9]))
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def selfcpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def best_of(reps, fn):
    """best wall seconds, other processes' cores during it, our CPU seconds during it"""
    fn()
    best, other, cpu = 1e30, 0.0, 0.0
    for _ in range(reps):
        a = (time.perf_counter(), busy(), selfcpu())
        fn()
        b = (time.perf_counter(), busy(), selfcpu())
        if b[0] - a[0] < best:
            best, other, cpu = b[0] - a[0], other_cores(a[0], b[0], a[1], b[1], a[2], b[2]), b[2] - a[2]
    return best, other, cpu


def layers(out, threads, reps, quick):
    torch.set_num_threads(threads)
    cases = [
        ("conv 3x3x3 64->64 (2,64,9,64,64)", [nn.Conv3d(64, 64, 3, 1, 1, bias=False)], (2, 64, 9, 64, 64)),
        ("conv 3x3x3 64->64 (2,64,9,128,128)", [nn.Conv3d(64, 64, 3, 1, 1, bias=False)], (2, 64, 9, 128, 128)),
        ("P3D (1,3,3)+(3,1,1) 64->64 (2,64,9,64,64)", [nn.Conv3d(64, 64, (1, 3, 3), 1, (0, 1, 1), bias=False),
                                                       nn.Conv3d(64, 64, (3, 1, 1), 1, (1, 0, 0), bias=False)], (2, 64, 9, 64, 64)),
        ("P3D (1,3,3)+(3,1,1) 64->64 (2,64,9,128,128)", [nn.Conv3d(64, 64, (1, 3, 3), 1, (0, 1, 1), bias=False),
                                                         nn.Conv3d(64, 64, (3, 1, 1), 1, (1, 0, 0), bias=False)], (2, 64, 9, 128, 128)),
        ("conv 1x1x1 256->64 (2,256,9,64,64)", [nn.Conv3d(256, 64, 1, bias=False)], (2, 256, 9, 64, 64)),
    ]
    for i, (name, convs, shape) in enumerate(cases):
        if quick and i % 2:
            continue
        x = torch.randn(shape)
        flops, s = 0.0, shape
        for c in convs:
            k = c.kernel_size
            flops += 2.0 * s[0] * s[2] * s[3] * s[4] * c.in_channels * c.out_channels * k[0] * k[1] * k[2]
        seq = nn.Sequential(*convs)
        xg = x.clone().requires_grad_(True)

        def fwd():
            with torch.no_grad():
                seq(x)

        def fwdbwd():
            y = seq(xg)
            y.backward(torch.ones_like(y))

        f, of, cf = best_of(reps, fwd)
        fb, ofb, cfb = best_of(reps, fwdbwd)
        rec = {"kind": "layer", "name": name, "threads": threads, "gflop": flops * 1e-9, "fwd_s": f, "fwdbwd_s": fb,
               "fwd_gflops": flops / f * 1e-9, "fwdbwd_gflops": 3 * flops / fb * 1e-9, "other_cores": max(of, ofb),
               "cpu_fwd_gflops": flops / cf * 1e-9 * threads, "cpu_fwdbwd_gflops": 3 * flops / cfb * 1e-9 * threads}
        print("torch %-44s thr:%d fwd %6.1f GF/s  fwd+bwd %6.1f GF/s  other_cpu:%.2f" % (
            name, threads, rec["fwd_gflops"], rec["fwdbwd_gflops"], rec["other_cores"]), flush=True)
        out.write(json.dumps(rec) + "\n")


# (name, arch, width, classes) of the step networks; the same as tests/bench/bench_nn.c
NETS = {"resnet3d18": ("resnet3d18", 1.0, 1000), "resnet3dv1c18 w0.25": ("resnet3dv1c18", 0.25, 10)}


def step_child(net, shape, threads, steps):
    """Runs in a fresh interpreter so ru_maxrss is this configuration's peak."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    arch, width, classes = NETS[net]
    m = Net(arch, width, 0, classes)
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(shape)
    y = torch.randint(0, classes, (shape[0],))
    best, other, cpu = 1e30, 0.0, 0.0
    for s in range(steps + 1):
        a = (time.perf_counter(), busy(), selfcpu())
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(m(x), y, label_smoothing=0.1)
        loss.backward()
        opt.step()
        b = (time.perf_counter(), busy(), selfcpu())
        if s > 0 and b[0] - a[0] < best:
            best, other, cpu = b[0] - a[0], other_cores(a[0], b[0], a[1], b[1], a[2], b[2]), b[2] - a[2]
    # VmHWM: this process image's peak. ru_maxrss would carry the parent's peak over fork + exec
    # (Linux keeps it in the signal struct), i.e. the layer runs' tensors when they ran first.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) / 1024.0
    print(json.dumps({"ms": best * 1e3, "peak_rss_mb": rss, "other_cores": other, "cpu_s": cpu}))


def steps(out, threads, quick):
    for net, shape, n in (("resnet3d18", (8, 1, 3, 112, 112), 1 if quick else 3),
                          ("resnet3dv1c18 w0.25", (32, 1, 3, 56, 56), 2 if quick else 5),
                          ("resnet3d18", (2, 1, 9, 256, 256), 2)):
        if shape[1:] == (1, 9, 256, 256) and (quick or os.environ.get("NN_BENCH_NO_BIG")):
            continue
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--step", net, ",".join(map(str, shape)), str(threads), str(n)],
                           capture_output=True, text=True)
        if r.returncode:
            print("torch step failed:", r.stderr[-2000:], flush=True)
            continue
        rec = json.loads(r.stdout.strip().splitlines()[-1])
        rec.update({"kind": "step", "name": "%s step (%d,1,%d,%d,%d)" % (net, shape[0], shape[2], shape[3], shape[4]),
                    "threads": threads})
        print("torch %s thr:%d %8.1f ms/step peak_rss %6.0f MB other_cpu:%.2f" % (
            rec["name"], threads, rec["ms"], rec["peak_rss_mb"], rec["other_cores"]), flush=True)
        out.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "--step":
        step_child(sys.argv[2], tuple(map(int, sys.argv[3].split(","))), int(sys.argv[4]), int(sys.argv[5]))
        sys.exit(0)
    quick = "--quick" in sys.argv
    with open(sys.argv[1], "w") as out:
        out.write(json.dumps({"kind": "meta", "torch": torch.__version__, "mkldnn": torch.backends.mkldnn.is_available()}) + "\n")
        for t in (1, 2):
            if not os.environ.get("NN_BENCH_NO_LAYERS"):
                layers(out, t, 1 if quick else 3, quick)
        if not os.environ.get("NN_BENCH_NO_STEP"):
            for t in (1, 2):
                steps(out, t, quick)
