"""CenterNet's targets and decoding with answers computed by hand (no training)."""
import numpy as np
import pytest

from fracturelib.models import centernet


def _maps():
    heat, size, off = np.zeros((16, 16)), np.zeros((16, 16, 2)), np.zeros((16, 16, 2))
    heat[4, 3], heat[4, 4], heat[12, 10], heat[0, 15] = 0.9, 0.5, 0.6, 0.2   # (4, 4) is beside a higher peak
    size[4, 3], off[4, 3] = (2, 4), (0.5, 0.25)
    size[12, 10] = (1, 1)
    return heat, size, off


def test_decode_synthetic_heatmap_in_input_pixels():
    heat, size, off = _maps()
    b = centernet.decode(heat, size, off, k=10, threshold=0.55)
    # centre ((3 + .5) * 8, (4 + .25) * 8) = (28, 34), size (16, 32); centre (80, 96), size (8, 8)
    np.testing.assert_allclose(b, [[20, 18, 36, 50, 0.9], [76, 92, 84, 100, 0.6]])
    assert len(centernet.decode(heat, size, off, k=1)) == 1
    assert not any((r[:4] == [20, 26, 28, 34]).all() for r in centernet.decode(heat, size, off))   # (4, 4) suppressed


def test_decode_to_original_pixels_undoes_the_letterbox():
    heat, size, off = _maps()
    # a 256 x 128 image in a 128-px input: scale 0.5, 32 px of padding on top
    b = centernet.decode(heat, size, off, k=1, image_wh=(256, 128), input_size=128)
    np.testing.assert_allclose(b, [[40, 0, 72, 36, 0.9]])     # y0 = (18 - 32) / 0.5 clipped to 0


def test_targets_decode_back_to_the_boxes():
    sizes = [(500, 400), (300, 600), (640, 480)]
    gt = [[[50, 60, 40, 30], [300, 200, 80, 120]], [[10, 20, 100, 50]], []]
    heat, size, off = centernet.targets(gt, sizes, 384)
    assert heat.shape == (3, 48, 48, 1) and heat[2].max() == 0 and size[..., 2].sum() == 3
    for i in range(3):
        b = centernet.decode(heat[i], size[i][..., :2], off[i][..., :2], 10, 0.99, sizes[i], 384)
        want = [[x, y, x + w, y + h, 1.0] for x, y, w, h in sorted(gt[i], key=lambda r: r[1])]
        np.testing.assert_allclose(b[np.argsort(b[:, 1])] if len(b) else np.zeros((0, 5)),
                                   np.reshape(want, (-1, 5)), atol=1e-4)


def test_image_scores_and_gaussian_radius():
    dets = [np.array([[0, 0, 1, 1, 0.3], [0, 0, 1, 1, 0.7]]), np.zeros((0, 5))]
    assert centernet.image_scores(dets).tolist() == [0.7, 0.0]
    # a 10 x 10 box at IoU 0.7: the third case of the formula wins
    assert centernet.gaussian_radius(10, 10) == pytest.approx((-28 + (28 ** 2 + 4 * 2.8 * 30) ** 0.5) / 2)
    assert centernet.gaussian_radius(0, 0) == 0
