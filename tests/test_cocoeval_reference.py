#!/usr/bin/env python3
"""Independent reference for stages/score/cocoeval.c: pycocotools' COCOeval (iouType 'bbox') written
again in numpy from its published algorithm (cocoapi PythonAPI/pycocotools/cocoeval.py:
_prepare, computeIoU, evaluateImg, accumulate, summarize; common/maskApi.c bbIou), organised
the way pycocotools is (dicts of annotations per (image, category), per-image evaluation
records, then one accumulation), not after the C code. pycocotools itself is not installable
here.

Usage: test_cocoeval_reference.py DIR   (DIR from `test_cocoeval --dump DIR SEED PLUS1 MAXD`)
Reads DIR/images.csv, gt.csv, dets.csv, opts.txt and the C result DIR/result.json; computes its
own figures, prints the max difference, exits 1 if any differs by more than 1e-9. Exit 77 when
numpy is missing.
"""
import csv
import json
import sys
from collections import defaultdict

try:
    import numpy as np
except ImportError:
    print("numpy missing: skipped")
    sys.exit(77)

TOL = 1e-9


class Params:
    def __init__(self, max_dets):
        self.iouThrs = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
        self.recThrs = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
        self.maxDets = [1, 10, max_dets]
        self.areaRng = [[0 ** 2, 1e5 ** 2], [0 ** 2, 32 ** 2], [32 ** 2, 96 ** 2], [96 ** 2, 1e5 ** 2]]
        self.areaRngLbl = ['all', 'small', 'medium', 'large']
        self.imgIds = []
        self.catIds = []


def bbox_iou(d, g, iscrowd):
    """maskUtils.iou for boxes (x, y, w, h): (len(d), len(g)); crowd gt: inter / area(det)."""
    if len(d) == 0 or len(g) == 0:
        return []
    d = np.asarray(d, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    out = np.zeros((len(d), len(g)))
    for gi in range(len(g)):
        G = g[gi]
        ga = G[2] * G[3]
        for di in range(len(d)):
            D = d[di]
            da = D[2] * D[3]
            w = min(D[2] + D[0], G[2] + G[0]) - max(D[0], G[0])
            if w <= 0:
                continue
            h = min(D[3] + D[1], G[3] + G[1]) - max(D[1], G[1])
            if h <= 0:
                continue
            i = w * h
            u = da if iscrowd[gi] else da + ga - i
            out[di, gi] = i / u
    return out


class Evaluator:
    def __init__(self, gts, dts, img_ids, max_dets):
        self.params = Params(max_dets)
        p = self.params
        p.imgIds = list(np.unique(img_ids))
        keep = set(p.imgIds)
        p.catIds = sorted({a['category_id'] for a in gts + dts if a['image_id'] in keep})
        self._gts = defaultdict(list)
        self._dts = defaultdict(list)
        for g in gts:  # _prepare: ignore = iscrowd
            g['ignore'] = int(g['iscrowd'])
            if g['image_id'] in keep:
                self._gts[g['image_id'], g['category_id']].append(g)
        for d in dts:
            if d['image_id'] in keep:
                self._dts[d['image_id'], d['category_id']].append(d)

    def computeIoU(self, imgId, catId):
        p = self.params
        gt = self._gts[imgId, catId]
        dt = self._dts[imgId, catId]
        if len(gt) == 0 and len(dt) == 0:
            return []
        inds = np.argsort([-d['score'] for d in dt], kind='mergesort')
        dt = [dt[i] for i in inds]
        if len(dt) > p.maxDets[-1]:
            dt = dt[0:p.maxDets[-1]]
        g = [x['bbox'] for x in gt]
        d = [x['bbox'] for x in dt]
        iscrowd = [int(o['iscrowd']) for o in gt]
        return bbox_iou(d, g, iscrowd)

    def evaluateImg(self, imgId, catId, aRng, maxDet):
        p = self.params
        gt = self._gts[imgId, catId]
        dt = self._dts[imgId, catId]
        if len(gt) == 0 and len(dt) == 0:
            return None
        for g in gt:
            g['_ignore'] = 1 if (g['ignore'] or (g['area'] < aRng[0] or g['area'] > aRng[1])) else 0
        gtind = np.argsort([g['_ignore'] for g in gt], kind='mergesort')
        gt = [gt[i] for i in gtind]
        dtind = np.argsort([-d['score'] for d in dt], kind='mergesort')
        dt = [dt[i] for i in dtind[0:maxDet]]
        iscrowd = [int(o['iscrowd']) for o in gt]
        ious = self.ious[imgId, catId]
        ious = ious[:, gtind] if len(ious) > 0 else ious
        T = len(p.iouThrs)
        G = len(gt)
        D = len(dt)
        gtm = np.zeros((T, G))
        dtm = np.zeros((T, D))
        gtIg = np.array([g['_ignore'] for g in gt])
        dtIg = np.zeros((T, D))
        if not len(ious) == 0:
            for tind, t in enumerate(p.iouThrs):
                for dind, d in enumerate(dt):
                    iou = min([t, 1 - 1e-10])
                    m = -1
                    for gind, g in enumerate(gt):
                        if gtm[tind, gind] > 0 and not iscrowd[gind]:
                            continue
                        if m > -1 and gtIg[m] == 0 and gtIg[gind] == 1:
                            break
                        if ious[dind, gind] < iou:
                            continue
                        iou = ious[dind, gind]
                        m = gind
                    if m == -1:
                        continue
                    dtIg[tind, dind] = gtIg[m]
                    dtm[tind, dind] = gt[m]['id']
                    gtm[tind, m] = d['id']
        a = np.array([d['area'] < aRng[0] or d['area'] > aRng[1] for d in dt]).reshape((1, len(dt)))
        dtIg = np.logical_or(dtIg, np.logical_and(dtm == 0, np.repeat(a, T, 0)))
        return {'dtMatches': dtm, 'dtScores': [d['score'] for d in dt], 'gtIgnore': gtIg, 'dtIgnore': dtIg}

    def evaluate(self):
        p = self.params
        self.ious = {(imgId, catId): self.computeIoU(imgId, catId) for imgId in p.imgIds for catId in p.catIds}
        maxDet = p.maxDets[-1]
        self.evalImgs = [self.evaluateImg(imgId, catId, areaRng, maxDet)
                         for catId in p.catIds for areaRng in p.areaRng for imgId in p.imgIds]

    def accumulate(self):
        p = self.params
        T = len(p.iouThrs)
        R = len(p.recThrs)
        K = len(p.catIds)
        A = len(p.areaRng)
        M = len(p.maxDets)
        precision = -np.ones((T, R, K, A, M))
        recall = -np.ones((T, K, A, M))
        I0 = len(p.imgIds)
        A0 = len(p.areaRng)
        for k in range(K):
            Nk = k * A0 * I0
            for a in range(A):
                Na = a * I0
                for m, maxDet in enumerate(p.maxDets):
                    E = [self.evalImgs[Nk + Na + i] for i in range(I0)]
                    E = [e for e in E if e is not None]
                    if len(E) == 0:
                        continue
                    dtScores = np.concatenate([np.asarray(e['dtScores'][0:maxDet], dtype=np.float64) for e in E])
                    inds = np.argsort(-dtScores, kind='mergesort')
                    dtm = np.concatenate([e['dtMatches'][:, 0:maxDet] for e in E], axis=1)[:, inds]
                    dtIg = np.concatenate([e['dtIgnore'][:, 0:maxDet] for e in E], axis=1)[:, inds]
                    gtIg = np.concatenate([e['gtIgnore'] for e in E])
                    npig = np.count_nonzero(gtIg == 0)
                    if npig == 0:
                        continue
                    tps = np.logical_and(dtm, np.logical_not(dtIg))
                    fps = np.logical_and(np.logical_not(dtm), np.logical_not(dtIg))
                    tp_sum = np.cumsum(tps, axis=1).astype(dtype=np.float64)
                    fp_sum = np.cumsum(fps, axis=1).astype(dtype=np.float64)
                    for t, (tp, fp) in enumerate(zip(tp_sum, fp_sum)):
                        tp = np.array(tp)
                        fp = np.array(fp)
                        nd = len(tp)
                        rc = tp / npig
                        pr = tp / (fp + tp + np.spacing(1))
                        q = np.zeros((R,))
                        recall[t, k, a, m] = rc[-1] if nd else 0
                        pr = pr.tolist()
                        q = q.tolist()
                        for i in range(nd - 1, 0, -1):
                            if pr[i] > pr[i - 1]:
                                pr[i - 1] = pr[i]
                        inds2 = np.searchsorted(rc, p.recThrs, side='left')
                        try:
                            for ri, pi in enumerate(inds2):
                                q[ri] = pr[pi]
                        except IndexError:
                            pass
                        precision[t, :, k, a, m] = np.array(q)
        self.eval = {'precision': precision, 'recall': recall}

    def _summarize(self, ap=1, iouThr=None, areaRng='all', maxDets=100, cat=None):
        p = self.params
        aind = [i for i, aRng in enumerate(p.areaRngLbl) if aRng == areaRng]
        mind = [i for i, mDet in enumerate(p.maxDets) if mDet == maxDets][:1]
        if ap == 1:
            s = self.eval['precision']
            if iouThr is not None:
                t = np.where(iouThr == p.iouThrs)[0]
                s = s[t]
            s = s[:, :, :, aind, mind]
            if cat is not None:
                s = s[:, :, cat]
        else:
            s = self.eval['recall']
            if iouThr is not None:
                t = np.where(iouThr == p.iouThrs)[0]
                s = s[t]
            s = s[:, :, aind, mind]
        if len(s[s > -1]) == 0:
            return -1.0
        return float(np.mean(s[s > -1]))

    def summarize(self):
        md = self.params.maxDets
        out = {
            'ap': self._summarize(1, maxDets=md[2]),
            'ap50': self._summarize(1, iouThr=.5, maxDets=md[2]),
            'ap75': self._summarize(1, iouThr=.75, maxDets=md[2]),
            'ap_small': self._summarize(1, areaRng='small', maxDets=md[2]),
            'ap_medium': self._summarize(1, areaRng='medium', maxDets=md[2]),
            'ap_large': self._summarize(1, areaRng='large', maxDets=md[2]),
            'ar1': self._summarize(0, maxDets=md[0]),
            'ar10': self._summarize(0, maxDets=md[1]),
            'ar100': self._summarize(0, maxDets=md[2]),
            'ar_small': self._summarize(0, areaRng='small', maxDets=md[2]),
            'ar_medium': self._summarize(0, areaRng='medium', maxDets=md[2]),
            'ar_large': self._summarize(0, areaRng='large', maxDets=md[2]),
        }
        out['per_category'] = [{'id': int(c), 'ap': self._summarize(1, maxDets=md[2], cat=[k]),
                                'ap50': self._summarize(1, iouThr=.5, maxDets=md[2], cat=[k])}
                               for k, c in enumerate(self.params.catIds)]
        return out


def load(d):
    with open(f"{d}/opts.txt") as f:
        max_dets, plus1 = (int(x) for x in f.read().split())
    with open(f"{d}/images.csv") as f:
        imgs = [int(line) for line in f if line.strip()]
    gts, dts = [], []
    with open(f"{d}/gt.csv") as f:
        for i, row in enumerate(csv.DictReader(f)):
            x1, y1, x2, y2 = (float(row[k]) for k in ('x1', 'y1', 'x2', 'y2'))
            w, h = x2 - x1 + plus1, y2 - y1 + plus1
            area = float(row['area'])
            gts.append({'id': i + 1, 'image_id': int(row['image']), 'category_id': int(row['category']),
                        'bbox': [x1, y1, w, h], 'area': area if area > 0 else w * h,
                        'iscrowd': int(row['iscrowd'])})
    with open(f"{d}/dets.csv") as f:
        for i, row in enumerate(csv.DictReader(f)):  # COCO.loadRes: area = w * h, ids from 1
            x1, y1, x2, y2 = (float(row[k]) for k in ('x1', 'y1', 'x2', 'y2'))
            w, h = x2 - x1 + plus1, y2 - y1 + plus1
            dts.append({'id': i + 1, 'image_id': int(row['image']), 'category_id': int(row['category']),
                        'bbox': [x1, y1, w, h], 'area': w * h, 'score': float(row['score']), 'iscrowd': 0})
    return imgs, gts, dts, max_dets


def main():
    d = sys.argv[1]
    imgs, gts, dts, max_dets = load(d)
    ev = Evaluator(gts, dts, imgs, max_dets)
    ev.evaluate()
    ev.accumulate()
    ref = ev.summarize()
    with open(f"{d}/result.json") as f:
        got = json.load(f)
    worst, fails = 0.0, []
    for k, v in ref.items():
        if k == 'per_category':
            continue
        diff = abs(v - got[k])
        worst = max(worst, diff)
        if diff > TOL:
            fails.append(f"{k}: C {got[k]!r} reference {v!r}")
    if [c['id'] for c in got['per_category']] != [c['id'] for c in ref['per_category']]:
        fails.append(f"categories: C {[c['id'] for c in got['per_category']]} "
                     f"reference {[c['id'] for c in ref['per_category']]}")
    else:
        for cg, cr in zip(got['per_category'], ref['per_category']):
            for k in ('ap', 'ap50'):
                diff = abs(cg[k] - cr[k])
                worst = max(worst, diff)
                if diff > TOL:
                    fails.append(f"category {cr['id']} {k}: C {cg[k]!r} reference {cr[k]!r}")
    if got['images'] != len(ev.params.imgIds):
        fails.append(f"images: C {got['images']} reference {len(ev.params.imgIds)}")
    print(f"cocoeval_reference dir:{d} max_dets:{max_dets} images:{len(ev.params.imgIds)} "
          f"ap:{ref['ap']:.6f} ap50:{ref['ap50']:.6f} ap75:{ref['ap75']:.6f} ar100:{ref['ar100']:.6f} "
          f"max_abs_diff:{worst:.3g}")
    for m in fails:
        print("MISMATCH " + m)
    sys.exit(1 if fails else 0)


if __name__ == '__main__':
    main()
