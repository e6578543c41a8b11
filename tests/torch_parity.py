"""Training-step parity of mp3d with PyTorch (issue 14, item 1a): the classifier.

  torch_parity.py init OUT.h5 ARCH WIDTH NORM GROUPS CLASSES SEED
      writes PyTorch's initial parameters of the torch_equiv.py model (norm affine parameters
      drawn at random so that no value is special) as an mp3d checkpoint that model.init_from loads.
  torch_parity.py run CFG.json [--perturb WHAT]
      trains the same model from the same file in PyTorch (float64: the reference; float32: the
      yardstick of rounding alone) on the whole training shard (one batch, no augmentation) with
      the recipe in CFG.json (the values the mp3d config was given), then compares every step's
      loss with mp3d's metrics.jsonl and the final parameters, BatchNorm buffers and momentum
      buffers with mp3d's checkpoint (relative L2). Exit 0 iff losses, parameters and buffers
      are within CFG["tol"] and momentum within CFG["tol_state"]. --perturb changes the PyTorch
      side only (momentum, nesterov, wd_exempt, warmup, smoothing; order = batch reversed, must
      pass), to show that the comparison notices.

The recipe on the PyTorch side is written out here, independently of mp3d:
  torch.optim.SGD(nesterov=...) with two parameter groups (mmcv paramwise_cfg
  norm_decay_mult=0, bias_decay_mult=0: weight decay on conv/linear weights only), lr per
  iteration = mmcv CosineAnnealing (by_epoch=False, min_lr) times mmcv's linear warm-up
  factor 1 - (1 - it/warmup_iters)(1 - warmup_ratio), F.cross_entropy(label_smoothing=eps),
  input (x - mean) / std of the stored uint8 sample.
"""
import json
import math
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_equiv import ResNet3D18  # noqa: E402  (the model whose names match mp3d's)

FNV_INIT = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
M64 = (1 << 64) - 1



def sgd_step(model, opt, x, y, label_smoothing):
    """One optimizer step of the classifier on (x, y); returns the loss (also tta_classify.py's)."""
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
    loss.backward()
    opt.step()
    return loss

def fnv1a(data, h):
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & M64
    return h


def ckpt_checksum(buf):
    """io/h5ckpt.h "fnv1a64x4" of the float32 little-endian bytes."""
    nblk = len(buf) // 32
    words = np.frombuffer(buf[:nblk * 32], dtype="<u8").tolist()
    lanes = []
    for lane in range(4):
        h = FNV_INIT ^ lane
        for w in words[lane::4]:
            h = ((h ^ w) * FNV_PRIME) & M64
        lanes.append(h)
    lanes[0] = fnv1a(buf[nblk * 32:], lanes[0])
    out = fnv1a(b"".join(h.to_bytes(8, "little") for h in lanes), FNV_INIT)
    return fnv1a(len(buf).to_bytes(8, "little"), out)


def write_mp3d_ckpt(path, model):
    """A complete mp3d checkpoint (io/h5ckpt.h layout) holding /params and /buffers."""
    params = dict(model.named_parameters())
    with h5py.File(path, "w") as f:
        for name, t in model.state_dict().items():
            group = "params" if name in params else "buffers"
            a = np.ascontiguousarray(t.detach().numpy().astype("<f4"))
            ds = f.require_group(group).create_dataset(name, data=a)
            ds.attrs.create("checksum", ckpt_checksum(a.tobytes()), dtype="<u8")
        f.attrs["format"] = "mp3d-checkpoint"
        f.attrs.create("format_version", 1, dtype="<i8")
        f.attrs["checksum_alg"] = "fnv1a64x4"
        f.attrs.create("step", 0, dtype="<i8")
        f.attrs.create("complete", 1, dtype="<i8")


def is_norm_or_bias(model):
    """Parameter names exempt from weight decay under mmcv's norm_decay_mult = bias_decay_mult = 0."""
    out = set()
    for mname, m in model.named_modules():
        norm = isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm))
        for pname, _ in m.named_parameters(recurse=False):
            if norm or pname == "bias":
                out.add(f"{mname}.{pname}" if mname else pname)
    return out


def cmd_init(out, arch, width, norm, groups, classes, seed):
    torch.manual_seed(int(seed))
    model = ResNet3D18(arch, float(width), norm, int(groups), int(classes))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm3d, torch.nn.GroupNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    write_mp3d_ckpt(out, model)
    print(f"torch_parity: init {out} tensors:{len(model.state_dict())} "
          f"params:{sum(p.numel() for p in model.parameters())}")


def lr_at(c, it):
    """mmcv: CosineAnnealingLrUpdaterHook(by_epoch=False, min_lr) x linear warm-up."""
    base = c["lr"] * c["batch"] / c["lr_batch"]
    t = min(it / c["steps"], 1.0)
    lr = c["min_lr"] + (base - c["min_lr"]) * 0.5 * (1 + math.cos(math.pi * t))
    if it < c["warmup_iters"]:
        lr *= 1 - (1 - it / c["warmup_iters"]) * (1 - c["warmup_factor"])
    return lr


def rel(a, b):
    """max |a - b| / max |b| (scale-relative), 0 for two zero tensors."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = np.abs(a - b).max() if a.size else 0.0
    s = np.abs(b).max() if b.size else 0.0
    return float(d / s) if s > 0 else float(d)


def train_torch(c, perturb, dtype):
    """K steps of the recipe in PyTorch; returns the model, the optimiser and the losses."""
    model = ResNet3D18(c["arch"], c["width"], c["norm"], c["groups"], c["classes"])
    with h5py.File(c["init"], "r") as f:
        sd = {k: torch.as_tensor(v[()]) for g in ("params", "buffers") for k, v in f[g].items()}
    sd = {k: v.long() if k.endswith("num_batches_tracked") else v for k, v in sd.items()}
    model.load_state_dict(sd)
    model.to(dtype)
    model.train()
    with h5py.File(os.path.join(c["data"], "train.h5"), "r") as f:
        x = torch.as_tensor(f["images"][()]).float()
        y = torch.as_tensor(f["label"][()]).long().reshape(-1)
    x = ((x - c["mean"]) / c["std"]).to(dtype)   # in float32 first, as mp3d's aug_crop_resize
    if perturb == "order":
        x, y = x.flip(0).contiguous(), y.flip(0).contiguous()
    assert x.shape[0] == c["batch"], "the test uses the whole training set as the batch"
    exempt = is_norm_or_bias(model) if not c["wd_norm_bias"] else set()
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if n not in exempt], "weight_decay": c["weight_decay"]},
              {"params": [p for n, p in named if n in exempt], "weight_decay": 0.0}]
    opt = torch.optim.SGD([g for g in groups if g["params"]], lr=c["lr"], momentum=c["momentum"],
                          nesterov=c["nesterov"])
    losses = []
    for it in range(c["steps"]):
        lr = lr_at(c, it)
        for g in opt.param_groups:
            g["lr"] = lr
        losses.append(sgd_step(model, opt, x, y, c["label_smoothing"]).item())
    return model, opt, losses


def cmd_run(cfg_path, perturb):
    c = perturbed(json.load(open(cfg_path)), perturb, "torch_parity", ("smoothing", "order"))
    torch.set_num_threads(1)
    # The reference is PyTorch in float64 (the exact trajectory of the recipe); PyTorch in
    # float32 is compared with it too, as the yardstick of what float32 rounding alone does.
    model, opt, losses = train_torch(c, perturb, torch.float64)
    model32, opt32, losses32 = train_torch(c, perturb, torch.float32)

    ok = True
    for d in c["mp3d_dirs"]:
        ok = compare(c, perturb, d["dir"], d["label"], model, opt, losses, model32, opt32, losses32) and ok
    sys.exit(0 if ok else 1)


def perturbed(c, perturb, tool, extra=()):
    """The recipe c with one thing changed on the PyTorch side, which the comparison must notice:
    momentum, nesterov, wd_exempt, warmup, and those of extra that the tool knows (smoothing:
    label smoothing off; order: the batch reversed in train_torch, rounding only, must pass)."""
    c = dict(c)
    if perturb == "momentum":
        c["momentum"] = 0.85
    elif perturb == "nesterov":
        c["nesterov"] = not c["nesterov"]
    elif perturb == "wd_exempt":
        c["wd_norm_bias"] = not c["wd_norm_bias"]
    elif perturb == "warmup":
        c["warmup_iters"] = 0
    elif perturb == "smoothing" and perturb in extra:
        c["label_smoothing"] = 0.0
    elif perturb == "order" and perturb in extra:
        pass
    elif perturb:
        sys.exit(f"{tool}: unknown perturbation {perturb}")
    return c


def group_figures(tool, label, g, items):
    """Relative L2 of mp3d's tensors against PyTorch's over a group, items = (name, mp3d, torch,
    torch float32 or None): ||a - b|| / ||b|| over the whole group (returned), the worst tensor,
    max |a - b| / max |b| per tensor, and PyTorch float32 against float64 when given (printed)."""
    num = sum(float(((np.float64(m) - t) ** 2).sum()) for _, m, t, _ in items)
    den = sum(float((np.float64(t) ** 2).sum()) for _, _, t, _ in items)
    per = [(float(np.linalg.norm(np.float64(m) - t) / max(np.linalg.norm(np.float64(t)), 1e-30)), n)
           for n, m, t, _ in items]
    floor = ""
    if items[0][3] is not None:
        n32 = sum(float(((np.float64(t32) - t) ** 2).sum()) for _, _, t, t32 in items)
        floor = f" (torch f32 vs f64: {math.sqrt(n32 / den):.1e})"
    fig = math.sqrt(num / max(den, 1e-30))
    worst = max(per)
    print(f"{tool}: {label} final {g}: rel_l2:{fig:.2e}{floor} worst_tensor_rel_l2:{worst[0]:.2e} "
          f"({worst[1]}) max_elem_rel:{max(rel(m, t) for _, m, t, _ in items):.1e}")
    return fig


def compare(c, perturb, mp3d_dir, label, model, opt, losses, model32, opt32, losses32):
    """mp3d's run in mp3d_dir against the PyTorch float64 run; prints the figures; True if within tolerance."""
    # mp3d's side: per-step losses from metrics.jsonl (train.log_every = 1), final checkpoint.
    ml = {}
    for line in open(os.path.join(mp3d_dir, "metrics.jsonl")):
        r = json.loads(line)
        if r.get("stage") == "train" and "loss" in r:
            ml[r["step"]] = (r["loss"], r["lr"])
    K = c["steps"]
    rl = [abs(ml[it + 1][0] - lt) / abs(lt) for it, lt in enumerate(losses)]
    rl32 = [abs(l32 - lt) / abs(lt) for lt, l32 in zip(losses, losses32)]
    worst_lr = max(abs(ml[it + 1][1] - lr_at(c, it)) / max(lr_at(c, it), 1e-30) for it in range(K))
    for it in range(K):
        if it in (0, 1, 2, 4, 9, 14) or it == K - 1 or os.environ.get("TORCH_PARITY_VERBOSE"):
            print(f"torch_parity: {label} step:{it + 1} lr:{lr_at(c, it):.6g} loss_mp3d:{ml[it + 1][0]:.6f} "
                  f"loss_torch64:{losses[it]:.6f} rel:{rl[it]:.1e} (torch f32 vs f64: {rl32[it]:.1e})")

    # Final tensors: relative L2 difference ||a - b|| / ||b|| per tensor (max over tensors) and
    # over each whole group; max |a - b| / max |b| per tensor is printed too (a ReLU or max-pool
    # that flips on one element between two float32 codes moves single entries, see README).
    sd = model.state_dict()
    sd32 = model32.state_dict()
    pnames32 = dict(model32.named_parameters())
    pnames = dict(model.named_parameters())
    groups = {"params": [], "buffers": [], "momentum": []}
    with h5py.File(os.path.join(mp3d_dir, f"ckpt_{K:08d}.h5"), "r") as f:
        for name, t in sd.items():
            if name.endswith("num_batches_tracked"):
                if int(f["buffers"][name][()]) != int(t):
                    groups["buffers"].append((name, np.array([1.0]), np.array([0.0]), np.array([0.0])))
                continue
            g = "params" if name in pnames else "buffers"
            groups[g].append((name, f[g][name][()], t.numpy(), sd32[name].numpy()))
        if c["momentum"] != 0:
            for name, p in pnames.items():
                groups["momentum"].append((name, f["optim/momentum"][name][()],
                                           opt.state[p]["momentum_buffer"].numpy(),
                                           opt32.state[pnames32[name]]["momentum_buffer"].numpy()))
    figures = {g: group_figures("torch_parity", label, g, items) for g, items in groups.items() if items}
    tol = c["tol"]
    print(f"torch_parity: {label} steps:{K} perturb:{perturb or 'none'} rel_loss_step{K}:{rl[-1]:.2e} "
          f"max_rel_loss:{max(rl):.2e} (torch f32 vs f64: {max(rl32):.1e}) max_rel_lr:{worst_lr:.1e} "
          f"params_rel_l2:{figures['params']:.2e} momentum_rel_l2:{figures.get('momentum', 0):.2e}")
    # Momentum buffers hold the last gradients, which near the optimum are small enough that one
    # ReLU flipping between two float32 codes moves them at the 1e-3 level: they get tol_state.
    ok = max(rl) < tol and figures["params"] < tol and worst_lr < 1e-6
    ok = ok and figures.get("buffers", 0) < tol and figures.get("momentum", 0) < c["tol_state"]
    print(f"torch_parity: {label} " + ("ok" if ok else "FAIL") + f" (tolerance {tol:g} on every loss, the parameters and "
          f"the BatchNorm buffers, {c['tol_state']:g} on the momentum buffers; relative L2)")
    return ok


def main():
    if len(sys.argv) == 9 and sys.argv[1] == "init":
        cmd_init(*sys.argv[2:9])
    elif len(sys.argv) in (3, 5) and sys.argv[1] == "run":
        perturb = sys.argv[4] if len(sys.argv) == 5 and sys.argv[3] == "--perturb" else ""
        cmd_run(sys.argv[2], perturb)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
