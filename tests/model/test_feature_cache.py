"""The frozen-feature cache: a hit only for the same weights, images, size and mirroring; equal to a
fresh computation; the two-phase recipe reuses it (notebook 03's comparison and main model)."""
import numpy as np
import pytest

from fracturelib.data import build_manifest
from fracturelib.data.pipeline import load_images
from fracturelib.models import feature_cache, recipe, transfer
from tests.conftest import write_tree


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    from fracturelib.data.splits import assign_splits
    root = tmp_path_factory.mktemp("fc") / "ds"
    write_tree(root, {"fractured": 10, "non-fractured": 10})
    return assign_splits(build_manifest(root), val_fraction=0.25, test_fraction=0.2, seed=0)


def _feats(seed: int = 0):
    import keras
    from keras import layers
    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, None, 1))
    return keras.Model(inp, layers.Conv2D(6, 3, activation="relu")(layers.Rescaling(1 / 255)(inp)))


def test_second_call_is_a_hit_with_the_fresh_values(rows):
    fm = _feats()
    a, hit_a = feature_cache.pooled(fm, rows, 32, 1)
    b, hit_b = feature_cache.pooled(fm, rows, 32, 1)
    expect = fm.predict(load_images(rows, 32, 1), verbose=0).mean(axis=(1, 2))
    assert (hit_a, hit_b) == (False, True)
    np.testing.assert_allclose(a, expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a, b)
    b[:] = -1                                    # the caller's copy, not the cache's
    np.testing.assert_array_equal(feature_cache.pooled(fm, rows, 32, 1)[0], a)


def test_another_model_with_equal_weights_hits_and_changed_weights_miss(rows):
    fm = _feats(0)
    feature_cache.pooled(fm, rows, 32, 1)
    twin = _feats(0)                             # a new model object, the same weight values
    assert feature_cache.pooled(twin, rows, 32, 1)[1]
    w = twin.get_weights()
    w[0] = w[0] + 1e-3                           # fine-tuned a little: never the old features
    twin.set_weights(w)
    out, hit = feature_cache.pooled(twin, rows, 32, 1)
    assert not hit
    assert not np.allclose(out, feature_cache.pooled(fm, rows, 32, 1)[0])


def test_mirroring_size_rows_content_decoding_and_input_scaling_are_part_of_the_key(rows):
    import keras
    from keras import layers
    fm = _feats()
    base, _ = feature_cache.pooled(fm, rows, 32, 1)
    mir, hit = feature_cache.pooled(fm, rows, 32, 1, mirrored=True)
    assert not hit
    expect = fm.predict(load_images(rows, 32, 1)[:, :, ::-1], verbose=0).mean(axis=(1, 2))
    np.testing.assert_allclose(mir, expect, rtol=1e-5, atol=1e-6)
    assert not feature_cache.pooled(fm, rows, 48, 1)[1]                       # another pipeline size
    assert not feature_cache.pooled(fm, rows.iloc[1:], 32, 1)[1]
    changed = rows.assign(sha256=rows["sha256"].str[::-1])        # same paths, other content
    assert not feature_cache.pooled(fm, changed, 32, 1)[1]
    assert not feature_cache.pooled(fm, rows.assign(native=False), 32, 1)[1]   # decoded another way
    keras.utils.set_random_seed(0)                                # the same weights and shapes, another input scaling
    inp = keras.Input((None, None, 1))
    rescaled = keras.Model(inp, layers.Conv2D(6, 3, activation="relu")(layers.Rescaling(1 / 127.5)(inp)))
    rescaled.set_weights(fm.get_weights())
    other, hit = feature_cache.pooled(rescaled, rows, 32, 1)
    assert not hit and not np.allclose(other, base)
    assert feature_cache.stats()["hits"] == 0 and base.shape == (len(rows), 6)


def test_empty_rows_and_least_recently_used_eviction(rows, monkeypatch):
    fm = _feats()
    empty, _ = feature_cache.pooled(fm, rows.iloc[:0], 32, 1)
    assert empty.shape == (0, 6)
    feature_cache.clear()
    monkeypatch.setattr(feature_cache, "MAX_BYTES", (1 + 3) * 6 * 4)   # room for 1 + 3 rows of 6 float32
    feature_cache.pooled(fm, rows.iloc[:1], 32, 1)
    feature_cache.pooled(fm, rows.iloc[:2], 32, 1)
    assert feature_cache.pooled(fm, rows.iloc[:1], 32, 1)[1]          # used again: now the newest
    feature_cache.pooled(fm, rows.iloc[:3], 32, 1)                   # over budget: the 2-row entry goes
    assert feature_cache.stats()["entries"] == 2 and feature_cache.stats()["bytes"] == 4 * 6 * 4
    assert feature_cache.pooled(fm, rows.iloc[:1], 32, 1)[1]
    assert not feature_cache.pooled(fm, rows.iloc[:2], 32, 1)[1]


def test_a_file_changed_after_the_scan_misses(rows, tmp_path):
    import shutil
    fm = _feats()
    one = rows.iloc[:1].copy()
    one["path"] = str(shutil.copy(one["path"].iloc[0], tmp_path / "x.png"))
    before, _ = feature_cache.pooled(fm, one, 32, 1)
    other = rows["path"].iloc[-1]
    shutil.copy(other, one["path"].iloc[0])                       # edited in place, sha256 column not rebuilt
    after, hit = feature_cache.pooled(fm, one, 32, 1)
    assert not hit
    expect = fm.predict(load_images(rows.iloc[-1:], 32, 1), verbose=0).mean(axis=(1, 2))
    np.testing.assert_allclose(after, expect, rtol=1e-5, atol=1e-6)
    assert not np.allclose(before, after)


@pytest.mark.slow
def test_two_phase_reuses_the_features_of_an_identical_frozen_backbone(rows):
    classes = ["non-fractured", "fractured"]
    tr, va = rows[rows.split == "train"], rows[rows.split == "val"]
    runs = []
    for _ in range(2):
        import keras
        keras.utils.set_random_seed(1)
        m, _ = transfer.build_transfer_model(1, "efficientnet_lite0", 32, 1, "none")
        runs.append(recipe.two_phase(m, tr, va, classes, 32, 1, phase1_epochs=1, phase2_epochs=0, verbose=0))
    assert [r["features_cached"] for r in runs] == [False, True]
    np.testing.assert_array_equal(runs[0]["pooled"]["train"], runs[1]["pooled"]["train"])
