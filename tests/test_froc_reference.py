"""Independent FROC reference for the cross-check test: the 3DCE/MULAN walk written in plain
Python from the protocol, with the sensitivity read off the curve exactly as the reference repos
do it: np.interp semantics (MULAN with current scipy, "before_next") and old scipy interp1d
semantics (searchsorted left, "first_at"); levels beyond the last point take the last value.
Also COCO 101-point AP. Compares with DIR/c_results.csv written by test_froc_bench.
Usage: python3 test_froc_reference.py DIR [--require-separation]"""
import bisect
import csv
import sys
import time

LEVELS = [0.5, 1, 2, 4, 8, 16]


def iou(a, b, plus1):
    one = 1.0 if plus1 else 0.0
    iw = min(a[2], b[2]) - max(a[0], b[0]) + one
    ih = min(a[3], b[3]) - max(a[1], b[1]) + one
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    ua = (a[2] - a[0] + one) * (a[3] - a[1] + one) + (b[2] - b[0] + one) * (b[3] - b[1] + one) - inter
    return inter / ua


def interp_np(x, xp, fp):
    """numpy.interp for non-decreasing xp (duplicates: the last one wins)."""
    if x <= xp[0]:
        return fp[0] if x < xp[0] else fp[bisect.bisect_right(xp, x) - 1]
    if x >= xp[-1]:
        return fp[-1]
    j = bisect.bisect_right(xp, x) - 1
    if xp[j] == x:
        return fp[j]
    return fp[j] + (x - xp[j]) * (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])


def interp_old(x, xp, fp):
    """scipy interp1d (linear) of the 3DCE era: searchsorted left, clipped to [1, n-1]."""
    i = bisect.bisect_left(xp, x)
    i = min(max(i, 1), len(xp) - 1)
    lo, hi = i - 1, i
    return fp[lo] + (x - xp[lo]) * (fp[hi] - fp[lo]) / (xp[hi] - xp[lo])


def main():
    d = sys.argv[1]
    images = [row["File_name"] for row in csv.DictReader(open(f"{d}/images.csv"))]
    gts = {n: [] for n in images}
    for row in csv.DictReader(open(f"{d}/gt.csv")):
        gts[row["File_name"]].append([float(row[k]) for k in ("x1", "y1", "x2", "y2")])
    dets = []
    for idx, row in enumerate(csv.DictReader(open(f"{d}/dets.csv"))):
        if row["File_name"] in gts:
            dets.append((-float(row["score"]), row["File_name"], idx,
                         [float(row[k]) for k in ("x1", "y1", "x2", "y2")]))
    dets.sort(key=lambda t: (t[0], t[1], t[2]))
    n_img = len(images)
    n_gt = sum(len(v) for v in gts.values())
    want = {}
    t0, c0 = time.time(), time.process_time()
    for plus1 in (1, 0):
        hits = {n: [False] * len(v) for n, v in gts.items()}
        tp = fp = 0
        tps, fps = [], []
        for _, name, _, box in dets:
            ov = [iou(box, g, plus1) for g in gts[name]]
            if not ov or max(ov) < 0.5:
                fp += 1
            else:
                for j, o in enumerate(ov):
                    if o >= 0.5 and not hits[name][j]:
                        hits[name][j] = True
                        tp += 1
            tps.append(tp)
            fps.append(fp)
        sens = [t / n_gt for t in tps]
        fppi = [f / n_img for f in fps]
        # COCO AP, one-to-one per image
        matched = {n: [False] * len(v) for n, v in gts.items()}
        ctp = cfp = 0
        prec, rec = [], []
        for _, name, _, box in dets:
            best, bj = -1.0, -1
            for j, g in enumerate(gts[name]):
                if matched[name][j]:
                    continue
                o = iou(box, g, plus1)
                if o >= 0.5 and o > best:
                    best, bj = o, j
            if bj >= 0:
                matched[name][bj] = True
                ctp += 1
            else:
                cfp += 1
            prec.append(ctp / (ctp + cfp))
            rec.append(ctp / n_gt)
        for i in range(len(prec) - 2, -1, -1):
            prec[i] = max(prec[i], prec[i + 1])
        ap = 0.0
        for r in range(101):
            i = bisect.bisect_left(rec, r / 100.0)
            if i < len(rec):
                ap += prec[i]
        ap /= 101.0
        for rule, fn in (("before_next", interp_np), ("first_at", interp_old)):
            vals = [sens[-1] if lv > fppi[-1] else fn(lv, fppi, sens) for lv in LEVELS]
            want[(plus1, rule)] = vals + [sum(vals[:4]) / 4, ap]
    secs, cpu = time.time() - t0, time.process_time() - c0
    # the cohort must tell the conventions apart, or the comparison below proves little
    differs_rule = any(want[(p, "before_next")][:6] != want[(p, "first_at")][:6] for p in (0, 1))
    differs_iou = want[(1, "before_next")] != want[(0, "before_next")]
    if "--require-separation" in sys.argv and not (differs_rule and differs_iou):
        print(f"cohort does not separate the conventions (rule:{differs_rule} iou:{differs_iou})", file=sys.stderr)
        sys.exit(1)
    bad = 0
    maxdiff = 0.0
    for row in csv.DictReader(open(f"{d}/c_results.csv")):
        key = (int(row["iou_plus1"]), row["fp_rule"])
        got = [float(row[k]) for k in ("s0.5", "s1", "s2", "s4", "s8", "s16", "mfroc", "ap50")]
        for g, w in zip(got, want.pop(key)):
            maxdiff = max(maxdiff, abs(g - w))
            if abs(g - w) > 1e-9:
                bad += 1
                print(f"MISMATCH {key}: C {got} vs Python reference", file=sys.stderr)
                break
    if want:
        print(f"MISSING results for {list(want)}", file=sys.stderr)
        bad += 1
    print(f"reference images:{n_img} lesions:{n_gt} detections:{len(dets)} python_walk_s:{secs:.3f} python_walk_cpu_s:{cpu:.3f} "
          f"max_diff:{maxdiff:.3g}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
