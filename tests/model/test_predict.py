"""`fracturelib predict` on real images of both datasets and on every image mode."""
import json
import os

import pytest

from fracturelib import config
from fracturelib.app.cli import main
from fracturelib.models import cards, cnn, losses
from tests.conftest import make_bad_corpus


@pytest.fixture(scope="module")
def binary_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    m = cnn.build_binary_cnn(64, 1)
    return cards.save_model(m, d / "bin.keras", {"classes": list(config.BINARY_CLASSES), "image_size": 64,
                                                   "channels": 1, "preprocessing": "test", "threshold": 0.4})


@pytest.fixture(scope="module")
def types_model(tmp_path_factory):
    import keras
    from keras import layers
    d = tmp_path_factory.mktemp("t")
    inp = keras.Input((48, 48, 3))
    x = layers.Conv2D(8, 3, activation="relu", name="conv")(layers.Rescaling(1 / 255)(inp))
    out = layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    return cards.save_model(keras.Model(inp, out), d / "types.keras",
                             {"classes": list(config.FRACTURE_TYPES), "image_size": 48, "channels": 3,
                              "preprocessing": "test"})


def _real_images():
    fa = next((config.DEFAULT_FRACATLAS / "images" / "Fractured").glob("*.jpg"))
    bb = next((config.DEFAULT_BONE_BREAK / "Spiral Fracture" / "Test").glob("*.jpg"))
    return fa, bb


def test_predict_real_images_json(binary_model, tmp_path, capsys):
    fa, bb = _real_images()
    for img in (fa, bb):
        assert main(["predict", str(img), "--model", str(binary_model), "--json",
                     "--overlay-dir", str(tmp_path)]) == 0
        r = json.loads(capsys.readouterr().out)
        assert r["class"] in config.BINARY_CLASSES and 0 <= r["confidence"] <= 1
        assert [t["class"] for t in r["top"]] and abs(sum(t["probability"] for t in r["top"]) - 1) < 1e-5
        assert r["threshold"] == 0.4 and "Not medical advice" in r["note"]
        from PIL import Image
        assert Image.open(r["overlay"]).size == Image.open(img).size


@pytest.mark.parametrize("name", ["gray.png", "rgba.png", "gray16.png", "cmyk.jpg", "palette.png"])
def test_predict_any_mode(binary_model, tmp_path, capsys, name):
    corpus = make_bad_corpus(tmp_path / "c")
    assert main(["predict", str(corpus / name), "--model", str(binary_model),
                 "--overlay-dir", str(tmp_path)]) == 0
    assert "Grad-CAM overlay:" in capsys.readouterr().out


@pytest.mark.parametrize("name,why", [("truncated.jpg", "truncated"), ("bomb.png", "too large"),
                                      ("text.jpg", "not an image"), ("zero.jpg", "empty")])
def test_predict_rejects_broken_files(binary_model, tmp_path, capsys, name, why):
    corpus = make_bad_corpus(tmp_path / "c")
    assert main(["predict", str(corpus / name), "--model", str(binary_model)]) == 1
    err = capsys.readouterr().err
    assert name in err and why in err


def test_predict_missing_model_is_clear(tmp_path, capsys):
    fa, _ = _real_images()
    assert main(["predict", str(fa), "--model", str(tmp_path / "none.keras")]) == 2
    assert "no such model file" in capsys.readouterr().err


def test_fracture_type_card(types_model, tmp_path, capsys):
    _, bb = _real_images()
    assert main(["predict", str(bb), "--model", str(types_model), "--overlay-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for k in ("Overview:", "Symptoms:", "Causes:", "Diagnosis:", "Treatment:", "Prognosis:", "Not medical advice"):
        assert k in out


def test_every_type_has_a_full_card():
    from fracturelib.app.predict import info_card
    for t in config.FRACTURE_TYPES:
        card = info_card(t)
        assert all(len(card[k]) > 40 for k in ("overview", "symptoms", "causes", "diagnosis", "treatment", "prognosis"))
    assert info_card("fractured") is None


@pytest.mark.parametrize("threshold,label,explained", [(0.0, "fractured", 1), (1.0, "non-fractured", 0)])
def test_heatmap_explains_the_reported_class(tmp_path, monkeypatch, threshold, label, explained):
    """The card's threshold decides the label; the CAM must explain that label, not p >= 0.5."""
    import fracturelib.explain as ex
    from fracturelib.app.predict import Predictor
    m = cnn.build_binary_cnn(64, 1)
    path = cards.save_model(m, tmp_path / "b.keras", {"classes": list(config.BINARY_CLASSES), "image_size": 64,
                                                       "channels": 1, "preprocessing": "test", "threshold": threshold})
    explained_by = []
    real = ex.compute

    def spy(name, model, x, target=None, **kw):
        cams, out = real(name, model, x, target=target, **kw)
        explained_by.append(int(ex.targets.as_target(target).classes(out)[0]))
        return cams, out
    monkeypatch.setattr(ex, "compute", spy)
    r = Predictor(path).predict(_real_images()[0], overlay_dir=tmp_path)
    assert r["class"] == label and explained_by[-1] == explained


def test_default_model_is_the_one_whose_card_says_preferred(tmp_path):
    import json

    from fracturelib.app.predict import default_model
    assert default_model(tmp_path) == tmp_path / "binary_cnn.keras"        # nothing trained yet
    card = {"classes": list(config.BINARY_CLASSES), "image_size": 64, "channels": 1, "input_shape": [64, 64, 1],
            "model_sha256": "0" * 64}
    for name, pref in (("binary_cnn", True), ("binary_transfer", False)):
        (tmp_path / f"{name}.keras").write_bytes(b"x")
        (tmp_path / f"{name}.json").write_text(json.dumps({**card, "preferred": pref}))
    assert default_model(tmp_path) == tmp_path / "binary_cnn.keras"
    (tmp_path / "binary_transfer.json").write_text(json.dumps({**card, "preferred": True}))
    (tmp_path / "binary_cnn.json").write_text(json.dumps({**card, "preferred": False}))
    assert default_model(tmp_path) == tmp_path / "binary_transfer.keras"
    (tmp_path / "binary_transfer.json").write_text("{damaged")          # a damaged card is passed over
    assert default_model(tmp_path) == tmp_path / "binary_transfer.keras"


def test_predict_answers_where_with_the_localiser_or_the_cam_peak(binary_model, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from fracturelib.app.predict import Predictor
    from fracturelib.models import localiser
    fa, _ = _real_images()
    w, h = Image.open(fa).size
    # without a localiser beside the model: the Grad-CAM peak, inside the image
    assert main(["predict", str(fa), "--model", str(binary_model), "--json", "--overlay-dir", str(tmp_path)]) == 0
    r = json.loads(capsys.readouterr().out)
    r = r[0] if isinstance(r, list) else r
    assert r["localisation"] == "gradcam" and 0 <= r["fracture_point"][0] < w and 0 <= r["fracture_point"][1] < h
    # with one: its heatmap's peak, in the original image's pixels
    loc, _ = localiser.build(64, 1, weights="none", width=8)
    last = loc.get_layer("head").get_layer("heatmap_logits")
    k, b = last.get_weights()
    last.set_weights([np.zeros_like(k), b])                   # a flat map but for one hot cell
    loc.get_layer("head").compile("adam", losses.focal_loss)   # as after training: saved with its loss
    path = cards.save_model(loc, tmp_path / "loc.keras", {"classes": ["fracture"], "image_size": 64, "channels": 1,
                                                             "preprocessing": "test"})
    p = Predictor(binary_model, localiser_path=path)
    raw = p.localiser.predict_on_batch(np.zeros((1, 64, 64, 1), "float32"))
    assert raw.shape == (1, 8, 8, 1)
    r = p.predict(fa, overlay_dir=tmp_path)
    assert r["localisation"].startswith("localiser") and len(r["fracture_point"]) == 2
    assert 0 <= r["fracture_point"][0] < w and 0 <= r["fracture_point"][1] < h
    assert Image.open(r["overlay"]).size == (w, h)


@pytest.mark.slow
def test_predict_flags_a_photo_as_not_a_radiograph_and_gives_no_answer(tmp_path, capsys):
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from fracturelib.data import build_manifest, usable
    from fracturelib.data.pipeline import load_images
    from fracturelib.models import ood
    m = cnn.build_binary_cnn(64, 1)
    path = cards.save_model(m, tmp_path / "bin.keras", {"task": "binary", "classes": list(config.BINARY_CLASSES),
                                                          "image_size": 64, "channels": 1, "preprocessing": "test",
                                                          "companions": {"ood": config.OOD_FILE}})
    rows = usable(build_manifest(config.DEFAULT_FRACATLAS)).head(240)
    feats = ood.feature_model(1).predict(load_images(rows, ood.SIZE, 1), verbose=0)
    ood.fit(feats[:200], feats[200:]).save(tmp_path / "ood.npz")
    Image.fromarray(load_sample_image("china.jpg")).save(tmp_path / "china.jpg")
    radiograph = rows["path"].iloc[0]
    assert main(["predict", str(tmp_path / "china.jpg"), radiograph, "--model", str(path), "--json",
                 "--overlay-dir", str(tmp_path)]) == 0
    photo, xray = json.loads(capsys.readouterr().out)
    assert photo["in_distribution"] is False and photo["class"] is None and "warning" in photo
    assert photo["overlay"] is None and photo["fracture_point"] is None and "info" not in photo   # no answer at all
    assert xray["in_distribution"] is True and xray["class"] in config.BINARY_CLASSES


def test_one_bad_image_does_not_abort_the_others(binary_model, tmp_path, capsys):
    fa, bb = _real_images()
    corpus = make_bad_corpus(tmp_path / "c")
    code = main(["predict", str(fa), str(corpus / "truncated.jpg"), str(bb), "--model",
                 str(binary_model), "--overlay-dir", str(tmp_path / "o"), "--json"])
    assert code == 1
    out = json.loads(capsys.readouterr().out)
    assert [("error" in r) for r in out] == [False, True, False]
    assert "truncated" in out[1]["error"] and out[2]["class"] in config.BINARY_CLASSES


def test_same_stem_inputs_get_distinct_overlays(binary_model, tmp_path, capsys):
    from PIL import Image
    fa, bb = _real_images()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.open(fa).save(tmp_path / "a" / "x.jpg")
    Image.open(bb).save(tmp_path / "b" / "x.png")
    assert main(["predict", str(tmp_path / "a" / "x.jpg"), str(tmp_path / "b" / "x.png"), "--model",
                 str(binary_model), "--overlay-dir", str(tmp_path / "o"), "--json"]) == 0
    paths = [r["overlay"] for r in json.loads(capsys.readouterr().out)]
    assert len(set(paths)) == 2 and all(os.path.exists(p) for p in paths)


def test_an_input_in_the_overlay_folder_is_never_overwritten(binary_model, tmp_path, capsys):
    """``predict d/x.jpg d/x_overlay.png --overlay-dir d``: the user's x_overlay.png is an input; it is read,
    answered and left as it was."""
    import hashlib

    from PIL import Image
    fa, bb = _real_images()
    d = tmp_path / "d"
    d.mkdir()
    Image.open(fa).save(d / "x.jpg")
    Image.open(bb).convert("L").save(d / "x_overlay.png")
    before = hashlib.sha256((d / "x_overlay.png").read_bytes()).hexdigest()
    assert main(["predict", str(d / "x.jpg"), str(d / "x_overlay.png"), "--model", str(binary_model),
                 "--overlay-dir", str(d), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert hashlib.sha256((d / "x_overlay.png").read_bytes()).hexdigest() == before
    assert all(r["class"] for r in out) and len({r["overlay"] for r in out}) == 2
    assert str(d / "x_overlay.png") not in {r["overlay"] for r in out}


def test_a_very_large_jpeg_is_answered_in_the_file_s_own_pixels(binary_model, tmp_path):
    """Large JPEGs are decoded reduced; the fracture point is still given in the file's pixels."""
    import cv2
    import numpy as np

    from fracturelib.app.predict import Predictor
    a = np.zeros((1200, 9000), np.uint8)
    a[200:1000, 6000:8000] = 220                           # the only structure: the right-hand part
    cv2.imwrite(str(tmp_path / "wide.jpg"), a)
    p = Predictor(binary_model)
    pred = p.analyse(tmp_path / "wide.jpg")
    assert pred.image.shape[1] < 9000                       # decoded reduced ...
    scale = 9000 / pred.image.shape[1]
    x, y = pred.fields["fracture_point"]                    # ... answered in the file's pixels
    assert 0 <= x < 9000 and 0 <= y < 1200
    assert abs(x - pred.point[0] * scale) <= scale and abs(y - pred.point[1] * scale) <= scale
    assert pred.overlay().shape[:2] == pred.image.shape[:2]


def test_unwritable_overlay_folder_is_a_warning_not_a_failure(binary_model, tmp_path, capsys):
    fa, _ = _real_images()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["predict", str(fa), "--model", str(binary_model), "--overlay-dir",
                 str(blocker / "sub"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["overlay"] is None and "overlay not written" in r["warning"] and r["class"]


@pytest.mark.parametrize("damage,why", [
    (lambda c: "{not json", "invalid JSON"),
    (lambda c: json.dumps({k: v for k, v in c.items() if k != "classes"}), "is missing 'classes'"),
    (lambda c: json.dumps({**c, "threshold": "high"}), "threshold is \"high\""),
    (lambda c: json.dumps({**c, "classes": list(config.FRACTURE_TYPES)}), "card lists 10 classes"),
    (lambda c: json.dumps({**c, "image_size": 128}), "differs from its card"),
    (lambda c: json.dumps({**c, "channels": 3}), "differs from its card")])
def test_damaged_cards_are_one_line_errors(binary_model, tmp_path, capsys, damage, why):
    import shutil
    m = tmp_path / "m.keras"
    shutil.copy(binary_model, m)
    card = json.loads(binary_model.with_suffix(".json").read_text())
    m.with_suffix(".json").write_text(damage(card))
    fa, _ = _real_images()
    assert main(["predict", str(fa), "--model", str(m)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and why in err and err.count("\n") == 1



# --- companions: the radiograph (OOD) detector and the localiser the card names (issue 18 item 7) ---

def _with_companions(model_path, folder, **companions):
    """A copy of ``model_path`` in ``folder`` whose card names ``companions``."""
    import shutil
    folder.mkdir(exist_ok=True)
    path = folder / model_path.name
    shutil.copy(model_path, path)
    card = json.loads(model_path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**card, "companions": companions}))
    return path


@pytest.mark.parametrize("which", ["binary", "types"])
def test_a_missing_detector_is_in_distribution_null_and_a_warning(binary_model, types_model, tmp_path,
                                                                   capsys, which):
    fa, bb = _real_images()
    model = _with_companions(binary_model if which == "binary" else types_model, tmp_path / "m",
                             ood=config.OOD_FILE)
    assert main(["predict", str(fa if which == "binary" else bb), "--model", str(model), "--json",
                 "--overlay-dir", str(tmp_path)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["in_distribution"] is None and r["class"] is not None
    assert "radiograph (OOD) detector" in r["warning"] and config.OOD_FILE in r["warning"]
    assert "not checked" in r["warning"]


def test_a_card_that_names_no_detector_says_the_check_was_not_made(binary_model, tmp_path):
    from fracturelib.app.predict import Predictor, format_result
    r = Predictor(binary_model).predict(_real_images()[0], overlay_dir=tmp_path)
    assert r["in_distribution"] is None and "names no radiograph (OOD) detector" in r["warning"]
    assert "Warning: the model's card names no radiograph" in format_result(r)


@pytest.mark.parametrize("damage,why", [
    ("npz", "not a radiograph (OOD) detector archive (truncated or damaged)"),
    ("json", "not a valid radiograph (OOD) detector description"),
    ("no json", "without its ood.json"),
    ("shapes", "arrays are inconsistent")])
def test_a_corrupt_detector_is_a_one_line_error_naming_it(binary_model, tmp_path, capsys, damage, why):
    import numpy as np
    model = _with_companions(binary_model, tmp_path / "m", ood=config.OOD_FILE)
    npz, meta = tmp_path / "m" / "ood.npz", tmp_path / "m" / "ood.json"
    np.savez(npz, mean=np.zeros(4), precision=np.eye(4 if damage != "shapes" else 3))
    meta.write_text(json.dumps({"threshold": 1.0, "quantile": 0.99, "n_train": 10, "image_size": 32}))
    if damage == "npz":
        npz.write_bytes(npz.read_bytes()[:40])
    elif damage == "json":
        meta.write_text('{"threshold": "far"}')
    elif damage == "no json":
        meta.unlink()
    assert main(["predict", str(_real_images()[0]), "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and why in err and "ood." in err
    assert "Traceback" not in err


def test_the_card_names_its_localiser_resolved_beside_it(binary_model, tmp_path):
    from fracturelib.app.predict import Predictor
    from fracturelib.models import localiser
    loc, _ = localiser.build(64, 1, weights="none", width=8)
    cards.save_model(loc, tmp_path / "m" / "loc_full.keras", {"task": "localisation", "classes": ["fracture"],
                                                               "image_size": 64, "channels": 1, "preprocessing": "t"})
    model = _with_companions(binary_model, tmp_path / "m", localiser="loc_full.keras")
    p = Predictor(model)
    assert p.localiser is not None and p.localiser_card.source == tmp_path / "m" / "loc_full.json"
    assert p.predict(_real_images()[0], overlay_dir=tmp_path)["localisation"].startswith("localiser")


def test_a_classifier_as_localiser_or_a_localiser_as_model_is_a_one_line_error(binary_model, tmp_path, capsys):
    from fracturelib.models import localiser
    fa, _ = _real_images()
    assert main(["predict", str(fa), "--model", str(binary_model), "--localiser", str(binary_model)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "not a localiser" in err and "bin.keras" in err
    loc, _ = localiser.build(64, 1, weights="none", width=8)
    path = cards.save_model(loc, tmp_path / "loc.keras", {"task": "localisation", "classes": ["fracture"],
                                                           "image_size": 64, "channels": 1, "preprocessing": "t"})
    assert main(["predict", str(fa), "--model", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a classifier" in err
    assert main(["predict", str(fa), "--model", str(binary_model), "--localiser", str(tmp_path / "no.keras")]) == 2
    assert "no such model file" in capsys.readouterr().err


def test_the_card_s_temperature_scales_the_reported_probabilities_not_the_decision(tmp_path):
    """Temperature scaling (fitted on validation) changes how sure the answer says it is, never the answer:
    the threshold moves onto the same scale as the probability."""
    from fracturelib.app.predict import Predictor
    m = cnn.build_binary_cnn(64, 1)
    meta = {"classes": list(config.BINARY_CLASSES), "image_size": 64, "channels": 1, "preprocessing": "test",
            "threshold": 0.45}
    plain = cards.save_model(m, tmp_path / "plain.keras", meta)
    hot = cards.save_model(m, tmp_path / "hot.keras", {**meta, "temperature": 3.0})
    img = _real_images()[0]
    a, b = (Predictor(p).predict(img, overlay_dir=tmp_path) for p in (plain, hot))
    assert a["class"] == b["class"] and "temperature" not in a and b["temperature"] == 3.0
    pa, pb = (r["top"][0]["probability"] if r["top"][0]["class"] == "fractured" else 1 - r["top"][0]["probability"]
              for r in (a, b))
    assert abs(pb - 0.5) <= abs(pa - 0.5) + 1e-9                 # T > 1 softens towards 0.5
    assert (pa >= a["threshold"]) == (pb >= b["threshold"])      # the same side of its own threshold


# --- damaged detectors and cards are refused at load, one line, before any large allocation ---

def _npz_with_headers(path, arrays):
    """An .npz whose members are .npy headers declaring ``arrays`` (name -> (shape, dtype, data bytes))."""
    import io
    import zipfile

    import numpy as np
    with zipfile.ZipFile(path, "w") as z:
        for name, (shape, dtype, data) in arrays.items():
            f = io.BytesIO()
            np.lib.format.write_array_header_1_0(f, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                      "shape": shape})
            z.writestr(f"{name}.npy", f.getvalue() + data)
    return path


def _detector_files(folder, meta=None, mean=4):
    import numpy as np
    folder.mkdir(exist_ok=True)
    np.savez(folder / "ood.npz", mean=np.zeros(mean), precision=np.eye(mean))
    (folder / "ood.json").write_text(json.dumps({"threshold": 1.0, "quantile": 0.99, "n_train": 10,
                                                 "image_size": 32, **(meta or {})}))
    return folder / "ood.npz"


@pytest.mark.parametrize("arrays,why", [
    ({"mean": ((12000,), "<f8", bytes(96000)), "precision": ((12000, 12000), "<f8", bytes(1_000_000))},
     "d <= 4096"),
    ({"mean": ((4,), "<f8", bytes(32)), "precision": ((4, 3), "<f8", bytes(96))}, "must be (d,) and (d, d)"),
    ({"mean": ((2, 2), "<f8", bytes(32)), "precision": ((4, 4), "<f8", bytes(128))}, "must be (d,) and (d, d)"),
    ({"mean": ((0,), "<f8", b""), "precision": ((0, 0), "<f8", b"")}, "must be (d,) and (d, d)"),
    ({"mean": ((4,), "<i8", bytes(32)), "precision": ((4, 4), "<f8", bytes(128))}, "not floating point"),
    ({"mean": ((4,), "<c16", bytes(64)), "precision": ((4, 4), "<f8", bytes(128))}, "not floating point"),
    ({"mean": ((4,), "<f8", bytes(32))}, "has no 'precision' array")])
def test_a_detector_s_array_headers_are_checked_before_loading(tmp_path, monkeypatch, arrays, why):
    """A 1.1 MB archive declaring a 12000 x 12000 precision must not be loaded (1.15 GB) to be refused."""
    from fracturelib.models import ood
    path = _detector_files(tmp_path)
    _npz_with_headers(path, arrays)

    def no_load(*a, **k):
        raise AssertionError("np.load called before the headers were checked")
    monkeypatch.setattr(ood.np, "load", no_load)
    with pytest.raises(ood.DetectorError) as e:
        ood.Detector.load(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and why in msg and "\n" not in msg


def test_a_huge_declared_precision_is_a_one_line_cli_error(binary_model, tmp_path, capsys):
    model = _with_companions(binary_model, tmp_path / "m", ood=config.OOD_FILE)
    path = _detector_files(tmp_path / "m")
    _npz_with_headers(path, {"mean": ((12000,), "<f8", bytes(96000)),
                             "precision": ((12000, 12000), "<f8", bytes(1_000_000))})
    assert main(["predict", str(_real_images()[0]), "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "ood.npz" in err and "d <= 4096" in err


def test_a_detector_header_that_is_damaged_is_a_detector_error(tmp_path):
    import zipfile

    from fracturelib.models import ood
    path = _detector_files(tmp_path)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mean.npy", b"\x93NUMPY\x01\x00garbage")
        z.writestr("precision.npy", b"not npy")
    with pytest.raises(ood.DetectorError, match="truncated or damaged"):
        ood.Detector.load(path)


@pytest.mark.parametrize("meta,why", [
    ({"backbone": "banana"}, "backbone is \"banana\", but must be one of"),
    ({"backbone": 3}, "backbone is 3"),
    ({"image_size": 100000}, "image_size is 100000, but must be a whole number of pixels in [32, 1024]"),
    ({"image_size": 16}, "image_size is 16"),
    ({"image_size": 224.5}, "image_size is 224.5"),
    ({"image_size": True}, "image_size is true"),
    ({"threshold": 0}, "threshold is 0, but must be a finite number > 0"),
    ({"threshold": float("inf")}, "threshold is Infinity"),
    ({"threshold": "1.0"}, "threshold is \"1.0\""),
    ({"quantile": 1}, "quantile is 1, but must be a number in (0, 1)"),
    ({"quantile": 0}, "quantile is 0"),
    ({"n_train": float("inf")}, "n_train is Infinity"),
    ({"n_train": "HUGE"}, "not a valid radiograph (OOD) detector description"),
    ([1, 2], "not a JSON object")])
def test_a_detector_description_is_checked_at_load(binary_model, tmp_path, capsys, meta, why):
    model = _with_companions(binary_model, tmp_path / "m", ood=config.OOD_FILE)
    path = _detector_files(tmp_path / "m")
    if isinstance(meta, dict):
        meta = {**json.loads(path.with_suffix(".json").read_text()), **meta}
    text = json.dumps(meta).replace('"HUGE"', "1" + "0" * 5000)      # an integer of 5001 digits
    path.with_suffix(".json").write_text(text)
    assert main(["predict", str(_real_images()[0]), "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "ood.json" in err and why in err
    assert "Traceback" not in err


def test_a_detector_fitted_on_other_features_than_its_feature_model_is_refused(binary_model, tmp_path, capsys):
    """A mean of 5 features against EfficientNet-Lite0's 1280: refused at load, not per image."""
    model = _with_companions(binary_model, tmp_path / "m", ood=config.OOD_FILE)
    _detector_files(tmp_path / "m", mean=5)
    assert main(["predict", str(_real_images()[0]), "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "ood.npz" in err
    assert "fitted on 5 features" in err and "gives 1280" in err


@pytest.mark.parametrize("edit,why", [
    (lambda t: t.replace('"image_size": 64', '"image_size": 1' + "0" * 5000), "not a valid model card"),
    (lambda t: t.replace('"threshold": 0.4', '"threshold": 0.4, "temperature": 1e-308'),
     "temperature is 1e-308, but must be a number in [0.05, 20]"),
    (lambda t: t.replace('"non-fractured"', '"non-\\u202efractured"'), "printable class names")])
def test_more_damaged_cards_are_one_line_errors(binary_model, tmp_path, capsys, edit, why):
    import shutil
    m = tmp_path / "m.keras"
    shutil.copy(binary_model, m)
    text = binary_model.with_suffix(".json").read_text()
    assert edit(text) != text
    m.with_suffix(".json").write_text(edit(text))
    assert main(["predict", str(_real_images()[0]), "--model", str(m)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and why in err and "m.json" in err
