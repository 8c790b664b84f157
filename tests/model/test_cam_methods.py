"""HiResCAM, LayerCAM and Score-CAM in the same engine: known identities and a known answer."""
import numpy as np
import pytest

from fracturelib.explain import gradcam
from fracturelib.explain.scorecam import scorecam


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


def test_hirescam_equals_gradcam_when_gradients_are_spatially_constant(gap_model):
    x = np.random.default_rng(1).uniform(0, 255, (4, 24, 24, 1)).astype("float32")
    a, _ = gradcam(gap_model, x, method="gradcam")
    b, _ = gradcam(gap_model, x, method="hirescam")
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_layercam_equals_hirescam_when_every_gradient_is_positive(gap_model):
    import keras
    x = np.random.default_rng(2).uniform(0, 255, (3, 24, 24, 1)).astype("float32")
    dense = gap_model.layers[-1]
    k, b = dense.get_weights()
    dense.set_weights([np.abs(k) * np.array([1.0, 0.0, 0.0]), b])     # class 0's score grows with every channel
    try:
        h, _ = gradcam(gap_model, x, class_index=0, method="hirescam")
        lc, _ = gradcam(gap_model, x, class_index=0, method="layercam")
        # softmax couples the classes, but with the other classes' weights at zero every
        # gradient of class 0 stays positive
        np.testing.assert_allclose(h, lc, atol=1e-5)
    finally:
        dense.set_weights([k, b])
    with pytest.raises(ValueError, match="hirescam"):
        gradcam(gap_model, x, method="nope")
    assert keras.backend.backend() == "tensorflow"


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
    cams, out = scorecam(model, x, class_index=1, max_channels=2)
    assert cams.shape == (8, 32, 32) and out.shape == (8, 1)
    hits = 0
    for cam, (hy, hx) in zip(cams, where):
        py, px = np.unravel_index(np.argmax(cam), cam.shape)
        hits += abs(py - hy) <= 2 and hx - 2 <= px <= hx + 10
    assert hits >= 7, f"Score-CAM peak on the horizontal bar in {hits} of 8 images"


def test_the_engine_is_built_once_per_model_and_layer_and_stores_nothing_on_the_model(gap_model):
    from fracturelib.explain.gradcam import CAMEngine
    before = set(vars(gap_model))
    e1, e2 = CAMEngine.for_model(gap_model), CAMEngine.for_model(gap_model, "conv")
    assert e1 is e2 and set(vars(gap_model)) == before
    x = np.random.default_rng(4).uniform(0, 255, (2, 24, 24, 1)).astype("float32")
    _, pred, _ = e1.step(x, None)
    _, _, g_pred = e1.step(x, int(np.argmax(pred[0])))
    _, _, g_auto = e1.step(x[:1], None)
    np.testing.assert_allclose(g_pred.numpy()[:1], g_auto.numpy(), atol=1e-6)   # predicted class == given class
