"""Is a model's probability a probability? Brier score, expected calibration error (equal-width
and equal-mass bins), reliability-diagram data, and temperature scaling fitted on validation.

Why here and not netcal: netcal pulls in PyTorch; these are a few lines of numpy/scipy.
Binary scores are the probability of the positive class; multiclass scores are class
probabilities (rows summing to 1), judged by their top-label confidence.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fracturelib import config

EPS = 1e-7


def brier(y, p) -> float:
    """Mean squared difference between probability and outcome (binary: positive class;
    multiclass: the one-hot vector, summed over classes).

    Args:
        y: labels (0/1, or class indices).
        p: positive-class probabilities (length N), or class probabilities (N x K).

    Returns:
        The Brier score as a float (0 is perfect; binary at most 1, multiclass at most 2).
    """
    y, p = np.asarray(y), np.asarray(p, float)
    if p.ndim == 1:
        return float(np.mean((p - y) ** 2))
    onehot = np.eye(p.shape[1])[y.astype(int)]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def _confidence_and_hit(y, p):
    y, p = np.asarray(y), np.asarray(p, float)
    if p.ndim == 1:
        return p, y.astype(float)                     # calibration of P(positive)
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(float)


def reliability(y, p, bins: int = 10, strategy: str = "uniform") -> pd.DataFrame:
    """Per bin: count, mean predicted probability, observed frequency.

    Args:
        y: labels (0/1, or class indices).
        p: positive-class probabilities, or class probabilities (N x K).
        bins: number of bins.
        strategy: ``uniform`` (equal width on [0, 1]) or ``quantile`` (equal mass).

    Returns:
        DataFrame with one row per non-empty bin: ``bin``, ``low``, ``high`` (bin edges), ``n``,
        ``predicted`` (mean confidence) and ``observed`` (share of positives, or of correct top labels).

    Raises:
        ValueError: if ``strategy`` is neither ``uniform`` nor ``quantile``.
    """
    conf, hit = _confidence_and_hit(y, p)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, bins + 1)
    elif strategy == "quantile":
        edges = np.unique(np.quantile(conf, np.linspace(0, 1, bins + 1)))
    else:
        raise ValueError(f"strategy {strategy!r}: uniform or quantile")
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, len(edges) - 2)
    rows = [{"bin": b, "low": edges[b], "high": edges[b + 1], "n": int((idx == b).sum()),
             "predicted": float(conf[idx == b].mean()), "observed": float(hit[idx == b].mean())}
            for b in range(len(edges) - 1) if (idx == b).any()]
    return pd.DataFrame(rows)


def ece(y, p, bins: int = 10, strategy: str = "uniform") -> float:
    """Expected calibration error: the count-weighted mean |observed - predicted| over bins.

    Args:
        y, p, bins, strategy: as for :func:`reliability`.

    Returns:
        The ECE as a float in [0, 1].
    """
    r = reliability(y, p, bins, strategy)
    return float((r["n"] * (r["observed"] - r["predicted"]).abs()).sum() / r["n"].sum())


def _logits(p):
    p = np.clip(np.asarray(p, float), EPS, 1 - EPS)
    return np.log(p / (1 - p)) if p.ndim == 1 else np.log(p)


def apply_temperature(p, t: float) -> np.ndarray:
    """Probabilities recomputed from the model's logits divided by ``t`` (ranking unchanged).

    Args:
        p: positive-class probabilities (length N), or class probabilities (N x K).
        t: temperature; > 1 softens, < 1 sharpens.

    Returns:
        Array of the same shape as ``p``: sigmoid (binary) or softmax (multiclass) of logits / ``t``.
    """
    z = _logits(p) / t
    if z.ndim == 1:
        return 1 / (1 + np.exp(-z))
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _nll(y, p) -> float:
    y, p = np.asarray(y), np.clip(np.asarray(p, float), EPS, 1 - EPS)
    if p.ndim == 1:
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return float(-np.mean(np.log(p[np.arange(len(y)), y.astype(int)])))


def fit_temperature(y_val, p_val) -> float:
    """The temperature T > 0 that minimises the validation log-loss (Guo et al. 2017).

    Args:
        y_val: validation labels (0/1, or class indices).
        p_val: validation probabilities (length N, or N x K).

    Returns:
        T as a float, searched in ``config.TEMPERATURE_RANGE`` (what a model card accepts).
    """
    from scipy.optimize import minimize_scalar
    res = minimize_scalar(lambda lt: _nll(y_val, apply_temperature(p_val, float(np.exp(lt)))),
                          bounds=tuple(np.log(config.TEMPERATURE_RANGE)), method="bounded")
    return float(np.exp(res.x))


def calibration_table(y_val, p_val, y_test, p_test, bins: int = 10) -> tuple[pd.DataFrame, float]:
    """Brier and ECE (equal-width and equal-mass) on test before and after temperature scaling
    fitted on validation. Returns (table, temperature).

    Args:
        y_val, p_val: validation labels and probabilities, to fit the temperature.
        y_test, p_test: test labels and probabilities, to score.
        bins: number of ECE bins.

    Returns:
        ``(table, t)``: a DataFrame with rows "as trained" and "temperature-scaled ..." and columns
        ``Brier``, ``ECE (equal width)``, ``ECE (equal mass)``, ``log-loss``; and the fitted temperature.
    """
    t = fit_temperature(y_val, p_val)
    rows = {}
    for name, p in (("as trained", p_test), (f"temperature-scaled (T={t:.2f}, fitted on validation)",
                                             apply_temperature(p_test, t))):
        rows[name] = {"Brier": brier(y_test, p), "ECE (equal width)": ece(y_test, p, bins, "uniform"),
                      "ECE (equal mass)": ece(y_test, p, bins, "quantile"), "log-loss": _nll(y_test, p)}
    return pd.DataFrame(rows).T, t
