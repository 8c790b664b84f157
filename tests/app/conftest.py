"""Fixtures of the web app's tests: a folder of tiny models (binary with a radiograph detector and card
metrics, fracture types), built once per session, and a live server on 127.0.0.1."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from fracturelib import config
from fracturelib.models import cards, cnn

METRICS = {"roc_auc": {"value": 0.81, "ci_low": 0.74, "ci_high": 0.87},
           "accuracy": {"value": 0.7, "ci_low": 0.62, "ci_high": 0.77}}
AT_THRESHOLD = {"recall": {"value": 0.91, "ci_low": 0.84, "ci_high": 0.97},
                "specificity": {"value": 0.55, "ci_low": 0.47, "ci_high": 0.63}}


def fracatlas_images(n: int = 3) -> list:
    """The first ``n`` fractured FracAtlas radiographs of the embedded dataset."""
    return sorted((config.DEFAULT_FRACATLAS / "images" / "Fractured").glob("*.jpg"))[:n]


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    """binary.keras (threshold 0.4, the radiograph detector ood.npz, test metrics with CIs, preferred) and
    types.keras (ten fracture types) in one folder."""
    import keras
    import pandas as pd
    from keras import layers

    from fracturelib.data.pipeline import load_images
    from fracturelib.models import ood
    d = tmp_path_factory.mktemp("served")
    keras.utils.set_random_seed(0)
    cards.save_model(cnn.build_binary_cnn(64, 1), d / "binary.keras",
                     {"task": "binary", "classes": list(config.BINARY_CLASSES), "image_size": 64, "channels": 1,
                      "preprocessing": "test", "threshold": 0.4, "target_sensitivity": 0.9, "preferred": True,
                      "test_metrics": METRICS, "test_metrics_at_threshold": AT_THRESHOLD,
                      "companions": {"ood": config.OOD_FILE}})
    inp = keras.Input((48, 48, 3))
    x = layers.Conv2D(8, 3, activation="relu", name="conv")(layers.Rescaling(1 / 255)(inp))
    out = layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    cards.save_model(keras.Model(inp, out), d / "types.keras",
                     {"task": "fracture-type", "classes": list(config.FRACTURE_TYPES), "image_size": 48,
                      "channels": 3, "preprocessing": "test",
                      "test_metrics": {"macro_f1": {"value": 0.42, "ci_low": 0.3, "ci_high": 0.5}}})
    # the radiograph detector, fitted on 96 FracAtlas radiographs of both classes (the served test images among them)
    folders = [config.DEFAULT_FRACATLAS / "images" / c for c in ("Fractured", "Non_fractured")]
    paths = [str(p) for f in folders for p in sorted(f.glob("*.jpg"))[:48]]
    rows = pd.DataFrame({"path": paths, "native": True, "sha256": ""})
    feats = ood.feature_model(1).predict(load_images(rows, ood.SIZE, 1), verbose=0)
    ood.fit(feats[::2], feats[1::2]).save(d / config.OOD_FILE)
    return d


@pytest.fixture(scope="session")
def china_jpg(tmp_path_factory):
    """scikit-learn's photo of a Chinese temple: not a radiograph."""
    from PIL import Image
    from sklearn.datasets import load_sample_image
    p = tmp_path_factory.mktemp("photo") / "china.jpg"
    Image.fromarray(load_sample_image("china.jpg")).save(p)
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app(models_dir):
    """The web app over ``models_dir`` with a 2 MB upload limit (``app.state.service`` is its service)."""
    from fracturelib.app.serve import create_app
    app = create_app(models_dir, max_upload_mb=2)
    yield app
    app.state.service.close()


@pytest.fixture(scope="session")
def server(app):
    """The app served by uvicorn on 127.0.0.1 in a thread of this process: its base URL."""
    import httpx
    import uvicorn
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    else:
        raise RuntimeError("the server did not start within 60 s")
    yield url
    srv.should_exit = True
    t.join(timeout=15)
