"""Model builder, saving with a card, refusing mismatches, and same seed -> same metrics."""
import json

import numpy as np
import pytest

from fracturelib import config
from fracturelib.data import build_manifest
from fracturelib.data.pipeline import make_dataset
from fracturelib.data.splits import assign_splits
from fracturelib.models import cards, cnn, train
from tests.conftest import write_tree

CLASSES = list(config.BINARY_CLASSES)


def test_binary_cnn_design():
    m = cnn.build_binary_cnn(64, 1)
    kinds = [type(layer).__name__ for layer in m.layers]
    assert kinds == ["InputLayer", "Rescaling", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D",
                     "Flatten", "Dense", "Dropout", "Dense"]
    assert [m.get_layer(n).filters for n in ("conv1", "conv2")] == [32, 64]
    assert m.get_layer("dense").units == 128 and m.output_shape == (None, 1)


def _card():
    return {"classes": CLASSES, "image_size": 32, "channels": 1, "preprocessing": "test"}


def test_save_and_load_checks_card(tmp_path):
    m = cnn.build_binary_cnn(32, 1)
    path = cards.save_model(m, tmp_path / "m.keras", _card())
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["input_shape"] == [32, 32, 1] and "keras" in card["versions"]
    loaded, c = cards.load_model(path, expect={"classes": CLASSES, "channels": 1})
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype("float32") * 255
    np.testing.assert_allclose(loaded.predict(x, verbose=0), m.predict(x, verbose=0), atol=1e-6)
    with pytest.raises(cards.ModelCardError, match="channels=1, expected 3"):
        cards.load_model(path, expect={"channels": 3})
    with pytest.raises(cards.ModelCardError, match="classes"):
        cards.load_model(path, expect={"classes": ["a", "b", "c"]})


def test_tampered_or_cardless_model_refused(tmp_path):
    m = cnn.build_binary_cnn(32, 1)
    path = cards.save_model(m, tmp_path / "m.keras", _card())
    other = cnn.build_binary_cnn(32, 1)
    other.save(path)                       # replaced behind the card's back
    with pytest.raises(cards.ModelCardError, match="hash mismatch"):
        cards.load_model(path)
    (tmp_path / "m.json").unlink()
    with pytest.raises(cards.ModelCardError, match="no model card"):
        cards.load_model(path)
    with pytest.raises(ValueError, match="missing 'preprocessing'"):
        cards.save_model(m, tmp_path / "n.keras", {"classes": CLASSES, "image_size": 32, "channels": 1})


@pytest.mark.slow
def test_same_seed_same_split_and_metrics(tmp_path):
    write_tree(tmp_path / "ds", {"fractured": 20, "non-fractured": 30})
    df = build_manifest(tmp_path / "ds")

    def run(seed):
        train.set_seed(seed)
        d = assign_splits(df, seed=seed, respect_existing=False)
        tr, va = d[d.split == "train"], d[d.split == "val"]
        m = cnn.build_binary_cnn(32, 1)
        h = train.fit(m, make_dataset(tr, CLASSES, 32, 1, 8, training=True, seed=seed),
                      make_dataset(va, CLASSES, 32, 1, 8), epochs=2, verbose=0)
        return list(d["split"]), h.history["val_auc"], train.predict(m, make_dataset(va, CLASSES, 32, 1, 8))

    a, b = run(3), run(3)
    assert a[0] == b[0] and a[1] == b[1]
    np.testing.assert_array_equal(a[2], b[2])


def test_make_card_is_what_split_from_card_reads_back(tmp_path):
    from fracturelib.data import build_manifest
    from fracturelib.data.splits import assign_splits, split_from_card
    from tests.conftest import write_tree
    write_tree(tmp_path / "ds", {"a": 12, "b": 12})
    manifest = build_manifest(tmp_path / "ds")
    split = dict(seed=3, val_fraction=0.2, test_fraction=0.2, subset_fraction=1.0, respect_existing=False)
    d = assign_splits(manifest, 0.2, 0.2, seed=3, respect_existing=False)
    parts = {s: d[d.split == s] for s in ("train", "val", "test")}
    card = cards.make_card("binary", ["a", "b"], 32, 1, "gray", tmp_path / "ds", manifest, split, parts, threshold=0.4)
    assert card["data"]["n"] == {s: len(v) for s, v in parts.items()} and card["threshold"] == 0.4
    assert split_from_card(manifest, card)["split"].equals(d["split"])
    with pytest.raises(ValueError, match="seed"):
        cards.make_card("binary", ["a", "b"], 32, 1, "gray", tmp_path / "ds", manifest, {}, parts)


def test_saved_model_has_a_readable_card_with_valid_front_matter(tmp_path):
    from fracturelib.models import card_markdown as modelcard
    m = cnn.build_binary_cnn(32, 1)
    ci = {"value": 0.8, "ci_low": 0.7, "ci_high": 0.9}
    card = {"task": "binary", "classes": ["non-fractured", "fractured"], "image_size": 32, "channels": 1,
            "preprocessing": "gray", "threshold": 0.4, "target_sensitivity": 0.9, "model_name": "design CNN",
            "data": {"root": "fracatlas", "manifest_hash": "abc", "split": {"seed": 1}, "n": {"test": 10}},
            "test_metrics": {"roc_auc": ci, "recall": ci}, "temperature": 1.5,
            "calibration": {"as trained": {"Brier": 0.2, "ECE (equal width)": 0.1}}}
    path = cards.save_model(m, tmp_path / "b.keras", card)
    text = path.with_suffix(".md").read_text()
    fm = modelcard.front_matter(text)
    assert fm["library_name"] == "keras" and fm["datasets"] == ["FracAtlas"] and fm["metrics"] == ["recall", "roc_auc"]
    assert {"license", "tags", "pipeline_tag"} <= set(fm)
    for section in ("## Model details", "## Intended use", "**Out of scope:**", "## Training data and split",
                    "## Evaluation data", "## Metrics", "## Calibration", "## Limitations", "## How to load"):
        assert section in text, section
    assert "| roc_auc | 0.800 (95% CI 0.700-0.900) |" in text and "not medical advice" in text
    assert "load_model(\"b.keras\")" in text
    with pytest.raises(ValueError):
        modelcard.front_matter("# no front matter")


def test_a_card_from_a_newer_fracturelib_is_refused(tmp_path):
    m = cnn.build_binary_cnn(32, 1)
    path = cards.save_model(m, tmp_path / "b.keras", {"classes": ["a", "b"], "image_size": 32, "channels": 1,
                                                        "preprocessing": "gray"})
    card = json.loads(cards.card_path(path).read_text())
    card["card_version"] = cards.CARD_VERSION + 1
    cards.card_path(path).write_text(json.dumps(card))
    with pytest.raises(cards.ModelCardError, match="newer fracturelib"):
        cards.load_model(path)
