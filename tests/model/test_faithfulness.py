"""Deletion/insertion on a toy model whose answer is known, and the model-randomisation check."""
import numpy as np
import pytest

from fracturelib.explain import compute, faithfulness, targets


@pytest.fixture(scope="module")
def quadrant_model():
    """Score = sigmoid of the mean brightness of the top-left quadrant: only those pixels matter."""
    import keras
    from keras import layers
    inp = keras.Input((16, 16, 1))
    dense = layers.Dense(1, activation="sigmoid")
    model = keras.Model(inp, dense(layers.Flatten()(inp)))
    w = np.zeros((16, 16), "float32")
    w[:8, :8] = 8.0 / 64 / 255
    dense.set_weights([w.reshape(-1, 1), np.array([-4.0], "float32")])
    return model


def _images(n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 60, (n, 16, 16, 1)).astype("float32")
    x[:, 2:6, 2:6] = 255.0                                    # bright content where the score looks
    x[:, 10:14, 10:14] = 255.0                                # and where it does not
    return x


def test_the_true_map_deletes_faster_and_inserts_faster_than_random(quadrant_model):
    x = _images()
    truth = np.zeros((len(x), 16, 16), "float32")
    truth[:, 2:6, 2:6] = 1.0
    wrong = np.zeros_like(truth)
    wrong[:, 10:14, 10:14] = 1.0
    d_true = faithfulness.area(faithfulness.curves(quadrant_model, x, truth, 1, "deletion", steps=8))
    d_wrong = faithfulness.area(faithfulness.curves(quadrant_model, x, wrong, 1, "deletion", steps=8))
    d_rand = faithfulness.area(faithfulness.curves(quadrant_model, x, truth, 1, "deletion", steps=8, order="random"))
    assert (d_true < d_rand).all() and (d_true < d_wrong).all()
    i_true = faithfulness.area(faithfulness.curves(quadrant_model, x, truth, 1, "insertion", steps=8))
    i_wrong = faithfulness.area(faithfulness.curves(quadrant_model, x, wrong, 1, "insertion", steps=8))
    assert (i_true > i_wrong).all()
    t = faithfulness.faithfulness_table(quadrant_model, x, truth, 1, steps=8, n_boot=50)
    assert t.loc[("deletion", "heatmap order"), "area"] < t.loc[("deletion", "random order"), "area"]
    c = faithfulness.curves(quadrant_model, x[:1], truth[:1], 1, "deletion", steps=4)
    assert c.shape == (1, 5) and c[0, 0] == pytest.approx(faithfulness.class_scores(quadrant_model, x[:1], 1)[0])


def test_randomising_the_weights_changes_gradcam_and_restores_the_model():
    from fracturelib.models.cnn import build_binary_cnn
    m = build_binary_cnn(32, 1)
    x = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 1)).astype("float32")
    before = m.predict(x, verbose=0)
    explain = lambda model, imgs: compute("gradcam", model, imgs, target=targets.POSITIVE)[0]  # noqa: E731
    r = faithfulness.randomisation_check(m, x, explain)
    assert r.shape == (4,) and (r < 0.9).all()
    np.testing.assert_array_equal(m.predict(x, verbose=0), before)
    same = faithfulness.randomisation_check(m, x, lambda model, imgs: np.ones((len(imgs), 5, 5)) * np.arange(5))
    assert same.tolist() == pytest.approx([1.0] * 4)


def test_class_scores_use_the_one_target_rule(quadrant_model):
    """p for the positive class, 1 - p for the negative one, and for the predicted class at a
    threshold t whichever side of t p falls on; a class the model does not have is an error."""
    x = _images(4)
    x[:2, :8, :8] = 255.0                                     # p about 0.98 on the first two, about 0.2 on the others
    p = quadrant_model.predict(x, verbose=0)[:, 0]
    assert ((p[:2] > 0.5) & (p[:2] < 0.99)).all() and (p[2:] < 0.5).all()
    np.testing.assert_allclose(faithfulness.class_scores(quadrant_model, x, 1), p, rtol=1e-6)
    np.testing.assert_allclose(faithfulness.class_scores(quadrant_model, x, targets.NEGATIVE), 1 - p, rtol=1e-5)
    at_half = faithfulness.class_scores(quadrant_model, x, targets.PREDICTED)
    np.testing.assert_allclose(at_half, np.r_[p[:2], 1 - p[2:]], rtol=1e-5)
    at_t = faithfulness.class_scores(quadrant_model, x, targets.predicted(0.99))    # 0.5 < p < t: negative
    np.testing.assert_allclose(at_t, 1 - p, rtol=1e-5)
    with pytest.raises(ValueError, match="sigmoid"):
        faithfulness.class_scores(quadrant_model, x, 2)
