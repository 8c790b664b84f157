"""Metrics with 95% bootstrap confidence intervals, and threshold choice on validation data."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm


def _binary_at(y, p, thr):
    pred = (p >= thr).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return {"accuracy": (tp + tn) / len(y), "precision": prec, "recall": rec,
            "specificity": tn / (tn + fp) if tn + fp else 0.0,
            "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0}


def binary_metrics(y, p, threshold: float = 0.5) -> dict:
    """ROC-AUC, PR-AUC (average precision), accuracy, precision, recall (sensitivity),
    specificity and F1 at ``threshold``."""
    y, p = np.asarray(y).astype(int), np.asarray(p, float)
    two = len(np.unique(y)) == 2
    out = {"roc_auc": skm.roc_auc_score(y, p) if two else np.nan,
           "pr_auc": skm.average_precision_score(y, p) if two else np.nan}
    out.update(_binary_at(y, p, threshold))
    return out


def bootstrap(y, p, fn, n_boot: int = 1000, seed: int = 0, stratified: bool = True) -> np.ndarray:
    """``fn(y, p) -> dict`` on ``n_boot`` resamples (stratified by class): array of dicts' values."""
    y, p = np.asarray(y), np.asarray(p)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratified else [np.arange(len(y))]
    rows = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(g, len(g), replace=True) for g in groups])
        rows.append(fn(y[idx], p[idx]))
    return pd.DataFrame(rows)


def with_ci(y, p, fn, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Table of metric, value, ci_low, ci_high (percentile bootstrap)."""
    point = fn(np.asarray(y), np.asarray(p))
    boot = bootstrap(y, p, fn, n_boot, seed)
    a = (1 - level) / 2
    return pd.DataFrame({"metric": list(point), "value": list(point.values()),
                         "ci_low": [boot[k].quantile(a) for k in point],
                         "ci_high": [boot[k].quantile(1 - a) for k in point]}).set_index("metric")


def binary_report(y, p, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    return with_ci(y, p, lambda a, b: binary_metrics(a, b, threshold), n_boot, seed)


def threshold_for_sensitivity(y, p, target: float = 0.90) -> float:
    """Highest threshold whose sensitivity on (validation) data is at least ``target``."""
    y, p = np.asarray(y).astype(int), np.asarray(p, float)
    pos = np.sort(p[y == 1])[::-1]
    if len(pos) == 0:
        raise ValueError("no positive examples: cannot choose a threshold for sensitivity")
    k = int(np.ceil(target * len(pos)))
    return float(pos[max(k, 1) - 1])


def format_ci(row) -> str:
    return f"{row['value']:.3f} (95% CI {row['ci_low']:.3f}-{row['ci_high']:.3f})"


def multiclass_metrics(y, proba) -> dict:
    """Accuracy, macro-F1 and top-2 accuracy from integer labels and class probabilities."""
    y, proba = np.asarray(y).astype(int), np.asarray(proba, float)
    pred = proba.argmax(axis=1)
    top2 = np.argsort(proba, axis=1)[:, -2:]
    return {"accuracy": float((pred == y).mean()),
            "macro_f1": float(skm.f1_score(y, pred, average="macro",
                                           labels=np.arange(proba.shape[1]), zero_division=0)),
            "top2_accuracy": float((top2 == y[:, None]).any(axis=1).mean())}


def multiclass_report(y, proba, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    return with_ci(y, proba, multiclass_metrics, n_boot, seed)


def per_class_table(y, proba, classes) -> pd.DataFrame:
    """Precision, recall, F1 and support per class."""
    pred = np.asarray(proba).argmax(axis=1)
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=np.arange(len(classes)),
                                                     zero_division=0)
    return pd.DataFrame({"precision": p, "recall": r, "f1": f, "support": s},
                        index=list(classes)).round(3)
