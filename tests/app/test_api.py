"""The JSON API beside the page: /healthz, /api/models, /api/predict (the same answer as
`fracturelib predict --json`), every bad input a 4xx JSON error, and the Gradio endpoint via gradio_client."""
from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from fracturelib.app.cli import build_parser, main
from tests.app.conftest import fracatlas_images
from tests.conftest import make_bad_corpus


def _post(url, path, model=None, name=None, data=None):
    content = data if data is not None else path.read_bytes()
    form = {"model": model} if model else None
    return httpx.post(url + "/api/predict", files={"file": (name or path.name, content)}, data=form, timeout=120)


def test_health_and_models(server):
    assert httpx.get(server + "/healthz").json() == {"status": "ok", "models": ["binary", "types"]}
    m = httpx.get(server + "/api/models").json()
    assert m["default"] == "binary" and m["max_upload_mb"] == 2
    binary, types = m["models"]
    assert binary["task"] == "binary" and binary["threshold"] == 0.4 and binary["preferred"]
    assert binary["key_metric"] == {"name": "roc_auc", "value": 0.81, "ci_low": 0.74, "ci_high": 0.87}
    assert "ROC-AUC 0.810 (95% CI 0.740-0.870)" in binary["label"]
    assert binary["metrics_at_threshold"]["specificity"]["value"] == 0.55
    assert types["task"] == "fracture-type" and types["key_metric"]["name"] == "macro_f1"


def test_api_answer_is_what_predict_json_prints(server, models_dir, tmp_path, capsys):
    """Every field equal, except ``image`` (the uploaded name, not a path) and ``overlay`` (a data URL of
    the same PNG the command writes)."""
    img = fracatlas_images(1)[0]
    r = _post(server, img)
    assert r.status_code == 200, r.text
    api = r.json()
    assert main(["predict", str(img), "--model", str(models_dir / "binary.keras"), "--json",
                 "--overlay-dir", str(tmp_path)]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert set(api) == set(cli)
    for key in cli:
        if key not in ("image", "overlay"):
            assert api[key] == cli[key], key
    assert api["image"] == img.name and cli["image"] == str(img)
    head, b64 = api["overlay"].split(",", 1)
    assert head == "data:image/png;base64"
    served = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))
    assert np.array_equal(served, np.asarray(Image.open(cli["overlay"])))
    assert api["in_distribution"] is True and api["class"] in ("fractured", "non-fractured")


def test_a_photo_gets_the_warning_and_no_answer(server, china_jpg):
    r = _post(server, china_jpg)
    assert r.status_code == 200
    out = r.json()
    assert out["in_distribution"] is False and out["class"] is None and out["overlay"] is None
    assert "does not look like the radiographs" in out["warning"]


def test_type_model_top3_and_card(server):
    out = _post(server, fracatlas_images(1)[0], model="types").json()
    assert len(out["top"]) == 3 and out["class"] == out["top"][0]["class"]
    assert set(out["info"]) >= {"overview", "symptoms", "causes", "diagnosis", "treatment", "prognosis"}


@pytest.mark.parametrize("name,status,why", [("text.jpg", 422, "not an image"), ("truncated.jpg", 422, "truncated"),
                                             ("zero.jpg", 400, "empty"), ("bomb.png", 413, "too large")])
def test_bad_files_are_4xx_json_and_the_server_goes_on(server, tmp_path, name, status, why):
    corpus = make_bad_corpus(tmp_path / "c")
    r = _post(server, corpus / name, name="../../etc/" + name)
    assert r.status_code == status and why in r.json()["error"]
    assert str(tmp_path) not in r.text and "/etc" not in r.json()["error"]      # no server path, no client path
    assert _post(server, fracatlas_images(1)[0]).status_code == 200


def test_unknown_model_missing_file_and_oversized_body(server, tmp_path):
    img = fracatlas_images(1)[0]
    r = _post(server, img, model="../binary")
    assert r.status_code == 404 and "unknown model" in r.json()["error"] and "binary, types" in r.json()["error"]
    r = httpx.post(server + "/api/predict", data={"model": "binary"})
    assert r.status_code == 400 and "file" in r.json()["error"]
    r = _post(server, img, name="big.png", data=b"\0" * (3 << 20))            # the test server's limit: 2 MB
    assert r.status_code == 413 and "limit is 2 MB" in r.json()["error"]
    assert httpx.get(server + "/healthz").status_code == 200


def test_temporary_files_are_removed(server, app):
    _post(server, fracatlas_images(1)[0])
    _post(server, fracatlas_images(1)[0], data=b"not an image", name="x.png")
    assert list(app.state.service.tmp_root.iterdir()) == []


def test_gradio_endpoint_with_gradio_client(server, china_jpg):
    from gradio_client import Client, handle_file
    client = Client(server + "/", verbose=False, download_files=False)
    html, overlay, table, csv = client.predict([handle_file(str(p)) for p in (*fracatlas_images(2), china_jpg)],
                                               "binary", api_name="/analyse")
    assert "Decision:" in html and overlay is not None
    assert [r[0] for r in table["data"]] == [p.name for p in fracatlas_images(2)] + ["china.jpg"]
    assert table["data"][2][1] == "no answer (not a radiograph)"
    assert csv is not None
    html, *_ = client.predict([handle_file(str(fracatlas_images(1)[0]))], "types", api_name="/analyse")
    assert "Top 3 types:" in html and "Overview" in html and "Prognosis" in html


def test_busy_service_answers_503(models_dir):
    from fracturelib.app.service import Service, ServiceError
    s = Service(models_dir, concurrency=1, max_waiting=0)
    try:
        with s._slot():
            with pytest.raises(ServiceError) as e:
                with s._slot():
                    pass
        assert e.value.status == 503
    finally:
        s.close()


def test_serve_binds_loopback_by_default():
    a = build_parser().parse_args(["serve"])
    assert a.host == "127.0.0.1" and a.port == 7860


def test_serve_without_models_is_a_clear_error(tmp_path, capsys):
    assert main(["serve", "--models", str(tmp_path)]) == 2
    assert "no usable model" in capsys.readouterr().err
