"""Notebook 04's verdict and the upload widget's model menu, now library functions."""
import json

import pandas as pd

from fracturelib.app import widget
from fracturelib.explain import localisation


def _scores(hit: float, n: int = 40) -> pd.DataFrame:
    k = int(hit * n)
    return pd.DataFrame({"pointing": [1.0] * k + [0.0] * (n - k), "energy": 0.2, "iou": 0.1,
                         "random_pointing": 0.05, "random_energy": 0.03, "random_iou": 0.01,
                         "pointing_chance": 0.04, "area_share": 0.03})


def test_verdict_quotes_the_figures_and_the_shortcut_ratio_only_when_given():
    table = localisation.summarise_localisation(_scores(0.5), n_boot=50)
    text, figures = localisation.verdict(table, 40, 15, "the CNN")
    assert "the CNN's heatmap peak falls on an expert box (±15 px) in 50% of images" in text
    assert "markers" not in text and figures["pointing_game"].startswith("0.500 (95% CI")
    short = pd.DataFrame({"text/marker energy": [0.04], "text/marker area": [0.01]}, index=["fractured"])
    text, _ = localisation.verdict(table, 40, 15, "the CNN", short)
    assert "4.0x its area share for fractured" in text


def test_menu_lists_existing_models_with_the_preferred_binary_model_first(tmp_path):
    paths = []
    for name, pref in (("binary_cnn", False), ("binary_transfer", True)):
        (tmp_path / f"{name}.keras").write_bytes(b"x")
        card = {"classes": ["a", "b"], "image_size": 8, "channels": 1, "input_shape": [8, 8, 1],
                "model_sha256": "0", "preferred": pref}
        (tmp_path / f"{name}.json").write_text(json.dumps(card))
        paths.append(str(tmp_path / f"{name}.keras"))
    menu = widget.choices(paths + [str(tmp_path / "missing.keras")], str(tmp_path / "types.keras"))
    assert list(menu.values()) == [paths[1], paths[0]]


def test_pointing_game_by_body_region():
    rows = pd.DataFrame({"hand": [1, 0, 1, 0], "leg": [0, 1, 0, 0], "hip": [0, 0, 0, 1], "shoulder": 0})
    per_image = {("cnn", "gradcam"): pd.DataFrame({"pointing": [1.0, 0.0, 0.0, 1.0]}),
                 ("localiser", "heatmap"): pd.DataFrame({"pointing": [1.0, 1.0, 1.0, 1.0]})}
    t = localisation.by_region(per_image, rows)
    assert t.loc[("cnn", "gradcam"), "hand"] == 0.5 and t.loc[("cnn", "gradcam"), "leg"] == 0.0
    assert t.loc[("localiser", "heatmap")].iloc[:3].tolist() == [1.0, 1.0, 1.0]
    assert t.loc[("images", ""), ["hand", "leg", "hip", "shoulder"]].tolist() == [2, 1, 1, 0]
