#!/usr/bin/python3
"""Real-size ImageNet look-alike for the vdt rate of results/scale.md (issue 15 item 5).

Copies an `mp3d synth` ImageNet layout (ILSVRC2012_img_train.tar of per-synset tars,
ILSVRC2012_img_val.tar, LOC_*.{csv,txt}) with every JPEG re-encoded at the size of a typical
ImageNet training image: the synthetic picture resized to 500x375 (or 375x500 for portrait ones),
plus pixel noise (sigma NOISE grey levels) so that the file is as large as a real one (~110 KB at
quality 90; synthetic pictures alone compress to a few KB and decode faster than photographs).
Usage: scale_imagenet.py SRC_DIR DST_DIR   (Debian python3 with PIL + numpy). Prints the mean
width, height and file size of the written JPEGs.
"""
import io
import os
import shutil
import sys
import tarfile

import numpy as np
from PIL import Image

NOISE = 22.0
QUALITY = 90


def recode(data, rng, stats):
    im = Image.open(io.BytesIO(data)).convert("RGB")
    size = (500, 375) if im.width >= im.height else (375, 500)
    a = np.asarray(im.resize(size, Image.BILINEAR), dtype=np.float32)
    a = np.clip(a + rng.normal(0.0, NOISE, a.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(a).save(out, "JPEG", quality=QUALITY)
    b = out.getvalue()
    stats.append((size[0], size[1], len(b)))
    return b


def add_bytes(tar, name, b):
    ti = tarfile.TarInfo(name)
    ti.size = len(b)
    tar.addfile(ti, io.BytesIO(b))


def main():
    src, dst = sys.argv[1], sys.argv[2]
    os.makedirs(dst, exist_ok=True)
    rng = np.random.default_rng(15)
    stats = []
    with tarfile.open(os.path.join(src, "ILSVRC2012_img_train.tar")) as outer, \
            tarfile.open(os.path.join(dst, "ILSVRC2012_img_train.tar"), "w") as oout:
        for m in outer.getmembers():
            inner = tarfile.open(fileobj=outer.extractfile(m))
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as iout:
                for im in inner.getmembers():
                    add_bytes(iout, im.name, recode(inner.extractfile(im).read(), rng, stats))
            add_bytes(oout, m.name, buf.getvalue())
    with tarfile.open(os.path.join(src, "ILSVRC2012_img_val.tar")) as vin, \
            tarfile.open(os.path.join(dst, "ILSVRC2012_img_val.tar"), "w") as vout:
        for m in vin.getmembers():
            add_bytes(vout, m.name, recode(vin.extractfile(m).read(), rng, []))
    for f in os.listdir(src):
        if f.endswith(".csv") or f.endswith(".txt"):
            shutil.copy(os.path.join(src, f), os.path.join(dst, f))
    w, h, n = (np.mean([s[i] for s in stats]) for i in range(3))
    print(f"imagenet_realsize train_images:{len(stats)} mean_width:{w:.0f} mean_height:{h:.0f} mean_bytes:{n:.0f}")


if __name__ == "__main__":
    main()
