"""'Is this a radiograph?': photos, noise and blank images are flagged, held-out radiographs are not."""
import numpy as np
import pytest

from fracturelib import config
from fracturelib.data import build_manifest, usable
from fracturelib.data.pipeline import load_images, pad_resize
from fracturelib.data.splits import assign_splits
from fracturelib.models import ood


@pytest.mark.slow
def test_detector_flags_non_radiographs_and_keeps_held_out_radiographs(tmp_path):
    from sklearn.datasets import load_sample_image
    d = assign_splits(usable(build_manifest(config.DEFAULT_FRACATLAS), config.BINARY_CLASSES), 0.15, 0.2, seed=0)
    fm = ood.feature_model(1)
    feats = {s: fm.predict(load_images(d[d.split == s], ood.SIZE, 1), verbose=0) for s in ("train", "val", "test")}
    det = ood.fit(feats["train"], feats["val"])
    det = ood.Detector.load(det.save(tmp_path / "ood.npz"))
    test_images = load_images(d[d.split == "test"], ood.SIZE, 1)
    assert det.in_distribution(feats["test"], test_images).mean() >= 0.95
    rng = np.random.default_rng(0)
    gray = lambda a: pad_resize(a, ood.SIZE).numpy().mean(axis=-1, keepdims=True)  # noqa: E731
    odd = np.stack([gray(load_sample_image("china.jpg")), gray(load_sample_image("flower.jpg")),
                    rng.uniform(0, 255, (ood.SIZE, ood.SIZE, 1)), np.zeros((ood.SIZE, ood.SIZE, 1)),
                    np.full((ood.SIZE, ood.SIZE, 1), 255.0)]).astype("float32")
    flags = ~det.in_distribution(fm.predict(odd, verbose=0), odd)
    assert flags.all(), f"not flagged: {np.flatnonzero(~flags)} (china, flower, noise, black, white)"
