"""`fracturelib export --format litert` (issue 22): the parity gate, the exported card, and a `.tflite`
prediction that gives the Keras model's answer without importing TensorFlow.

One small data folder (48 FracAtlas radiographs), one 32-px CNN whose head is a logistic regression of the
label on the mean grey level (fitted on the training images: the same scores on every CPU) and a tiny
localiser are made once for the module; conversions of such models take a second or two each.
"""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fracturelib import config
from fracturelib.app.cli import main
from fracturelib.models import cards, export
from fracturelib.models.cards import ModelCard

SIZE = 32
SPLIT = {"seed": 0, "val_fraction": 0.35, "test_fraction": 0.15, "subset_fraction": 1.0, "respect_existing": False}


def _tiny_localiser(folder):
    import keras
    from keras import layers
    inp = keras.Input((SIZE, SIZE, 1))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(layers.Rescaling(1 / 255)(inp))
    out = layers.Conv2D(1, 8, strides=8, activation="sigmoid", name="heatmap")(x)
    return cards.save_model(keras.Model(inp, out), folder / config.LOCALISER_FILE,
                            {"task": "localisation", "classes": ["fracture"], "image_size": SIZE, "channels": 1,
                             "preprocessing": "test"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model folder with bin.keras + localiser.keras, the data folder, its split rows)."""

    from fracturelib.data import build_manifest, usable
    from fracturelib.data.splits import split_from_card
    base = tmp_path_factory.mktemp("export")
    data = base / "tiny_fracatlas"
    for src, dst in (("Fractured", "fractured"), ("Non_fractured", "non-fractured")):
        (data / dst).mkdir(parents=True)
        for p in sorted((config.DEFAULT_FRACATLAS / "images" / src).glob("*.jpg"))[:24]:
            shutil.copy(p, data / dst / p.name)
    classes = list(config.BINARY_CLASSES)
    manifest = build_manifest(data, progress=False)
    rows = split_from_card(manifest, ModelCard(classes, SIZE, 1, data={"split": SPLIT, "manifest_hash":
                                                                      _hash(manifest)}))
    m = _grey_level_classifier(rows[rows.split == "train"], classes)
    threshold = _widest_gap(m, rows[rows.split == "val"])
    folder = base / "models"
    card = cards.make_card("binary", classes, SIZE, 1, "test", data, usable(manifest, classes), SPLIT,
                           {s: rows[rows.split == s] for s in ("train", "val", "test")}, threshold=threshold,
                           companions={"localiser": config.LOCALISER_FILE, "ood": config.OOD_FILE})
    cards.save_model(m, folder / "bin.keras", card)
    _tiny_localiser(folder)
    return folder, data, rows


def _grey_level_classifier(train, classes):
    """A Functional CNN (Rescaling, a 1x1 conv Grad-CAM can use, pooling, sigmoid) whose only learnt
    weights are a logistic regression of the label on the mean grey level, fitted on the training images.

    Trained, but with no CPU-dependent optimiser path: its scores are the same on every machine (to float32
    rounding), so the parity verdicts below rest on the stated margin (:func:`_margins`), not on luck.
    """
    import keras
    from keras import layers
    from sklearn.linear_model import LogisticRegression

    from fracturelib.data.pipeline import labels_for, load_images
    grey = load_images(train, SIZE, 1).mean(axis=(1, 2, 3))[:, None] / 255
    fit = LogisticRegression(C=1e4).fit(grey, labels_for(train, classes))
    inp = keras.Input((SIZE, SIZE, 1))
    x = layers.Conv2D(1, 1, kernel_initializer="ones", bias_initializer="zeros", name="conv")(
        layers.Rescaling(1 / 255)(inp))
    out = layers.Dense(1, activation="sigmoid", kernel_initializer=keras.initializers.Constant(fit.coef_),
                       bias_initializer=keras.initializers.Constant(fit.intercept_))(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inp, out)


def _widest_gap(model, val) -> float:
    """The decision threshold: the middle of the widest gap between the scores of the validation images and
    of the images the test predicts, among the middle half of them (both classes keep images each side)."""
    from fracturelib.data.imageio import read_image
    from fracturelib.data.pipeline import load_images, pad_resize
    probes = np.stack([pad_resize(read_image(_image(k), channels=1), SIZE).numpy() for k in range(2)])
    p = np.sort(model.predict(np.concatenate([load_images(val, SIZE, 1), probes]), verbose=0)[:, 0])
    middle = p[len(p) // 4:len(p) - len(p) // 4]
    i = int(np.argmax(np.diff(middle)))
    return float(middle[i] + middle[i + 1]) / 2


def _margins(model, images, labels, threshold):
    """(the smallest distance of a score to the threshold, the smallest gap between scores of different
    classes): float16 moves these scores by < 1e-3, so margins above 1e-3 keep decisions and ranks."""
    p = model.predict(images, verbose=0)[:, 0]
    y = np.asarray(labels).astype(bool)
    return float(np.abs(p - threshold).min()), float(np.abs(p[y][:, None] - p[~y][None, :]).min())


def _hash(manifest):
    from fracturelib.data import manifest_hash
    return manifest_hash(manifest)


@pytest.fixture(scope="module")
def exported(trained):
    folder, data, _ = trained
    return export.export_litert(folder / "bin.keras", "float16", data_dir=data, log=None)


def _image(k=0):
    return sorted((config.DEFAULT_FRACATLAS / "images" / "Fractured").glob("*.jpg"))[-1 - k]


def test_pad_resize_without_tensorflow_matches_tensorflow():
    from fracturelib.data.imageio import read_image
    from fracturelib.data.pipeline import pad_resize
    from fracturelib.data.resize import pad_resize_np
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, s).astype(np.uint8) for s in ((100, 80, 1), (30, 50, 3), (40, 41, 1))]
    for img in [*arrays, read_image(_image(), 1, need=448)]:
        for size in (32, 224):
            assert np.abs(pad_resize(img, size).numpy() - pad_resize_np(img, size)).max() < 0.01


def test_float16_export_passes_the_gate_and_predict_gives_the_keras_answer(trained, exported, tmp_path, capsys):
    import keras

    from fracturelib.data.pipeline import labels_for, load_images
    folder, _, rows = trained
    val, classes = rows[rows.split == "val"], list(config.BINARY_CLASSES)
    threshold = cards.read_card(folder / "bin.keras").threshold
    to_threshold, cross_class = _margins(keras.models.load_model(folder / "bin.keras", compile=False),
                                         load_images(val, SIZE, 1), labels_for(val, classes), threshold)
    assert to_threshold > 1e-3 and cross_class > 1e-3, (to_threshold, cross_class)   # the premise, stated
    assert exported.figures["max_abs_diff"] < 1e-3 / 2                  # ... and float16 stays inside it
    assert exported.passed and exported.path == folder / "bin.tflite" and exported.path.exists()
    f = exported.figures
    assert f["n"] == int((rows.split == "val").sum()) and f["agreement"] >= export.MIN_AGREEMENT
    assert f["roc_auc_diff"] is not None and f["roc_auc_diff"] <= export.MAX_AUC_DIFF
    assert (folder / export.LOCALISER_LITE).exists() and exported.companions["localiser"].name == "localiser.tflite"
    for k in range(2):
        answers = []
        for model in ("bin.keras", "bin.tflite"):
            assert main(["predict", str(_image(k)), "--model", str(folder / model), "--json",
                         "--overlay-dir", str(tmp_path / model)]) == 0
            answers.append(json.loads(capsys.readouterr().out))
        keras_r, lite_r = answers
        fractured = next(t["probability"] for t in keras_r["top"] if t["class"] == "fractured")
        assert abs(fractured - keras_r["threshold"]) > 1e-3              # the premise for this image too
        assert set(keras_r) == set(lite_r)                              # the same JSON schema
        assert lite_r["class"] == keras_r["class"] and abs(lite_r["confidence"] - keras_r["confidence"]) < 0.01
        assert lite_r["localisation"] == keras_r["localisation"] == "localiser (box-trained heatmap)"
        assert lite_r["overlay"] and lite_r["fracture_point"] == keras_r["fracture_point"]


def test_the_exported_card_round_trips_and_says_what_it_is(trained, exported):
    folder, _, _ = trained
    card = cards.read_card(exported.path)
    assert cards.card_path(exported.path).name == "bin.tflite.json"
    assert cards.read_card(folder / "bin.keras").format is None            # the Keras card is untouched
    assert card.format == "litert" and card.quantization == "float16"
    assert card.parity["checked"] and card.parity["passed"] and not card.parity["forced"]
    assert card.exported_from["file"] == "bin.keras" and card.model_file == "bin.tflite"
    assert card.companions["localiser"] == "localiser.tflite" and "ai-edge-litert" in card.versions
    again = ModelCard.from_dict(json.loads(json.dumps(card.to_dict())), source=card.source)
    assert again == card and again.extra == {}
    assert cards.read_card(folder / "localiser.tflite").task == "localisation"
    assert (folder / "bin.tflite.md").exists()


def test_without_the_card_s_data_export_asks_for_data_or_force(trained, tmp_path, capsys):
    folder, _, _ = trained
    out = tmp_path / "x" / "bin.tflite"
    assert main(["export", str(folder / "bin.keras"), "--format", "litert", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--data" in err and "--force" in err
    assert not out.exists()
    assert main(["export", str(folder / "bin.keras"), "--out", str(out), "--force"]) == 0
    card = cards.read_card(out)
    assert card.parity["checked"] is False and card.parity["forced"] and "not available" in card.parity[
        "not_checked_because"]


def test_an_int8_export_that_breaks_parity_is_refused(trained, tmp_path, capsys):
    """A model whose decision rests on a small activation beside a large one in the same tensor: int8 gives
    that tensor one scale, the small value rounds to 0 and every decision falls on one side."""
    import keras
    from keras import layers

    from fracturelib.data.pipeline import load_images
    folder, data, rows = trained
    val = load_images(rows[rows.split == "val"], SIZE, 1)
    means = np.sort(val.mean(axis=(1, 2, 3)) / 255)
    c = float(means[len(means) // 2 - 1] + means[len(means) // 2]) / 2     # half the images each side, none on it
    inp = keras.Input((SIZE, SIZE, 1))
    x = layers.Rescaling(1 / 255)(inp)
    small = layers.GlobalAveragePooling2D()(x)                                  # the mean grey level, 0..1
    big = layers.Rescaling(1000.0)(layers.GlobalMaxPooling2D()(x))             # up to 1000
    t = layers.Concatenate()([small, big])
    out = layers.Dense(1, activation="sigmoid", kernel_initializer=keras.initializers.Constant([[50.0], [0.0]]),
                       bias_initializer=keras.initializers.Constant(-50.0 * c))(t)
    d = tmp_path / "m"
    card = {**json.loads(cards.card_path(folder / "bin.keras").read_text()), "companions": {}}
    for k in ("input_shape", "model_sha256", "model_file", "versions"):
        card.pop(k)
    path = cards.save_model(keras.Model(inp, out), d / "fragile.keras", card)
    assert main(["export", str(path), "--quantize", "int8", "--calibration", "16", "--data", str(data)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "refused" in err[-1] and "agree on" in err[-1]
    assert "Traceback" not in "\n".join(err) and not (d / "fragile.tflite").exists()
    assert main(["export", str(path), "--quantize", "none", "--data", str(data)]) == 0      # float32 passes
    assert cards.read_card(d / "fragile.tflite").parity["agreement"] == 1.0


NO_TF = r"""
import json, sys
from fracturelib.app.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules}))
"""


def test_a_tflite_prediction_never_imports_tensorflow(trained, exported, tmp_path):
    """Classifier, localiser and radiograph (OOD) features all in LiteRT, in a fresh process."""
    import keras
    from keras import layers

    from fracturelib.models import ood
    folder, _, _ = trained
    d = tmp_path / "lite"
    d.mkdir()
    for name in ("bin.tflite", "bin.tflite.json", "localiser.tflite", "localiser.tflite.json"):
        shutil.copy(folder / name, d / name)
    card = json.loads((d / "bin.tflite.json").read_text())
    card["companions"]["ood_features"] = export.OOD_FEATURES_LITE
    (d / "bin.tflite.json").write_text(json.dumps(card))
    inp = keras.Input((ood.MIN_SIZE, ood.MIN_SIZE, 1))     # a tiny stand-in for the ImageNet feature extractor
    feats = keras.Model(inp, layers.GlobalAveragePooling2D()(layers.Conv2D(8, 3)(layers.Rescaling(1 / 255)(inp))))
    (d / export.OOD_FEATURES_LITE).write_bytes(export.convert(feats))
    rng = np.random.default_rng(0)
    f = rng.normal(size=(40, 8))
    ood.Detector(f.mean(0), np.eye(8) * 1e-6, 1e6, 0.99, 40, ood.MIN_SIZE).save(d / config.OOD_FILE)
    out = subprocess.run([sys.executable, "-c", NO_TF, "predict", str(_image()), "--model", str(d / "bin.tflite"),
                          "--json", "--overlay-dir", str(tmp_path / "ov"), "--threads", "1"],
                         capture_output=True, text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    status = json.loads(lines[-1])
    assert status == {"code": 0, "tensorflow": False, "keras": False}, out.stderr[-2000:]
    r = json.loads("\n".join(lines[:-1]))
    assert r["in_distribution"] is True and r["class"] in config.BINARY_CLASSES
    assert r["localisation"].startswith("localiser") and r["overlay"]


def test_a_decision_on_the_threshold_is_a_tie_not_a_disagreement():
    """Notebook 02's threshold is a validation score: float rounding alone must not fail the gate there."""
    ref = np.array([0.1, 0.2382315844297409, 0.9])
    f = export.parity(ref, ref - np.array([0, 3e-8, 0]), np.array([0, 1, 1]), 0.2382315844297409)
    assert f["agreement"] == 1.0 and f["ties"] == 1 and export.passes(f)
    f = export.parity(ref, ref - np.array([0, 0.01, 0]), None, 0.2382315844297409)        # a real flip counts
    assert f["agreement"] < export.MIN_AGREEMENT and f["ties"] == 0
