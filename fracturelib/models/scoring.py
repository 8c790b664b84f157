"""A transfer model's scores over a manifest slice: probabilities (with optional flip averaging),
pooled frozen features, the Test part with its honest mask, the choice of test-time flip averaging on
validation, and a phase-1 comparison of backbones."""
from __future__ import annotations

import numpy as np

from fracturelib import config
from fracturelib.models import feature_cache
from fracturelib.models.backbones import FRACATLAS_BACKBONE, WeightsUnavailable
from fracturelib.models.recipe import linear_probe, two_phase
from fracturelib.models.transfer import backbone_of, build_transfer_model, features_model, mirror


def predict_proba(model, rows, classes, image_size: int, channels: int = 3, batch_size: int = 32,
                  tta_flip: bool = False):
    """Model scores for every row of a manifest slice; with ``tta_flip`` the mean of the scores
    of each image and its mirror image (test-time augmentation).

    Args:
        model: a trained classifier.
        rows: manifest slice of images to score.
        classes: class names in label order.
        image_size, channels: the model input.
        batch_size: images per batch.
        tta_flip: average with the scores of the left-right mirrored images.

    Returns:
        Array of shape (N,) (positive-class probability, binary) or (N, K) class probabilities.
    """
    from fracturelib.data.pipeline import make_dataset
    from fracturelib.models.train import predict
    ds = make_dataset(rows, classes, image_size, channels, batch_size, with_labels=False, cache=False)
    p = predict(model, ds)
    return (p + predict(model, ds.map(mirror))) / 2 if tta_flip else p


def pooled_features(model, rows, image_size: int, channels: int = 3, batch_size: int = 32) -> np.ndarray:
    """Frozen backbone features, globally average-pooled: one vector per row (no augmentation;
    computed once per process for the same model and images, :mod:`fracturelib.models.feature_cache`).

    Args:
        model: a transfer model.
        rows: manifest slice of images.
        image_size, channels: the model input.
        batch_size: images per batch.

    Returns:
        float32 array of shape (N, C), C the backbone's channel count ((0, C) for no rows).
    """
    return feature_cache.pooled(features_model(model), rows, image_size, channels, batch_size)[0]


def test_scores(model, test_rows, classes, image_size: int, channels: int = 3, batch_size: int = 32,
                tta_flip: bool = False):
    """Integer labels, class probabilities and the honest mask (no copy in Train) of a Test part.

    Args:
        model: a trained classifier.
        test_rows: the Test manifest slice, with ``label`` and ``leak`` columns.
        classes: class names in label order.
        image_size, channels: the model input.
        batch_size: images per batch.
        tta_flip: average with the scores of mirrored images.

    Returns:
        ``(y, proba, honest)``: labels (N,), scores as :func:`predict_proba`, and a boolean mask (N,)
        that is True where the image has no copy in Train.
    """
    proba = predict_proba(model, test_rows, classes, image_size, channels, batch_size, tta_flip)
    y = np.array([list(classes).index(c) for c in test_rows["label"]])
    return y, proba, ~test_rows["leak"].to_numpy(bool)


def compare_backbones(configs: str, parts: dict, classes, image_size: int, channels: int = 3,
                      phase1_epochs: int = 40, lr_head: float = 1e-3, batch_size: int = 32,
                      class_weight: dict | None = None, patience: int = 6, seed: int = config.SEED):
    """Phase 1 only (frozen backbone) for each ``"backbone:weights"`` in a comma-separated
    ``configs`` string, on the same split, plus a linear-probe row for each: honest and all-Test
    accuracy. A configuration whose weights cannot be had is a row with the reason.

    Args:
        configs: e.g. ``"efficientnet_lite0:imagenet,mobilenet_v2:none"`` (weights default ``imagenet``).
        parts: ``{"train": rows, "val": rows, "test": rows}`` manifest slices.
        classes: class names in label order.
        image_size, channels: the model input.
        phase1_epochs, lr_head, batch_size, class_weight, patience, seed: as for :func:`two_phase`.

    Returns:
        A pandas DataFrame, one row per (configuration, classifier).
    """
    import time

    import pandas as pd

    from fracturelib.data.pipeline import labels_for
    from fracturelib.metrics import evaluate
    rows = []
    for item in [c.strip() for c in configs.split(",") if c.strip()]:
        bb, w = (item.split(":") + ["imagenet"])[:2]
        alpha = FRACATLAS_BACKBONE["alpha"] if w == "fracatlas" else 1.0
        try:
            m, desc = build_transfer_model(len(classes), bb, image_size, channels, w, alpha=alpha)
        except (WeightsUnavailable, ValueError, ImportError) as e:
            rows.append({"backbone": bb, "weights": w, "classifier": "-", "note": str(e)[:160]})
            continue
        t = time.perf_counter()
        r = two_phase(m, parts["train"], parts["val"], classes, image_size, channels, phase1_epochs, 0,
                      lr_head=lr_head, batch_size=batch_size, class_weight=class_weight,
                      patience=patience, seed=seed, verbose=0)
        yt, pt, keep = test_scores(m, parts["test"], classes, image_size, channels, batch_size)
        t_head = time.perf_counter() - t
        t = time.perf_counter()
        probe = linear_probe(r["pooled"]["train"], labels_for(parts["train"], classes))
        pp = probe.predict_proba(pooled_features(m, parts["test"], image_size, channels, batch_size))
        t_probe = time.perf_counter() - t
        for name, p, secs in (("linear probe (logistic regression)", pp, t_probe),
                              ("Keras head, phase 1", pt, t_head)):
            h, a = evaluate.multiclass_metrics(yt[keep], p[keep]), evaluate.multiclass_metrics(yt, p)
            rows.append({"backbone": backbone_of(m),
                         "weights": desc, "classifier": name,
                         "honest acc": round(h["accuracy"], 3), "honest macro-F1": round(h["macro_f1"], 3),
                         "all-test acc": round(a["accuracy"], 3),
                         "features img/s": round(r["features_img_per_s"], 1), "seconds": round(secs, 1)})
    return pd.DataFrame(rows)


def choose_tta_flip(model, val_rows, classes, image_size: int, channels: int = 3, batch_size: int = 32) -> dict:
    """Decide test-time flip averaging on validation (never on Test): kept only when it raises
    validation accuracy. Returns both accuracies and the decision.

    Args:
        model: a trained multiclass classifier.
        val_rows: the validation manifest slice, with a ``label`` column.
        classes: class names in label order.
        image_size, channels: the model input.
        batch_size: images per batch.

    Returns:
        Dict: ``val_accuracy`` and ``val_accuracy_flip`` (floats), and ``tta_flip`` (bool).
    """
    y = np.array([list(classes).index(c) for c in val_rows["label"]])
    acc = {}
    for flip in (False, True):
        p = predict_proba(model, val_rows, classes, image_size, channels, batch_size, flip)
        acc[flip] = float((p.argmax(1) == y).mean())
    return {"val_accuracy": acc[False], "val_accuracy_flip": acc[True], "tta_flip": acc[True] > acc[False]}
