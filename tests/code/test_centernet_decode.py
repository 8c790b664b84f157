"""CenterNet's targets and decoding with answers computed by hand (no training)."""
import numpy as np
import pytest

from fracturelib.models import box_decode, centernet


def _maps():
    heat, size, off = np.zeros((16, 16)), np.zeros((16, 16, 2)), np.zeros((16, 16, 2))
    heat[4, 3], heat[4, 4], heat[12, 10], heat[0, 15] = 0.9, 0.5, 0.6, 0.2   # (4, 4) is beside a higher peak
    size[4, 3], off[4, 3] = (2, 4), (0.5, 0.25)
    size[12, 10] = (1, 1)
    return heat, size, off


def test_decode_synthetic_heatmap_in_input_pixels():
    heat, size, off = _maps()
    b = box_decode.decode(heat, size, off, k=10, threshold=0.55)
    # centre ((3 + .5) * 8, (4 + .25) * 8) = (28, 34), size (16, 32); centre (80, 96), size (8, 8)
    np.testing.assert_allclose(b, [[20, 18, 36, 50, 0.9], [76, 92, 84, 100, 0.6]])
    assert len(box_decode.decode(heat, size, off, k=1)) == 1
    assert not any((r[:4] == [20, 26, 28, 34]).all() for r in box_decode.decode(heat, size, off))   # (4, 4) suppressed


def test_decode_to_original_pixels_undoes_the_letterbox():
    heat, size, off = _maps()
    # a 256 x 128 image in a 128-px input: scale 0.5, 32 px of padding on top
    b = box_decode.decode(heat, size, off, k=1, image_wh=(256, 128), input_size=128)
    np.testing.assert_allclose(b, [[40, 0, 72, 36, 0.9]])     # y0 = (18 - 32) / 0.5 clipped to 0


def test_a_peak_centred_on_the_letterbox_padding_is_no_box():
    heat, size, off = _maps()
    # 256 x 128 in a 128-px input: the image fills input rows 32-95. Peaks: (row 4, col 3) centred at y 36 (in),
    # (row 12, col 10) at y 96 (the first padding row below), (row 0, col 15) at y 0 (the padding above)
    everything = box_decode.decode(heat, size, off, threshold=0.1)
    in_image = box_decode.decode(heat, size, off, threshold=0.1, image_wh=(256, 128), input_size=128)
    np.testing.assert_allclose(everything[:, 4], [0.9, 0.6, 0.2])
    np.testing.assert_allclose(in_image[:, 4], [0.9])
    off[12, 10] = (0, -0.01)                       # centred 0.08 px above the padding: a box again
    in_image = box_decode.decode(heat, size, off, threshold=0.1, image_wh=(256, 128), input_size=128)
    np.testing.assert_allclose(in_image[:, 4], [0.9, 0.6])


def test_targets_decode_back_to_the_boxes():
    sizes = [(500, 400), (300, 600), (640, 480)]
    gt = [[[50, 60, 40, 30], [300, 200, 80, 120]], [[10, 20, 100, 50]], []]
    heat, size, off = centernet.targets(gt, sizes, 384)
    assert heat.shape == (3, 48, 48, 1) and heat[2].max() == 0 and size[..., 2].sum() == 3
    for i in range(3):
        b = box_decode.decode(heat[i], size[i][..., :2], off[i][..., :2], 10, 0.99, sizes[i], 384)
        want = [[x, y, x + w, y + h, 1.0] for x, y, w, h in sorted(gt[i], key=lambda r: r[1])]
        np.testing.assert_allclose(b[np.argsort(b[:, 1])] if len(b) else np.zeros((0, 5)),
                                   np.reshape(want, (-1, 5)), atol=1e-4)


def test_image_scores_and_gaussian_radius():
    dets = [np.array([[0, 0, 1, 1, 0.3], [0, 0, 1, 1, 0.7]]), np.zeros((0, 5))]
    assert box_decode.image_scores(dets).tolist() == [0.7, 0.0]
    # a 10 x 10 box at IoU 0.7: the third case of the formula wins
    assert centernet.gaussian_radius(10, 10) == pytest.approx((-28 + (28 ** 2 + 4 * 2.8 * 30) ** 0.5) / 2)
    assert centernet.gaussian_radius(0, 0) == 0


def test_hostile_heads_give_valid_boxes_one_per_tie_and_k_after_the_filters():
    g = 8
    flat = np.full((g, g), 0.9)
    size, off = np.ones((g, g, 2)), np.full((g, g, 2), 0.5)
    assert len(box_decode.decode(flat, size, off)) == 1                       # a plateau is one peak
    two = flat.copy()
    two[:, 4:] = 0.8
    # two plateaus: 0.9 in columns 0-3, 0.8 in 4-7, whose column 4 touches the 0.9 cells: one peak each, the first
    # cell in raster order (row 0; columns 0 and 5), 8 x 8 px boxes centred half a cell in
    np.testing.assert_allclose(box_decode.decode(two, size, off), [[0, 0, 8, 8, 0.9], [40, 0, 48, 8, 0.8]], atol=1e-6)
    hot = np.zeros((g, g))
    hot[2, 2] = 5.0                                                            # not a probability: clipped to 1
    assert box_decode.decode(hot, size, off, threshold=0.5)[:, 4].tolist() == [1.0]
    bad = size.copy()
    bad[2, 2] = (np.inf, 1)
    assert len(box_decode.decode(hot, bad, off, threshold=0.5)) == 0           # an infinite size: no box
    # top-k is taken after the padding filter: a 64 x 16 image in a 64-px input fills rows 24-39 (cells 3-4)
    ramp = np.linspace(1, 0.5, g * g).reshape(g, g)
    ramp[::2, ::2] += 1                                                        # peaks on even cells, best at the top
    b = box_decode.decode(np.clip(ramp - 1, 0, 1), size, off, k=3, image_wh=(64, 16), input_size=64)
    assert len(b) == 3 and (b[:, 1] < 16).all()


def test_detect_takes_the_stride_from_the_detectors_grid():
    class Grid4:                                          # a 64-px input on a 4 x 4 grid: 16 px per cell
        input_shape = (None, 64, 64, 1)

        def predict_on_batch(self, x):
            heat = np.zeros((1, 4, 4, 1))
            heat[0, 1, 2] = 0.9
            return heat, np.ones((1, 4, 4, 2)), np.full((1, 4, 4, 2), 0.5)
    b = box_decode.detect(Grid4(), np.zeros((1, 64, 64, 1)), [(64, 64)], threshold=0.5)[0]
    np.testing.assert_allclose(b, [[32, 16, 48, 32, 0.9]])                   # centre (2.5, 1.5) cells x 16 px
