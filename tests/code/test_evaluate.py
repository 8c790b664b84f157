import numpy as np
import pytest

from fracturelib.metrics import evaluate


def test_binary_metrics_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.1, 0.05])
    m = evaluate.binary_metrics(y, p, 0.5)
    assert m["recall"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(4 / 5)
    assert m["precision"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(6 / 8)
    assert m["roc_auc"] == pytest.approx(14 / 15)   # 14 of 15 (pos, neg) pairs ranked right


def test_ci_brackets_value_and_narrows_with_n():
    rng = np.random.default_rng(0)

    def sample(n):
        y = rng.integers(0, 2, n)
        return y, np.clip(y * 0.3 + rng.normal(0.35, 0.25, n), 0, 1)

    small = evaluate.binary_report(*sample(80), n_boot=300)
    large = evaluate.binary_report(*sample(2000), n_boot=300)
    for t in (small, large):
        assert (t["ci_low"] <= t["value"]).all() and (t["value"] <= t["ci_high"]).all()
    w = lambda t: t.loc["roc_auc", "ci_high"] - t.loc["roc_auc", "ci_low"]  # noqa: E731
    assert w(large) < w(small) / 2.5


def test_threshold_reaches_target_sensitivity():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    p = np.clip(y * 0.2 + rng.random(500) * 0.8, 0, 1)
    for target in (0.8, 0.9, 0.95):
        t = evaluate.threshold_for_sensitivity(y, p, target)
        sens = ((p >= t) & (y == 1)).sum() / (y == 1).sum()
        assert sens >= target and sens < target + 0.02


def test_threshold_needs_positives():
    with pytest.raises(ValueError, match="no positive"):
        evaluate.threshold_for_sensitivity([0, 0], [0.1, 0.2])


def test_paired_auc_difference_finds_a_real_gap_and_no_gap():
    from fracturelib.metrics import evaluate
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    weak, strong = y + rng.normal(0, 1.5, 400), y + rng.normal(0, 0.5, 400)
    d = evaluate.paired_auc_difference(y, weak, strong, n_boot=300, seed=1)
    from sklearn.metrics import roc_auc_score
    assert d["value"] == pytest.approx(roc_auc_score(y, strong) - roc_auc_score(y, weak))
    assert 0 < d["ci_low"] < d["value"] < d["ci_high"] and d["p_value"] < 0.01
    same = evaluate.paired_auc_difference(y, weak, weak + rng.normal(0, 1e-3, 400), n_boot=300, seed=1)
    assert same["ci_low"] < 0 < same["ci_high"] and same["p_value"] > 0.05


def test_compare_binary_reports_each_model_at_its_own_validation_threshold():
    from fracturelib.metrics import evaluate
    y = {"val": np.array([0, 0, 1, 1]), "test": np.array([0, 0, 0, 1, 1, 1])}
    p = {"val": np.array([0.1, 0.2, 0.6, 0.9]), "test": np.array([0.1, 0.3, 0.7, 0.6, 0.8, 0.9])}
    t = evaluate.compare_binary({"m": (p, 0.65)}, y, n_boot=50)
    assert t.loc["test sensitivity", "m"].startswith("0.667")       # 0.6 < 0.65 is missed
    assert t.loc["test specificity", "m"].startswith("0.667")       # 0.7 >= 0.65 is a false alarm
    assert t.loc["validation ROC-AUC", "m"] == "1.000"
