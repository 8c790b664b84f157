"""Detection scores with answers computed by hand: COCO mAP (pycocotools), FROC, fusion."""
import numpy as np
import pytest

from fracturelib.metrics import detection

GT = [[[0, 0, 10, 10]], [[0, 0, 10, 10]]]


def test_map_of_a_perfect_detector_is_one():
    dets = [np.array([[0, 0, 10, 10, 0.9]]), np.array([[0, 0, 10, 10, 0.8]])]
    assert detection.coco_map(GT, dets) == pytest.approx({"map50": 1.0, "map50_95": 1.0})


def test_map_of_a_shifted_detector_by_hand():
    # image 2's box moved 5 px: IoU 50/150 = 1/3, a false positive at every IoU threshold; image 1's box exact.
    # Ranked: TP (recall 0.5, precision 1), FP: 101-point interpolated AP = 51/101 at every threshold.
    dets = [np.array([[0, 0, 10, 10, 0.9]]), np.array([[5, 0, 15, 10, 0.8]])]
    assert detection.coco_map(GT, dets) == pytest.approx({"map50": 51 / 101, "map50_95": 51 / 101})
    # moved 1 px: IoU 90/110 = 0.818, a hit at IoU 0.50..0.80 (7 thresholds, AP 1), missed at 0.85..0.95 (AP 51/101)
    dets[1] = np.array([[1, 0, 11, 10, 0.8]])
    assert detection.coco_map(GT, dets) == pytest.approx({"map50": 1.0, "map50_95": (7 + 3 * 51 / 101) / 10})


def test_map_without_detections_is_zero():
    assert detection.coco_map(GT, [np.zeros((0, 5))] * 2) == {"map50": 0.0, "map50_95": 0.0}


def test_froc_of_a_hand_made_case():
    gt = [[[0, 0, 10, 10]], [[20, 20, 10, 10]], []]           # 2 fractures on 3 images (one without)
    dets = [np.array([[1, 1, 9, 9, 0.9], [2, 2, 8, 8, 0.35], [50, 50, 60, 60, 0.4]]),   # hit, duplicate, FP
            np.array([[21, 21, 29, 29, 0.3]]),                                          # hit
            np.array([[0, 0, 5, 5, 0.8], [0, 0, 5, 5, 0.2]])]                           # 2 FPs
    # ranked: .9 hit (sens .5, 0 FP), .8 FP (1/3 FP/img), .4 FP (2/3), .35 duplicate (ignored),
    # .3 hit (sens 1), .2 FP (1)
    f = detection.froc(gt, dets)
    assert [f[f"sens@{r:g}"] for r in detection.FP_RATES] == [0.5, 0.5, 0.5, 1.0, 1.0, 1.0]
    assert f["cpm"] == pytest.approx(4.5 / 6)
    curve = detection.froc_curve(gt, dets)
    assert curve["fp_per_image"].tolist() == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3, 1])     # the duplicate is no event
    assert curve["sensitivity"].tolist() == [0.5, 0.5, 0.5, 1.0, 1.0]


def test_froc_hit_rules_differ_on_a_small_box_inside():
    gt = [[[0, 0, 100, 100]]]
    dets = [np.array([[45, 45, 55, 55, 0.9]])]                # centre inside, IoU 0.01
    assert detection.froc(gt, dets)["sens@0.125"] == 1.0
    assert detection.froc(gt, dets, hit="iou")["sens@0.125"] == 0.0
    with pytest.raises(ValueError):
        detection.froc_curve(gt, dets, hit="nearby")


def test_detection_report_has_cis_around_the_value():
    rng = np.random.default_rng(0)
    gt = [[[10, 10, 20, 20]] if i % 2 else [] for i in range(20)]
    dets = [np.array([[10 + rng.normal(0, 3), 10, 30, 30, rng.uniform()]]) for _ in range(20)]
    t = detection.detection_report(gt, dets, n_boot=30, seed=1)
    assert {"map50", "map50_95", "sens@1", "cpm"} <= set(t.index)
    assert (t["ci_low"] <= t["value"] + 1e-9).all() and (t["value"] <= t["ci_high"] + 1e-9).all()
    assert t.loc["map50", "n"] == 10 and t.loc["sens@1", "n"] == 20


def test_fusion_and_image_level_table():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(60), np.ones(60)].astype(int)
    a, b = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, 120), 0, 1), rng.uniform(size=120)
    fuse = detection.fit_fusion(y, {"a": a, "b": b})
    fused = fuse({"a": a, "b": b})
    assert fused.shape == (120,) and abs(fuse.coef["a"]) > abs(fuse.coef["b"])
    t = detection.image_level_table(y, {"b": b, "a": a, "fused": fused}, "b")
    assert t.loc["a", "auc"] > 0.8 and np.isnan(t.loc["b", "p_vs_ref"]) and t.loc["a", "p_vs_ref"] < 0.01


def test_fast_map_equals_pycocotools_on_random_detectors():
    rng = np.random.default_rng(3)
    for trial in range(12):
        gt = [rng.uniform([0, 0, 5, 5], [80, 80, 40, 40], (k, 4)).tolist() for k in rng.integers(0, 3, 12)]
        dets = []
        for g in gt:
            near = [[x + rng.normal(0, 4), y + rng.normal(0, 4), x + w + rng.normal(0, 4), y + h + rng.normal(0, 4)]
                    for x, y, w, h in g]
            far = rng.uniform(0, 100, (int(rng.integers(0, 4)), 2))
            boxes = np.array(near + [[a, b, a + 20, b + 20] for a, b in far]).reshape(-1, 4)
            boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])        # as decode's boxes: never negative sizes
            dets.append(np.column_stack([boxes, rng.uniform(size=len(boxes)).round(1)]))   # ties included
        pos = [i for i, g in enumerate(gt) if g]
        want = detection.coco_map([gt[i] for i in pos], [dets[i] for i in pos])
        assert detection.fast_map([gt[i] for i in pos], [dets[i] for i in pos]) == pytest.approx(want, abs=1e-9), trial
