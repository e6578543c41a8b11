#!/usr/bin/env python3
"""The PyTorch reference of lesion-detector fine-tuning (issue 14, item 2, the lesion half).

  lesion_tta_torch.py train INIT.h5 DATA_DIR DL_INFO.csv OUT_DIR [options]
      fine-tunes the detector of tests/torch_parity_det.py (backbone + GTM, mmdet FPN, RPN head,
      Shared2FC box head; mp3d's parameter names) from INIT.h5 (an mp3d checkpoint: mp3d's own
      initial state of the same run, so both start from the same parameters) on DATA_DIR/train.h5
      with mp3d's recipe (configs/demo_finetune.cfg as bench_medium_tta.sh runs it), tests on
      DATA_DIR/val.h5 every --val-every epochs with the DeepLesion FROC protocol (`mp3d froc`
      against DL_INFO.csv, split test) and writes OUT_DIR/metrics.jsonl in mp3d's record format
      (event start, stage train, stage val with sens_*/mfroc) so finetune_curves.py draws it
      beside the mp3d runs.
  lesion_tta_torch.py eval CKPT.h5 DATA_DIR DL_INFO.csv OUT_DIR
      scores a checkpoint (of mp3d or of this script) the same way: with an mp3d checkpoint it
      checks this script's inference and scoring against mp3d's own validation of that step.

The recipe, written out as mmdetection 2.x states it (the pieces shared with the parity test come
from tests/torch_parity_det.py): per image of a batch of 4, a random horizontal flip and a random
slice-order reversal (p 0.5 each), the [-160, 240] window to [0, 255], (x - 123.675) / 58.395;
RPN: MaxIoUAssigner(0.7, 0.3, 0.3, low-quality), RandomSampler(64, 0.5) per image, BCE + smooth L1
(beta 1/9) over the anchors sampled in the batch; proposals: per level the top 1000 by score,
DeltaXYWH decode, NMS 0.7 within the level, the top 500 of the image; R-CNN: gt boxes added to the
proposals, MaxIoUAssigner(0.5, 0.5, 0.5), RandomSampler(64, 0.25), RoIAlign 7x7 by the
finest-scale-56 rule, CE + smooth L1 (beta 1) over the RoIs sampled in the batch; SGD lr 0.02,
momentum 0.9, weight decay 1e-4 not on norm/bias, gradient norm clipped at 35, linear warm-up
over 50 steps from 1/3, x0.1 at 2/3 and 11/12 of the steps; test: proposals as above, softmax,
decode (stds 0.1, 0.1, 0.2, 0.2), NMS 0.5, the top 100.

Recipe differences from mp3d's run, stated: one process with --threads threads (mp3d: 2 ranks of
1 thread, each normalising its losses over its own 2 images and averaging gradients; here the 4
images of a step are normalised together, as mmdet on one device with 4 images); the random
streams (epoch order, flips, sampling) are PyTorch's / NumPy's, not mp3d's.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import h5py
import numpy as np
import torch
import torch.nn.functional as F
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from torch_parity_det import (Det, STRIDES, MEAN, STD, anchors_level, assign, encode, decode,  # noqa: E402
                              smooth_l1_sum)
from torch_parity import is_norm_or_bias  # noqa: E402


def cfg_of(a, depth):
    return {"arch": a.arch, "width": a.width, "gn_groups": a.gn_groups, "depth": depth, "fpn": a.fpn, "fc": a.fc,
            "ratios": [0.5, 1.0, 2.0], "anchor_scale": 4.0, "rpn_post_nms": a.post_nms}


def load_shard(path):
    with h5py.File(path, "r") as f:
        img = f["images"][()]
        boxes = f["boxes"][()]
        off = f["lesion_offsets"][()]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["file_name"][()]]
        affine = f["affine"][()]
    gts = [boxes[off[i]:off[i + 1]].astype(np.float64) for i in range(len(img))]
    return img, gts, names, affine


def window(img, lo, hi):
    """int16 (..., D, H, W) -> float32, mp3d's aug_crop_resize_i16 at identity geometry."""
    lo, hi = np.float32(lo), np.float32(hi)
    k = np.float32(255.0) / (hi - lo)
    v = np.clip(img.astype(np.float32), lo, hi)
    return ((v - lo) * k - np.float32(MEAN)) / np.float32(STD)


def build(c, path):
    model = Det(c)
    with h5py.File(path, "r") as f:
        sd = {k: torch.as_tensor(v[()]) for g in ("params", "buffers") if g in f for k, v in f[g].items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing:
        sys.exit(f"lesion_tta_torch: {path} lacks {len(missing)} tensors, e.g. {missing[:3]}")
    return model


def rpn_outputs(model, P):
    N = P[0].shape[0]
    rh = model.rpn_head
    cls_l, reg_l, anc, lvl_sizes = [], [], [], []
    for lvl, p in enumerate(P):
        t = F.relu(rh.rpn_conv(p))
        cls_l.append(rh.rpn_cls(t).permute(0, 2, 3, 1).reshape(N, -1))
        reg_l.append(rh.rpn_reg(t).permute(0, 2, 3, 1).reshape(N, -1, 4))
        lvl_sizes.append(cls_l[-1].shape[1])
    return cls_l, reg_l, lvl_sizes


def all_anchors(c, P):
    return [anchors_level(c, lvl, p.shape[2], p.shape[3]) for lvl, p in enumerate(P)]


def proposals(cls_l, reg_l, anc_l, i, ih, iw, pre, post, iou):
    """mp3d rpn_head_proposals / mmdet 2 RPNHead._get_bboxes for image i (no gradient)."""
    boxes, scores = [], []
    for cl, rg, an in zip(cls_l, reg_l, anc_l):
        s = torch.sigmoid(cl[i].detach())
        k = min(pre, s.numel())
        sv, si = torch.topk(s, k)
        b = decode(torch.as_tensor(an)[si], rg[i].detach()[si], ih, iw)
        keep = (b[:, 2] - b[:, 0] > 0) & (b[:, 3] - b[:, 1] > 0)
        b, sv = b[keep], sv[keep]
        k = torchvision.ops.nms(b, sv, iou)
        boxes.append(b[k])
        scores.append(sv[k])
    b, s = torch.cat(boxes), torch.cat(scores)
    o = torch.argsort(s, descending=True)[:post]
    return b[o], s[o]


def sample(rng, a, num, frac):
    """RandomSampler: indices of up to num*frac positives (a >= 0) and negatives (a == -1) to num."""
    pos = np.nonzero(a >= 0)[0]
    neg = np.nonzero(a == -1)[0]
    npos = min(len(pos), int(num * frac))
    pos = rng.choice(pos, npos, replace=False) if npos < len(pos) else pos
    nneg = min(len(neg), num - npos)
    neg = rng.choice(neg, nneg, replace=False) if nneg < len(neg) else neg
    return pos, neg


def roi_feats(P, rois):
    K = rois.shape[0]
    scale = torch.sqrt(((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])).clamp(min=0))
    lvl = torch.floor(torch.log2(scale / 56.0 + 1e-6)).clamp(0, 3).long()
    out = P[0].new_zeros((K, P[0].shape[1], 7, 7))
    for l in range(4):
        idx = torch.nonzero(lvl == l).reshape(-1)
        if len(idx):
            out[idx] = torchvision.ops.roi_align(P[l], rois[idx], (7, 7), spatial_scale=1.0 / STRIDES[l],
                                                 sampling_ratio=0, aligned=True)
    return out


def box_head(model, feat):
    bh = model.roi_head.bbox_head
    h = F.relu(bh.shared_fcs[0](feat.flatten(1)))
    h = F.relu(bh.shared_fcs[1](h))
    return bh.fc_cls(h), bh.fc_reg(h)


def train_losses(model, c, a, x, gts, rng):
    P = model.feats(x)
    N, H, W = x.shape[0], x.shape[3], x.shape[4]
    cls_l, reg_l, _ = rpn_outputs(model, P)
    anc_l = all_anchors(c, P)
    anchors = np.concatenate(anc_l)
    M = len(anchors)
    cls_all, reg_all = torch.cat(cls_l, 1), torch.cat(reg_l, 1)
    lab_idx, lab_val, pos_idx, pos_tgt = [], [], [], []
    for i in range(N):
        asg = assign(anchors, np.ones(M, bool), gts[i], 0.7, 0.3, 0.3, True)
        pos, neg = sample(rng, asg, a.rpn_samples, 0.5)
        lab_idx += [i * M + j for j in pos] + [i * M + j for j in neg]
        lab_val += [1.0] * len(pos) + [0.0] * len(neg)
        if len(pos):
            pos_idx += [i * M + j for j in pos]
            pos_tgt.append(encode(torch.as_tensor(anchors[pos]), torch.as_tensor(gts[i][asg[pos]]), (1, 1, 1, 1)))
    norm = max(len(lab_idx), 1)
    rpn_cls = F.binary_cross_entropy_with_logits(cls_all.reshape(-1)[lab_idx], torch.tensor(lab_val),
                                                 reduction="sum") / norm
    rpn_reg = (smooth_l1_sum(reg_all.reshape(-1, 4)[pos_idx], torch.cat(pos_tgt), 1.0 / 9.0) / norm
               if pos_idx else reg_all.sum() * 0)
    rois, rlab, rtgt = [], [], []
    for i in range(N):
        props, _ = proposals(cls_l, reg_l, anc_l, i, H, W, a.pre_nms, a.post_nms, 0.7)
        cand = np.concatenate([gts[i].astype(np.float32), props.numpy().astype(np.float32)])
        valid = (cand[:, 2] > cand[:, 0]) & (cand[:, 3] > cand[:, 1])
        asg = assign(cand, valid, gts[i], 0.5, 0.5, 0.5, False)
        pos, neg = sample(rng, asg, a.roi_samples, 0.25)
        sel = np.concatenate([pos, neg]).astype(np.int64)
        cb = torch.as_tensor(cand[sel])
        t = torch.zeros(len(sel), 4)
        if len(pos):
            t[:len(pos)] = encode(cb[:len(pos)], torch.as_tensor(gts[i][asg[pos]].astype(np.float32)), (0.1, 0.1, 0.2, 0.2))
        rois.append(torch.cat([torch.full((len(sel), 1), float(i)), cb], 1))
        rlab.append(torch.as_tensor(np.r_[np.zeros(len(pos), np.int64), np.ones(len(neg), np.int64)]))
        rtgt.append(t)
    rois, rlab, rtgt = torch.cat(rois), torch.cat(rlab), torch.cat(rtgt)
    cls, reg = box_head(model, roi_feats(P, rois))
    roi_cls = F.cross_entropy(cls, rlab)
    pos = rlab == 0
    roi_reg = smooth_l1_sum(reg[pos], rtgt[pos], 1.0) / max(len(rlab), 1)
    return [rpn_cls, rpn_reg, roi_cls, roi_reg]


@torch.no_grad()
def detect(model, c, a, x):
    """(boxes, scores) of one image x (1, 1, D, H, W) in input coordinates."""
    P = model.feats(x)
    H, W = x.shape[3], x.shape[4]
    cls_l, reg_l, _ = rpn_outputs(model, P)
    props, _ = proposals(cls_l, reg_l, all_anchors(c, P), 0, H, W, a.pre_nms, a.post_nms, 0.7)
    if len(props) == 0:
        return props, props.new_zeros(0)
    rois = torch.cat([props.new_zeros((len(props), 1)), props], 1)
    cls, reg = box_head(model, roi_feats(P, rois))
    score = F.softmax(cls, 1)[:, 0]
    d = reg * torch.tensor([0.1, 0.1, 0.2, 0.2])
    b = decode(props, d, H, W)
    keep = score > 0.0
    b, score = b[keep], score[keep]
    k = torchvision.ops.nms(b, score, 0.5)[:100]
    return b[k], score[k]


def evaluate(model, c, a, test, dl_info, out_csv, mp3d):
    img, _, names, affine = test
    model.eval()
    rows = []
    for i in range(len(img)):
        x = torch.as_tensor(window(img[i], a.window[0], a.window[1]))[None, None]
        b, s = detect(model, c, a, x)
        b = b.double().numpy()
        ax, bx, ay, by = affine[i]
        for j in range(len(s)):
            rows.append(f"{names[i]},{ax * b[j, 0] + bx:.4f},{ay * b[j, 1] + by:.4f},{ax * b[j, 2] + bx:.4f},"
                        f"{ay * b[j, 3] + by:.4f},{float(s[j]):.6f}")
    model.train()
    with open(out_csv, "w") as f:
        f.write("File_name,x1,y1,x2,y2,score\n" + "\n".join(rows) + "\n")
    r = subprocess.run([mp3d, "froc", "--truth", dl_info, "--detections", out_csv, "--split", "test", "--json"],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def lr_at(a, it, total):
    lr = a.lr
    for m in (round(2.0 / 3.0 * total), round(11.0 / 12.0 * total)):
        if it >= m:
            lr *= 0.1
    if it < a.warmup:
        lr *= 1 - (1 - it / a.warmup) * (1 - 1.0 / 3.0)
    return lr


def cmd_train(a):
    t0 = time.time()   # as mp3d's start record: before the shards are read
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    os.makedirs(a.out, exist_ok=True)
    tr_img, tr_gts, _, _ = load_shard(os.path.join(a.data, "train.h5"))
    test = load_shard(os.path.join(a.data, "val.h5"))
    D = tr_img.shape[1]
    c = cfg_of(a, D)
    model = build(c, a.init)
    model.train()
    exempt = is_norm_or_bias(model)
    named = list(model.named_parameters())
    opt = torch.optim.SGD([{"params": [p for n, p in named if n not in exempt], "weight_decay": 1e-4},
                           {"params": [p for n, p in named if n in exempt], "weight_decay": 0.0}],
                          lr=a.lr, momentum=0.9)
    params = [p for _, p in named]
    spe = len(tr_img) // a.batch
    total = int(round(a.epochs * spe))
    val_steps = max(1, int(round(a.val_every * spe)))
    log = open(os.path.join(a.out, "metrics.jsonl"), "w")

    def rec(r):
        log.write(json.dumps(r) + "\n")
        log.flush()

    rec({"event": "start", "time": t0, "engine": "pytorch " + torch.__version__, "threads": a.threads,
         "steps": total, "images": len(tr_img)})
    Wd = tr_img.shape[3]
    step, t_train = 0, 0.0
    while step < total:
        perm = rng.permutation(len(tr_img))
        for b0 in range(0, spe * a.batch, a.batch):
            if step >= total or time.time() - t0 > 60 * a.minutes:
                break
            ts = time.time()
            idx = perm[b0:b0 + a.batch]
            xs, gs = [], []
            for i in idx:
                v = tr_img[i]
                g = tr_gts[i].astype(np.float32).copy()
                if rng.random() < 0.5:   # horizontal flip (det_boxes_to_input)
                    v = v[:, :, ::-1]
                    g[:, [0, 2]] = Wd - 1 - g[:, [2, 0]]
                if rng.random() < 0.5:   # slice order reversed
                    v = v[::-1]
                xs.append(window(np.ascontiguousarray(v), a.window[0], a.window[1]))
                gs.append(g)
            x = torch.as_tensor(np.stack(xs))[:, None]
            lr = lr_at(a, step, total)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            ls = train_losses(model, c, a, x, gs, rng)
            loss = sum(ls)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 35.0)
            opt.step()
            step += 1
            t_train += time.time() - ts
            if step % 10 == 0 or step == 1:
                rec({"stage": "train", "step": step, "time": time.time(), "loss": loss.item(), "lr": lr,
                     "loss_rpn_cls": ls[0].item(), "loss_rpn_reg": ls[1].item(), "loss_roi_cls": ls[2].item(),
                     "loss_roi_reg": ls[3].item(), "train_s": t_train})
            if step % val_steps == 0 or step == total:
                tv = time.time()
                j = evaluate(model, c, a, test, a.dl_info, os.path.join(a.out, "dets_test.csv"), a.mp3d)
                r = {"stage": "val", "step": step, "time": time.time(), "mfroc": j["mfroc"], "val_s": time.time() - tv}
                for k in ("0.5", "1", "2", "4"):
                    r["sens_" + k] = j["sens"][k]
                rec(r)
                print(f"lesion_tta_torch: step {step}/{total} wall {(time.time() - t0) / 60:.1f} min "
                      f"Sens@4 {r['sens_4']:.3f} mFROC {r['mfroc']:.3f}", flush=True)
        else:
            continue
        break
    rec({"event": "end", "time": time.time(), "steps": step, "train_s": t_train})
    print(f"lesion_tta_torch: {step} steps, {(time.time() - t0) / 60:.1f} min, "
          f"{step * a.batch / max(t_train, 1e-9):.2f} images/s in training steps")


def cmd_eval(a):
    torch.set_num_threads(a.threads)
    test = load_shard(os.path.join(a.data, "val.h5"))
    c = cfg_of(a, test[0].shape[1])
    model = build(c, a.init)
    os.makedirs(a.out, exist_ok=True)
    j = evaluate(model, c, a, test, a.dl_info, os.path.join(a.out, "dets_test.csv"), a.mp3d)
    print(json.dumps({"mfroc": j["mfroc"], "sens": j["sens"]}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=("train", "eval"))
    p.add_argument("init")
    p.add_argument("data")
    p.add_argument("dl_info")
    p.add_argument("out")
    p.add_argument("--mp3d", default="mp3d")
    p.add_argument("--arch", default="resnet3dv1c18")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--gn-groups", type=int, default=8)
    p.add_argument("--fpn", type=int, default=64)
    p.add_argument("--fc", type=int, default=256)
    p.add_argument("--pre-nms", type=int, default=1000)
    p.add_argument("--post-nms", type=int, default=500)
    p.add_argument("--rpn-samples", type=int, default=64)
    p.add_argument("--roi-samples", type=int, default=64)
    p.add_argument("--window", type=float, nargs=2, default=(-160.0, 240.0))
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--epochs", type=float, default=8.0)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--val-every", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    cmd_train(a) if a.cmd == "train" else cmd_eval(a)


if __name__ == "__main__":
    main()
