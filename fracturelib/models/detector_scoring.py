"""The detector scored the way the detection literature scores, on one split: COCO mAP and FROC on the
test images with bootstrap CIs, the box threshold ``predict`` uses (chosen on validation), and the best
box's score as an image-level fracture score beside a classifier and their fusion (fitted on validation).

Notebook 04 and ``scripts/detect_fracatlas.py`` call the same :func:`score_detections`; test boxes are read
here only, after training, and nothing is chosen on them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class DetectorScores:
    """What notebook 04 shows of a detector and records in its card.

    Attributes:
        table: test detection table (``map50``, ``map50_95``, ``sens@<rate>``, ``cpm``; value, CI, n).
        froc_iou: test FROC sensitivities with the IoU >= 0.3 hit rule instead of the box centre.
        curves: split -> FROC curve (centre rule) of ``val`` and ``test``.
        box_threshold: the lowest score whose validation false positives per image stay within the rate:
            the boxes ``predict`` shows (1.0, and ``operating_point["reachable"]`` False, when even the best
            validation box exceeds the rate: then ``predict`` shows almost none).
        operating_point: the validation sensitivity and false positives per image at ``box_threshold``, the
            rate asked for and whether it was reachable (stored in the card: what the threshold means).
        image_level: test ROC-AUC (DeLong CI) of the best box, the classifier and their fusion, each
            against the classifier; empty without a classifier.
        image_level_val: the same on validation (where the fusion is judged).
        fusion_preferred: whether the fused score beat the classifier's ROC-AUC on validation.
        fusion_coef: the fusion's logistic weights per score (on logits, rounded).
        fusion: when ``fusion_preferred``, what ``predict`` needs to decide with it (the detector's card
            keeps it): exact ``weights``, ``intercept`` and the ``threshold`` at the classifier's target
            sensitivity on validation; else None.
        outcomes: per test image at ``box_threshold``: hit, miss, false positive or true negative.
        expert, detections: split -> per image its expert boxes / detections (fractured images without
            expert boxes left out: nothing to find, and a box on them is no false positive).
        rows: split -> the positions (in the split's rows given) of the images scored, in order.
    """
    table: pd.DataFrame
    froc_iou: dict
    curves: dict
    box_threshold: float
    operating_point: dict
    image_level: pd.DataFrame
    image_level_val: pd.DataFrame
    fusion_preferred: bool
    fusion_coef: dict
    fusion: dict | None
    outcomes: list
    expert: dict
    detections: dict
    rows: dict

    def card_metrics(self) -> dict:
        """The test table as the card stores it: metric -> {value, ci_low, ci_high} (None, not NaN).

        Returns:
            A JSON-ready dict.
        """
        t = self.table[["value", "ci_low", "ci_high"]].astype(float).round(4)
        return {k: {c: (None if np.isnan(v) else float(v)) for c, v in row.items()} for k, row in t.iterrows()}

    def examples(self, kind: str, k: int = 6) -> tuple[list[int], list, list]:
        """Up to ``k`` test images of one outcome at the box threshold, for a gallery.

        Args:
            kind: ``hit``, ``miss``, ``false positive`` or ``true negative``.
            k: at most this many.

        Returns:
            (their positions among the test rows given to :func:`score_detections` / :func:`score_detector`,
            their expert boxes, their boxes scoring at least the threshold).
        """
        at = [i for i, o in enumerate(self.outcomes) if o == kind][:k]
        dets = [np.reshape(self.detections["test"][i], (-1, 5)) for i in at]
        return ([self.rows["test"][i] for i in at], [self.expert["test"][i] for i in at],
                [d[d[:, 4] >= self.box_threshold] for d in dets])

    def key_figures(self) -> dict:
        """The figures the report index shows: test mAP50, FROC sensitivity at 1 false positive per image,
        the best box's ROC-AUC (and the fused one) with the classifier's beside them.

        Returns:
            name -> rounded value (finite values only).
        """
        out = {"detector_map50": self.table.loc["map50", "value"],
               "detector_sens_at_1fp": self.table.loc["sens@1", "value"] if "sens@1" in self.table.index else np.nan,
               "detector_box_threshold": self.box_threshold}
        for name, key in (("best box", "detector_box_auc"), ("fused", "detector_fused_auc"),
                          ("classifier", "classifier_auc")):
            if name in self.image_level.index:
                out[key] = self.image_level.loc[name, "auc"]
        return {k: round(float(v), 4) for k, v in out.items() if np.isfinite(v)}


def score_detections(detections: dict, expert: dict, labels: dict, classifier: dict | None = None,
                     n_boot: int = 1000, seed: int = 0, box_fp_rate: float = 0.5,
                     target_sensitivity: float = 0.9) -> DetectorScores:
    """Score validation and test detections (see the module's docstring).

    Args:
        detections: ``{"val": [...], "test": [...]}``, per image its (n, 5) boxes ``x0, y0, x1, y1, score``.
        expert: the same splits, per image its expert boxes ``[x, y, w, h]`` (empty: no fracture).
        labels: the same splits, per image 1 if fractured. A fractured image without expert boxes is left
            out of the detection scores (FROC would count a box on it as a false positive) and kept in the
            image-level ones.
        classifier: the same splits, a classifier's p(fractured) per image; None: no image-level comparison.
        n_boot: bootstrap resamples of the test CIs.
        seed: bootstrap seed.
        box_fp_rate: false positives per validation image allowed at ``predict``'s box threshold.
        target_sensitivity: the validation sensitivity the fused decision's threshold keeps (the classifier
            card's, so the fused decision is chosen by the same rule).

    Returns:
        A :class:`DetectorScores`.
    """
    from fracturelib.metrics import detection
    from fracturelib.metrics.evaluate import threshold_for_sensitivity
    from fracturelib.models.box_decode import image_scores
    keep = {s: [i for i, (g, y) in enumerate(zip(expert[s], labels[s])) if len(g) or not y] for s in ("val", "test")}
    gt = {s: [expert[s][i] for i in keep[s]] for s in keep}
    dt = {s: [detections[s][i] for i in keep[s]] for s in keep}
    curves = {s: detection.froc_curve(gt[s], dt[s]) for s in ("val", "test")}
    reach = detection.threshold_at_fp(curves["val"], box_fp_rate)
    thr = min(1.0, reach)
    at = curves["val"][curves["val"]["threshold"] >= thr]
    point = {"box_fp_rate": box_fp_rate, "reachable": bool(np.isfinite(reach)),
             "val_sensitivity": float(at["sensitivity"].max()) if len(at) else 0.0,
             "val_fp_per_image": float(at["fp_per_image"].max()) if len(at) else 0.0}
    table = detection.detection_report(gt["test"], dt["test"], n_boot=n_boot, seed=seed)
    froc_iou = detection.froc(gt["test"], dt["test"], hit="iou")
    levels, preferred, coef, fusion = {}, False, {}, None
    if classifier is not None:
        box = {s: image_scores(detections[s]) for s in ("val", "test")}
        y = {s: np.asarray(labels[s], int) for s in ("val", "test")}
        fuse = detection.fit_fusion(y["val"], {"best box": box["val"], "classifier": classifier["val"]})
        for s in ("val", "test"):
            scores = {"classifier": np.asarray(classifier[s], float), "best box": box[s]}
            scores["fused"] = fuse(scores)
            levels[s] = detection.image_level_table(y[s], scores, "classifier")
        coef = {k: float(v) for k, v in fuse.coef.items()}
        # kept only when it wins on validation *because of the boxes*: a negative box weight (boxes counting
        # against a fracture) is noise the fit found, not a reading anyone could defend
        preferred = bool(levels["val"].loc["fused", "auc"] > levels["val"].loc["classifier", "auc"]
                         and coef["best box"] > 0)
        if preferred:
            val_fused = fuse({"classifier": classifier["val"], "best box": box["val"]})
            fusion = {"weights": fuse.weights, "intercept": fuse.intercept, "target_sensitivity": target_sensitivity,
                      "threshold": threshold_for_sensitivity(y["val"], val_fused, target_sensitivity),
                      "val_auc": float(levels["val"].loc["fused", "auc"]),
                      "classifier_val_auc": float(levels["val"].loc["classifier", "auc"])}
    empty = pd.DataFrame(columns=["auc", "ci_low", "ci_high", "delta_vs_ref", "p_vs_ref"])
    return DetectorScores(table, froc_iou, curves, thr, point, levels.get("test", empty), levels.get("val", empty),
                          preferred, coef, fusion, detection.outcome_per_image(gt["test"], dt["test"], thr), gt, dt,
                          keep)


def score_detector(detector, split_rows: pd.DataFrame, boxes: dict, classifier=None, n_boot: int = 1000,
                   seed: int = 0, box_fp_rate: float = 0.5, batch_size: int = 16,
                   val_detections: dict | None = None) -> DetectorScores:
    """:func:`score_detections` of a trained detector on a split's validation and test images.

    Args:
        detector: the Keras (or LiteRT) detector :func:`fracturelib.models.centernet.build` returned.
        split_rows: the manifest with a ``split`` column (notebook 02's split, ``split_from_card``).
        boxes: ``data.fracatlas.load_boxes(data_dir)``.
        classifier: ``(model, card)`` of a binary classifier to compare and fuse with, or None.
        n_boot: bootstrap resamples of the test CIs.
        seed: bootstrap seed.
        box_fp_rate: false positives per validation image allowed at the box threshold.
        batch_size: images per forward pass.
        val_detections: the boxes training already decoded on the validation images, by ``relpath``
            (``centernet.fit_on_split(...)[1].val_detections``: from the cached float16 features, scores
            within ~1e-3 of the float32 model's); None: the detector runs on them here.

    Returns:
        A :class:`DetectorScores`.

    Raises:
        ValueError: if ``val_detections`` lacks one of the split's validation images.
    """
    from fracturelib.config import BINARY_CLASSES
    from fracturelib.data.pipeline import load_images
    from fracturelib.models.box_decode import detect
    from fracturelib.models.localiser import boxes_of
    _, size, _, channels = detector.input_shape
    parts = {s: split_rows[split_rows["split"] == s] for s in ("val", "test")}
    dets, expert, labels, clf = {}, {}, {}, {}
    missing = [] if val_detections is None else [p for p in parts["val"]["relpath"] if p not in val_detections]
    if missing:
        raise ValueError(f"no validation detections for {missing[0]} ({len(missing)} of {len(parts['val'])} "
                         "validation images): pass the result of training on this very split")
    for s, r in parts.items():
        dets[s] = ([val_detections[p] for p in r["relpath"]] if s == "val" and val_detections is not None else
                   detect(detector, load_images(r, size, channels), list(zip(r["width"], r["height"])),
                          batch_size=batch_size))
        expert[s] = boxes_of(r, boxes)
        labels[s] = (r["label"] == BINARY_CLASSES[1]).to_numpy(int)
        if classifier is not None:
            from fracturelib.models.scoring import predict_proba
            model, card = classifier
            p = predict_proba(model, r, card.classes, card.image_size, card.channels, tta_flip=card.tta_flip)
            clf[s] = np.asarray(p, float).reshape(len(r), -1)[:, -1]
    target = (classifier[1].target_sensitivity if classifier is not None else None) or 0.9
    return score_detections(dets, expert, labels, clf if classifier is not None else None, n_boot, seed,
                            box_fp_rate, target)
