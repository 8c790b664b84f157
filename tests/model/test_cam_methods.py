"""One CAM interface: every method through the registry, known identities and a known answer, and
one rule for what is explained (targets)."""
import numpy as np
import pytest

from fracturelib.explain import cams, compute, targets


@pytest.fixture(scope="module")
def gap_model():
    """conv -> global average pooling -> dense: every position of a channel gets the same gradient."""
    import keras
    from keras import layers
    keras.utils.set_random_seed(0)
    inp = keras.Input((24, 24, 1))
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv")(inp)
    out = layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def near_half_model():
    """One sigmoid unit whose p lies just above 0.5 (about 0.55) for any image, but still depends
    on the feature map (tiny dense weights), so its CAMs are not zero."""
    import keras
    from keras import layers
    keras.utils.set_random_seed(5)
    inp = keras.Input((24, 24, 1))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    dense = layers.Dense(1, activation="sigmoid")
    model = keras.Model(inp, dense(layers.Flatten()(x)))
    k = np.random.default_rng(6).normal(0, 1e-6, (24 * 24 * 4, 1)).astype("float32")
    dense.set_weights([k, np.array([np.log(0.55 / 0.45)], "float32")])
    return model


@pytest.fixture(scope="module")
def between_model():
    """One sigmoid unit on pooled features, its bias set so that p of the images ``_x(3, 8)`` lies
    just above 0.5; masking or darkening an image moves p far (Score-CAM's weights differ)."""
    import keras
    from keras import layers
    keras.utils.set_random_seed(7)
    inp = keras.Input((24, 24, 1))
    feat = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp))
    dense = layers.Dense(1, activation="sigmoid")
    model = keras.Model(inp, dense(feat))
    w = np.array([[0.02], [-0.01], [0.015], [-0.02]], "float32")
    mean_feat = keras.Model(inp, feat).predict(_x(3, 8), verbose=0).mean(axis=0)
    dense.set_weights([w, np.array([np.log(0.55 / 0.45) - float(mean_feat @ w[:, 0])], "float32")])
    return model


def _x(n, seed, size=24):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 1)).astype("float32")


def test_the_five_methods_are_registered():
    assert {"gradcam", "gradcam++", "hirescam", "layercam", "scorecam"} <= set(cams.names())


@pytest.mark.parametrize("name", cams.names())
def test_every_method_gives_maps_of_the_same_shape_in_0_1(gap_model, name):
    x = _x(5, 7)
    maps, out = compute(name, gap_model, x, batch_size=2)
    assert maps.shape == (5, 24, 24) and out.shape == (5, 3)
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    assert np.allclose(maps.reshape(5, -1).max(axis=1), 1.0) or not maps.any()
    np.testing.assert_allclose(out, gap_model.predict(x, verbose=0), atol=1e-5)


def test_an_unknown_name_is_rejected_with_the_known_names(gap_model):
    with pytest.raises(ValueError, match="unknown CAM method 'nope'") as e:
        compute("nope", gap_model, _x(1, 0))
    for name in cams.names():
        assert name in str(e.value)


def test_a_registered_method_is_usable_by_name_then_gone_when_unregistered(gap_model):
    import tensorflow as tf
    calls = []

    @cams.register("toy-gradnorm")
    @cams.from_gradients
    def toy(fmap, grads):
        calls.append(1)
        return tf.reduce_sum(tf.abs(grads), axis=-1)
    try:
        assert "toy-gradnorm" in cams.names()
        maps, out = compute("toy-gradnorm", gap_model, _x(3, 1), target=2)
        assert maps.shape == (3, 24, 24) and out.shape == (3, 3) and calls
        with pytest.raises(ValueError, match="already registered"):
            cams.register("toy-gradnorm")(toy)
    finally:
        cams.unregister("toy-gradnorm")
    assert "toy-gradnorm" not in cams.names()
    with pytest.raises(ValueError, match="toy-gradnorm"):
        compute("toy-gradnorm", gap_model, _x(1, 0))


def test_hirescam_equals_gradcam_when_gradients_are_spatially_constant(gap_model):
    x = _x(4, 1)
    a, _ = compute("gradcam", gap_model, x)
    b, _ = compute("hirescam", gap_model, x)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_layercam_equals_hirescam_when_every_gradient_is_positive(gap_model):
    x = _x(3, 2)
    dense = gap_model.layers[-1]
    k, b = dense.get_weights()
    dense.set_weights([np.abs(k) * np.array([1.0, 0.0, 0.0]), b])     # class 0's score grows with every channel
    try:
        h, _ = compute("hirescam", gap_model, x, target=targets.ClassTarget(0))
        lc, _ = compute("layercam", gap_model, x, target=targets.ClassTarget(0))
        # softmax couples the classes, but with the other classes' weights at zero every
        # gradient of class 0 stays positive
        np.testing.assert_allclose(h, lc, atol=1e-5)
    finally:
        dense.set_weights([k, b])


def test_scorecam_finds_the_region_the_score_depends_on():
    """Channel 0 detects horizontal bars, channel 1 vertical ones; the score reads channel 0 only.
    Each image has one bar of each kind: Score-CAM's peak must be on the horizontal bar."""
    import keras
    from keras import layers
    k = np.zeros((5, 5, 1, 2), "float32")
    k[2, :, 0, 0], k[:, 2, 0, 1] = 1.0, 1.0                      # 5-px horizontal / vertical lines
    inp = keras.Input((32, 32, 1))
    conv = layers.Conv2D(2, 5, padding="same", activation="relu", name="conv")
    feat = conv(inp)
    dense = layers.Dense(1, activation="sigmoid", name="score")
    model = keras.Model(inp, dense(layers.Flatten()(feat)))
    conv.set_weights([k / 255.0, np.array([-3.0, -3.0], "float32")])    # fires on >= 4 bright pixels in line
    w = np.zeros((32, 32, 2), "float32")
    w[..., 0] = 1.0
    dense.set_weights([w.reshape(-1, 1), np.array([-3.0], "float32")])
    rng = np.random.default_rng(3)
    x = np.zeros((8, 32, 32, 1), "float32")
    where = []
    for i in range(8):
        left = bool(rng.integers(0, 2))
        hy, hx = rng.integers(6, 26), (rng.integers(4, 10) if left else rng.integers(20, 24))
        vy, vx = rng.integers(8, 22), (rng.integers(22, 28) if left else rng.integers(4, 10))
        x[i, hy, hx:hx + 9, 0] = 255
        x[i, vy:vy + 9, vx, 0] = 255
        where.append((hy, hx))
    maps, out = compute("scorecam", model, x, target=targets.POSITIVE, max_channels=2)
    assert maps.shape == (8, 32, 32) and out.shape == (8, 1)
    hits = 0
    for cam, (hy, hx) in zip(maps, where):
        py, px = np.unravel_index(np.argmax(cam), cam.shape)
        hits += abs(py - hy) <= 2 and hx - 2 <= px <= hx + 10
    assert hits >= 7, f"Score-CAM peak on the horizontal bar in {hits} of 8 images"


def test_the_engine_is_built_once_per_model_and_layer_and_stores_nothing_on_the_model(gap_model):
    from fracturelib.explain.cams import CAMEngine
    before = set(vars(gap_model))
    e1, e2 = CAMEngine.for_model(gap_model), CAMEngine.for_model(gap_model, "conv")
    assert e1 is e2 and set(vars(gap_model)) == before
    x = _x(2, 4)
    _, pred, _ = e1.step(x, None)
    _, _, g_pred = e1.step(x, int(np.argmax(pred[0])))
    _, _, g_auto = e1.step(x[:1], None)
    np.testing.assert_allclose(g_pred.numpy()[:1], g_auto.numpy(), atol=1e-6)   # predicted class == given class
    e1.step(x, targets.ClassTarget(2))
    assert set(e1._steps) == {targets.PredictedClass, targets.ClassTarget}      # one graph per rule, not per class


# what is explained: targets


def test_sigmoid_predicted_class_follows_the_threshold():
    out = np.array([[0.55], [0.30], [0.60], [0.95]], "float32")
    assert targets.predicted(0.6).classes(out).tolist() == [0, 0, 1, 1]         # p >= t is positive
    assert targets.PREDICTED.classes(out).tolist() == [1, 0, 1, 1]              # default 0.5
    np.testing.assert_allclose(targets.predicted(0.6).scores(out), [0.45, 0.70, 0.60, 0.95], atol=1e-6)
    np.testing.assert_allclose(targets.NEGATIVE.scores(out), 1 - out[:, 0], atol=1e-6)
    np.testing.assert_allclose(targets.POSITIVE.scores(out), out[:, 0], atol=1e-6)


def test_softmax_predicted_class_is_the_argmax_whatever_the_threshold():
    out = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]], "float32")
    for t in (0.5, 0.9):
        assert targets.predicted(t).classes(out).tolist() == [1, 0, 2]
    np.testing.assert_allclose(targets.PREDICTED.scores(out), [0.7, 0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(targets.ClassTarget(2).scores(out), [0.2, 0.3, 0.5], atol=1e-6)


def test_targets_from_what_callers_pass_and_classes_that_do_not_exist():
    assert targets.as_target(None) == targets.PredictedClass(0.5)
    assert targets.as_target(1) == targets.POSITIVE and targets.as_target(np.int64(0)) == targets.NEGATIVE
    with pytest.raises(TypeError):
        targets.as_target("fractured")
    with pytest.raises(ValueError, match="sigmoid"):
        targets.ClassTarget(2).check(1)
    with pytest.raises(ValueError, match="3 classes"):
        targets.ClassTarget(3).check(3)


@pytest.mark.parametrize("name", cams.names())
def test_every_method_explains_the_class_at_the_threshold(between_model, name):
    """0.5 < p < threshold: the predicted class is negative, so the maps are those of the negative
    class, not of the positive class that p >= 0.5 would pick."""
    x = _x(3, 8)
    p = between_model.predict(x, verbose=0)[:, 0]
    assert ((p > 0.5) & (p < 0.6)).all(), p
    at_t, out = compute(name, between_model, x, target=targets.predicted(0.6))
    neg, _ = compute(name, between_model, x, target=targets.NEGATIVE)
    pos, _ = compute(name, between_model, x, target=targets.POSITIVE)
    at_half, _ = compute(name, between_model, x)
    np.testing.assert_allclose(at_t, neg, atol=1e-5)
    np.testing.assert_allclose(at_half, pos, atol=1e-5)
    assert not np.allclose(neg, pos, atol=1e-3), "the two classes' maps must differ for this test to mean anything"


def test_softmax_cams_explain_the_argmax(gap_model):
    x = _x(4, 9)
    maps, out = compute("gradcam", gap_model, x, target=targets.predicted(0.9))
    for i, k in enumerate(out.argmax(axis=1)):
        one, _ = compute("gradcam", gap_model, x[i:i + 1], target=int(k))
        np.testing.assert_allclose(maps[i], one[0], atol=1e-5)


def test_predict_uses_the_chosen_cam_and_explains_the_class_at_the_cards_threshold(near_half_model, tmp_path,
                                                                                  monkeypatch):
    """The card's threshold (0.6) is above p (about 0.55): the reported class is non-fractured and
    the heatmap explains that class, with the method asked for."""
    from PIL import Image

    import fracturelib.explain as ex
    from fracturelib import config
    from fracturelib.app.cli import build_parser
    from fracturelib.app.predict import Predictor, format_result
    from fracturelib.models import cards
    path = cards.save_model(near_half_model, tmp_path / "b.keras", {
        "classes": list(config.BINARY_CLASSES), "image_size": 24, "channels": 1, "preprocessing": "test",
        "threshold": 0.6})
    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64), dtype=np.uint8)).save(img)
    seen, real = [], ex.compute

    def spy(name, model, images, target=None, **kw):
        maps, out = real(name, model, images, target=target, **kw)
        seen.append((name, targets.as_target(target).classes(out).tolist()))
        return maps, out
    monkeypatch.setattr(ex, "compute", spy)
    r = Predictor(path, cam="hirescam").predict(img, overlay_dir=tmp_path)
    assert r["class"] == "non-fractured" and r["threshold"] == 0.6 and 0.44 < r["confidence"] < 0.46
    assert seen == [("hirescam", [0])]
    assert r["localisation"] == "hirescam" and "hirescam overlay:" in format_result(r)
    with pytest.raises(ValueError, match="known: gradcam"):
        Predictor(path, cam="nope")
    assert build_parser().parse_args(["predict", str(img), "--cam", "layercam"]).cam == "layercam"
    assert build_parser().parse_args(["predict", str(img)]).cam == "gradcam"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", str(img), "--cam", "nope"])
