#!/usr/bin/env python3
"""Time-to-accuracy of VDT classification pre-training, PyTorch side and report (issue 14, item 2).

  tta_classify.py init OUT.h5 WIDTH CLASSES SEED
      PyTorch's default initialisation of the ResNet3DV1c-18 of tests/torch_equiv.py, written as an
      mp3d checkpoint (mp3d loads it through model.init_from; this script loads the same file).
  tta_classify.py train CFG.json
      the recipe of configs/demo_pretrain.cfg in PyTorch on the same VDT shards: per-epoch random
      order, batches of `batch` (last partial batch dropped, as mp3d), RandomCrop `crop` of the
      stored square, horizontal flip, random order of the 3 slices, (x - mean) / std, label
      smoothing, SGD momentum + Nesterov, weight decay on conv/linear weights only, linear warm-up
      (factor) then cosine per iteration; validation = centre crop, eval-mode BatchNorm, every
      `val_every` epochs. Writes metrics.jsonl in mp3d's format (start event, train and val records).
  tta_classify.py config MP3D_LOG DATA INIT METRICS THREADS SEED > CFG.json
      the PyTorch run's settings, taken from the `config| train:` / `config| model:` lines that the
      mp3d run logged, so both sides run the same recipe.
  tta_classify.py report OUT_PREFIX TITLE name=run_dir ...
      val top-1 against wall time and against images seen (SVG), the time each run first reaches
      every accuracy level (Markdown table).
"""
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from finetune_curves import records, svg  # noqa: E402  (the same reader and plot as the fine-tuning curves)

LEVELS = [0.5, 0.7, 0.8, 0.85, 0.9, 0.95]


def cmd_init(out, width, classes, seed):
    import torch
    from torch_equiv import ResNet3D18
    from torch_parity import write_mp3d_ckpt
    torch.manual_seed(int(seed))
    model = ResNet3D18("resnet3dv1c18", float(width), "bn", 32, int(classes))
    write_mp3d_ckpt(out, model)
    print(f"tta_classify: init {out} params:{sum(p.numel() for p in model.parameters())}")


def cmd_train(cfg_path):
    import h5py
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch_equiv import ResNet3D18
    from torch_parity import is_norm_or_bias, sgd_step
    c = json.load(open(cfg_path))
    torch.set_num_threads(int(c["threads"]))
    torch.manual_seed(int(c["seed"]))
    out = open(c["metrics"], "w")

    def log(rec):
        out.write(json.dumps(rec) + "\n")
        out.flush()

    t0 = time.time()
    log({"time": t0, "stage": "train", "event": "start", "threads": torch.get_num_threads(),
         "torch": torch.__version__})
    model = ResNet3D18("resnet3dv1c18", c["width"], "bn", 32, c["classes"])
    with h5py.File(c["init"], "r") as f:
        sd = {k: torch.as_tensor(v[()]) for g in ("params", "buffers") for k, v in f[g].items()}
    sd = {k: v.long() if k.endswith("num_batches_tracked") else v for k, v in sd.items()}
    model.load_state_dict(sd)

    def load(split):
        with h5py.File(os.path.join(c["data"], "imagenet_" + split + ".h5"), "r") as f:
            return torch.as_tensor(f["images"][()]), torch.as_tensor(f["label"][()]).long().reshape(-1)

    xtr, ytr = load("train")      # (N, 1, 3, S, S) uint8
    xva, yva = load("val")
    N, S, crop, B = xtr.shape[0], xtr.shape[-1], c["crop"], c["batch"]
    per_epoch = N // B
    steps = int(round(c["epochs"] * per_epoch))
    o = (S - crop) // 2
    xva = ((xva[..., o:o + crop, o:o + crop].float() - c["mean"]) / c["std"]).contiguous()

    exempt = is_norm_or_bias(model)
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if n not in exempt], "weight_decay": c["weight_decay"]},
              {"params": [p for n, p in named if n in exempt], "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=c["lr"], momentum=c["momentum"], nesterov=c["nesterov"])

    def lr_at(it):
        t = min(it / steps, 1.0)
        lr = c["min_lr"] + (c["lr"] - c["min_lr"]) * 0.5 * (1 + math.cos(math.pi * t))
        if it < c["warmup_iters"]:
            lr *= 1 - (1 - it / c["warmup_iters"]) * (1 - c["warmup_factor"])
        return lr

    def validate(step, epoch):
        model.eval()
        correct, loss = 0, 0.0
        with torch.no_grad():
            for i in range(0, xva.shape[0], 50):
                logits = model(xva[i:i + 50])
                loss += F.cross_entropy(logits, yva[i:i + 50], reduction="sum").item()
                correct += (logits.argmax(1) == yva[i:i + 50]).sum().item()
        model.train()
        log({"time": time.time(), "stage": "val", "step": step, "epoch": epoch,
             "top1": correct / xva.shape[0], "val_loss": loss / xva.shape[0], "val_images": xva.shape[0]})

    g = torch.Generator().manual_seed(int(c["seed"]))
    model.train()
    step, logged = 0, 0
    val_every = int(round(c["val_every"] * per_epoch))
    while step < steps:
        perm = torch.randperm(N, generator=g)
        for b in range(per_epoch):
            if step >= steps:
                break
            idx = perm[b * B:(b + 1) * B]
            tops = torch.randint(0, S - crop + 1, (B,), generator=g)
            lefts = torch.randint(0, S - crop + 1, (B,), generator=g)
            flips = torch.rand(B, generator=g) < 0.5
            x = torch.empty(B, 1, 3, crop, crop)
            for k in range(B):
                v = xtr[idx[k], :, :, tops[k]:tops[k] + crop, lefts[k]:lefts[k] + crop].float()
                if flips[k] and c["flip"]:
                    v = v.flip(-1)
                if c["slice_shuffle"]:
                    v = v[:, torch.randperm(3, generator=g)]
                x[k] = v
            x = (x - c["mean"]) / c["std"]
            y = ytr[idx]
            lr = lr_at(step)
            for pg in opt.param_groups:
                pg["lr"] = lr
            loss = sgd_step(model, opt, x, y, c["label_smoothing"])
            step += 1
            if step % 10 == 0 or step == 1:   # "images": since the previous record, as mp3d logs it
                log({"time": time.time(), "stage": "train", "step": step, "epoch": step // per_epoch,
                     "loss": loss.item(), "lr": lr, "images": (step - logged) * B})
                logged = step
            if step % val_every == 0 or step == steps:
                validate(step, step // per_epoch)
    log({"time": time.time(), "stage": "train", "event": "end", "step": step, "elapsed_s": time.time() - t0})


def cmd_config(log, data, init, metrics, threads, seed):
    kv = {}
    for line in open(log):
        for sec in ("train", "model"):
            tag = "config| %s: " % sec
            if tag in line:
                for tok in line.split(tag, 1)[1].split():
                    if "=" in tok:
                        k, v = tok.split("=", 1)
                        kv[sec + "." + k] = v.strip('"')
    f = lambda k: float(kv[k])
    b = lambda k: kv[k] == "true"
    if kv.get("train.crop_mode") != "random" or kv.get("train.schedule") != "cosine" or kv.get("model.norm") != "bn":
        sys.exit("tta_classify: the PyTorch side implements crop_mode random, cosine, BatchNorm only")
    if b("train.wd_norm_bias") or b("train.sync_bn"):
        sys.exit("tta_classify: the PyTorch side implements wd_norm_bias = false, sync_bn = false only")
    c = {"data": data, "init": init, "metrics": metrics, "threads": int(threads), "seed": int(seed),
         "width": f("model.width"), "classes": int(kv["model.num_classes"]),
         "batch": int(kv["train.batch"]), "lr": f("train.lr") * f("train.batch") / f("train.lr_batch"),
         "min_lr": 0.0, "epochs": f("train.epochs"), "warmup_iters": int(kv["train.warmup_iters"]),
         "warmup_factor": f("train.warmup_factor"), "momentum": f("train.momentum"),
         "nesterov": b("train.nesterov"), "weight_decay": f("train.weight_decay"),
         "label_smoothing": f("train.label_smoothing"), "crop": int(kv["train.crop"]),
         "flip": b("train.flip"), "slice_shuffle": b("train.slice_shuffle"),
         "mean": f("train.mean"), "std": f("train.std"), "val_every": f("train.val_every")}
    print(json.dumps(c, indent=1))


def load_run(d):
    start, vals, batch, prev = None, [], None, 0
    for r in records(d):
        if r.get("event") == "start" and start is None:
            start = r["time"]
        if r.get("event") == "end" and start is None:   # mp3d: the end record's elapsed_s
            start = r["time"] - r["elapsed_s"]
        if r.get("stage") == "train" and "images" in r and "step" in r:
            if batch is None and r["step"] > prev + 1:   # images since the previous record
                batch = r["images"] / (r["step"] - prev)
            prev = r["step"]
        if r.get("stage") == "val":
            vals.append(r)
    ratio = None   # CPU seconds per wall second of the whole run (cpu.txt: wall user sys)
    cpu_path = os.path.join(d, "cpu.txt")
    if os.path.exists(cpu_path):
        with open(cpu_path) as f:
            t = [float(x) for x in f.read().split()[-3:]]
        if t[0] > 0:
            ratio = (t[1] + t[2]) / t[0]
    out = []
    for v in vals:
        out.append({"step": v["step"], "epoch": v["epoch"], "top1": v["top1"],
                    "wall_s": v["time"] - start, "images": v["step"] * (batch or 0),
                    "cpu_s": (v["time"] - start) * ratio if ratio else float("nan")})
    return out


def cmd_report(prefix, title, pairs):
    runs = [(n, load_run(d)) for n, d in (a.split("=", 1) for a in pairs)]
    md = ["| run | " + " | ".join("top-1 %.2f" % lv for lv in LEVELS) + " | final top-1 | wall s at last val |",
          "|---|" + "---|" * (len(LEVELS) + 2)]
    for name, vs in runs:
        cells = []
        for lv in LEVELS:
            hit = next((v for v in vs if v["top1"] >= lv - 1e-9), None)
            cells.append("%.0f s (%.0f CPU s est.) / ep %d" % (hit["wall_s"], hit["cpu_s"], hit["epoch"])
                         if hit else "not reached")
        fin = vs[-1] if vs else {"top1": float("nan"), "wall_s": float("nan"), "cpu_s": float("nan")}
        md.append("| %s | %s | %.2f | %.0f (%.0f CPU s est.) |" % (name, " | ".join(cells), fin["top1"],
                                                                   fin["wall_s"], fin["cpu_s"]))
    md += ["", "| run | epoch | images seen | wall s | val top-1 |", "|---|---|---|---|---|"]
    for name, vs in runs:
        for v in vs:
            md.append("| %s | %d | %d | %.1f | %.2f |" % (name, v["epoch"], v["images"], v["wall_s"], v["top1"]))
    with open(prefix + "_table.md", "w") as f:
        f.write("\n".join(md) + "\n")
    svg(prefix + "_wall.svg", title + ": val top-1 vs wall time", runs, "wall_s", "wall seconds since start",
        "top1", "val top-1", 1.0)
    svg(prefix + "_images.svg", title + ": val top-1 vs images seen", runs, "images", "thousand images seen",
        "top1", "val top-1", 1.0, 1e-3)
    print("\n".join(md))


def main():
    a = sys.argv[1:]
    if a and a[0] == "init" and len(a) == 5:
        cmd_init(*a[1:])
    elif a and a[0] == "train" and len(a) == 2:
        cmd_train(a[1])
    elif a and a[0] == "config" and len(a) == 7:
        cmd_config(*a[1:])
    elif a and a[0] == "report" and len(a) >= 4:
        cmd_report(a[1], a[2], a[3:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
