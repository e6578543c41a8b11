"""mp3d import / export against PyTorch (Debian's python3-torch 1.13): writes .pth files the way
torch.save and real releases do, runs `mp3d import` / `mp3d infer` / `mp3d export`, and compares
with the PyTorch model. usage: import_pth.py equiv|dtypes|detector|export|hostile|init_from WORKDIR [TOOL]
(MP3D_BIN = the mp3d binary; exit 0 = all cases passed)."""
import collections
import io
import os
import pickle
import re
import subprocess
import sys
import zipfile

import h5py
import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench"))
from nn_torch_models import Net  # noqa: E402  (mp3d's parameter names)

BIN = os.environ["MP3D_BIN"]
torch.set_num_threads(1)
FAILS = []


def run(args, expect=0, log=None):
    p = subprocess.run([BIN] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if log:
        with open(log, "w") as f:
            f.write(p.stdout)
    if p.returncode != expect:
        print(p.stdout[-3000:])
        raise RuntimeError(f"mp3d {args[0]} exited {p.returncode}, expected {expect}")
    return p.stdout


def check(ok, msg):
    print(("ok   " if ok else "FAIL ") + msg, flush=True)
    if not ok:
        FAILS.append(msg)


def randomise_norms(m, seed):
    """Running statistics and affine parameters away from their defaults, so they matter."""
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, (nn.BatchNorm3d, nn.GroupNorm)):
            with torch.no_grad():
                mod.weight.copy_(1 + 0.2 * torch.randn(mod.weight.shape, generator=g))
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=g))
            if isinstance(mod, nn.BatchNorm3d):
                mod.running_mean.copy_(0.1 * torch.randn(mod.running_mean.shape, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(mod.running_var.shape, generator=g))
                mod.num_batches_tracked.fill_(7)
    return m


MODELS = {  # name: (arch, width, gn groups (0 = BatchNorm), classes, input (N, 1, D, H, W))
    "v1c": ("resnet3dv1c18", 0.25, 0, 5, (2, 1, 3, 32, 32)),
    "r18gn": ("resnet3d18", 0.125, 4, 7, (2, 1, 3, 32, 32)),
    "p3d": ("p3d63", 0.125, 0, 4, (2, 1, 9, 32, 32)),
}


def model(key, seed=1):
    arch, w, gn, k, _ = MODELS[key]
    torch.manual_seed(seed)
    return randomise_norms(Net(arch, w, gn, k), seed).eval()


def mp3d_args(key):
    arch, w, gn, k, _ = MODELS[key]
    return ["--arch", arch, "--set", f"model.width={w}", "--set", f"model.num_classes={k}",
            "--set", "model.norm=" + ("gn" if gn else "bn"), "--set", f"model.gn_groups={gn or 32}"]


def write_input(path, shape, seed):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    with h5py.File(path, "w") as f:
        f["input"] = x.numpy()
    return x


def infer_equal(work, case, key, pth, torch_model, extra=(), tol=1e-5):
    """import pth -> ckpt, mp3d infer, compare with torch_model's logits."""
    ck, inp, out = (os.path.join(work, case + s) for s in (".h5", ".in.h5", ".out.h5"))
    log = run(["import", "--from", pth, "--out", ck] + mp3d_args(key) + list(extra), log=os.path.join(work, case + ".import.log"))
    x = write_input(inp, MODELS[key][4], 3)
    run(["infer", "--checkpoint", ck, "--input", inp, "--output", out])
    with torch.no_grad():
        y = torch_model(x)
    ref = torch.as_tensor(h5py.File(out, "r")["output"][()])
    rel = ((y - ref).abs().max() / y.abs().max()).item()
    summary = [l.split("INFO ")[-1] for l in log.splitlines() if "import: file:" in l and "loaded:" in l]
    check(rel < tol, f"{case}: mp3d infer vs PyTorch max_rel_diff:{rel:.3g} (< {tol:g}) | {summary[-1] if summary else ''}")
    return log


def save_zip(obj, path):
    torch.save(obj, path)


def save_legacy(obj, path):
    torch.save(obj, path, _use_new_zipfile_serialization=False)


# ----------------------------------------------------------------------------------- cases
def case_equiv(work):
    v1c, r18, p3d = model("v1c"), model("r18gn", 2), model("p3d", 3)
    # plain state dicts, zip and legacy format
    for key, m in (("v1c", v1c), ("p3d", p3d)):
        for fmt, save in (("zip", save_zip), ("legacy", save_legacy)):
            pth = os.path.join(work, f"{key}_{fmt}.pth")
            save(m.state_dict(), pth)
            infer_equal(work, f"{key}_{fmt}", key, pth, m)
    # an mmcls-style checkpoint: meta / state_dict (backbone.*, head.fc.*) / optimizer, legacy format;
    # GroupNorm layers named as mmcv's build_norm_layer names them (gn1, gn2: CSPR's GN models)
    opt = torch.optim.SGD(r18.parameters(), lr=0.1, momentum=0.9)
    r18(torch.randn(1, 1, 3, 16, 16)).sum().backward()
    opt.step()  # momentum buffers in the optimizer state (tensors the import must skip)
    r18.zero_grad()
    with torch.no_grad():  # the model the file holds is the one after the step
        sd = collections.OrderedDict(("head." + k if k.startswith("fc.") else "backbone." + re.sub(r"(^|\.)bn(\d)\.", r"\1gn\2.", k), v.clone())
                                     for k, v in r18.state_dict().items())
    assert "backbone.layer1.0.gn1.weight" in sd and "backbone.gn1.weight" in sd
    meta = {"mmcls_version": "0.23.0", "epoch": 100, "iter": 500400, "CLASSES": ("a", "b"), "config": "model = dict(...)",
            "time": "Thu Oct  6 10:00:00 2022", "hook_msgs": {"last_ckpt": "work_dirs/epoch_100.pth"}, "lr": 0.0}
    pth = os.path.join(work, "mmcls.pth")
    save_legacy({"meta": meta, "state_dict": sd, "optimizer": opt.state_dict()}, pth)
    log = infer_equal(work, "mmcls_meta_optimizer", "r18gn", pth, r18)
    check("map:mmcls" in log and "dict:state_dict" in log, "mmcls: auto map found mmcls names and the 'state_dict' entry")
    # {'model': {'module.' + name}} from DDP
    pth = os.path.join(work, "ddp.pth")
    save_zip({"model": collections.OrderedDict(("module." + k, v) for k, v in v1c.state_dict().items()), "epoch": 3}, pth)
    log = infer_equal(work, "ddp_module_prefix", "v1c", pth, v1c)
    check("module_prefix_stripped:1" in log, "ddp: module. prefix stripped")


def case_dtypes(work):
    v1c = model("v1c")
    # float16 / bfloat16 / float64 storages: the torch reference uses the same rounded values
    for dt, tol in ((torch.float16, 1e-5), (torch.bfloat16, 1e-5), (torch.float64, 1e-5)):
        name = str(dt).split(".")[1]
        sd = collections.OrderedDict((k, v.to(dt) if v.is_floating_point() else v) for k, v in v1c.state_dict().items())
        ref = model("v1c")
        ref.load_state_dict(collections.OrderedDict((k, v.float() if v.is_floating_point() else v) for k, v in sd.items()))
        pth = os.path.join(work, f"v1c_{name}.pth")
        save_zip(sd, pth)
        log = infer_equal(work, f"{name}_storages", "v1c", pth, ref.eval(), tol=tol)
        check(f"{name}:" in log, f"{name}: dtype reported")
    # views: every tensor a slice of one shared storage (offsets), fc.weight non-contiguous
    sd = v1c.state_dict()
    flat = torch.cat([v.float().flatten() for v in sd.values()])
    shared, off = collections.OrderedDict(), 0
    for k, v in sd.items():
        n = v.numel()
        t = flat[off:off + n].view(v.shape)
        shared[k] = t.long() if k.endswith("num_batches_tracked") else t
        off += n
    w = sd["fc.weight"]
    shared["fc.weight"] = w.t().contiguous().t()  # strides (1, out): a transposed view
    assert not shared["fc.weight"].is_contiguous()
    for fmt, save in (("zip", save_zip), ("legacy", save_legacy)):
        pth = os.path.join(work, f"views_{fmt}.pth")
        save(shared, pth)
        log = infer_equal(work, f"shared_storage_views_{fmt}", "v1c", pth, v1c)
        check("views:0" not in log, f"views ({fmt}): reported as views")


def det_state_dict(depth, seed, F=16, fc=32, na=3):
    """An mmdet-style detector state dict: backbone (P3D-63 + GTM) / neck / rpn_head / roi_head.bbox_head."""
    torch.manual_seed(seed)
    bb = randomise_norms(Net("p3d63", 0.125, 4, 1, backbone=True, gtm_depth=depth), seed)
    chans = [g.out_channels for g in bb.gtm]
    sd = collections.OrderedDict(("backbone." + k, v) for k, v in bb.state_dict().items())
    for i, c in enumerate(chans):
        sd[f"neck.lateral_convs.{i}.conv.weight"] = torch.randn(F, c, 1, 1)
        sd[f"neck.lateral_convs.{i}.conv.bias"] = torch.randn(F)
    for i in range(len(chans)):
        sd[f"neck.fpn_convs.{i}.conv.weight"] = torch.randn(F, F, 3, 3)
        sd[f"neck.fpn_convs.{i}.conv.bias"] = torch.randn(F)
    for n, o, k in (("rpn_conv", F, 3), ("rpn_cls", na, 1), ("rpn_reg", 4 * na, 1)):
        sd[f"rpn_head.{n}.weight"] = torch.randn(o, F, k, k)
        sd[f"rpn_head.{n}.bias"] = torch.randn(o)
    for n, o, i in (("shared_fcs.0", fc, F * 49), ("shared_fcs.1", fc, fc), ("fc_cls", 2, fc), ("fc_reg", 4, fc)):
        sd[f"roi_head.bbox_head.{n}.weight"] = torch.randn(o, i)
        sd[f"roi_head.bbox_head.{n}.bias"] = torch.randn(o)
    return sd


DET_ARGS = ["--arch", "p3d63", "--set", "train.task=detect", "--set", "model.width=0.125", "--set", "model.norm=gn",
            "--set", "model.gn_groups=4", "--set", "det.fpn_channels=16", "--set", "det.fc_dim=32"]


def case_detector(work):
    sd = det_state_dict(9, 5)
    meta = {"mmdet_version": "1.0rc0+", "config": "...", "epoch": 24, "CLASSES": ("lesion",)}
    opt = {"state": {0: {"momentum_buffer": torch.randn(10)}}, "param_groups": [{"lr": 0.02, "momentum": 0.9, "params": [0]}]}
    for fmt, save in (("zip", save_zip), ("legacy", save_legacy)):
        pth, ck = os.path.join(work, f"mmdet_{fmt}.pth"), os.path.join(work, f"mmdet_{fmt}.h5")
        save({"meta": meta, "state_dict": sd, "optimizer": opt}, pth)
        log = run(["import", "--from", pth, "--out", ck, "--set", "import.depth=9"] + DET_ARGS)
        f = h5py.File(ck, "r")
        got = {k: torch.as_tensor(v[()]) for g in ("params", "buffers") if g in f for k, v in f[g].items()}
        diff, missing = 0.0, []
        for k, v in sd.items():
            name = k[len("backbone."):] if k.startswith("backbone.") else k
            if name not in got:
                missing.append(name)
                continue
            diff = max(diff, (got[name] - v.float()).abs().max().item())
        summary = [l.split("INFO ")[-1] for l in log.splitlines() if "import: file:" in l and "loaded:" in l][-1]
        check(not missing and diff == 0.0 and "new:0 " in summary and "unused_in_file:0" in summary and "map:mmdet" in log,
              f"mmdet P3D-63+GTM detector ({fmt}): {len(sd)} tensors identical in the checkpoint (max_abs_diff:{diff:g}, "
              f"missing:{len(missing)}) | {summary}")
        for part in ("backbone", "gtm", "neck", "rpn_head", "roi_head"):
            line = [l for l in log.splitlines() if f"part:{part} " in l]
            check(bool(line) and "new:0 shape_mismatched:0" in line[0], f"  {line[0].split('INFO ')[-1] if line else part + ' missing'}")
    # The imported backbone + GTM computes what PyTorch computes (import_tool runs mp3d's network
    # in backbone mode on the imported checkpoint; mp3d infer covers classification networks).
    torch.manual_seed(5)
    bb = randomise_norms(Net("p3d63", 0.125, 4, 1, backbone=True, gtm_depth=9), 5).eval()
    inp, outp = os.path.join(work, "det.in.h5"), os.path.join(work, "det.out")
    x = write_input(inp, (1, 1, 9, 32, 32), 11)
    for fmt in ("zip", "legacy"):
        p = subprocess.run([sys.argv[3], "gtm-forward", os.path.join(work, f"mmdet_{fmt}.h5"), inp, outp, "p3d63", "0.125", "gn", "4", "9"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode:
            print(p.stdout[-2000:])
        with torch.no_grad():
            ys = bb(x)
        rels = []
        for k, y in enumerate(ys):
            ref = torch.as_tensor(h5py.File(f"{outp}.{k}.h5", "r")["output"][()])[:, :, 0]
            rels.append(((y - ref).abs().max() / y.abs().max()).item())
        check(p.returncode == 0 and max(rels) < 1e-5,
              f"mmdet P3D-63+GTM ({fmt}): imported backbone+GTM outputs vs PyTorch max_rel_diff per level: "
              + " ".join(f"{r:.3g}" for r in rels) + " (< 1e-05)")
    # MP3D's own release layout: {'state_dict': {'module.backbone.<modified_P3D names>'}} with
    # conv1_custom / norm1 / norm_K / groupconv_K; heads absent (fresh), backbone + GTM loaded.
    sd = det_state_dict(9, 7)
    ren = collections.OrderedDict()
    for k, v in sd.items():
        if not k.startswith("backbone."):
            continue
        n = k[len("backbone."):]
        n = re.sub(r"^conv1\.", "conv1_custom.", n)
        n = re.sub(r"^bn1\.", "norm1.", n)
        n = re.sub(r"\.bn(\d)\.", r".norm_\1.", n)
        n = re.sub(r"^gtm\.(\d)\.", lambda mm: f"groupconv_{int(mm.group(1)) + 1}.", n)
        ren["module.backbone." + n] = v
    assert "module.backbone.layer1.0.norm_2.weight" in ren and "module.backbone.groupconv_4.weight" in ren
    pth, ck = os.path.join(work, "mp3d63_release_style.pth"), os.path.join(work, "mp3d63.h5")
    save_legacy({"meta": {"epoch": 12}, "state_dict": ren}, pth)
    log = run(["import", "--from", pth, "--out", ck] + DET_ARGS)
    f = h5py.File(ck, "r")
    got = {k: torch.as_tensor(v[()]) for g in ("params", "buffers") if g in f for k, v in f[g].items()}
    diff = max((got[k[len("backbone."):]] - v.float()).abs().max().item() for k, v in sd.items() if k.startswith("backbone."))
    summary = [l.split("INFO ")[-1] for l in log.splitlines() if "import: file:" in l and "loaded:" in l][-1]
    parts = " | ".join(l.split("import: ")[-1] for l in log.splitlines() if "part:" in l)
    check(diff == 0.0 and "loaded:211 new:30 shape_mismatched:0 unused_in_file:0" in summary,
          f"MP3D release layout (module.backbone.conv1_custom/norm_K/groupconv_K): backbone+GTM identical (max_abs_diff:{diff:g}) | {summary}")
    print("     " + parts)
    # A VDT-pretrained backbone (GTM over 3 slices) into the CT detector (9 slices): the GTM is
    # reported as shape-mismatched and keeps its fresh initialisation; everything else loads.
    sd3 = det_state_dict(3, 6)
    sd3 = collections.OrderedDict((k, v) for k, v in sd3.items() if k.startswith("backbone."))
    pth = os.path.join(work, "vdt_gtm3.pth")
    save_zip({"meta": {}, "state_dict": sd3}, pth)
    log = run(["import", "--from", pth, "--out", os.path.join(work, "gtm3.h5")] + DET_ARGS)
    gl = [l for l in log.splitlines() if "part:gtm " in l]
    check(bool(gl) and "loaded:0 new:0 shape_mismatched:4" in gl[0] and "(C, 3, 1, 1)" not in log and "shape (" in log,
          "GTM (C, 3, 1, 1) -> (C, 9, 1, 1) reported, not reshaped: " + (gl[0].split("INFO ")[-1] if gl else "?"))
    ml = [l.split("INFO ")[-1] for l in log.splitlines() if "gtm.0.weight <-" in l]
    print("     " + (ml[0] if ml else ""))


def case_export(work):
    """mp3d checkpoint -> .pth -> torch.load(weights_only=True) -> same logits as mp3d infer."""
    m = model("p3d", 4)
    pth, ck, back = (os.path.join(work, s) for s in ("p3d_src.pth", "p3d.h5", "p3d_export.pth"))
    save_zip(m.state_dict(), pth)
    run(["import", "--from", pth, "--out", ck] + mp3d_args("p3d"))
    inp, out = os.path.join(work, "p3d.in.h5"), os.path.join(work, "p3d.out.h5")
    x = write_input(inp, MODELS["p3d"][4], 9)
    run(["infer", "--checkpoint", ck, "--input", inp, "--output", out])
    run(["export", "--checkpoint", ck, "--out", back])
    names = zipfile.ZipFile(back).namelist()
    sd = torch.load(back, weights_only=True)
    fresh = Net("p3d63", 0.125, 0, 4).eval()
    fresh.load_state_dict(sd)  # strict
    with torch.no_grad():
        y = fresh(x)
    ref = torch.as_tensor(h5py.File(out, "r")["output"][()])
    rel = ((y - ref).abs().max() / ref.abs().max()).item()
    ident = max((sd[k].double() - v.double()).abs().max().item() for k, v in m.state_dict().items())
    check(rel < 1e-5 and ident == 0.0 and sd["bn1.num_batches_tracked"].dtype == torch.int64,
          f"export round trip: {len(sd)} tensors, torch.load(weights_only=True) + strict load_state_dict, "
          f"max_abs_diff vs source:{ident:g}, logits vs mp3d infer max_rel_diff:{rel:.3g} | entries: {', '.join(names[:2])}, ... {names[-1]}")
    # mmcls-style names back in: export --map mmcls, then import (auto map) gives the same checkpoint
    back2 = os.path.join(work, "p3d_mmcls.pth")
    run(["export", "--checkpoint", ck, "--out", back2, "--map", "mmcls"])
    sd2 = torch.load(back2, weights_only=True)
    check("head.fc.weight" in sd2 and "backbone.conv1.weight" in sd2, "export --map mmcls: backbone.* / head.fc.* names")
    infer_equal(work, "p3d_mmcls_reimport", "p3d", back2, m)


def case_init_from(work):
    """model.init_from = "x.pth" in mp3d train: loaded by name with the per-part report."""
    tool = sys.argv[3]
    data = os.path.join(work, "data")
    subprocess.run([tool, "make-shard", data, "16", "8", "16", "5", "3"], check=True, stdout=subprocess.DEVNULL)
    m = model("v1c")
    pth = os.path.join(work, "init.pth")
    save_legacy({"meta": {}, "state_dict": collections.OrderedDict(("backbone." + k, v) for k, v in m.state_dict().items()
                                                                     if not k.startswith("fc."))}, pth)
    cfg = os.path.join(work, "train.cfg")
    with open(cfg, "w") as f:
        f.write(f'input = {{ root = "{data}"; }};\nmodel = {{ arch = "resnet3dv1c18"; width = 0.25; num_classes = 5; init_from = "{pth}"; }};\n'
                'train = { batch = 4; crop = 16; max_steps = 1; ckpt_every = 1; lr = 0.01; lr_batch = 4; val_every = 0.0; };\n')
    log = run(["train", cfg, "--set", "output.dir=" + os.path.join(work, "run")])
    line = [l.split("INFO ")[-1] for l in log.splitlines() if "import: file:" in l and "loaded:" in l]
    fc = [l.split("INFO ")[-1] for l in log.splitlines() if "part:fc " in l]
    check(bool(line) and "loaded:132 new:2" in line[0] and fc and "new:2" in fc[0],
          "train with model.init_from = x.pth (mmcls names, no head): " + (line[0] if line else "no report") + " | " + (fc[0] if fc else ""))


# ------------------------------------------------------------------------------- hostile files
class Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PTH",))


def zip_with(path, pkl, stem="archive", extra=()):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{stem}/data.pkl", pkl)
        for n, b in extra:
            z.writestr(f"{stem}/{n}", b)
        z.writestr(f"{stem}/version", "3\n")


def case_hostile(work):
    os.chdir(work)
    good = os.path.join(work, "good.pth")
    torch.save(model("v1c").state_dict(), good)
    raw = open(good, "rb").read()
    files = {}
    p = os.path.join(work, "os_system.pth")
    zip_with(p, pickle.dumps({"x": Evil()}, protocol=2))
    files["os.system in the pickle"] = (p, "posix.system")
    p = os.path.join(work, "eval.pth")
    zip_with(p, b"\x80\x02cbuiltins\neval\nX\x0a\x00\x00\x00print(666)\x85R.")
    files["builtins.eval in the pickle"] = (p, "builtins.eval")
    p = os.path.join(work, "os_system_legacy.pth")
    with open(p, "wb") as f:  # legacy layout, the exploit in the object pickle
        for o in (0x1950a86a20f9469cfc6c, 1001, {"little_endian": True}):
            pickle.dump(o, f, protocol=2)
        pickle.dump(Evil(), f, protocol=2)
    files["os.system in a legacy file"] = (p, "posix.system")
    p = os.path.join(work, "truncated.pth")
    open(p, "wb").write(raw[: len(raw) // 2])
    files["truncated zip"] = (p, "")
    p = os.path.join(work, "truncated_legacy.pth")
    save_legacy(model("v1c").state_dict(), p)
    lraw = open(p, "rb").read()
    open(p, "wb").write(lraw[: len(lraw) - 1000])
    files["truncated legacy file"] = (p, "truncated")
    p = os.path.join(work, "huge_size.pth")
    zip_with(p, b"\x80\x02\x8d" + (1 << 60).to_bytes(8, "little") + b"abc.")
    files["huge declared string size"] = (p, "needs 1152921504606846976 more bytes")
    p = os.path.join(work, "huge_tensor.pth")
    pkl = (b"\x80\x02}(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
           b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00\x8a\x06\x00\x00\x00\x00\x00\x01\x85K\x01\x85\x89NtRu.")
    zip_with(p, pkl, extra=(("data/0", b"\0" * 16),))
    files["huge declared tensor size"] = (p, "declares more than")
    p = os.path.join(work, "tensor_past_storage.pth")
    zip_with(p, pkl.replace(b"\x8a\x06\x00\x00\x00\x00\x00\x01", b"K\x08"), extra=(("data/0", b"\0" * 16),))
    files["tensor larger than its storage"] = (p, "the storage is shorter than its tensor")
    p = os.path.join(work, "short_storage.pth")
    with zipfile.ZipFile(good) as zi, zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as zo:
        for n in zi.namelist():
            b = zi.read(n)
            zo.writestr(n.replace("good/", "archive/"), b[:8] if n.endswith("/data/0") else b)
    files["storage shorter than its tensor"] = (p, "truncated or corrupt")
    p = os.path.join(work, "huge_entry.pth")  # a zip header declaring a 4 GiB data.pkl in an 8 MB file
    b = bytearray(raw)
    assert b[:4] == b"PK\x03\x04" and b[8:10] == b"\x00\x00"  # first entry: data.pkl, stored
    b[18:26] = (0xFFFFFFF0).to_bytes(4, "little") * 2
    open(p, "wb").write(bytes(b))
    files["zip entry declaring 4 GiB"] = (p, "")
    p = os.path.join(work, "mark_bomb.pth")
    zip_with(p, b"\x80\x02" + b"(" * 100000 + b"N.")
    files["recursion bomb (MARKs)"] = (p, "open MARKs")
    p = os.path.join(work, "list_bomb.pth")
    zip_with(p, b"\x80\x02" + b"]" * 50000 + b"a" * 49999 + b".")
    files["recursion bomb (nested lists)"] = (p, "nested deeper")
    p = os.path.join(work, "self_ref.pth")
    zip_with(p, b"\x80\x02]q\x00h\x00a" + b"h\x00a" * 2000 + b".")
    files["self-referencing list"] = (p, "")
    p = os.path.join(work, "not_a_dict.pth")
    zip_with(p, b"\x80\x02K\x05.")
    files["no state dict"] = (p, "expected a dict")
    for what, (path, needle) in files.items():
        out = os.path.join(work, "hostile.h5")
        try:
            log = run(["import", "--from", path, "--out", out] + mp3d_args("v1c"), expect=1)
        except RuntimeError as e:
            check(False, f"{what}: {e}")
            continue
        err = [l for l in log.splitlines() if "ERROR" in l]
        msg = err[0].split("ERROR ")[-1] if err else ""
        clean = not os.path.exists(out) and not os.path.exists(out + ".import.d") and not os.path.exists("PWNED_BY_PTH")
        check(bool(err) and needle in msg and clean, f"{what}: exit 1, nothing written | {msg[:230]}")
    log = run(["import", "--from", os.path.join(work, "absent.pth"), "--out", "x.h5"], expect=2)
    check("no such file" in log, "missing --from file: exit 2 (usage)")
    log = run(["import", "--from", good, "--out", "x.h5", "--map", "detectron"], expect=2)
    check("import.map" in log, "bad --map: exit 2 (usage)")


def main():
    mode, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    {"equiv": case_equiv, "dtypes": case_dtypes, "detector": case_detector, "export": case_export, "hostile": case_hostile,
     "init_from": case_init_from}[mode](work)
    print(f"import_pth {mode}: {len(FAILS)} failed")
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
