"""Grad-CAM and Grad-CAM++ (through the CAM registry) find a known signal; geometry maps heatmaps
back to image coordinates exactly."""
import numpy as np
import pytest

from fracturelib.data.geometry import heatmap_to_image, letterbox, overlay
from fracturelib.explain import compute, targets
from fracturelib.explain.localisation import localisation_scores, region_mask, summarise_localisation

SIZE, MARK = 48, 6


def _mark_data(n, seed):
    """Noise images; class 1 carries a bright 6x6 mark at a random position, class 0 does not."""
    rng = np.random.default_rng(seed)
    x = rng.normal(90, 25, (n, SIZE, SIZE, 1)).clip(0, 255).astype("float32")
    y = (np.arange(n) % 2).astype("float32")
    pos = rng.integers(2, SIZE - MARK - 2, (n, 2))
    for i in np.flatnonzero(y == 1):
        r, c = pos[i]
        x[i, r:r + MARK, c:c + MARK, 0] = 250
    return x, y, pos


@pytest.mark.slow
def test_gradcam_maximum_lands_on_the_mark():
    """Measured with this seed: the maximum is on the mark (+-3 px) in 92% of the 50 marked test
    images for Grad-CAM and 94% for Grad-CAM++; the test requires 80%."""
    import keras

    from fracturelib.models.cnn import build_binary_cnn
    keras.utils.set_random_seed(0)
    x, y, _ = _mark_data(600, 0)
    model = build_binary_cnn(SIZE, 1)
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    xt, yt, pos = _mark_data(100, 1)
    pos_idx = np.flatnonzero(yt == 1)
    assert model.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"] > 0.95
    for method, need in (("gradcam", 0.8), ("gradcam++", 0.8)):
        cams, _ = compute(method, model, xt[pos_idx], target=targets.POSITIVE)
        hits = 0
        for cam, (r, c) in zip(cams, pos[pos_idx]):
            heat = heatmap_to_image(cam, SIZE, SIZE, SIZE)
            pr, pc = np.unravel_index(np.argmax(heat), heat.shape)
            hits += (r - 3 <= pr < r + MARK + 3) and (c - 3 <= pc < c + MARK + 3)
        rate = hits / len(pos_idx)
        # a random position would hit the (6+6)^2 / 48^2 = 6% of the image around the mark
        assert rate >= need, f"{method}: maximum on the mark in {rate:.0%} of images"


def test_letterbox_matches_tensorflow():
    import tensorflow as tf
    for w, h in ((373, 454), (454, 373), (100, 100), (640, 58)):
        img = tf.ones((h, w, 1))
        out = tf.image.resize_with_pad(img, 128, 128).numpy()[..., 0]
        left, top, rw, rh = letterbox(w, h, 128)
        rows, cols = np.flatnonzero(out.max(axis=1) > 0.5), np.flatnonzero(out.max(axis=0) > 0.5)
        assert (rows[0], rows[-1] + 1 - rows[0]) == (top, rh)
        assert (cols[0], cols[-1] + 1 - cols[0]) == (left, rw)


def test_heatmap_back_to_image_coordinates():
    # a hot spot at the input's centre-right maps to the same relative place of a tall image
    cam = np.zeros((16, 16), np.float32)
    cam[8, 10] = 1
    heat = heatmap_to_image(cam, 100, 200, 64)
    r, c = np.unravel_index(np.argmax(heat), heat.shape)
    left, top, rw, rh = letterbox(100, 200, 64)
    assert abs(r - ((8.5 * 4 - top) / rh) * 200) < 10 and abs(c - ((10.5 * 4 - left) / rw) * 100) < 10
    assert overlay(np.zeros((200, 100), np.uint8), heat).shape == (200, 100, 3)


def test_localisation_scores_against_baselines():
    mask = region_mask(100, 100, boxes=[[40, 40, 20, 20]])
    perfect = np.zeros((100, 100))
    perfect[45:55, 45:55] = 1
    wrong = np.zeros((100, 100))
    wrong[0:10, 0:10] = 1
    df = localisation_scores([perfect, wrong], [mask, mask], n_random=5)
    assert df.loc[0, "pointing"] == 1 and df.loc[0, "energy"] == 1 and df.loc[0, "iou"] == pytest.approx(0.25)
    assert df.loc[1, "pointing"] == 0 and df.loc[1, "energy"] == 0
    assert df.loc[0, "area_share"] == pytest.approx(0.04)
    assert 0.01 < df["random_energy"].mean() < 0.15
    table = summarise_localisation(df, n_boot=200)
    assert list(table.index) == ["pointing game (hit rate)", "energy in box", "IoU (heat >= 0.5 max)"]


def test_polygon_mask():
    m = region_mask(50, 50, polygons=[[10, 10, 30, 10, 30, 30, 10, 30]])
    assert 350 < m.sum() < 480


def test_large_images_scored_at_reduced_size_alike():
    mask = region_mask(2000, 1600, boxes=[[800, 600, 200, 160]])
    heat = np.zeros((1600, 2000))
    heat[640:720, 850:950] = 1
    r = localisation_scores([heat], [mask], tolerance=30, n_random=2).iloc[0]
    assert r["pointing"] == 1 and r["energy"] > 0.97
    assert r["area_share"] == pytest.approx(0.01, rel=0.05)
    assert 0.2 < r["iou"] < 0.3           # 100x80 hot block inside a 200x160 box: 0.25
