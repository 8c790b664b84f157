"""ROC-AUC, average precision, the ROC curve and macro-F1 in plain NumPy, equal to scikit-learn's to
float rounding on binary 0/1 labels with both classes present and finite scores (where one class is
missing these give NaN; scikit-learn warns and gives NaN or 0).

Why not scikit-learn's own: each of its calls validates its inputs at length (about 2-20 ms on 2 cores),
and a bootstrap calls them thousands of times per table; these take tens of microseconds and check only
what would make them silently wrong (labels other than 0/1, non-finite scores). scikit-learn stays the
reference: ``tests/code/test_ranking.py`` checks equality on random and tied data.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def _binary(y, p) -> tuple[np.ndarray, np.ndarray]:
    """Labels as 0/1 integers and scores as one finite float vector, or a ValueError saying which is not."""
    y, p = np.asarray(y).ravel(), np.asarray(p, float).ravel()
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels for {len(p)} scores")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(p).all():
        raise ValueError("scores must be finite (a NaN or infinite score has no rank)")
    return y.astype(int), p


def roc_auc(y, p) -> float:
    """ROC-AUC as the Mann-Whitney statistic (ties count one half), as ``roc_auc_score``.

    Args:
        y: binary labels (0/1), length N.
        p: scores, length N (higher = more likely positive).

    Returns:
        The area as a float; NaN when ``y`` holds one class only.

    Raises:
        ValueError: labels other than 0/1, non-finite scores, or lengths that differ.
    """
    y, p = _binary(y, p)
    y = y.astype(bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y, p) -> float:
    """Average precision (the step-wise PR-AUC of ``average_precision_score``): the precision at
    each distinct score, weighted by the recall it adds.

    Args:
        y: binary labels (0/1), length N.
        p: scores, length N.

    Returns:
        The average precision as a float; NaN when ``y`` has no positive.

    Raises:
        ValueError: labels other than 0/1, non-finite scores, or lengths that differ.
    """
    y, p = _binary(y, p)
    if not y.any():
        return float("nan")
    tps, fps, _ = _counts_at_scores(y, p)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def macro_f1(y, pred, n_classes: int) -> float:
    """F1 averaged over all ``n_classes`` classes (0 for a class never true nor predicted), as
    ``f1_score(average="macro", labels=range(n_classes), zero_division=0)``.

    Args:
        y: integer true classes, length N, in ``[0, n_classes)``.
        pred: integer predicted classes, length N.
        n_classes: the number of classes K.

    Returns:
        The macro-F1 as a float.

    Raises:
        ValueError: a class outside ``[0, n_classes)`` or lengths that differ.
    """
    y, pred = np.asarray(y).astype(int).ravel(), np.asarray(pred).astype(int).ravel()
    if len(y) != len(pred) or not (np.isin(y, range(n_classes)).all() and np.isin(pred, range(n_classes)).all()):
        raise ValueError(f"macro_f1 takes equal-length class indices in [0, {n_classes})")
    tp = np.bincount(y[y == pred], minlength=n_classes)[:n_classes].astype(float)
    true = np.bincount(y, minlength=n_classes)[:n_classes]
    called = np.bincount(pred, minlength=n_classes)[:n_classes]
    denom = true + called
    f1 = np.divide(2 * tp, denom, out=np.zeros(n_classes), where=denom > 0)
    return float(f1.mean())


def _counts_at_scores(y, p):
    """True and false positives called at each distinct score, highest score first."""
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]    # the last case of each distinct score
    tps = np.cumsum(ys)[last].astype(float)
    return tps, (last + 1) - tps, ps[last]


def roc_curve(y, p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve as ``roc_curve(y, p)`` with its defaults (collinear points dropped, a first
    point at threshold +inf).

    Args:
        y: binary labels (0/1), length N, both classes present.
        p: scores, length N.

    Returns:
        ``(fpr, tpr, thresholds)`` arrays, thresholds decreasing.

    Raises:
        ValueError: labels other than 0/1, non-finite scores, lengths that differ, or one class only.
    """
    y, p = _binary(y, p)
    if y.min() == y.max():
        raise ValueError("an ROC curve needs both classes")
    tps, fps, thr = _counts_at_scores(y, p)
    if len(fps) > 2:
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        tps, fps, thr = tps[keep], fps[keep], thr[keep]
    tps, fps, thr = np.r_[0.0, tps], np.r_[0.0, fps], np.r_[np.inf, thr]
    return fps / fps[-1], tps / tps[-1], thr
