"""Loads an mp3d checkpoint into the equivalent torch.nn model (the README's five lines) and
checks that PyTorch computes the same logits as `mp3d infer` on the same input.
usage: torch_equiv.py CKPT.h5 INPUT.h5 MP3D_OUTPUT.h5 ARCH WIDTH NORM GROUPS CLASSES"""
import sys

import h5py
import torch
import torch.nn as nn


def ch(base, width):
    return max(1, int(round(base * width)))


def norm(kind, c, groups):
    return nn.BatchNorm3d(c) if kind == "bn" else nn.GroupNorm(groups, c)


class Block(nn.Module):
    def __init__(self, cin, cout, stride, kind, groups):
        super().__init__()
        s = (1, stride, stride)
        self.conv1 = nn.Conv3d(cin, cout, 3, s, 1, bias=False)
        self.bn1 = norm(kind, cout, groups)
        self.conv2 = nn.Conv3d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm(kind, cout, groups)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv3d(cin, cout, 1, s, bias=False), norm(kind, cout, groups))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ConvModule(nn.Module):  # mmcv's ConvModule names: .conv, .bn
    def __init__(self, cin, cout, stride, kind, groups):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, 3, (1, stride, stride), 1, bias=False)
        self.bn = norm(kind, cout, groups)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class ResNet3D18(nn.Module):
    """ResNet3D-18 (7x7x7 stem, torchvision names) or ResNet3DV1c-18 (deep stem, mmcv names)."""

    def __init__(self, arch, width, kind, groups, classes):
        super().__init__()
        self.v1c = arch == "resnet3dv1c18"
        c64 = ch(64, width)
        if self.v1c:
            c32 = ch(32, width)
            self.stem = nn.Sequential(ConvModule(1, c32, 2, kind, groups), ConvModule(c32, c32, 1, kind, groups),
                                      ConvModule(c32, c64, 1, kind, groups))
        else:
            self.conv1 = nn.Conv3d(1, c64, 7, (1, 2, 2), 3, bias=False)
            self.bn1 = norm(kind, c64, groups)
        self.maxpool = nn.MaxPool3d(3, (1, 2, 2), 1)
        cin = c64
        for i, base in enumerate([64, 128, 256, 512]):
            cout = ch(base, width)
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(Block(cin, cout, stride, kind, groups),
                                                         Block(cout, cout, 1, kind, groups)))
            cin = cout
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.stem(x) if self.v1c else torch.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(x.mean(dim=(2, 3, 4)))


def main():
    ckpt, inp, out, arch, width, kind, groups, classes = sys.argv[1:9]
    model = ResNet3D18(arch, float(width), kind, int(groups), int(classes))
    # --- the README's five lines -------------------------------------------------------------
    f = h5py.File(ckpt, "r")
    sd = {k: torch.as_tensor(v[()]) for g in ("params", "buffers") if g in f for k, v in f[g].items()}
    sd = {k: v.long() if k.endswith("num_batches_tracked") else v for k, v in sd.items()}
    model.load_state_dict(sd)  # strict: every name and shape must match
    model.eval()
    # ----------------------------------------------------------------------------------------
    x = torch.as_tensor(h5py.File(inp, "r")["input"][()])
    with torch.no_grad():
        y = model(x)
    ref = torch.as_tensor(h5py.File(out, "r")["output"][()])
    diff = (y - ref).abs().max().item()
    scale = ref.abs().max().item()
    agree = (y.argmax(1) == ref.argmax(1)).float().mean().item()
    print(f"torch_equiv: tensors:{len(sd)} logits:{tuple(y.shape)} max_abs_diff:{diff:.3g} max_abs:{scale:.3g} "
          f"argmax_agree:{agree:.3f}")
    ok = diff <= 1e-3 * max(1.0, scale) and agree == 1.0
    print("torch_equiv: " + ("ok" if ok else "FAIL"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
