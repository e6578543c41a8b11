"""Same-run reference for tests/bench/bench_detector.c: torchvision's Faster R-CNN (0.14) with the
mp3d backbone + GTM of nn_torch_models.Net, FPN P2-P6 (FeaturePyramidNetwork + LastLevelMaxPool),
torchvision's RPN and RoIHeads (MultiScaleRoIAlign 7x7 over P2-P5, TwoMLPHead fc_dim, 2 classes
incl. background), set up from the `config ...` key:value line bench_detector printed, so both
implementations run the same shapes, counts and optimizer. Times inference (eval, no_grad) then a
training step (losses, backward, clip_grad_norm_, SGD) at 1 thread; the peak RSS of this process
(one configuration per process) after each phase.
usage: /usr/bin/python3 bench_detector_torch.py "config name:demo arch:... " [--json OUT] [--profile]
--profile: after the run, one more inference under torch.profiler, top operators by self CPU time."""
import json
import os
import resource
import sys
import time
from collections import OrderedDict

import torch
import torch.nn as nn
import torchvision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nn_torch_models import Net  # noqa: E402

SEED = 20261126
BOXES = 3


def parse_config(line):
    kv = dict(tok.split(":", 1) for tok in line.split()[1:] if ":" in tok)
    ints = ("gn_groups depth size batch fpn fc rpn_samples rpn_pre_nms rpn_post_nms roi_samples max_dets "
            "boxes iters warmup").split()
    floats = "width anchor_scale rpn_nms_iou roi_pos_fraction nms_iou score_thr lr momentum wd clip".split()
    c = {k: kv[k] for k in ("name", "arch", "norm")}
    c["ratios"] = tuple(float(v) for v in kv["ratios"].split(","))
    c.update({k: int(kv[k]) for k in ints})
    c.update({k: float(kv[k]) for k in floats})
    return c


class GTMBackbone(nn.Module):
    """(N, D, H, W) batch from the transform -> (N, 1, D, H, W) -> Net (stages + GTM, which
    reshapes (N, C, D, h, w) to (N, C*D, h, w) for its grouped 1x1 conv) -> FPN '0'..'3', 'pool'."""

    def __init__(self, c):
        super().__init__()
        gn = c["gn_groups"] if c["norm"] == "gn" else 0
        self.body = Net(c["arch"], c["width"], gn, classes=1, backbone=True, gtm_depth=c["depth"])
        chans = [g.out_channels for g in self.body.gtm]
        self.fpn = FeaturePyramidNetwork(chans, c["fpn"], extra_blocks=LastLevelMaxPool())
        self.out_channels = c["fpn"]

    def forward(self, x):
        outs = self.body(x.unsqueeze(1))
        return self.fpn(OrderedDict((str(i), o) for i, o in enumerate(outs)))


class BatchOnly(GeneralizedRCNNTransform):
    """The inputs are already normalised and at the network size (as mp3d's det_load_input makes
    them): no normalisation, no resize; only the batching (copy into a padded batch tensor)."""

    def normalize(self, image):
        return image

    def resize(self, image, target=None):
        return image, target


def build(c):
    s = c["anchor_scale"]
    strides = (4, 8, 16, 32, 64)
    # side anchor_scale x stride; torchvision's aspect ratio is h/w like mmdet's
    anchors = AnchorGenerator(sizes=tuple((s * st,) for st in strides), aspect_ratios=(c["ratios"],) * len(strides))
    roi_pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2", "3"], output_size=7, sampling_ratio=0)
    box_head = TwoMLPHead(c["fpn"] * 49, c["fc"])
    model = FasterRCNN(
        GTMBackbone(c), num_classes=None, min_size=c["size"], max_size=c["size"],
        image_mean=[0.0] * c["depth"], image_std=[1.0] * c["depth"],
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=c["rpn_pre_nms"], rpn_pre_nms_top_n_test=c["rpn_pre_nms"],
        rpn_post_nms_top_n_train=c["rpn_post_nms"], rpn_post_nms_top_n_test=c["rpn_post_nms"],
        rpn_nms_thresh=c["rpn_nms_iou"], rpn_fg_iou_thresh=0.7, rpn_bg_iou_thresh=0.3,
        rpn_batch_size_per_image=c["rpn_samples"], rpn_positive_fraction=0.5,
        box_roi_pool=roi_pool, box_head=box_head, box_predictor=FastRCNNPredictor(c["fc"], 2),
        box_score_thresh=c["score_thr"], box_nms_thresh=c["nms_iou"], box_detections_per_img=c["max_dets"],
        box_fg_iou_thresh=0.5, box_bg_iou_thresh=0.5, box_batch_size_per_image=c["roi_samples"],
        box_positive_fraction=c["roi_pos_fraction"], bbox_reg_weights=(10.0, 10.0, 5.0, 5.0))
    model.transform = BatchOnly(c["size"], c["size"], [0.0] * c["depth"], [1.0] * c["depth"])
    return model


def bench_box(n, i, S):
    """Same formula as bench_box in bench_detector.c."""
    aspect = (1.0, 0.7, 1.3)
    w = S * (0.04 + 0.04 * i)
    h = w * aspect[i % 3]
    cx, cy = S * (0.25 + 0.25 * i), S * (0.3 + 0.2 * ((i + n) % 3))
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def proc_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    u, n, s, idle, io, irq, sirq, steal = v
    return (u + n + s + irq + sirq + steal) / os.sysconf("SC_CLK_TCK")


def stamp():
    return time.perf_counter(), time.process_time(), proc_busy()


def since(a):
    b = stamp()
    wall, cpu = b[0] - a[0], b[1] - a[1]
    other = max((b[2] - a[2]) - cpu, 0.0) / wall if wall > 0 else 0.0
    return wall, cpu, other


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    if len(sys.argv) < 2 or not sys.argv[1].startswith("config "):
        raise SystemExit(__doc__)
    c = parse_config(sys.argv[1])
    out = sys.argv[sys.argv.index("--json") + 1] if "--json" in sys.argv else None
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    torch.manual_seed(SEED)
    rss_start = rss_mb()
    model = build(c)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"torch:{torch.__version__} torchvision:{torchvision.__version__} threads:{torch.get_num_threads()} "
          f"mkldnn:{torch.backends.mkldnn.is_available()} params:{nparams}", flush=True)
    N, D, S = c["batch"], c["depth"], c["size"]
    g = torch.Generator().manual_seed(SEED)
    x = torch.rand(N, D, S, S, generator=g) * 4.3 - 2.1  # the normalised window's range, as the C side
    images = list(x)
    targets = [{"boxes": torch.tensor([bench_box(n, i, S) for i in range(BOXES)], dtype=torch.float32),
                "labels": torch.ones(BOXES, dtype=torch.int64)} for n in range(N)]
    iters, warmup = c["iters"], c["warmup"]

    model.eval()
    inf = [0.0, 0.0, 0.0]
    ndet = 0
    with torch.no_grad():
        for it in range(-warmup, iters):
            t0 = stamp()
            dets = model(images)
            w, cp, o = since(t0)
            nd = sum(len(d["boxes"]) for d in dets)
            print(f"infer iter:{it} wall_s:{w:.3f} cpu_s:{cp:.3f} other_cores:{o:.2f} dets:{nd}"
                  + (" (warm-up)" if it < 0 else ""), flush=True)
            if it >= 0:
                inf[0] += w
                inf[1] += cp
                inf[2] += o * w
                ndet += nd
    rss_infer = rss_mb()

    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"], weight_decay=c["wd"])
    tr = [0.0, 0.0, 0.0]
    losses = {}
    for it in range(-warmup, iters):
        t0 = stamp()
        opt.zero_grad(set_to_none=True)
        losses = model(images, targets)
        loss = sum(losses.values())
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), c["clip"])
        opt.step()
        w, cp, o = since(t0)
        ls = " ".join(f"{k}:{v.item():.4f}" for k, v in losses.items())
        print(f"train iter:{it} wall_s:{w:.3f} cpu_s:{cp:.3f} other_cores:{o:.2f} {ls} grad_norm:{gnorm.item():.3g}"
              + (" (warm-up)" if it < 0 else ""), flush=True)
        if it >= 0:
            tr[0] += w
            tr[1] += cp
            tr[2] += o * w
    rss_peak = rss_mb()

    imgs = N * iters
    r = {"impl": "torch", "name": c["name"], "arch": c["arch"], "width": c["width"], "gn_groups": c["gn_groups"],
         "size": S, "depth": D, "batch": N, "fpn": c["fpn"], "fc": c["fc"], "rpn_pre_nms": c["rpn_pre_nms"],
         "rpn_post_nms": c["rpn_post_nms"], "roi_samples": c["roi_samples"], "iters": iters, "warmup": warmup,
         "params": nparams, "train_img_s": imgs / tr[0], "train_s_step": tr[0] / iters, "train_cpu_s": tr[1],
         "train_wall_s": tr[0], "train_other_cores": tr[2] / tr[0], "infer_img_s": imgs / inf[0],
         "infer_s_step": inf[0] / iters, "infer_cpu_s": inf[1], "infer_wall_s": inf[0],
         "infer_other_cores": inf[2] / inf[0], "dets_per_img": ndet / imgs, "rss_start_mb": rss_start,
         "rss_infer_mb": rss_infer, "rss_peak_mb": rss_peak, "loss": [float(v) for v in losses.values()],
         "torch": torch.__version__, "torchvision": torchvision.__version__}
    print("result impl:torch name:%s train_img_s:%.4f train_s_step:%.3f train_cpu_wall:%.2f train_other_cores:%.2f "
          "infer_img_s:%.4f infer_s_step:%.3f infer_cpu_wall:%.2f infer_other_cores:%.2f rss_start_mb:%.0f "
          "rss_infer_mb:%.0f rss_peak_mb:%.0f params:%d" % (
              c["name"], r["train_img_s"], r["train_s_step"], tr[1] / tr[0], r["train_other_cores"],
              r["infer_img_s"], r["infer_s_step"], inf[1] / inf[0], r["infer_other_cores"], rss_start, rss_infer,
              rss_peak, nparams), flush=True)
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(r) + "\n")
    if "--profile" in sys.argv:
        model.eval()
        with torch.no_grad(), torch.profiler.profile() as prof:
            model(images)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
