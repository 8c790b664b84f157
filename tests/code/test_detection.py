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


def test_score_detections_threshold_from_validation_and_fusion_judged_there():
    from fracturelib.models.detector_scoring import score_detections
    rng = np.random.default_rng(0)
    n = 40
    expert = {s: [[[10, 10, 20, 20]] if i % 2 else [] for i in range(n)] for s in ("val", "test")}
    labels = {s: np.array([i % 2 for i in range(n)]) for s in ("val", "test")}
    # fractured images: a box on the fracture at 0.6-0.9; every image: a false positive elsewhere at 0.1-0.5
    dets = {s: [np.array(([[12, 12, 28, 28, 0.6 + 0.3 * rng.random()]] if i % 2 else [])
                         + [[100, 100, 120, 120, 0.1 + 0.4 * rng.random()]]) for i in range(n)] for s in expert}
    clf = {s: np.clip(labels[s] * 0.1 + 0.4 + 0.3 * rng.random(n), 0, 1) for s in expert}   # overlapping: AUC < 1
    r = score_detections(dets, expert, labels, clf, n_boot=50, seed=1, box_fp_rate=0.0)
    # no false positive allowed on validation: the threshold is the lowest box above every false positive
    fp_max = max(d[-1, 4] for d in dets["val"])
    assert fp_max < r.box_threshold <= min(d[0, 4] for d, y in zip(dets["val"], labels["val"]) if y)
    assert r.table.loc["map50", "value"] == pytest.approx(1.0)           # every box ranks above the FPs
    assert r.table.loc["sens@0.125", "value"] == pytest.approx(1.0)
    assert set(r.outcomes) == {"hit", "true negative"}
    assert r.image_level.loc["best box", "auc"] == pytest.approx(1.0)   # the best box separates perfectly
    # the best box separates perfectly, the classifier does not: the fusion wins on validation and is kept
    assert r.image_level_val.loc["classifier", "auc"] < 1 and r.fusion_preferred
    from fracturelib.metrics.detection import fused_probability
    box_val = np.array([d[:, 4].max() for d in dets["val"]])
    fused_val = fused_probability(r.fusion["weights"], r.fusion["intercept"], {"classifier": clf["val"],
                                                                               "best box": box_val})
    assert r.image_level_val.loc["fused", "auc"] == pytest.approx(1.0)
    assert (fused_val[labels["val"] == 1] >= r.fusion["threshold"]).mean() >= r.fusion["target_sensitivity"]
    assert r.key_figures()["detector_map50"] == pytest.approx(1.0)
    r0 = score_detections(dets, expert, labels, None, n_boot=0, box_fp_rate=0.5)
    assert r0.box_threshold < r.box_threshold                            # half a FP per image: a lower bar
    assert r0.image_level.empty and r0.fusion is None and r0.card_metrics()["map50"]["ci_low"] is None   # no CI: None
    assert r.operating_point == {"box_fp_rate": 0.0, "reachable": True, "val_sensitivity": 1.0,
                                 "val_fp_per_image": 0.0}
    pos, gt, shown = r.examples("hit", k=3)
    assert pos == [1, 3, 5] and gt == [expert["test"][i] for i in pos] and all(len(b) == 1 for b in shown)
    # boxes that score higher on the images without a fracture: a fit may weigh them negatively and gain
    # validation AUC, but such a fusion is never kept (on full FracAtlas a 0.879 vs 0.879 "win" came so)
    flipped = {s: [np.array([[100, 100, 120, 120, 0.9 - 0.3 * y - 0.2 * rng.random()]]) for y in labels[s]]
               for s in dets}
    rf = score_detections(flipped, expert, labels, clf, n_boot=0, box_fp_rate=0.5)
    assert rf.fusion_coef["best box"] < 0 and rf.image_level_val.loc["fused", "auc"] > rf.image_level_val.loc[
        "classifier", "auc"]
    assert not rf.fusion_preferred and rf.fusion is None


def test_fractured_images_without_boxes_are_left_out_of_detection_scores():
    from fracturelib.models.detector_scoring import score_detections
    expert = {s: [[[10, 10, 20, 20]], [], []] for s in ("val", "test")}
    labels = {s: np.array([1, 1, 0]) for s in expert}                  # image 1: fractured, no expert box
    dets = {s: [np.array([[12, 12, 28, 28, 0.9]]), np.array([[0, 0, 5, 5, 0.8]]), np.zeros((0, 5))] for s in expert}
    r = score_detections(dets, expert, labels, None, n_boot=0, box_fp_rate=0.0)
    assert r.rows["test"] == [0, 2] and r.outcomes == ["hit", "true negative"]
    assert r.curves["test"]["fp_per_image"].max() == 0                  # its box is no false positive
    # with the image counted as non-fractured, its box would be a false positive above the hit's threshold
    r2 = score_detections(dets, expert, {s: np.array([1, 0, 0]) for s in expert}, None, n_boot=0, box_fp_rate=0.0)
    assert r2.curves["test"]["fp_per_image"].max() == pytest.approx(1 / 3)
