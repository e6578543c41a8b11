"""PyTorch twins of the nn/ networks (DESIGN.md "Networks"), used by bench_nn_torch.py and to
state the reference parameter counts / state_dict names the C tests assert. Same module
names as mp3d's checkpoints: conv1/bn1 (ResNet3D-18, P3D-63), stem.N.conv/bn (V1c),
layerK.i.{convJ,bnJ,downsample.0/1}, fc, gtm.k."""
import torch
import torch.nn as nn


def ch(base, width):
    return max(1, int(round(base * width)))


def norm(c, gn):
    return nn.GroupNorm(gn, c) if gn else nn.BatchNorm3d(c)


class Basic(nn.Module):
    def __init__(self, inp, planes, st, gn):
        super().__init__()
        self.conv1 = nn.Conv3d(inp, planes, 3, (1, st, st), 1, bias=False)
        self.bn1 = norm(planes, gn)
        self.conv2 = nn.Conv3d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm(planes, gn)
        self.downsample = None
        if st != 1 or inp != planes:
            self.downsample = nn.Sequential(nn.Conv3d(inp, planes, 1, (1, st, st), bias=False), norm(planes, gn))

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return torch.relu(h + (self.downsample(x) if self.downsample is not None else x))


class P3DBlock(nn.Module):
    def __init__(self, inp, planes, st, kind, gn):
        super().__init__()
        self.kind = kind
        self.conv1 = nn.Conv3d(inp, planes, 1, (1, st, st), bias=False)
        self.bn1 = norm(planes, gn)
        self.conv2 = nn.Conv3d(planes, planes, (1, 3, 3), 1, (0, 1, 1), bias=False)
        self.bn2 = norm(planes, gn)
        self.conv3 = nn.Conv3d(planes, planes, (3, 1, 1), 1, (1, 0, 0), bias=False)
        self.bn3 = norm(planes, gn)
        self.conv4 = nn.Conv3d(planes, planes * 4, 1, bias=False)
        self.bn4 = norm(planes * 4, gn)
        self.downsample = None
        if st != 1 or inp != planes * 4:
            self.downsample = nn.Sequential(nn.Conv3d(inp, planes * 4, 1, (1, st, st), bias=False), norm(planes * 4, gn))

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        s = torch.relu(self.bn2(self.conv2(h)))
        if self.kind == 0:
            u = torch.relu(self.bn3(self.conv3(s)))
        elif self.kind == 1:
            u = s + torch.relu(self.bn3(self.conv3(h)))
        else:
            u = s + torch.relu(self.bn3(self.conv3(s)))
        u = self.bn4(self.conv4(u))
        return torch.relu(u + (self.downsample(x) if self.downsample is not None else x))


class ConvBN(nn.Module):
    def __init__(self, i, o, st, gn):
        super().__init__()
        self.conv = nn.Conv3d(i, o, 3, (1, st, st), 1, bias=False)
        self.bn = norm(o, gn)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class Net(nn.Module):
    def __init__(self, arch, width=1.0, gn=0, classes=1000, backbone=False, gtm_depth=0):
        super().__init__()
        self.arch, self.backbone = arch, backbone
        c64 = ch(64, width)
        if arch == "resnet3dv1c18":
            c32 = ch(32, width)
            self.stem = nn.Sequential(ConvBN(1, c32, 2, gn), ConvBN(c32, c32, 1, gn), ConvBN(c32, c64, 1, gn))
        elif arch == "resnet3d18":
            self.conv1 = nn.Conv3d(1, c64, 7, (1, 2, 2), 3, bias=False)
            self.bn1 = norm(c64, gn)
        else:
            self.conv1 = nn.Conv3d(1, c64, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False)
            self.bn1 = norm(c64, gn)
        self.pool = nn.MaxPool3d(3, (1, 2, 2), 1)
        inp, cnt, chans = c64, 0, []
        for k in range(4):
            planes = ch(64 << k, width)
            blocks = []
            for b in range((3, 4, 6, 3)[k] if arch == "p3d63" else 2):
                st = 2 if (b == 0 and k > 0) else 1
                if arch == "p3d63":
                    blocks.append(P3DBlock(inp, planes, st, cnt % 3, gn))
                    cnt += 1
                    inp = planes * 4
                else:
                    blocks.append(Basic(inp, planes, st, gn))
                    inp = planes
            setattr(self, "layer%d" % (k + 1), nn.Sequential(*blocks))
            chans.append(inp)
        if backbone:
            if gtm_depth:
                self.gtm = nn.ModuleList([nn.Conv2d(c * gtm_depth, c, 1, groups=c, bias=False) for c in chans])
        else:
            self.fc = nn.Linear(inp, classes)
        self.gtm_depth = gtm_depth

    def forward(self, x):
        if self.arch == "resnet3dv1c18":
            x = self.stem(x)
        else:
            x = torch.relu(self.bn1(self.conv1(x)))
        x = self.pool(x)
        outs = []
        for k in range(4):
            x = getattr(self, "layer%d" % (k + 1))(x)
            outs.append(x)
        if self.backbone:
            if self.gtm_depth:
                outs = [g(o.reshape(o.shape[0], -1, o.shape[3], o.shape[4])) for g, o in zip(self.gtm, outs)]
            return outs
        return self.fc(x.mean((2, 3, 4)))


if __name__ == "__main__":
    for arch in ("resnet3d18", "resnet3dv1c18", "p3d63"):
        for w in (1.0, 0.25):
            m = Net(arch, w, 0, 1000)
            n = sum(p.numel() for p in m.parameters())
            nb = sum(b.numel() for b in m.buffers())
            print(arch, w, "params", n, "buffers", nb, "state_dict entries", len(m.state_dict()))
        m = Net(arch, 0.5, 8, 10, backbone=True, gtm_depth=9)
        print(arch, "backbone gn8 w0.5 gtm9 params", sum(p.numel() for p in m.parameters()), "entries", len(m.state_dict()))
        outs = m(torch.zeros(1, 1, 9, 64, 64))
        print("  shapes", [tuple(o.shape) for o in outs])
