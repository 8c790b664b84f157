"""EDA numbers on the real embedded data: what notebook 01 shows."""
import pytest

from fracturelib.data import eda
from fracturelib.data.splits import subset


@pytest.fixture
def fa(fracatlas):
    return fracatlas


@pytest.fixture
def bb(bone_break):
    return bone_break


def test_counts_and_metadata(fa):
    c = eda.counts(fa)
    assert c.loc["fractured", "total"] == 333 and c.loc["non-fractured", "total"] == 574
    assert abs(c["share"].sum() - 1) < 1e-6
    meta = eda.metadata_tables(fa)
    assert set(meta) == {"body region", "view", "hardware", "multiscan"}
    assert meta["body region"].loc["hand"].sum() > 100


def test_intensity_stats_shapes(fa):
    per_image, hists = eda.intensity_stats(fa, per_class=10)
    assert len(per_image) == 20 and list(hists.columns) == ["fractured", "non-fractured"]
    assert (hists.sum() * 4 - 1).abs().max() < 1e-6     # densities over 64 bins of width 4


def test_verdict_names_the_real_problems(fa, bb):
    v = eda.verdict(bb)
    assert "24 of 140 test images have a copy in train" in v
    assert "conflicting labels" in v
    v = eda.verdict(fa)
    assert "907 of 919 files are usable" in v and "disagree with the metadata" in v
    assert "imbalanced" in v


def test_duplicate_pairs_and_leakage(bb):
    pairs = eda.duplicate_pairs(bb, "exact", limit=5)
    assert len(pairs) == 3 and all(a["sha256"] == b["sha256"] for a, b in pairs)
    lk = eda.leakage(bb)
    assert lk["test_with_copy_in_train"] == 24 and lk["cross_label_groups"] == 6


def test_subset_is_stratified_and_seeded(bb):
    s1, s2 = subset(bb, 0.3, 1), subset(bb, 0.3, 1)
    assert s1.index.equals(s2.index)
    assert abs(len(s1) / len(bb) - 0.3) < 0.02
    assert set(s1["label"]) == set(bb["label"]) and set(s1["split"]) == {"train", "test"}
    with pytest.raises(ValueError):
        subset(bb, 0, 1)
