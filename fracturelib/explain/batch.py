"""Grad-CAM over manifest rows, in each image's own coordinates (what notebook 04 and the
benchmarks call)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from fracturelib.data.geometry import heatmap_to_image
from fracturelib.data.imageio import read_image
from fracturelib.data.pipeline import load_images
from fracturelib.explain.gradcam import gradcam
from fracturelib.explain.localisation import region_mask
from fracturelib.progress import bar


def heatmaps(model, card: dict, rows: pd.DataFrame, method: str = "gradcam",
             class_index: int | None = None, batch: int = 32) -> tuple[list[np.ndarray], np.ndarray]:
    """Heatmaps resized to each row's image (width x height), and the model outputs, ``batch``
    images at a time. ``method``: a gradient CAM (``gradcam.CAM_METHODS``) or ``scorecam``."""
    size, channels = int(card["image_size"]), int(card["channels"])
    heats, outs = [], []
    for s in bar(range(0, len(rows), batch), f"{method} over {len(rows)} images"):
        part = rows.iloc[s:s + batch]
        x = load_images(part, size, channels)
        if method == "scorecam":
            from fracturelib.explain.scorecam import scorecam
            cams, out = scorecam(model, x, class_index=class_index)
        else:
            cams, out = gradcam(model, x, class_index=class_index, method=method)
        heats += [heatmap_to_image(c, int(w), int(h), size) for c, w, h in zip(cams, part["width"], part["height"])]
        outs.append(np.asarray(out))
    return heats, (np.concatenate(outs) if outs else np.zeros((0, 1)))


def expert_masks(rows: pd.DataFrame, boxes: dict, use: str = "boxes") -> list[np.ndarray]:
    """Masks of the expert annotations of each row's file (``use``: boxes or polygons)."""
    out = []
    for rel, w, h in zip(rows["relpath"], rows["width"], rows["height"]):
        rec = boxes.get(rel.rsplit("/", 1)[-1], {"boxes": [], "polygons": []})
        if use == "polygons" and rec["polygons"]:
            out.append(region_mask(int(w), int(h), polygons=rec["polygons"]))
        else:
            out.append(region_mask(int(w), int(h), boxes=rec["boxes"]))
    return out


def gray_images(rows: pd.DataFrame) -> list[np.ndarray]:
    return [read_image(p, channels=1)[..., 0] for p in rows["path"]]


def cams_at_input(model, images: np.ndarray, method: str = "gradcam", class_index: int | None = None) -> np.ndarray:
    """Heatmaps of ``method`` (a gradient CAM or ``scorecam``) at the model's input resolution
    (N, S, S), as the faithfulness curves need them."""
    from fracturelib.explain.faithfulness import to_input
    if method == "scorecam":
        from fracturelib.explain.scorecam import scorecam
        cams, _ = scorecam(model, images, class_index=class_index)
    else:
        cams, _ = gradcam(model, images, class_index=class_index, method=method)
    return to_input(cams, images.shape[1])
