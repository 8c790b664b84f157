"""Model builder, saving with a card, refusing mismatches, and same seed -> same metrics."""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    assert card.data["n"] == {s: len(v) for s, v in parts.items()} and card.threshold == 0.4
    assert split_from_card(manifest, card)["split"].equals(d["split"])
    with pytest.raises(ValueError, match="seed"):
        cards.make_card("binary", ["a", "b"], 32, 1, "gray", tmp_path / "ds", manifest, {}, parts)


def test_saved_model_has_a_readable_card_with_valid_front_matter(tmp_path):
    from fracturelib.models import card_markdown
    m = cnn.build_binary_cnn(32, 1)
    ci = {"value": 0.8, "ci_low": 0.7, "ci_high": 0.9}
    card = {"task": "binary", "classes": ["non-fractured", "fractured"], "image_size": 32, "channels": 1,
            "preprocessing": "gray", "threshold": 0.4, "target_sensitivity": 0.9, "model_name": "design CNN",
            "data": {"root": "fracatlas", "manifest_hash": "abc", "split": {"seed": 1}, "n": {"test": 10}},
            "test_metrics": {"roc_auc": ci, "recall": ci}, "temperature": 1.5,
            "calibration": {"as trained": {"Brier": 0.2, "ECE (equal width)": 0.1}}}
    path = cards.save_model(m, tmp_path / "b.keras", card)
    text = path.with_suffix(".md").read_text()
    fm = card_markdown.front_matter(text)
    assert fm["library_name"] == "keras" and fm["datasets"] == ["FracAtlas"] and fm["metrics"] == ["recall", "roc_auc"]
    assert {"license", "tags", "pipeline_tag"} <= set(fm)
    for section in ("## Model details", "## Intended use", "**Out of scope:**", "## Training data and split",
                    "## Evaluation data", "## Metrics", "## Calibration", "## Limitations", "## How to load"):
        assert section in text, section
    assert "| roc_auc | 0.800 (95% CI 0.700-0.900) |" in text and "not medical advice" in text
    assert "load_model(\"b.keras\")" in text
    assert "are not recognised as such" in text                   # this card names no radiograph detector
    with pytest.raises(ValueError):
        card_markdown.front_matter("# no front matter")


def test_a_localiser_card_reads_as_a_localiser_and_names_its_detector():
    from fracturelib.models import card_markdown
    card = cards.ModelCard.from_dict({"task": "localisation", "classes": ["fracture"], "image_size": 64, "channels": 1,
                                      "preprocessing": "gray", "data": {"root": "fracatlas"}})
    text = card_markdown.render(card)
    assert "where the fracture is" in text and "fracture types" not in text and "arg-max" not in text
    assert card_markdown.front_matter(text)["pipeline_tag"] == "object-detection"
    binary = cards.ModelCard.from_dict({"task": "binary", "classes": ["a", "b"], "image_size": 64, "channels": 1,
                                        "preprocessing": "gray", "companions": {"ood": "ood.npz"}})
    assert "radiograph detector named in this card (`ood.npz`)" in card_markdown.render(binary)


def test_a_card_from_a_newer_fracturelib_is_refused(tmp_path):
    m = cnn.build_binary_cnn(32, 1)
    path = cards.save_model(m, tmp_path / "b.keras", {"classes": ["a", "b"], "image_size": 32, "channels": 1,
                                                        "preprocessing": "gray"})
    card = json.loads(cards.card_path(path).read_text())
    card["card_version"] = cards.CARD_VERSION + 1
    cards.card_path(path).write_text(json.dumps(card))
    with pytest.raises(cards.ModelCardError, match="newer fracturelib"):
        cards.load_model(path)


# --- the typed card (issue 17 item 2) and damaged files (issue 18 item 7) ---

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved 32 px binary CNN; tests copy it before damaging anything."""
    d = tmp_path_factory.mktemp("saved")
    return cards.save_model(cnn.build_binary_cnn(32, 1), d / "m.keras", {**_card(), "task": "binary"})


def _copy(saved, tmp_path, edit=None, name="m.keras"):
    import shutil
    path = tmp_path / name
    shutil.copy(saved, path)
    card = json.loads(cards.card_path(saved).read_text())
    text = json.dumps(edit(card) if edit else card)
    cards.card_path(path).write_text(text)
    return path


@pytest.mark.parametrize("key,value,why", [
    ("card_version", "2", "card_version is \"2\", but must be a whole number"),
    ("card_version", 0, "card_version is 0"),
    ("classes", 5, "classes is 5, but must be a non-empty list"),
    ("classes", ["a", "a"], "distinct"),
    ("classes", [], "non-empty list"),
    ("threshold", "high", "threshold is \"high\", but must be a number in [0, 1]"),
    ("threshold", 1.5, "threshold is 1.5"),
    ("threshold", float("nan"), "threshold is NaN"),
    ("threshold", True, "threshold is true"),
    ("image_size", 0, "image_size is 0, but must be a positive whole number"),
    ("image_size", 32.0, "image_size is 32.0"),
    ("image_size", "32", "image_size is \"32\""),
    ("channels", 2, "channels is 2, but must be 1 (grayscale) or 3 (RGB)"),
    ("temperature", -1, "temperature is -1"),
    ("preferred", "yes", "preferred is \"yes\", but must be true or false"),
    ("companions", {"ood": "../elsewhere/ood.npz"}, "companions is"),
    ("input_shape", [32, 32], "input_shape is [32, 32]"),
    ("data", {"split": 3}, "data is"),
])
def test_each_bad_card_field_is_a_one_line_error_naming_the_card(saved, tmp_path, key, value, why):
    path = _copy(saved, tmp_path, lambda c: {**c, key: value})
    with pytest.raises(cards.ModelCardError) as e:
        cards.load_model(path)
    msg = str(e.value)
    assert why in msg and str(cards.card_path(path)) in msg and "\n" not in msg
    assert "re-save the model" in msg


def test_a_missing_key_and_a_newer_version_name_the_card(saved, tmp_path):
    path = _copy(saved, tmp_path, lambda c: {k: v for k, v in c.items() if k != "channels"})
    with pytest.raises(cards.ModelCardError, match="is missing 'channels'"):
        cards.read_card(path)
    path = _copy(saved, tmp_path, lambda c: {**c, "card_version": cards.CARD_VERSION + 1})
    with pytest.raises(cards.ModelCardError, match=f"version {cards.CARD_VERSION + 1}.*upgrade fracturelib"):
        cards.read_card(path)


def test_load_model_returns_a_typed_card_and_keeps_unknown_keys(saved, tmp_path):
    path = _copy(saved, tmp_path, lambda c: {**c, "from_the_future": {"x": [1, 2]}, "threshold": 0})
    _, card = cards.load_model(path)
    assert isinstance(card, cards.ModelCard) and card.card_version == cards.CARD_VERSION
    assert card.classes == CLASSES and card.image_size == 32 and card.channels == 1 and card.task == "binary"
    assert card.threshold == 0.0 and card.decision_threshold == 0.0 and card.tta_flip is False
    assert card.extra == {"from_the_future": {"x": [1, 2]}} and card.source == cards.card_path(path)
    d = card.to_dict()
    assert d["from_the_future"] == {"x": [1, 2]} and d["model_sha256"] == card.model_sha256
    assert cards.ModelCard.from_dict(d, source="x.json") == card          # a round trip
    assert card.companion("ood") is None                                  # version 2 names its own


def test_a_version_1_card_still_loads_with_the_default_companions(saved, tmp_path):
    path = _copy(saved, tmp_path, lambda c: {**{k: v for k, v in c.items() if k != "companions"},
                                                "card_version": 1, "preferred": True})
    _, card = cards.load_model(path)
    assert card.card_version == 1 and card.preferred is True
    assert card.companion("ood") == config.OOD_FILE and card.companion("localiser") == config.LOCALISER_FILE
    assert card.companion_path("ood") == tmp_path / config.OOD_FILE


def test_make_card_names_companions_and_types_its_values(tmp_path):
    card = cards.make_card("binary", CLASSES, 32, 1, "gray", data={"root": "x", "split": {"seed": 1}},
                           companions=config.COMPANIONS, threshold=np.float32(0.25), alpha=np.float64(1.0))
    assert card.companions == {"localiser": "localiser.keras", "detector": "detector.keras", "ood": "ood.npz"}
    assert card.threshold == 0.25 and type(card.threshold) is float and card.data["split"] == {"seed": 1}
    with pytest.raises(cards.ModelCardError, match="threshold is \"high\""):
        cards.make_card("binary", CLASSES, 32, 1, "gray", data={}, threshold="high")
    with pytest.raises(ValueError, match="data="):
        cards.make_card("binary", CLASSES, 32, 1, "gray")


def test_outputs_must_agree_with_the_classes(saved, tmp_path):
    import keras
    ten = list(config.FRACTURE_TYPES)
    with pytest.raises(cards.ModelCardError, match="1 output unit .one sigmoid unit: 2 classes. but its card lists 10"):
        cards.save_model(cnn.build_binary_cnn(32, 1), tmp_path / "s.keras", {**_card(), "classes": ten})
    path = _copy(saved, tmp_path, lambda c: {**c, "classes": ten})      # the card edited behind its back
    with pytest.raises(cards.ModelCardError, match="lists 10 classes") as e:
        cards.load_model(path)
    assert "\n" not in str(e.value)
    inp = keras.Input((32, 32, 3))
    soft = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inp)))
    with pytest.raises(cards.ModelCardError, match="10 output units .softmax over 10 classes. but its card lists 3"):
        cards.save_model(soft, tmp_path / "t.keras", {"classes": ["a", "b", "c"], "image_size": 32, "channels": 3,
                                                      "preprocessing": "x"})
    with pytest.raises(cards.ModelCardError, match="model input \\[32, 32, 3\\] differs"):
        cards.save_model(soft, tmp_path / "u.keras", {"classes": ten, "image_size": 64, "channels": 3,
                                                      "preprocessing": "x"})
    with pytest.raises(cards.ModelCardError, match="is a classifier .* task 'localisation'"):
        cards.save_model(soft, tmp_path / "v.keras", {"classes": ten, "image_size": 32, "channels": 3,
                                                      "preprocessing": "x", "task": "localisation"})


@pytest.mark.parametrize("damage", ["truncated", "not a zip", "empty", "zip without a model"])
def test_a_damaged_keras_file_is_named_not_file_not_found(saved, tmp_path, damage):
    import zipfile
    path = _copy(saved, tmp_path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "not a zip":
        path.write_text("<html>404 Not Found</html>")
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", "hello")
    with pytest.raises(cards.ModelCardError) as e:
        cards.load_model(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and "not a Keras model archive (truncated or damaged); re-save it" in msg
    assert "File not found" not in msg and "\n" not in msg


# Random JSON values for every card field: a ModelCard or a ModelCardError, never another exception.
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: (st.lists(inner, max_size=3)
                                    | st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                     max_leaves=8)
_FIELDS = sorted(cards._CHECKS) + ["unknown_key"]
_GOOD = {"card_version": 2, "task": "binary", "classes": ["a", "b"], "image_size": 32, "channels": 1,
         "preprocessing": "gray", "threshold": 0.5, "companions": {"ood": "ood.npz"},
         "input_shape": [32, 32, 1], "model_sha256": "ab"}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_FIELDS), _json, max_size=6), st.booleans())
def test_random_card_values_give_a_card_or_a_card_error(changes, start_empty):
    d = {**({} if start_empty else _GOOD), **changes}
    try:
        card = cards.ModelCard.from_dict(d, source="random.json")
    except cards.ModelCardError as e:
        assert "\n" not in str(e) and str(e).startswith("random.json")
        return
    again = cards.ModelCard.from_dict(json.loads(json.dumps(card.to_dict())), source="random.json")
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(card.to_dict(), sort_keys=True)
    assert card.companion("ood") is None or "/" not in card.companion("ood")


def test_profiles_and_notebook_defaults_use_the_model_file_names_of_config():
    """Model file names live in fracturelib.config; a card names its companions by them."""
    import re

    import yaml
    names = set()
    for prof in sorted(config.PARAMS_DIR.glob("*.yaml")):
        for run in yaml.safe_load(prof.read_text())["runs"]:
            names |= {v.rsplit("/", 1)[-1] for v in run["parameters"].values()
                      if isinstance(v, str) and v.endswith((".keras", ".npz"))}
    for nb in sorted(config.NOTEBOOKS_DIR.glob("0*.ipynb")):
        names |= set(re.findall(r"models/(\w+\.(?:keras|npz))", nb.read_text()))
    assert names and names <= set(config.MODEL_FILES), names - set(config.MODEL_FILES)


# --- damaged cards are one-line ModelCardErrors at their root (huge integers, temperature, class names) ---

def test_a_card_with_a_huge_integer_is_a_one_line_card_error(saved, tmp_path):
    """Python refuses to convert an integer of more than 4300 digits (ValueError, not JSONDecodeError)."""
    path = _copy(saved, tmp_path)
    card = cards.card_path(path)
    card.write_text(card.read_text().replace('"image_size": 32', '"image_size": 1' + "0" * 5000))
    with pytest.raises(cards.ModelCardError) as e:
        cards.read_card(path)
    msg = str(e.value)
    assert msg.startswith(str(card)) and "not a valid model card" in msg and "\n" not in msg and len(msg) < 400


def test_a_card_that_is_a_folder_is_a_card_error(saved, tmp_path):
    path = _copy(saved, tmp_path)
    cards.card_path(path).unlink()
    cards.card_path(path).mkdir()
    with pytest.raises(cards.ModelCardError, match="cannot read the model card"):
        cards.read_card(path)


@pytest.mark.parametrize("t", [1e-308, 0.049, 20.5, 1e300, float("inf")])
def test_a_temperature_outside_its_range_is_refused(saved, tmp_path, t):
    path = _copy(saved, tmp_path, lambda c: {**c, "temperature": t})
    with pytest.raises(cards.ModelCardError, match=r"temperature is .*, but must be a number in \[0.05, 20\]"):
        cards.read_card(path)


@pytest.mark.parametrize("t", list(cards.TEMPERATURE_RANGE))
def test_the_temperature_range_cannot_overflow_the_scaled_probabilities(t):
    from fracturelib.metrics.calibration import apply_temperature
    assert cards.ModelCard.from_dict({**_card(), "temperature": t}).temperature == t
    with np.errstate(all="raise"):                 # overflow would raise FloatingPointError
        binary = apply_temperature(np.array([0.0, 1e-30, 0.5, 1 - 1e-16, 1.0]), t)
        multi = apply_temperature(np.array([[1.0, 0.0, 0.0], [1e-30, 0.5, 0.5]]), t)
    assert np.isfinite(binary).all() and np.isfinite(multi).all()
    np.testing.assert_allclose(multi.sum(axis=1), 1)


@pytest.mark.parametrize("name", ["frac\u202etured", "a\u2066b", "bell\x07", "two\nlines", "nul\x00",
                                  "x" * 101, "   ", "sep\u2028arator", "\ud800"])
def test_class_names_must_be_printable(saved, tmp_path, name):
    path = _copy(saved, tmp_path, lambda c: {**c, "classes": ["not fractured", name]})
    with pytest.raises(cards.ModelCardError) as e:
        cards.read_card(path)
    msg = str(e.value)
    assert "printable class names" in msg and "\n" not in msg and msg.isprintable()


def test_printable_unicode_class_names_are_kept():
    names = ["Fraktur (Ellenbogen)", "fractura de cúbito", "x" * 100]
    assert cards.ModelCard.from_dict({**_card(), "classes": names}).classes == names
