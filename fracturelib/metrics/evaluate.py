"""Metrics with 95% bootstrap confidence intervals, and threshold choice on validation data."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from fracturelib.metrics import ranking
from fracturelib.progress import bar


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
    specificity and F1 at ``threshold``.

    Args:
        y: binary labels (0/1), length N.
        p: predicted probabilities of the positive class, length N.
        threshold: probability at or above which a case is called positive.

    Returns:
        Dict of float metrics: ``roc_auc``, ``pr_auc`` (NaN when ``y`` holds one class only),
        ``accuracy``, ``precision``, ``recall``, ``specificity``, ``f1`` (0.0 where undefined).
    """
    y, p = np.asarray(y).astype(int), np.asarray(p, float)
    two = len(np.unique(y)) == 2
    out = {"roc_auc": ranking.roc_auc(y, p) if two else np.nan,
           "pr_auc": ranking.average_precision(y, p) if two else np.nan}
    out.update(_binary_at(y, p, threshold))
    return out


def bootstrap(y, p, fn, n_boot: int = 1000, seed: int = 0, stratified: bool = True) -> pd.DataFrame:
    """The project's one bootstrap: ``fn(y, p) -> dict`` on ``n_boot`` resamples, stratified by
    class (each class keeps its count) and seeded. Returns one row per resample.

    Args:
        y: labels, length N (the strata when ``stratified``).
        p: scores, indexed along the first axis like ``y`` (1-D or N x K).
        fn: metric function ``fn(y, p) -> dict`` of scalars.
        n_boot: number of resamples.
        seed: seed of the random generator.
        stratified: resample within each class (True) or over all cases (False).

    Returns:
        DataFrame with ``n_boot`` rows and one column per key of ``fn``'s dict.
    """
    y, p = np.asarray(y), np.asarray(p)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratified else [np.arange(len(y))]
    rows = []
    for _ in bar(range(n_boot), "bootstrap"):
        idx = np.concatenate([rng.choice(g, len(g), replace=True) for g in groups])
        rows.append(fn(y[idx], p[idx]))
    return pd.DataFrame(rows)


def with_ci(y, p, fn, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Table of metric, value, ci_low, ci_high (percentile bootstrap).

    Args:
        y, p: labels and scores, as for :func:`bootstrap`.
        fn: metric function ``fn(y, p) -> dict`` of scalars.
        n_boot, seed: number of resamples and random seed.
        level: coverage of the interval (0.95 gives the 2.5% and 97.5% percentiles).

    Returns:
        DataFrame indexed by metric name with columns ``value`` (on the full data), ``ci_low``, ``ci_high``.
    """
    point = fn(np.asarray(y), np.asarray(p))
    boot = bootstrap(y, p, fn, n_boot, seed)
    a = (1 - level) / 2
    return pd.DataFrame({"metric": list(point), "value": list(point.values()),
                         "ci_low": [boot[k].quantile(a) for k in point],
                         "ci_high": [boot[k].quantile(1 - a) for k in point]}).set_index("metric")


def mean_ci(values, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """CI of a mean over images (per-image scores), with the same bootstrap helper.

    Args:
        values: per-image scores.
        n_boot, seed: number of resamples and random seed.
        level: coverage of the interval.

    Returns:
        ``(ci_low, ci_high)`` of the mean as floats; ``(nan, nan)`` when ``values`` is empty.
    """
    v = np.asarray(values, float)
    if len(v) == 0:
        return float("nan"), float("nan")
    t = with_ci(np.zeros(len(v)), v, lambda _y, x: {"mean": float(np.mean(x))}, n_boot, seed, level)
    return float(t.loc["mean", "ci_low"]), float(t.loc["mean", "ci_high"])


def binary_report(y, p, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Binary metrics of :func:`binary_metrics` at ``threshold``, each with a bootstrap 95% CI.

    Args:
        y: binary labels (0/1).
        p: predicted probabilities of the positive class.
        threshold: probability at or above which a case is called positive.
        n_boot, seed: number of resamples and random seed.

    Returns:
        DataFrame indexed by metric with columns ``value``, ``ci_low``, ``ci_high`` (see :func:`with_ci`).
    """
    return with_ci(y, p, lambda a, b: binary_metrics(a, b, threshold), n_boot, seed)


def threshold_for_sensitivity(y, p, target: float = 0.90) -> float:
    """Highest threshold whose sensitivity on (validation) data is at least ``target``.

    Args:
        y: binary labels (0/1).
        p: predicted probabilities of the positive class.
        target: required sensitivity, in [0, 1].

    Returns:
        The threshold as a float: the score of the ceil(target * positives)-th highest-scored positive.

    Raises:
        ValueError: if ``y`` has no positive examples.
    """
    y, p = np.asarray(y).astype(int), np.asarray(p, float)
    pos = np.sort(p[y == 1])[::-1]
    if len(pos) == 0:
        raise ValueError("no positive examples: cannot choose a threshold for sensitivity")
    k = int(np.ceil(target * len(pos)))
    return float(pos[max(k, 1) - 1])


def format_ci(row) -> str:
    """One metric as text for tables: ``"0.912 (95% CI 0.880-0.940)"``.

    Args:
        row: mapping (e.g. a row of :func:`with_ci`'s table) with ``value``, ``ci_low`` and ``ci_high``.

    Returns:
        The formatted string, three decimals.
    """
    return f"{row['value']:.3f} (95% CI {row['ci_low']:.3f}-{row['ci_high']:.3f})"


def multiclass_metrics(y, proba) -> dict:
    """Accuracy, macro-F1 and top-2 accuracy from integer labels and class probabilities.

    Args:
        y: integer class labels, length N.
        proba: class probabilities, N x K.

    Returns:
        Dict of floats: ``accuracy``, ``macro_f1`` (over all K classes), ``top2_accuracy``.
    """
    y, proba = np.asarray(y).astype(int), np.asarray(proba, float)
    pred = proba.argmax(axis=1)
    top2 = np.argsort(proba, axis=1)[:, -2:]
    return {"accuracy": float((pred == y).mean()),
            "macro_f1": ranking.macro_f1(y, pred, proba.shape[1]),
            "top2_accuracy": float((top2 == y[:, None]).any(axis=1).mean())}


def multiclass_report(y, proba, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Metrics of :func:`multiclass_metrics`, each with a class-stratified bootstrap 95% CI.

    Args:
        y: integer class labels, length N.
        proba: class probabilities, N x K.
        n_boot, seed: number of resamples and random seed.

    Returns:
        DataFrame indexed by metric with columns ``value``, ``ci_low``, ``ci_high``.
    """
    return with_ci(y, proba, multiclass_metrics, n_boot, seed)


def per_class_table(y, proba, classes) -> pd.DataFrame:
    """Precision, recall, F1 and support per class.

    Args:
        y: integer class labels, length N.
        proba: class probabilities, N x K; the prediction is the argmax.
        classes: class names in label order (length K).

    Returns:
        DataFrame indexed by class name with columns ``precision``, ``recall``, ``f1`` (rounded to 3
        decimals) and ``support`` (count of true cases).
    """
    pred = np.asarray(proba).argmax(axis=1)
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=np.arange(len(classes)),
                                                     zero_division=0)
    return pd.DataFrame({"precision": p, "recall": r, "f1": f, "support": s},
                        index=list(classes)).round(3)


def paired_auc_difference(y, p_a, p_b, n_boot: int = 1000, seed: int = 0) -> dict:
    """ROC-AUC of model B minus model A on the same images, with a paired, class-stratified
    bootstrap 95% CI and a two-sided bootstrap p-value (share of resamples on the other side of 0,
    doubled). Both models are scored on each resample, so their correlation is kept.

    Args:
        y: binary labels (0/1).
        p_a, p_b: positive-class probabilities of models A and B on the same images.
        n_boot, seed: number of resamples and random seed.

    Returns:
        Dict of floats: ``value`` (AUC_B - AUC_A), ``ci_low``, ``ci_high`` and ``p_value``
        (clipped to [1 / n_boot, 1]).
    """
    y = np.asarray(y).astype(int)
    both = np.stack([np.asarray(p_a, float), np.asarray(p_b, float)], axis=1)
    diff = lambda yy, pp: {"d": ranking.roc_auc(yy, pp[:, 1]) - ranking.roc_auc(yy, pp[:, 0])}  # noqa: E731
    point = diff(y, both)["d"]
    boot = bootstrap(y, both, diff, n_boot, seed)["d"].to_numpy()
    p = 2 * min((boot <= 0).mean(), (boot >= 0).mean())
    return {"value": float(point), "ci_low": float(np.quantile(boot, 0.025)),
            "ci_high": float(np.quantile(boot, 0.975)), "p_value": float(min(1.0, max(p, 1 / n_boot)))}


def compare_binary(scores: dict, y: dict, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Models side by side on the same split.

    Args:
        scores: name -> (``{"val": p, "test": p}``, threshold chosen on validation).
        y: ``{"val": labels, "test": labels}``.
        n_boot, seed: number of resamples and random seed of the test-set CIs.

    Returns:
        One column per model: validation ROC-AUC, then test ROC-AUC, PR-AUC, sensitivity and
        specificity at the model's validation threshold, each with its 95% CI.
    """
    cols = {}
    for name, (p, thr) in scores.items():
        rep = binary_report(y["test"], p["test"], thr, n_boot=n_boot, seed=seed)
        cols[name] = {"validation ROC-AUC": f"{ranking.roc_auc(y['val'], p['val']):.3f}",
                      "threshold (val sensitivity target)": f"{thr:.3f}",
                      "test ROC-AUC": format_ci(rep.loc["roc_auc"]),
                      "test PR-AUC": format_ci(rep.loc["pr_auc"]),
                      "test sensitivity": format_ci(rep.loc["recall"]),
                      "test specificity": format_ci(rep.loc["specificity"])}
    return pd.DataFrame(cols)


# ---- clinical operating points -------------------------------------------------------------------
def _roc(y, p):
    return ranking.roc_curve(y, p)


def _point(fpr, tpr, thr, k) -> dict:
    """The ROC curve's point ``k`` as an operating point (threshold capped at 1.0)."""
    return {"threshold": float(min(thr[k], 1.0)), "sensitivity": float(tpr[k]), "specificity": float(1 - fpr[k])}


def sensitivity_at_specificity(y, p, target: float = 0.80) -> dict:
    """The operating point on this data's ROC curve with specificity >= ``target`` and the
    highest sensitivity: its threshold, sensitivity and specificity.

    Args:
        y: binary labels (0/1).
        p: predicted probabilities of the positive class.
        target: minimum specificity, in [0, 1].

    Returns:
        Dict of floats: ``threshold`` (capped at 1.0), ``sensitivity``, ``specificity``.
    """
    fpr, tpr, thr = _roc(y, p)
    ok = np.flatnonzero(1 - fpr >= target - 1e-12)
    return _point(fpr, tpr, thr, ok[np.argmax(tpr[ok])])


def specificity_at_sensitivity(y, p, target: float = 0.90) -> dict:
    """The operating point with sensitivity >= ``target`` and the highest specificity.

    Args:
        y: binary labels (0/1).
        p: predicted probabilities of the positive class.
        target: minimum sensitivity, in [0, 1].

    Returns:
        Dict of floats: ``threshold`` (capped at 1.0), ``sensitivity``, ``specificity``.
    """
    fpr, tpr, thr = _roc(y, p)
    ok = np.flatnonzero(tpr >= target - 1e-12)
    return _point(fpr, tpr, thr, ok[np.argmin(fpr[ok])])


def predictive_values(sensitivity: float, specificity: float, prevalence: float) -> dict:
    """PPV and NPV by Bayes' rule at a stated prevalence (not the test set's).

    Args:
        sensitivity, specificity: the operating point, in [0, 1].
        prevalence: share of positives in the population the model is meant for.

    Returns:
        Dict with ``ppv`` and ``npv`` as floats (NaN when undefined).
    """
    tp, fp = sensitivity * prevalence, (1 - specificity) * (1 - prevalence)
    tn, fn = specificity * (1 - prevalence), (1 - sensitivity) * prevalence
    return {"ppv": tp / (tp + fp) if tp + fp else float("nan"), "npv": tn / (tn + fn) if tn + fn else float("nan")}


def operating_points(y, p, specificity_target: float = 0.80, sensitivity_target: float = 0.90,
                     prevalence: float | None = None, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Sensitivity at fixed specificity and specificity at fixed sensitivity, each with PPV/NPV
    at ``prevalence`` (default: this data's), all with 95% bootstrap CIs.

    Args:
        y: binary labels (0/1).
        p: predicted probabilities of the positive class.
        specificity_target, sensitivity_target: the fixed specificity and sensitivity.
        prevalence: prevalence for PPV/NPV; None uses the share of positives in ``y``.
        n_boot, seed: number of resamples and random seed.

    Returns:
        DataFrame of six rows (named after targets and prevalence) with columns ``value``, ``ci_low``,
        ``ci_high``.
    """
    prev = float(np.mean(y)) if prevalence is None else prevalence

    def fn(yy, pp):
        a = sensitivity_at_specificity(yy, pp, specificity_target)
        b = specificity_at_sensitivity(yy, pp, sensitivity_target)
        pa, pb = predictive_values(a["sensitivity"], a["specificity"], prev), predictive_values(
            b["sensitivity"], b["specificity"], prev)
        sa, sb = f"specificity >= {specificity_target:.2f}", f"sensitivity >= {sensitivity_target:.2f}"
        return {f"sensitivity at {sa}": a["sensitivity"], f"PPV at {sa} (prevalence {prev:.3f})": pa["ppv"],
                f"NPV at {sa} (prevalence {prev:.3f})": pa["npv"],
                f"specificity at {sb}": b["specificity"], f"PPV at {sb} (prevalence {prev:.3f})": pb["ppv"],
                f"NPV at {sb} (prevalence {prev:.3f})": pb["npv"]}
    return with_ci(y, p, fn, n_boot, seed)


def decision_curve(y, p, thresholds=None) -> pd.DataFrame:
    """Net benefit of acting on the model at each threshold probability, beside treating
    everyone and no one (Vickers & Elkin 2006): NB = TP/N - FP/N * t / (1 - t).

    Args:
        y: binary labels (0/1).
        p: predicted probabilities of the positive class.
        thresholds: threshold probabilities in (0, 1); None gives 80 steps from 0.01 to 0.80.

    Returns:
        DataFrame with columns ``threshold``, ``model``, ``treat all``, ``treat none`` (net benefits).
    """
    y, p = np.asarray(y).astype(int), np.asarray(p, float)
    t = np.asarray(thresholds if thresholds is not None else np.linspace(0.01, 0.80, 80))
    n, prev = len(y), y.mean()
    w = t / (1 - t)
    tp = np.array([((p >= k) & (y == 1)).sum() for k in t]) / n
    fp = np.array([((p >= k) & (y == 0)).sum() for k in t]) / n
    return pd.DataFrame({"threshold": t, "model": tp - fp * w, "treat all": prev - (1 - prev) * w,
                         "treat none": np.zeros_like(t)})


# ---- multiclass agreement --------------------------------------------------------------------------
def multiclass_agreement(y, proba, k: int = 3) -> dict:
    """Accuracy, Cohen's kappa (unweighted: the classes are not ordered) and top-k accuracy.

    Args:
        y: integer class labels, length N.
        proba: class probabilities, N x K.
        k: the k of top-k accuracy.

    Returns:
        Dict of floats: ``accuracy``, ``cohen_kappa``, ``top{k}_accuracy``.
    """
    y, proba = np.asarray(y).astype(int), np.asarray(proba, float)
    labels = np.arange(proba.shape[1])
    return {"accuracy": float((proba.argmax(1) == y).mean()),
            "cohen_kappa": float(skm.cohen_kappa_score(y, proba.argmax(1), labels=labels)),
            f"top{k}_accuracy": float(skm.top_k_accuracy_score(y, proba, k=k, labels=labels))}


def per_class_recall(y, proba, classes, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Recall of each class with a 95% bootstrap CI (stratified, so each class keeps its count).

    Args:
        y: integer class labels, length N.
        proba: class probabilities, N x K; the prediction is the argmax.
        classes: class names in label order (length K).
        n_boot, seed: number of resamples and random seed.

    Returns:
        DataFrame indexed by class name with columns ``value``, ``ci_low``, ``ci_high``
        (NaN for a class absent from ``y``).
    """
    def fn(yy, pp):
        pred = pp.argmax(1)
        return {c: float((pred[yy == i] == i).mean()) if (yy == i).any() else np.nan
                for i, c in enumerate(classes)}
    return with_ci(y, np.asarray(proba), fn, n_boot, seed)


def majority_baseline(y) -> float:
    """Accuracy of always answering the most frequent class: what every accuracy stands beside.

    Args:
        y: labels (any hashable values).

    Returns:
        The share of the most frequent label, as a float.
    """
    return float(pd.Series(np.asarray(y)).value_counts(normalize=True).max())
