"""Transfer models: every weights option offline, preprocess_input per backbone, two phases."""
import h5py
import numpy as np
import pytest

from fracturelib.data import build_manifest
from fracturelib.models import backbones, cards, recipe, scoring, transfer
from tests.conftest import write_tree

SIZE = 96


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    from keras.src.backend import config as kc
    monkeypatch.setattr(kc, "_KERAS_DIR", str(tmp_path / "keras_home"))
    (tmp_path / "keras_home" / "models").mkdir(parents=True)
    return tmp_path / "keras_home"


def _legacy_h5(model, path):
    """Write weights the way keras-applications' release files are written (legacy HDF5)."""
    from keras.src.legacy.saving import legacy_h5_format
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def _backbone_weights(m):
    return m.get_layer("backbone").get_weights()


def test_imagenet_from_preplaced_cache_file_without_network(keras_home, monkeypatch):
    import keras.src.utils.file_utils as fu

    def no_network(*a, **k):
        raise AssertionError("tried to download")
    monkeypatch.setattr(fu, "urlretrieve", no_network)
    ref = backbones.build_backbone("mobilenetv2", None, input_shape=(SIZE, SIZE, 3), alpha=0.35)
    rng = np.random.default_rng(0)
    ref.set_weights([rng.normal(size=w.shape).astype("float32") for w in ref.get_weights()])
    target = backbones.keras_cache_file("mobilenetv2", SIZE, 0.35)
    assert target == keras_home / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
    _legacy_h5(ref, target)
    for w in ("imagenet", "auto"):
        m, desc = transfer.build_transfer_model(3, "mobilenetv2", SIZE, 3, w, alpha=0.35)
        assert desc.startswith("imagenet")
        for a, b in zip(_backbone_weights(m), ref.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_imagenet_unavailable_says_how_to_fix(keras_home, monkeypatch):
    import urllib.error

    import keras.src.utils.file_utils as fu

    def offline(*a, **k):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(fu, "urlretrieve", offline)
    with pytest.raises(backbones.WeightsUnavailable) as e:
        transfer.build_transfer_model(3, "mobilenetv2", SIZE, 3, "imagenet", alpha=0.35)
    msg = str(e.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5" in msg
    assert str(keras_home / "models") in msg and "weights=<path" in msg


def test_auto_offline_falls_back_to_efficientnet_lite0_imagenet(keras_home, monkeypatch):
    monkeypatch.setenv("FRACTURELIB_OFFLINE", "1")
    for bb in ("mobilenetv2", "resnet50", "efficientnetb0"):
        r = backbones.resolve("auto", bb, 160, 0.35)
        assert (r.backbone, r.weights) == ("efficientnet_lite0", "imagenet")
        assert "efficientnet_lite0" in r.description and bb in r.description
    m, desc = transfer.build_transfer_model(3, "mobilenetv2", 64, 1, "auto")
    assert transfer.backbone_of(m) == "efficientnet_lite0" and m.name == "efficientnet_lite0_transfer"
    assert "auto" in desc


def test_local_weights_file(tmp_path):
    ref = backbones.build_backbone("mobilenetv2", None, input_shape=(SIZE, SIZE, 3), alpha=0.35)
    p = tmp_path / "mine.weights.h5"
    ref.save_weights(p)
    m, desc = transfer.build_transfer_model(3, "mobilenetv2", SIZE, 3, str(p), alpha=0.35)
    assert desc == "file mine.weights.h5"
    for a, b in zip(_backbone_weights(m), ref.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="existing weights file"):
        backbones.resolve(str(tmp_path / "missing.h5"), "mobilenetv2", SIZE)


def test_fracatlas_in_domain_backbone_is_shipped_and_loads():
    fb = backbones.FRACATLAS_BACKBONE
    m, desc = transfer.build_transfer_model(10, "mobilenetv2", fb["image_size"], 3, "fracatlas",
                                            alpha=fb["alpha"])
    assert desc.startswith("fracatlas")
    ref = backbones.build_backbone("mobilenetv2", None, input_shape=(fb["image_size"],) * 2 + (3,), alpha=fb["alpha"])
    ref.load_weights(backbones.ASSETS / fb["file"])
    for a, b in zip(_backbone_weights(m), ref.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="alpha 0.35"):
        backbones.resolve("fracatlas", "resnet50", 160)


@pytest.mark.parametrize("backbone,expect", [
    ("mobilenetv2", lambda x: x / 127.5 - 1),
    ("resnet50", lambda x: x[..., ::-1] - np.array([103.939, 116.779, 123.68])),
    ("efficientnetb0", lambda x: x),
    ("efficientnet_lite0", lambda x: (x - 127.0) / 128.0),
])
def test_each_backbone_has_its_own_preprocess_input(backbone, expect):
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32") * 255
    got = np.asarray(backbones.preprocess_layer(backbone)(x))
    np.testing.assert_allclose(got, expect(x), rtol=1e-5, atol=1e-4)
    gray = np.asarray(backbones.preprocess_layer(backbone)(x[..., :1]))
    assert gray.shape == (2, 8, 8, 3)


@pytest.mark.slow
def test_two_phase_training_save_load_and_gradcam(tmp_path):
    from fracturelib.data.splits import assign_splits
    from fracturelib.explain import gradcam
    write_tree(tmp_path / "ds", {"a/Train": 12, "a/Test": 3, "b/Train": 12, "b/Test": 3, "c/Train": 12, "c/Test": 3})
    d = assign_splits(build_manifest(tmp_path / "ds"), val_fraction=0.25, seed=0)
    classes = ["a", "b", "c"]
    m, _ = transfer.build_transfer_model(3, "mobilenetv2", 64, 3, "none", alpha=0.35)
    bn = [lay for lay in m.get_layer("backbone").layers if type(lay).__name__ == "BatchNormalization"][-1]
    bn_before = [w.copy() for w in bn.get_weights()]
    head_before = [w.copy() for w in m.get_layer("classes").get_weights()]
    r = recipe.two_phase(m, d[d.split == "train"], d[d.split == "val"], classes, 64,
                           phase1_epochs=3, phase2_epochs=1, fine_tune_layers=10, verbose=0)
    # phase 1 trained the head (a random backbone's features may be all zero: the bias moves)
    assert any(not np.allclose(a, b) for a, b in zip(head_before, m.get_layer("classes").get_weights()))
    assert r["features_img_per_s"] > 0 and "phase2_seconds" in r
    assert r["trainable_params"] > m.get_layer("classes").count_params()
    for a, b in zip(bn_before, bn.get_weights()):      # BatchNorm frozen and in inference mode
        np.testing.assert_array_equal(a, b)
    path = cards.save_model(m, tmp_path / "t.keras", {"classes": classes, "image_size": 64,
                                                       "channels": 3, "preprocessing": "mobilenet_v2"})
    loaded, _ = cards.load_model(path)
    x = np.random.default_rng(1).random((2, 64, 64, 3)).astype("float32") * 255
    np.testing.assert_allclose(loaded.predict(x, verbose=0), m.predict(x, verbose=0), atol=1e-5)
    cams, out = gradcam(loaded, x)
    assert cams.shape == (2, 2, 2) and out.shape == (2, 3)


def test_saved_transfer_model_loads_in_a_fresh_process(tmp_path):
    """The card-checked loader must find our custom layer without the caller importing it."""
    import subprocess
    import sys
    m, _ = transfer.build_transfer_model(3, "mobilenetv2", 32, 3, "none", alpha=0.35)
    path = cards.save_model(m, tmp_path / "t.keras", {"classes": ["a", "b", "c"], "image_size": 32,
                                                       "channels": 3, "preprocessing": "mobilenet_v2"})
    code = ("from fracturelib.models.cards import load_model; m, c = load_model(%r); "
            "print(m.get_layer('preprocess').backbone)" % str(path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("mobilenetv2")


def test_unfreeze_from_a_named_block_keeps_earlier_layers_and_batchnorm_frozen():
    m, _ = transfer.build_transfer_model(3, "efficientnet_lite0", 32, 3, "none")
    transfer.unfreeze_top(m, "block14")
    base = m.get_layer("backbone")
    trainable = {layer.name for layer in base.layers if layer.trainable and layer.weights}
    assert "block14_expand_conv" in trainable and "top_conv" in trainable
    assert not any(n.startswith(("block13", "stem")) for n in trainable)
    assert not any(n.endswith("bn") for n in trainable)
    with pytest.raises(ValueError, match="no such layer"):
        transfer.unfreeze_top(m, "block99")


@pytest.mark.slow
def test_binary_transfer_monitors_auc_and_learns_from_mirrored_features(tmp_path):
    from fracturelib.data.splits import assign_splits
    write_tree(tmp_path / "ds", {"fractured": 16, "non-fractured": 16})
    d = assign_splits(build_manifest(tmp_path / "ds"), val_fraction=0.25, test_fraction=0.2, seed=0)
    classes = ["non-fractured", "fractured"]
    m, _ = transfer.build_transfer_model(1, "efficientnet_lite0", 32, 1, "none")
    assert m.output.shape[-1] == 1
    tr, va = d[d.split == "train"], d[d.split == "val"]
    r = recipe.two_phase(m, tr, va, classes, 32, 1, phase1_epochs=2, phase2_epochs=0, verbose=0)
    assert r["monitor"] == "val_auc" and "val_auc" in r["phase1_history"]
    assert r["pooled"]["train"].shape == (len(tr), 1280)
    p = scoring.predict_proba(m, va, classes, 32, 1)
    assert p.shape == (len(va),) and ((p >= 0) & (p <= 1)).all()


def test_flip_averaging_is_kept_only_when_it_helps_on_validation(monkeypatch):
    import pandas as pd
    rows = pd.DataFrame({"label": ["a", "b", "a", "b"]})
    plain = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.6, 0.4]])      # 2 of 4 right
    flipped = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.4, 0.6]])    # 4 of 4 right
    monkeypatch.setattr(scoring, "predict_proba", lambda m, r, c, s, ch, b, flip=False: flipped if flip else plain)
    assert scoring.choose_tta_flip(None, rows, ["a", "b"], 32) == {
        "val_accuracy": 0.5, "val_accuracy_flip": 1.0, "tta_flip": True}
    monkeypatch.setattr(scoring, "predict_proba", lambda m, r, c, s, ch, b, flip=False: plain)
    assert scoring.choose_tta_flip(None, rows, ["a", "b"], 32)["tta_flip"] is False
