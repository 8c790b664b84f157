"""Behavioural tests on a trained model (Made-With-ML style): decisions that must not depend on
things a radiologist would ignore, and no confident answer for an empty image."""
import numpy as np
import pytest

from fracturelib import config, models, train
from fracturelib.data import build_manifest, usable
from fracturelib.data.pipeline import load_images, make_dataset
from fracturelib.data.splits import assign_splits

SIZE = 64


@pytest.fixture(scope="module")
def trained():
    train.set_seed(0)
    classes = list(config.BINARY_CLASSES)
    d = assign_splits(usable(build_manifest(config.DEFAULT_FRACATLAS), classes), 0.15, 0.2, seed=0)
    ds = {s: make_dataset(d[d.split == s], classes, SIZE, 1, 32, training=(s == "train"), seed=0)
          for s in ("train", "val")}
    m = models.build_binary_cnn(SIZE, 1)
    weights = train.class_weights(d[d.split == "train"].label, classes)
    train.fit(m, ds["train"], ds["val"], epochs=4, class_weight=weights, verbose=0)
    return m, load_images(d[d.split == "test"].head(120), SIZE, 1)


@pytest.mark.slow
def test_a_mirror_image_gets_the_same_decision_on_most_images(trained):
    m, x = trained
    p, q = m.predict(x, verbose=0)[:, 0], m.predict(x[:, :, ::-1], verbose=0)[:, 0]
    assert ((p >= 0.5) == (q >= 0.5)).mean() >= 0.8
    assert np.corrcoef(p, q)[0, 1] > 0.5            # and the scores move together


@pytest.mark.slow
def test_extra_padding_does_not_change_the_decision_on_most_images(trained):
    import tensorflow as tf
    m, x = trained
    padded = tf.image.resize(tf.pad(x, [[0, 0], [8, 8], [8, 8], [0, 0]]), (SIZE, SIZE), antialias=True).numpy()
    p, q = m.predict(x, verbose=0)[:, 0], m.predict(padded, verbose=0)[:, 0]
    assert ((p >= 0.5) == (q >= 0.5)).mean() >= 0.8


@pytest.mark.slow
def test_an_empty_image_is_not_confidently_fractured(trained):
    m, _ = trained
    for value in (0.0, 128.0, 255.0):
        assert m.predict(np.full((1, SIZE, SIZE, 1), value, "float32"), verbose=0)[0, 0] < 0.9
