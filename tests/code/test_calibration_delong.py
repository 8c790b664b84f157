"""Calibration, DeLong, operating points, decision curve and multiclass agreement against known values."""
import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from fracturelib.metrics import calibration, delong, evaluate


@pytest.fixture
def scored():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 300)
    a = 1 / (1 + np.exp(-(y * 1.2 + rng.normal(0, 1.2, 300) - 0.6)))
    b = 1 / (1 + np.exp(-(y * 2.5 + rng.normal(0, 1.0, 300) - 1.2)))
    return y, a, b


def test_brier_matches_scikit_learn_binary_and_multiclass(scored):
    y, a, _ = scored
    assert calibration.brier(y, a) == pytest.approx(skm.brier_score_loss(y, a))
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    assert calibration.brier([0, 2, 2], proba) == pytest.approx(((0.09 + 0.04 + 0.01) + (0.01 + 0.64 + 0.81)
                                                                 + (0.09 + 0.09 + 0.36)) / 3)


def test_ece_from_scikit_learn_reliability_curve(scored):
    y, a, _ = scored
    for strategy in ("uniform", "quantile"):
        obs, pred = calibration_curve(y, a, n_bins=10, strategy=strategy)
        r = calibration.reliability(y, a, 10, strategy)
        np.testing.assert_allclose(r["observed"], obs, atol=1e-12)
        np.testing.assert_allclose(r["predicted"], pred, atol=1e-12)
    assert calibration.ece([1, 0], [1.0, 0.0]) == 0.0
    assert calibration.ece([0, 0, 0, 0], [0.8, 0.8, 0.8, 0.8]) == pytest.approx(0.8)


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-z))).astype(int)       # calibrated at T = 1
    overconfident = 1 / (1 + np.exp(-3 * z))                          # logits x3: T should be ~3
    t = calibration.fit_temperature(y, overconfident)
    assert t == pytest.approx(3.0, rel=0.08)
    fixed = calibration.apply_temperature(overconfident, t)
    assert calibration.ece(y, fixed) < calibration.ece(y, overconfident) / 3
    assert skm.roc_auc_score(y, fixed) == pytest.approx(skm.roc_auc_score(y, overconfident))   # ranking kept
    table, t2 = calibration.calibration_table(y, overconfident, y, overconfident)
    assert t2 == pytest.approx(t) and table["ECE (equal width)"].iloc[1] < table["ECE (equal width)"].iloc[0]


def _delong_by_definition(y, a, b):
    """Independent O(m n) implementation of DeLong's structural components."""
    def comps(s):
        pos, neg = s[y == 1], s[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        return psi.mean(1), psi.mean(0), psi.mean()
    (v10a, v01a, auc_a), (v10b, v01b, auc_b) = comps(a), comps(b)
    m, n = len(v10a), len(v01a)
    s10, s01 = np.cov(np.vstack([v10a, v10b])), np.cov(np.vstack([v01a, v01b]))
    cov = s10 / m + s01 / n
    return auc_a, auc_b, cov


def test_delong_matches_the_definition_and_scikit_learn(scored):
    y, a, b = scored
    a = np.round(a, 2)                                          # ties exercise the midranks
    auc_a, auc_b, cov = _delong_by_definition(y, a, b)
    aucs, got = delong.auc_and_covariance(y, np.vstack([a, b]))
    np.testing.assert_allclose(aucs, [auc_a, auc_b], atol=1e-12)
    np.testing.assert_allclose(got, cov, atol=1e-12)
    assert aucs[0] == pytest.approx(skm.roc_auc_score(y, a))
    ci = delong.auc_ci(y, b)
    assert ci["ci_low"] < ci["value"] < ci["ci_high"] and ci["se"] == pytest.approx(np.sqrt(cov[1, 1]))
    t = delong.paired_test(y, a, b)
    z = (auc_b - auc_a) / np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert t["z"] == pytest.approx(z) and t["p_value"] < 0.01
    assert delong.paired_test(y, b, b)["p_value"] == 1.0


def test_operating_points_on_a_hand_made_roc():
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.35, 0.6, 0.7, 0.9, 0.95])
    a = evaluate.sensitivity_at_specificity(y, p, 0.80)          # threshold 0.6: 4/5 specific, 4/5 sensitive
    assert (a["sensitivity"], a["specificity"]) == (0.8, 0.8)
    b = evaluate.specificity_at_sensitivity(y, p, 1.0)           # all positives need threshold 0.35
    assert (b["sensitivity"], b["specificity"]) == (1.0, 0.6)
    pv = evaluate.predictive_values(0.8, 0.8, 0.5)
    assert pv["ppv"] == pytest.approx(0.8) and pv["npv"] == pytest.approx(0.8)
    assert evaluate.predictive_values(0.9, 0.9, 0.1)["ppv"] == pytest.approx(0.09 / (0.09 + 0.09))
    t = evaluate.operating_points(y, p, 0.8, 0.9, prevalence=0.5, n_boot=50)
    assert t.loc["sensitivity at specificity >= 0.80", "value"] == 0.8


def test_decision_curve_treat_all_and_a_perfect_model():
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    dc = evaluate.decision_curve(y, y.astype(float), thresholds=[0.1, 0.5])
    np.testing.assert_allclose(dc["model"], [0.2, 0.2])                      # perfect: NB = prevalence
    np.testing.assert_allclose(dc["treat all"], [0.2 - 0.8 / 9, 0.2 - 0.8])
    assert (dc["treat none"] == 0).all()


def test_multiclass_agreement_and_per_class_recall():
    y = np.array([0, 0, 1, 1, 2, 2])
    proba = np.array([[.8, .1, .1], [.2, .7, .1], [.1, .8, .1], [.1, .6, .3], [.3, .3, .4], [.5, .1, .4]])
    m = evaluate.multiclass_agreement(y, proba, k=2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(y, proba.argmax(1)))
    assert m["top2_accuracy"] == pytest.approx(1.0)
    r = evaluate.per_class_recall(y, proba, ["a", "b", "c"], n_boot=50)
    assert list(r["value"]) == [0.5, 1.0, 0.5]
    assert evaluate.majority_baseline([0, 0, 0, 1]) == 0.75
