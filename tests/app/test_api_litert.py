"""`fracturelib serve` lists exported `.tflite` models (with their `<name>.tflite.json` card) beside the
`.keras` ones and answers with them through the same Predictor (issue 22)."""
from __future__ import annotations

import shutil

import pytest

from fracturelib import config
from fracturelib.app.service import Service, find_models
from fracturelib.models import cards, cnn, export
from tests.app.conftest import fracatlas_images


@pytest.fixture(scope="module")
def lite_dir(tmp_path_factory):
    """binary.keras (a tiny CNN, threshold 0.4, no companions), its float16 export binary.tflite (unchecked:
    no data split on the card) and a stray ood_features.tflite (a companion without a card of its own)."""
    import keras
    d = tmp_path_factory.mktemp("served_lite")
    keras.utils.set_random_seed(0)
    path = cards.save_model(cnn.build_binary_cnn(32, 1), d / "binary.keras",
                            {"task": "binary", "classes": list(config.BINARY_CLASSES), "image_size": 32,
                             "channels": 1, "preprocessing": "test", "threshold": 0.4, "preferred": True})
    res = export.export_litert(path, "float16", force=True, companions=False, log=None)
    (d / export.OOD_FEATURES_LITE).write_bytes(res.path.read_bytes())
    return d


def test_tflite_models_are_listed_beside_keras_ones(lite_dir, tmp_path):
    entries, skipped = find_models(lite_dir)
    assert [(e.name, e.path.name) for e in entries] == [("binary", "binary.keras"), ("binary-litert", "binary.tflite")]
    assert skipped == []                                        # the companion is passed over, not reported
    lite = entries[1].describe()
    assert lite["format"] == "litert" and lite["quantization"] == "float16" and "LiteRT float16" in lite["label"]
    assert entries[0].describe()["format"] == "keras" and entries[0].describe()["quantization"] is None
    alone = tmp_path / "alone"                                  # only the export: named by its stem
    alone.mkdir()
    for name in ("binary.tflite", "binary.tflite.json"):
        shutil.copy(lite_dir / name, alone / name)
    assert [e.name for e in find_models(alone)[0]] == ["binary"]


def test_a_tflite_model_answers_as_its_keras_model_does(lite_dir):
    from fastapi.testclient import TestClient

    from fracturelib.app.serve import create_app
    svc = Service(lite_dir)
    try:
        data = fracatlas_images(1)[0].read_bytes()
        keras_r = svc.predict_upload(data, "a.jpg", "binary")
        lite_r = svc.predict_upload(data, "a.jpg", "binary-litert")
        _, predictor, _ = svc.predictor("binary-litert")
        assert predictor.lite and set(lite_r) == set(keras_r)
        assert lite_r["class"] == keras_r["class"] and abs(lite_r["confidence"] - keras_r["confidence"]) < 0.01
    finally:
        svc.close()
    app = create_app(lite_dir, max_upload_mb=2)
    try:
        client = TestClient(app)
        models = client.get("/api/models").json()["models"]
        assert [m["name"] for m in models] == ["binary", "binary-litert"]
        r = client.post("/api/predict", files={"file": ("a.jpg", data)}, data={"model": "binary-litert"})
        assert r.status_code == 200, r.text
        assert r.json()["class"] == lite_r["class"] and r.json()["confidence"] == lite_r["confidence"]
    finally:
        app.state.service.close()
