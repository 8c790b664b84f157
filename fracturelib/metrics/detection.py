"""Detection scores as the literature reports them: COCO mAP (pycocotools), FROC, bootstrap CIs, and
an image-level score fused from a detector and a classifier.

Boxes: expert (ground-truth) boxes are COCO ``[x, y, w, h]``; detections are ``[x0, y0, x1, y1, score]``
(``models.box_decode.decode``), both in the image's own pixels.

FROC hit rule (stated once, used everywhere): a detection is a **hit when its box centre lies inside
an expert box** of the same image (the lesion-detection convention, e.g. LUNA16's "centre within the
nodule"); each expert box counts once (further detections on an already found fracture are neither
hits nor false positives), every other detection is a false positive. ``hit="iou"`` instead requires
IoU >= 0.3 with a not yet found expert box.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd

#: FROC's false-positive rates per image (the lesion-detection standard)
FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)


def _coco(gt_boxes, dets, iou_thresholds=None):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    images, anns, res = [], [], []
    for i, (g, d) in enumerate(zip(gt_boxes, dets), start=1):
        images.append({"id": i, "width": 1, "height": 1})
        anns += [{"id": len(anns) + j, "image_id": i, "category_id": 1, "bbox": [float(v) for v in b],
                  "area": float(b[2] * b[3]), "iscrowd": 0} for j, b in enumerate(g, start=1)]
        res += [{"image_id": i, "category_id": 1, "score": float(s),
                 "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]}
                for x0, y0, x1, y1, s in np.reshape(d, (-1, 5))]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "fracture"}]}
        gt.createIndex()
        dt = gt.loadRes(res) if res else COCO()
        ev = COCOeval(gt, dt, "bbox")
        if iou_thresholds is not None:
            ev.params.iouThrs = np.asarray(iou_thresholds, float)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def coco_map(gt_boxes, dets) -> dict:
    """COCO box AP of one class, computed by pycocotools (101-point interpolation, up to 100 boxes
    per image, all areas).

    Args:
        gt_boxes: per image, its expert boxes ``[x, y, w, h]``.
        dets: per image, its detections (n, 5) ``x0, y0, x1, y1, score``.

    Returns:
        ``{"map50": AP at IoU 0.5, "map50_95": AP averaged over IoU 0.50:0.05:0.95}``; 0.0 (not -1)
        when there are no detections at all.
    """
    if not sum(len(np.reshape(d, (-1, 5))) for d in dets):
        return {"map50": 0.0, "map50_95": 0.0}
    st = _coco(gt_boxes, dets).stats
    return {"map50": max(0.0, float(st[1])), "map50_95": max(0.0, float(st[0]))}


IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def _matches(g, d, max_dets: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """One image's detections as COCOeval sees them: scores of its top ``max_dets`` (stable sort by
    score) and, per IoU threshold, whether each is matched greedily to a free expert box."""
    d = np.reshape(d, (-1, 5))
    d = d[np.argsort(-d[:, 4], kind="mergesort")][:max_dets]
    tp = np.zeros((len(IOU_THRESHOLDS), len(d)), bool)
    if len(g) and len(d):
        ious = np.stack([_iou(b, g) for b in d])               # (dets, gts)
        for t, thr in enumerate(IOU_THRESHOLDS):
            free = np.ones(len(g), bool)
            for k in range(len(d)):
                cand = np.where(free & (ious[k] >= min(thr, 1 - 1e-10)), ious[k], -1.0)
                if cand.max() >= 0:
                    j = int(np.argmax(cand[::-1]))              # COCOeval keeps the last of equal IoUs
                    j = len(g) - 1 - j
                    free[j], tp[t, k] = False, True
    return d[:, 4], tp


def _ap_from_matches(per_image, n_gt: int) -> dict:
    """COCOeval's accumulate for one class, all areas: 101-point interpolated AP per IoU threshold."""
    if not n_gt:
        return {"map50": 0.0, "map50_95": 0.0}
    scores = np.concatenate([s for s, _ in per_image]) if per_image else np.zeros(0)
    if not len(scores):
        return {"map50": 0.0, "map50_95": 0.0}
    tp = np.concatenate([m for _, m in per_image], axis=1)[:, np.argsort(-scores, kind="mergesort")]
    rec_thrs = np.linspace(0, 1, 101)
    aps = []
    for row in tp:
        tps, fps = np.cumsum(row), np.cumsum(~row)
        rc, pr = tps / n_gt, tps / (fps + tps + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]
        inds = np.searchsorted(rc, rec_thrs, side="left")
        aps.append(np.where(inds < len(pr), pr[np.minimum(inds, len(pr) - 1)], 0.0).mean())
    return {"map50": float(aps[0]), "map50_95": float(np.mean(aps))}


def fast_map(gt_boxes, dets) -> dict:
    """:func:`coco_map` without pycocotools (the same greedy matching and 101-point AP, checked against
    it in the tests): fast enough to bootstrap, since each image's matches do not depend on the others.

    Args:
        gt_boxes: per image, its expert boxes ``[x, y, w, h]``.
        dets: per image, its detections (n, 5).

    Returns:
        ``{"map50": ..., "map50_95": ...}``.
    """
    return _ap_from_matches([_matches(g, d) for g, d in zip(gt_boxes, dets)], sum(len(g) for g in gt_boxes))


def _iou(box, gts) -> np.ndarray:
    g = np.asarray(gts, float).reshape(-1, 4)
    gx1, gy1 = g[:, 0] + g[:, 2], g[:, 1] + g[:, 3]
    iw = np.clip(np.minimum(box[2], gx1) - np.maximum(box[0], g[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], gy1) - np.maximum(box[1], g[:, 1]), 0, None)
    inter = iw * ih
    return inter / ((box[2] - box[0]) * (box[3] - box[1]) + g[:, 2] * g[:, 3] - inter + 1e-12)


def _hits(box, gts, hit: str, min_iou: float) -> np.ndarray:
    g = np.asarray(gts, float).reshape(-1, 4)
    if hit == "centre":
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        return (cx >= g[:, 0]) & (cx <= g[:, 0] + g[:, 2]) & (cy >= g[:, 1]) & (cy <= g[:, 1] + g[:, 3])
    return _iou(box, g) >= min_iou


def froc_curve(gt_boxes, dets, hit: str = "centre", min_iou: float = 0.3) -> pd.DataFrame:
    """The FROC curve over all images (those without fractures included: their detections are all
    false positives), one row per distinct score threshold.

    Args:
        gt_boxes: per image, its expert boxes ``[x, y, w, h]`` (empty for a non-fractured image).
        dets: per image, its detections (n, 5) ``x0, y0, x1, y1, score``.
        hit: ``"centre"`` (the box centre inside an expert box) or ``"iou"`` (IoU >= ``min_iou``).
        min_iou: the IoU a hit needs when ``hit="iou"``.

    Returns:
        DataFrame with columns ``threshold``, ``fp_per_image``, ``sensitivity`` (found expert boxes
        over all expert boxes), by decreasing threshold.

    Raises:
        ValueError: an unknown ``hit`` rule.
    """
    if hit not in ("centre", "iou"):
        raise ValueError(f"hit {hit!r}: 'centre' or 'iou'")
    return _curve([_events(g, d, hit, min_iou) for g, d in zip(gt_boxes, dets)], len(gt_boxes),
                  sum(len(g) for g in gt_boxes))


def _events(g, d, hit: str, min_iou: float) -> np.ndarray:
    """One image's detections as (score, hit, false positive), duplicates on a found fracture left out."""
    d = np.reshape(d, (-1, 5))
    found, events = np.zeros(len(g), bool), []
    for box in d[np.argsort(-d[:, 4], kind="stable")]:
        m = _hits(box, g, hit, min_iou) if len(g) else np.zeros(0, bool)
        if (m & ~found).any():
            found[np.flatnonzero(m & ~found)[0]] = True
            events.append((box[4], 1, 0))
        elif not m.any():
            events.append((box[4], 0, 1))
    return np.asarray(events, float).reshape(-1, 3)


def _curve(events_per_image, n_images: int, n_lesions: int) -> pd.DataFrame:
    ev = np.concatenate([np.reshape(np.asarray(e, float), (-1, 3)) for e in events_per_image] or [np.zeros((0, 3))])
    if not len(ev):
        return pd.DataFrame({"threshold": [np.inf], "fp_per_image": [0.0], "sensitivity": [0.0]})
    ev = ev[np.argsort(-ev[:, 0], kind="stable")]
    last = np.r_[ev[1:, 0] != ev[:-1, 0], True]                # one row per distinct score, ties together
    return pd.DataFrame({"threshold": ev[last, 0],
                         "fp_per_image": np.cumsum(ev[:, 2])[last] / max(n_images, 1),
                         "sensitivity": np.cumsum(ev[:, 1])[last] / max(n_lesions, 1)})


def _at_rates(curve: pd.DataFrame, fp_rates) -> dict:
    out = {}
    for r in fp_rates:
        ok = curve["fp_per_image"] <= r + 1e-12
        out[f"sens@{r:g}"] = float(curve.loc[ok, "sensitivity"].max()) if ok.any() else 0.0
    out["cpm"] = float(np.mean(list(out.values())))
    return out


def froc(gt_boxes, dets, fp_rates=FP_RATES, hit: str = "centre", min_iou: float = 0.3) -> dict:
    """Sensitivity at each false-positive rate per image: the best sensitivity of any threshold whose
    false positives per image do not exceed the rate; plus their mean (the CPM of LUNA16).

    Args:
        gt_boxes: per image, its expert boxes ``[x, y, w, h]``.
        dets: per image, its detections (n, 5).
        fp_rates: the false-positive rates per image.
        hit: the hit rule (see :func:`froc_curve`).
        min_iou: the IoU a hit needs when ``hit="iou"``.

    Returns:
        ``{"sens@<rate>": sensitivity, ..., "cpm": their mean}``.
    """
    return _at_rates(froc_curve(gt_boxes, dets, hit, min_iou), fp_rates)


def detection_report(gt_boxes, dets, n_boot: int = 1000, seed: int = 0, fp_rates=FP_RATES,
                     hit: str = "centre", level: float = 0.95) -> pd.DataFrame:
    """mAP50 and mAP50-95 (COCO, on the images with expert boxes, as the published figures) and FROC
    sensitivities (over all images), each with a bootstrap CI: images resampled, stratified by
    whether they hold a fracture (``evaluate.bootstrap``). The value is pycocotools'; the resamples
    use :func:`fast_map`, its exact re-implementation.

    Args:
        gt_boxes: per image, its expert boxes ``[x, y, w, h]`` (empty: no fracture).
        dets: per image, its detections (n, 5).
        n_boot: bootstrap resamples (0: no CI).
        seed: seed of the bootstrap.
        fp_rates: FROC's false-positive rates per image.
        hit: FROC's hit rule (see :func:`froc_curve`).
        level: confidence level.

    Returns:
        DataFrame indexed by metric (``map50``, ``map50_95``, ``sens@<rate>``, ``cpm``) with columns
        ``value``, ``ci_low``, ``ci_high`` and ``n`` (images the metric is computed on).
    """
    from fracturelib.metrics.evaluate import bootstrap
    has = np.array([len(g) > 0 for g in gt_boxes])

    froc_curve(gt_boxes[:1], dets[:1], hit)                    # checks the hit rule
    events = [_events(g, d, hit, 0.3) for g, d in zip(gt_boxes, dets)]   # per image: fixed under resampling
    matches = [_matches(g, d) if len(g) else None for g, d in zip(gt_boxes, dets)]

    def fn(_, idx):
        pos = [i for i in idx if has[i]]
        curve = _curve([events[i] for i in idx], len(idx), sum(len(gt_boxes[i]) for i in idx))
        return {**_ap_from_matches([matches[i] for i in pos], sum(len(gt_boxes[i]) for i in pos)),
                **_at_rates(curve, fp_rates)}

    every = np.arange(len(gt_boxes))
    point = {**coco_map([gt_boxes[i] for i in every if has[i]], [dets[i] for i in every if has[i]]),
             **_at_rates(_curve(events, len(events), sum(map(len, gt_boxes))), fp_rates)}
    a = (1 - level) / 2
    boot = bootstrap(has.astype(int), np.arange(len(gt_boxes)), fn, n_boot, seed) if n_boot else None
    rows = {k: {"value": v,
                "ci_low": float(boot[k].quantile(a)) if boot is not None else np.nan,
                "ci_high": float(boot[k].quantile(1 - a)) if boot is not None else np.nan,
                "n": int(has.sum()) if k.startswith("map") else len(gt_boxes)} for k, v in point.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit_fusion(y_val, scores_val: dict):
    """A logistic regression on the logits of several image-level scores, fitted on validation.

    Args:
        y_val: validation labels (0/1).
        scores_val: name -> validation scores in [0, 1] (e.g. ``{"box": ..., "transfer": ...}``).

    Returns:
        ``fuse(scores: dict) -> probabilities``: applies the fitted model to scores with the same names;
        its ``weights`` (name -> weight on the logit), ``intercept`` and ``coef`` (weights rounded, to show).
    """
    from sklearn.linear_model import LogisticRegression
    names = list(scores_val)
    lr = LogisticRegression(C=1.0, max_iter=1000).fit(np.column_stack([_logit(scores_val[n]) for n in names]), y_val)
    weights, intercept = dict(zip(names, map(float, lr.coef_[0]))), float(lr.intercept_[0])

    def fuse(scores: dict) -> np.ndarray:
        return fused_probability(weights, intercept, scores)
    fuse.weights, fuse.intercept = weights, intercept
    fuse.coef = {k: round(v, 3) for k, v in weights.items()}
    return fuse


def fused_probability(weights: dict, intercept: float, scores: dict) -> np.ndarray:
    """The fused probability: the logistic of ``intercept`` + the weighted logits of the scores (what
    :func:`fit_fusion` fits; ``predict`` applies it from the detector's card).

    Args:
        weights: name -> weight on that score's logit.
        intercept: the intercept.
        scores: name -> scores in [0, 1] (arrays or floats; clipped to [1e-6, 1 - 1e-6] before the logit).

    Returns:
        float array of probabilities.
    """
    z = intercept + sum(w * _logit(scores[n]) for n, w in weights.items())
    return 1 / (1 + np.exp(-np.asarray(z, float)))


def image_level_table(y, scores: dict, reference: str, level: float = 0.95) -> pd.DataFrame:
    """ROC-AUC with DeLong CIs of each image-level score, and DeLong's paired test against ``reference``.

    Args:
        y: labels (0/1).
        scores: name -> scores on the same images.
        reference: the name the others are compared with (e.g. the transfer classifier).
        level: confidence level of the CIs.

    Returns:
        DataFrame indexed by score name: ``auc``, ``ci_low``, ``ci_high``, ``delta_vs_ref``, ``p_vs_ref``.
    """
    from fracturelib.metrics import delong
    rows = {}
    for name, s in scores.items():
        ci = delong.auc_ci(y, s, level)
        row = {"auc": ci["value"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"],
               "delta_vs_ref": np.nan, "p_vs_ref": np.nan}
        if name != reference:
            t = delong.paired_test(y, scores[reference], s)
            row.update(delta_vs_ref=t["difference"], p_vs_ref=t["p_value"])
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def published_anchors() -> pd.DataFrame:
    """Published FracAtlas detection scores and their protocols (not our split: context, not a contest).

    Returns:
        DataFrame indexed by model with ``map50``, ``map50_95`` and ``protocol``.
    """
    return pd.DataFrame.from_dict({
        "YOLOv8s (FracAtlas authors)": {"map50": 0.562, "map50_95": 0.276,
                                        "protocol": "authors' split, 82-image validation set, 600 px"},
        "FracDet-v11 (Sci Rep 2026)": {"map50": 0.479, "map50_95": np.nan,
                                       "protocol": "retrained on one test split"},
    }, orient="index")


def threshold_at_fp(curve: pd.DataFrame, rate: float) -> float:
    """The lowest score threshold whose false positives per image stay within ``rate`` (e.g. chosen on
    validation for ``predict``'s boxes).

    Args:
        curve: a :func:`froc_curve` table.
        rate: false positives per image allowed.

    Returns:
        The threshold (``inf`` when even the best detection exceeds the rate).
    """
    ok = curve[curve["fp_per_image"] <= rate + 1e-12]
    return float(ok["threshold"].min()) if len(ok) else float("inf")


def outcome_per_image(gt_boxes, dets, threshold: float, hit: str = "centre") -> list[str]:
    """Each image's outcome at a score threshold: ``hit`` (a fracture found), ``miss`` (fractures, none
    found), ``false positive`` (no fracture, a box) or ``true negative``.

    Args:
        gt_boxes: per image its expert boxes ``[x, y, w, h]``.
        dets: per image its detections (n, 5).
        threshold: boxes scoring at least this count.
        hit: the hit rule (see :func:`froc_curve`).

    Returns:
        One label per image.
    """
    out = []
    for g, d in zip(gt_boxes, dets):
        d = np.reshape(d, (-1, 5))
        d = d[d[:, 4] >= threshold]
        if len(g):
            out.append("hit" if any(_hits(b, g, hit, 0.3).any() for b in d) else "miss")
        else:
            out.append("false positive" if len(d) else "true negative")
    return out
