"""The box-trained localiser: targets where the boxes are, and a drawn mark found in >= 90% of new images."""
import numpy as np
import pytest

from fracturelib.explain.localisation import region_mask, score
from fracturelib.models import localiser


def test_targets_peak_at_the_box_centre_through_the_letterbox():
    # a 200 x 100 image letterboxed into 64 px: scale 0.32, 16 px of padding on top
    t = localiser.targets([[[100, 50, 20, 10]]], [(200, 100)], 64)
    assert t.shape == (1, 8, 8, 1) and t.max() == pytest.approx(1.0)
    y, x = np.unravel_index(np.argmax(t[0, :, :, 0]), (8, 8))
    assert (x, y) == (int(110 * 0.32 / 8), int((16 + 55 * 0.32) / 8))
    assert localiser.targets([[]], [(50, 50)], 64).max() == 0.0


def _marked(rng, n, size=96):
    """Noisy gray images, each with one bright short diagonal stroke; its COCO box."""
    import cv2
    imgs, boxes = [], []
    for _ in range(n):
        im = (rng.normal(90, 25, (size, size))).clip(0, 255).astype(np.uint8)
        im = cv2.GaussianBlur(im, (5, 5), 0)
        x, y = rng.integers(8, size - 24, 2)
        cv2.line(im, (int(x), int(y)), (int(x) + 14, int(y) + 10), 250, 2)
        imgs.append(im[..., None].astype(np.float32))
        boxes.append([[float(x) - 1, float(y) - 1, 16.0, 12.0]])
    return np.stack(imgs), boxes


@pytest.mark.slow
def test_a_drawn_mark_is_found_in_at_least_90_percent_of_new_images():
    rng = np.random.default_rng(0)
    size = 96
    x_tr, b_tr = _marked(rng, 96, size)
    x_va, b_va = _marked(rng, 16, size)
    x_te, b_te = _marked(rng, 40, size)
    loc, head = localiser.build(size, 1, weights="imagenet", width=32)
    sizes = [(size, size)] * len(x_tr)
    r = localiser.train(loc, head, x_tr, localiser.targets(b_tr, sizes, size), x_va,
                        localiser.targets(b_va, [(size, size)] * len(x_va), size), epochs=40, seed=0)
    assert r.train_images == 96 and r.epochs >= 1
    heats = localiser.heatmaps(loc, x_te, [(size, size)] * len(x_te))
    hits = [score(h, region_mask(size, size, boxes=b), tolerance=4)["pointing"] for h, b in zip(heats, b_te)]
    assert np.mean(hits) >= 0.90, f"found {np.mean(hits):.0%} of marks"
    x, y = localiser.peak(heats[0])
    assert 0 <= x < size and 0 <= y < size
