"""Library helpers that keep notebook cells short: what they return is what the cells printed before."""
from fracturelib.explain.batch import methods_per_model
from fracturelib.models.recipe import describe


def test_methods_per_model_skips_for_every_model_but_the_design_cnn():
    used = methods_per_model({"design CNN": 0, "transfer": 1}, ["gradcam", "scorecam", "hirescam"], ["scorecam"])
    assert used == {"design CNN": ["gradcam", "scorecam", "hirescam"], "transfer": ["gradcam", "hirescam"]}
    assert methods_per_model(["transfer"], ["scorecam"], ["scorecam"]) == {"transfer": []}
    assert methods_per_model(["design CNN", "transfer"], ["gradcam"], []) == {"design CNN": ["gradcam"],
                                                                              "transfer": ["gradcam"]}


def test_describe_says_each_phase_and_when_features_came_from_the_cache():
    res = {"monitor": "val_accuracy", "features_cached": False, "features_img_per_s": 109.4, "head_seconds": 4.2,
           "phase1_best": 0.3733}
    assert describe(res) == "phase 1: features at 109 img/s, head 4 s; best val acc 0.373"
    res.update(features_cached=True, features_img_per_s=float("nan"), phase2_seconds=61.0, phase2_img_per_s=5.25,
               phase2_best=0.36, phase2_kept=False)
    assert describe(res).splitlines() == [
        "phase 1: frozen features reused from earlier in this session, head 4 s; best val acc 0.373",
        "phase 2: 61 s at 5.2 training img/s; best val acc 0.360 -> undone (no gain on validation)"]
    assert "best val AUC 0.373" in describe({**res, "monitor": "val_auc"})
