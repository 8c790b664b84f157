"""Training the detector hands its validation detections to the scoring, which then does not run the
backbone on the validation images again: the same boxes either way, and a mismatch is refused."""
import cv2
import numpy as np
import pytest

from fracturelib.models import centernet, detector_scoring


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """Twelve 96x64 radiograph stand-ins: a bright square (the "fracture", with its box) on half of them."""
    from fracturelib.data import build_manifest
    root = tmp_path_factory.mktemp("det")
    rng = np.random.default_rng(0)
    boxes = {}
    for i in range(12):
        img = (rng.random((64, 96)) * 40).astype(np.uint8)
        if i % 2 == 0:
            x, y = 10 + 6 * i, 12 + 2 * i
            img[y:y + 16, x:x + 16] = 220
            boxes[f"img{i}.png"] = {"boxes": [[x, y, 16, 16]]}
        cv2.imwrite(str(root / f"img{i:d}.png"), img)
    rows = build_manifest(root).sort_values("relpath", key=lambda r: r.str.extract(r"(\d+)")[0].astype(int))
    number = rows["relpath"].str.extract(r"(\d+)")[0].astype(int)
    rows = rows.assign(label=np.where(number % 2 == 0, "fractured", "non-fractured"),
                       split=np.select([number % 4 == 2, number % 4 == 3], ["val", "test"], "train"))
    return rows.reset_index(drop=True), boxes


@pytest.mark.slow
def test_scoring_reuses_training_s_validation_detections_and_they_match_the_model(split, monkeypatch):
    import keras

    from fracturelib.models import box_decode
    rows, boxes = split
    keras.utils.set_random_seed(1)                      # the backbone's random weights too, not only the head's
    det, res = centernet.fit_on_split(rows, boxes, image_size=64, epochs=1, weights="none", seed=1)
    val = rows[rows["split"] == "val"]
    assert sorted(res.val_detections) == sorted(val["relpath"])
    calls = []
    real = box_decode.detect
    monkeypatch.setattr(box_decode, "detect",
                        lambda d, images, *a, **k: calls.append(len(images)) or real(d, images, *a, **k))
    reused = detector_scoring.score_detector(det, rows, boxes, n_boot=0, val_detections=res.val_detections)
    assert calls == [int((rows["split"] == "test").sum())]          # the detector ran on the test images only
    assert all(a is res.val_detections[p] for a, p in zip(reused.detections["val"], val["relpath"]))
    again = detector_scoring.score_detector(det, rows, boxes, n_boot=0)
    # cached float16 features vs the float32 model: each image's best score (the map's maximum, which a
    # flip between near-equal peaks does not move) within 1e-2; float16 rounding moves scores by ~1e-3
    np.testing.assert_allclose(box_decode.image_scores(reused.detections["val"]),
                               box_decode.image_scores(again.detections["val"]), atol=1e-2)
    with pytest.raises(ValueError, match="no validation detections for"):
        detector_scoring.score_detector(det, rows, boxes, n_boot=0,
                                        val_detections=dict(list(res.val_detections.items())[1:]))
