"""`predict` with a fracture detector (issue 21 item 4): its boxes in the file's pixels, the best box's centre as
"where", the box threshold, the overlay, the text and JSON answers, the web service's row and CSV, and the LiteRT
export of the detector giving the Keras boxes.

The detector here is a known-answer stand-in for CenterNet: its heatmap is the input's brightness averaged over
each stride-8 cell (/255), its box size a constant 2 x 1 cells and its offset 0.5, so an image whose only structure
is a grey square on one cell (and a quarter of its neighbours, so that the resize's smoothing stays outside that
cell) gets exactly one box, centred on the square, 16 x 8 input pixels, scoring grey/255.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fracturelib import config
from fracturelib.app.cli import main
from fracturelib.models import cards, cnn

S = 64              # the detector's input: 8 x 8 cells of 8 px
GREY = 200          # the square's grey level: its cell's heat is 200 / 255
SCORE = GREY / 255
# 256 x 128 (w x h) is letterboxed into 64 x 32 at the top 16 px: one cell is 32 file pixels. The square covers the
# cell (5, 3), x 160-192, y (3 * 8 - 16) * 4 = 32-64, and 8 px around it. The box: centre (5.5, 3.5) cells, 2 x 1 cells.
SQUARE = (152, 24, 200, 72)
BOX = [144, 32, 208, 64]


def tiny_detector():
    """The known-answer detector: a Functional model with the detector's Input and three named outputs."""
    import keras
    from keras import layers
    inp = keras.Input((S, S, 1), name="image")
    grey = layers.Rescaling(1 / 255)(inp)
    heat = layers.AveragePooling2D(8, name="heatmap")(grey)
    const = lambda name, v: layers.Conv2D(2, 1, kernel_initializer="zeros", name=name,  # noqa: E731
                                          bias_initializer=keras.initializers.Constant(v))(heat)
    return keras.Model(inp, [heat, const("box_size", [2.0, 1.0]), const("box_offset", [0.5, 0.5])])


def save_detector(path, box_threshold=0.5, **extra):
    return cards.save_model(tiny_detector(), path, cards.make_card(
        "detection", ["fracture"], S, 1, "test: grey -> resize_with_pad", data={}, box_threshold=box_threshold,
        **extra))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """bin.keras (a 32-px CNN whose card names detector.keras) and detector.keras (box threshold 0.5)."""
    import keras
    d = tmp_path_factory.mktemp("boxes")
    keras.utils.set_random_seed(0)
    cards.save_model(cnn.build_binary_cnn(32, 1), d / "bin.keras",
                     {"task": "binary", "classes": list(config.BINARY_CLASSES), "image_size": 32, "channels": 1,
                      "preprocessing": "test", "companions": {"detector": config.DETECTOR_FILE}})
    save_detector(d / config.DETECTOR_FILE)
    return d


@pytest.fixture(scope="module")
def predictor(folder):
    from fracturelib.app.predict import Predictor
    return Predictor(folder / "bin.keras")


def square_image(path, size=(256, 128), square=SQUARE, grey=GREY):
    a = np.zeros(size[::-1], np.uint8)
    x0, y0, x1, y1 = square
    a[y0:y1, x0:x1] = grey
    Image.fromarray(a).save(path, quality=95) if str(path).endswith(".jpg") else Image.fromarray(a).save(path)
    return path


@pytest.fixture(scope="module")
def png(tmp_path_factory):
    return square_image(tmp_path_factory.mktemp("img") / "square.png")


def test_one_square_gives_one_box_on_it_in_the_file_s_pixels(predictor, png):
    from fracturelib.app.predict import DETECTOR_POINT
    pred = predictor.analyse(png)
    f = pred.fields
    assert predictor.box_card.task == "detection" and f["box_threshold"] == 0.5
    assert len(f["boxes"]) == 1
    *box, score = f["boxes"][0]
    assert box == BOX and score == pytest.approx(SCORE, abs=1e-4)
    assert f["fracture_point"] == [176, 48] == [(BOX[0] + BOX[2]) // 2, (BOX[1] + BOX[3]) // 2]
    assert f["localisation"] == DETECTOR_POINT
    json.dumps(f, allow_nan=False)                                   # strictly finite JSON


def test_the_overlay_draws_the_box_over_the_heat(predictor, png):
    from fracturelib.app.predict import Prediction
    pred = predictor.analyse(png)
    drawn = pred.overlay()
    plain = Prediction(pred.fields, pred.image, pred.heat, pred.point).overlay()     # the same without boxes
    x0, y0, x1, y1 = BOX
    top_edge = (slice(y0, y0 + 1), slice(x0 + 8, x1 - 8))
    assert (drawn[top_edge] == 255).all() and not (plain[top_edge] == 255).all()
    assert (drawn[y0 + 4:y1 - 4, x0 + 4:x0 + 20] == plain[y0 + 4:y1 - 4, x0 + 4:x0 + 20]).all()   # inside: as it was
    assert drawn.shape == (128, 256, 3)


def test_boxes_below_the_threshold_are_not_shown_and_where_falls_back(folder, png):
    import dataclasses

    from fracturelib.app.predict import Predictor, format_result
    p = Predictor(folder / "bin.keras")
    p.box_card = dataclasses.replace(p.box_card, box_threshold=round(SCORE + 0.01, 2))      # just above the square
    r = p.predict(png, overlay_dir=folder / "ov")
    assert r["boxes"] == [] and r["box_threshold"] == 0.79
    assert r["localisation"] == "gradcam" and r["fracture_point"] is not None
    assert "boxes: no box reaches the threshold 0.79" in format_result(r)
    p.box_card = dataclasses.replace(p.box_card, box_threshold=round(SCORE - 0.01, 2))
    assert len(p.predict(png, overlay_dir=folder / "ov")["boxes"]) == 1


def test_a_very_large_jpeg_decoded_reduced_gets_its_box_in_the_file_s_pixels(predictor, tmp_path):
    """4800 x 3600 is decoded at 1/2 (2400 x 1800) and letterboxed at 1/37.5 (64 x 48, 8 px down): a cell is
    600 file pixels. The square on cell (5, 3), x 3000-3600, y (24 - 8) * 75 = 1200-1800, and 150 px around it."""
    path = square_image(tmp_path / "big.jpg", (4800, 3600), (2850, 1050, 3750, 1950))
    pred = predictor.analyse(path)
    assert pred.image.shape[:2] == (1800, 2400)                      # decoded reduced ...
    (*box, score), = pred.fields["boxes"]
    assert box == [2700, 1200, 3900, 1800] and score == pytest.approx(SCORE, abs=0.02)   # ... boxes in file pixels
    assert pred.boxes[0][:4] == [1350, 600, 1950, 900]              # the overlay's in the decoded image's
    assert pred.fields["fracture_point"] == [3300, 1500]


def test_predict_json_and_text_through_the_cli(folder, png, tmp_path, capsys):
    assert main(["predict", str(png), "--model", str(folder / "bin.keras"), "--json",
                 "--overlay-dir", str(tmp_path)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert [b[:4] for b in r["boxes"]] == [BOX] and r["fracture_point"] == [176, 48]
    assert np.asarray(Image.open(r["overlay"]))[BOX[1], BOX[0] + 10].tolist() == [255, 255, 255]
    assert main(["predict", str(png), "--model", str(folder / "bin.keras"), "--overlay-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "boxes (fracture detector, score >= 0.50):\n  1. x=144-208, y=32-64 px, score 0.784\n" in out
    assert "where: x=176, y=48 px (detector (best box's centre))" in out
    assert "detector boxes over the Grad-CAM heat overlay:" in out


def test_detector_flag_missing_companion_and_a_non_detector(folder, png, tmp_path, capsys):
    import shutil
    alone = tmp_path / "alone"                       # the classifier without its detector beside it
    alone.mkdir()
    for name in ("bin.keras", "bin.json"):
        shutil.copy(folder / name, alone / name)
    assert main(["predict", str(png), "--model", str(alone / "bin.keras"), "--json",
                 "--overlay-dir", str(tmp_path)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert "boxes" not in r and r["localisation"] == "gradcam"      # no boxes, no error
    assert main(["predict", str(png), "--model", str(alone / "bin.keras"), "--detector",
                 str(folder / config.DETECTOR_FILE), "--json", "--overlay-dir", str(tmp_path)]) == 0
    assert [b[:4] for b in json.loads(capsys.readouterr().out)["boxes"]] == [BOX]
    assert main(["predict", str(png), "--model", str(alone / "bin.keras"), "--detector",
                 str(alone / "bin.keras")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "not a fracture detector" in err
    assert main(["predict", str(png), "--model", str(folder / config.DETECTOR_FILE)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a fracture detector" in err and "--detector" in err


def test_not_a_radiograph_gets_no_boxes(predictor, png, monkeypatch):
    from fracturelib.app.predict import format_result
    monkeypatch.setattr(predictor, "_radiograph_check", lambda img: {
        "in_distribution": False, "class": None, "confidence": None, "top": [], "warning": "not a radiograph"})
    pred = predictor.analyse(png)
    assert pred.fields["boxes"] is None and pred.fields["fracture_point"] is None and pred.overlay() is None
    assert "box" not in format_result({**pred.fields, "overlay": None})


def test_non_finite_heads_give_no_box_and_strict_json(folder, png):
    from fracturelib.app.predict import Predictor
    p = Predictor(folder / "bin.keras")
    layer = p.box_model.get_layer("box_size")
    k, b = layer.get_weights()
    layer.set_weights([k, np.full_like(b, np.nan)])
    f = p.analyse(png).fields
    assert f["boxes"] == [] and f["localisation"] == "gradcam"
    json.dumps(f, allow_nan=False)


def test_a_zero_size_box_stays_a_valid_pixel_box():
    from fracturelib.app.predict import _pixel_box
    from fracturelib.data.geometry import draw_boxes
    assert _pixel_box([10.2, 5.0, 10.2, 5.0], 1.0, 20, 20) == [10, 5, 11, 6]      # at least 1 px a side
    assert _pixel_box([20.0, 20.0, 20.0, 20.0], 1.0, 20, 20) == [19, 19, 20, 20]  # inside the image
    assert _pixel_box([1.5, 2.5, 3.5, 4.5], 2.0, 100, 100) == [3, 5, 7, 9]
    img = draw_boxes(np.zeros((20, 20, 3), np.uint8), [[10, 5, 11, 6, 0.9]])
    assert (img[5, 10] == 255).all()


def test_the_web_service_row_csv_and_answer(folder, png):
    import csv
    import io

    from fracturelib.app.service import Service, csv_text, find_models, row
    from fracturelib.app.web import answer_html
    assert [e.name for e in find_models(folder)[0]] == ["bin"]        # the detector is a companion, no menu entry
    svc = Service(folder)
    try:
        answer = svc.analyse_file(png, "=HYPERLINK(1).png", "bin")
    finally:
        svc.close()
    r = row(answer)
    assert r["boxes"] == f"144 32 208 64 {SCORE:.3f}"
    table = list(csv.DictReader(io.StringIO(csv_text([r]))))
    assert table[0]["boxes"] == r["boxes"] and table[0]["file"] == "'=HYPERLINK(1).png"   # no formula
    html = answer_html(answer)
    assert "id='fl-boxes'" in html and "(144, 32) to (208, 64) px, score 0.784" in html
    assert (answer["overlay"][BOX[1], BOX[0] + 10] == 255).all()
    none = row({**answer, "fields": {**answer["fields"], "boxes": []}})
    assert none["boxes"] == "none"


NO_TF = r"""
import json, sys
from fracturelib.app.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules}))
"""


def test_the_litert_export_gives_the_keras_boxes_without_tensorflow(folder, png, tmp_path):
    from fracturelib.app.predict import DETECTOR_POINT, Predictor
    from fracturelib.models import export
    out = tmp_path / "lite" / "bin.tflite"
    res = export.export_litert(folder / "bin.keras", "none", force=True, out=out, log=None)
    det = out.parent / export.DETECTOR_LITE
    assert res.companions["detector"] == det and res.card.companions["detector"] == export.DETECTOR_LITE
    dcard = cards.read_card(det)
    assert dcard.task == "detection" and dcard.box_threshold == 0.5 and dcard.format == "litert"
    assert max(dcard.parity["max_abs_diff"].values()) < 1e-4
    lite = Predictor(out).analyse(png)
    keras_boxes = Predictor(folder / "bin.keras").analyse(png).fields["boxes"]
    assert len(lite.fields["boxes"]) == len(keras_boxes) == 1
    assert np.abs(np.subtract(lite.fields["boxes"][0][:4], keras_boxes[0][:4])).max() <= 1
    assert lite.fields["localisation"] == DETECTOR_POINT and lite.heat is None   # no localiser: the boxes answer
    drawn = lite.overlay()                                                        # ... drawn on the grey image
    assert drawn is not None and (drawn[BOX[1], BOX[0] + 10] == 255).all()
    run = subprocess.run([sys.executable, "-c", NO_TF, "predict", str(png), "--model", str(out), "--json",
                          "--overlay-dir", str(tmp_path / "ov"), "--threads", "1"],
                         capture_output=True, text=True, timeout=120)
    lines = run.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == {"code": 0, "tensorflow": False, "keras": False}, run.stderr[-2000:]
    assert json.loads("\n".join(lines[:-1]))["boxes"] == lite.fields["boxes"]


def test_a_litert_detector_with_outputs_out_of_keras_order_is_read_in_keras_order():
    """The converter lists this model's outputs as box_size, heatmap, box_offset; LiteModel gives Keras' order."""
    from fracturelib.models import export
    from fracturelib.models.litert import LiteModel
    model = tiny_detector()
    blob = export.convert(model)
    lm = LiteModel(blob)
    assert [int(o["shape"][-1]) for o in lm._it.get_output_details()] == [2, 1, 2]    # the premise: reordered
    assert lm.output_shape == [(None, 8, 8, 1), (None, 8, 8, 2), (None, 8, 8, 2)]
    x = np.random.default_rng(0).uniform(0, 255, (2, S, S, 1)).astype(np.float32)
    for ref, got in zip(model.predict_on_batch(x), lm.predict_on_batch(x)):
        assert np.abs(ref - got).max() < 1e-5
    assert export.detector_parity(model, blob, x)["n"] == 2


def test_litert_output_names_rank_in_keras_order():
    from fracturelib.models.litert import _rank
    names = ["Identity_2", "StatefulPartitionedCall:1", "Identity", "Identity_1"]
    assert sorted(["Identity_2", "Identity", "Identity_1"], key=_rank) == ["Identity", "Identity_1", "Identity_2"]
    assert sorted(["box_offset", "heatmap", "box_size"], key=_rank) == ["heatmap", "box_size", "box_offset"]
    assert _rank(names[1])[0] == 1


def test_a_detection_card_without_its_box_threshold_is_refused():
    card = cards.make_card("detection", ["fracture"], S, 1, "x", data={}, box_threshold=0.5).to_dict()
    del card["box_threshold"]
    with pytest.raises(cards.ModelCardError, match="no box_threshold"):
        cards.ModelCard.from_dict(card, "d.json")


def test_hostile_detector_files_are_one_line_errors(folder, png, tmp_path, capsys):
    """A damaged archive whose card hash was made to match, a folder given as the detector, an empty
    --overlay-dir: each one `error:` line naming the file or flag, exit 2, no traceback."""
    import zipfile
    src = folder / config.DETECTOR_FILE
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(src) as z_in, zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as z_out:
        for item in z_in.infolist():
            data = z_in.read(item.filename)
            if item.filename.endswith(".h5"):
                data = data[:-600] + bytes(600)                 # damaged weights, a valid zip around them
            z_out.writestr(item.filename, data)
    crc = tmp_path / "crc.keras"                                # bytes flipped inside a member: Bad CRC-32
    raw = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        h5 = next(i for i in z.infolist() if i.filename.endswith(".h5"))
    start = h5.header_offset + 30 + len(h5.filename.encode()) + len(h5.extra) + h5.compress_size // 2
    raw[start:start + 64] = bytes(b ^ 0xFF for b in raw[start:start + 64])
    crc.write_bytes(bytes(raw))
    card = json.loads(src.with_suffix(".json").read_text())
    for f in (bad, crc):
        f.with_suffix(".json").write_text(json.dumps({**card, "model_sha256": cards.sha256_file(f)}))
    cases = (("--detector", str(bad), "bad.keras"), ("--detector", str(crc), "crc.keras"),
             ("--detector", str(tmp_path), "a folder"), ("--overlay-dir", "", "--overlay-dir is empty"))
    for flag, value, where in cases:
        code = main(["predict", str(png), "--model", str(folder / "bin.keras"), flag, value])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and err.startswith("error:") and where in err, err
        assert "Traceback" not in err


def test_a_detector_with_nan_heads_is_not_exported(tmp_path):
    """A detector whose heads give NaN is refused by the export's check, whatever --force says."""
    import keras

    from fracturelib.models import export
    inp = keras.Input((S, S, 1), name="image")
    cells = keras.layers.AveragePooling2D(8)(inp)
    heat = keras.layers.Lambda(lambda t: t * float("nan"), name="heatmap")(cells)
    size = keras.layers.Conv2D(2, 1, name="box_size")(cells)
    off = keras.layers.Conv2D(2, 1, name="box_offset")(cells)
    model = keras.Model(inp, [heat, size, off])
    with pytest.raises(export.ExportError, match="NaN or infinite"):
        export.detector_parity(model, export.convert(model, "none"), np.zeros((1, S, S, 1), np.float32), force=True)


def test_the_fusion_kept_by_the_detector_card_decides_for_its_own_classifier_only(folder, png, tmp_path):
    """A fusion that weighs only the best box (weight 1 on its logit, 0 on the classifier's, intercept 0) gives
    the box's score as the probability, decided at the fusion's threshold; with another classifier's SHA-256
    in the card, or a broken fusion, the classifier decides alone."""
    import shutil

    from fracturelib.app.predict import Predictor, format_result
    clf_card = cards.read_card(folder / "bin.keras")
    base = Predictor(folder / "bin.keras").analyse(png).fields
    p_clf = base["top"][0]["probability"] if base["class"] == "fractured" else 1 - base["top"][0]["probability"]
    fusion = {"weights": {"classifier": 0.0, "best box": 1.0}, "intercept": 0.0, "threshold": SCORE - 0.01,
              "classifier": "bin.keras", "classifier_sha256": clf_card.model_sha256}
    for name, f, fused in (("mine", fusion, True), ("other", {**fusion, "classifier_sha256": "0" * 64}, False),
                           ("broken", {**fusion, "weights": {"classifier": "x"}}, False)):
        d = tmp_path / name
        d.mkdir()
        for suffix in (".keras", ".json"):
            shutil.copy(folder / f"bin{suffix}", d / f"bin{suffix}")
        save_detector(d / config.DETECTOR_FILE, fusion=f)
        r = Predictor(d / "bin.keras").analyse(png).fields
        if fused:
            assert r["class"] == "fractured" and r["confidence"] == pytest.approx(SCORE, abs=1e-3)
            assert r["threshold"] == pytest.approx(SCORE - 0.01)
            assert r["fused"]["best_box_score"] == pytest.approx(SCORE, abs=1e-3)
            assert r["fused"]["classifier_probability"] == pytest.approx(p_clf, abs=1e-4)
            assert "decided by the fusion" in format_result({**r, "overlay": None})
        else:
            assert "fused" not in r and r["class"] == base["class"] and r["confidence"] == base["confidence"]
