"""The NumPy scores of ``metrics.ranking`` equal scikit-learn's (the reference) on any binary data with
both classes, ties and float32 scores included; input they cannot score is refused, not scored; and a
bootstrap with them is the same bootstrap. (``make fuzz`` runs the property tests with more examples.)"""
import os

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from fracturelib.metrics import evaluate, ranking

FUZZ = settings(max_examples=int(os.environ.get("FRACTURELIB_FUZZ_EXAMPLES", 200)), deadline=None, database=None)

# scores drawn from a few values make ties; from floats, distinct scores; both with 0/1 labels
scores = st.one_of(st.floats(0, 1, allow_nan=False, width=32), st.sampled_from([0.0, 0.25, 0.5, 1.0]))
dtypes = st.sampled_from([np.float64, np.float32])


@st.composite
def labelled(draw, min_size=2):
    n = draw(st.integers(min_size, 80))
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    p = np.array(draw(st.lists(scores, min_size=n, max_size=n)), draw(dtypes))   # Keras gives float32
    return y, p


@FUZZ
@given(labelled())
def test_property_roc_auc_and_average_precision_equal_sklearn(case):
    y, p = case
    assume(0 < y.sum() < len(y))
    assert ranking.roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert ranking.average_precision(y, p) == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)


@FUZZ
@given(labelled())
def test_property_roc_curve_equals_sklearn_point_for_point(case):
    y, p = case
    assume(0 < y.sum() < len(y))
    mine, ref = ranking.roc_curve(y, p), skm.roc_curve(y, p)
    assert [len(a) for a in mine] == [len(a) for a in ref]
    for a, b in zip(mine, ref):
        np.testing.assert_allclose(a, b, atol=1e-12)


@FUZZ
@given(st.integers(2, 7).flatmap(lambda k: st.tuples(
    st.just(k), st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=60))))
def test_property_macro_f1_equals_sklearn_with_absent_classes(case):
    k, pairs = case
    y, pred = np.array(pairs).T
    ref = skm.f1_score(y, pred, average="macro", labels=np.arange(k), zero_division=0)
    assert ranking.macro_f1(y, pred, k) == pytest.approx(ref, abs=1e-12)


def test_known_answers_and_one_class_is_nan():
    y = np.array([0, 0, 1, 1])
    assert ranking.roc_auc(y, [0.1, 0.4, 0.35, 0.8]) == 0.75       # 3 of 4 pairs ordered
    assert ranking.roc_auc(y, [0.5, 0.5, 0.5, 0.5]) == 0.5         # all tied: one half each
    assert ranking.average_precision(y, [0.1, 0.4, 0.35, 0.8]) == pytest.approx((1 + 2 / 3) / 2)
    assert np.isnan(ranking.roc_auc([1, 1], [0.2, 0.3]))
    assert np.isnan(ranking.average_precision([0, 0], [0.2, 0.3]))


@pytest.mark.parametrize("y,p,why", [([0, 1], [0.2, np.nan], "finite"), ([0, 1], [0.2, np.inf], "finite"),
                                     ([1, 2], [0.2, 0.3], "0 or 1"), ([-1, 1], [0.2, 0.3], "0 or 1"),
                                     ([0, 1, 1], [0.2, 0.3], "labels for")])
def test_what_cannot_be_scored_is_refused_not_scored(y, p, why):
    for fn in (ranking.roc_auc, ranking.average_precision, ranking.roc_curve):
        with pytest.raises(ValueError, match=why):
            fn(y, p)
    with pytest.raises(ValueError, match="class indices"):
        ranking.macro_f1([0, -1], [0, 1], 2)
    column = np.array([[0.2], [0.7]])                         # an (N, 1) column of scores is flattened
    assert ranking.roc_auc(np.array([[0], [1]]), column) == 1.0


def test_bootstrap_ci_unchanged_by_the_numpy_scores():
    """The report's figures and CIs are those scikit-learn gives on the same resamples."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 150)
    p = np.clip(y * 0.3 + rng.random(150) * 0.7, 0, 1).round(2)    # rounded: ties
    fn = lambda a, b: {"roc_auc": skm.roc_auc_score(a, b), "pr_auc": skm.average_precision_score(a, b)}  # noqa: E731
    ref = evaluate.with_ci(y, p, fn, n_boot=200, seed=5)
    mine = evaluate.binary_report(y, p, 0.5, n_boot=200, seed=5)
    np.testing.assert_allclose(mine.loc[["roc_auc", "pr_auc"]].to_numpy(), ref.to_numpy(), atol=1e-12)
