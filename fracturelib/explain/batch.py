"""CAMs over manifest rows, in each image's own coordinates (what notebook 04 and the
benchmarks call). Every method comes from the registry :mod:`fracturelib.explain.cams`."""
from __future__ import annotations

import numpy as np
import pandas as pd

from fracturelib.data import fracatlas
from fracturelib.data.geometry import heatmap_to_image
from fracturelib.data.imageio import read_image
from fracturelib.data.pipeline import load_images
from fracturelib.explain.cams import compute
from fracturelib.explain.localisation import region_mask
from fracturelib.explain.targets import Target
from fracturelib.progress import bar


def heatmaps(model, card, rows: pd.DataFrame, method: str = "gradcam",
             target: Target | int | None = None, batch: int = 32) -> tuple[list[np.ndarray], np.ndarray]:
    """Heatmaps resized to each row's image, and the model outputs, ``batch`` images at a time.

    Args:
        model: the model explained.
        card: its model card (image_size, channels).
        rows: manifest rows (path, width, height).
        method: a registered CAM (:func:`fracturelib.explain.cams.names`).
        target: what is explained (:mod:`fracturelib.explain.targets`; None: the predicted class at the
            card's decision threshold, as ``predict`` explains it).
        batch: images per step.

    Returns:
        (one heatmap (height x width) per row, the model outputs (N, units)).
    """
    size, channels = card.image_size, card.channels
    if target is None:
        from fracturelib.explain import targets
        target = targets.predicted(card.decision_threshold)
    heats, outs = [], []
    for s in bar(range(0, len(rows), batch), f"{method} over {len(rows)} images"):
        part = rows.iloc[s:s + batch]
        x = load_images(part, size, channels)
        cams, out = compute(method, model, x, target=target)
        heats += [heatmap_to_image(c, int(w), int(h), size) for c, w, h in zip(cams, part["width"], part["height"])]
        outs.append(np.asarray(out))
    return heats, (np.concatenate(outs) if outs else np.zeros((0, 1)))


def expert_masks(rows: pd.DataFrame, boxes: dict, use: str = "boxes") -> list[np.ndarray]:
    """Masks of the expert annotations of each row's file (``use``: boxes or polygons).

    Args:
        rows: manifest rows (relpath, width, height).
        boxes: file name -> ``{"boxes": [...], "polygons": [...]}`` (:func:`fracturelib.data.fracatlas.load_boxes`);
            a file not in it gets an empty mask.
        use: ``"boxes"`` or ``"polygons"`` (a file without polygons falls back to its boxes).

    Returns:
        One bool mask (height x width) per row, in the image's own coordinates.
    """
    out = []
    for rec, w, h in zip(fracatlas.records_for(rows["relpath"], boxes), rows["width"], rows["height"]):
        if use == "polygons" and rec["polygons"]:
            out.append(region_mask(int(w), int(h), polygons=rec["polygons"]))
        else:
            out.append(region_mask(int(w), int(h), boxes=rec["boxes"]))
    return out


def gray_images(rows: pd.DataFrame) -> list[np.ndarray]:
    """Each row's image in grayscale, in its own coordinates (EXIF orientation applied), for overlays.

    Args:
        rows: manifest rows (path).

    Returns:
        One uint8 array (height x width) per row.

    Raises:
        ImageError: a file cannot be decoded (:func:`fracturelib.data.imageio.read_image`).
    """
    return [read_image(p, channels=1, modalities=None)[..., 0] for p in rows["path"]]


def cams_at_input(model, images: np.ndarray, method: str = "gradcam",
                  target: Target | int | None = None) -> np.ndarray:
    """Heatmaps at the model's input resolution, as the faithfulness curves need them.

    Args:
        model: the model explained.
        images: N x S x S x C, raw pixels.
        method: a registered CAM (:func:`fracturelib.explain.cams.names`).
        target: what is explained (:mod:`fracturelib.explain.targets`; None: the predicted class).

    Returns:
        (N, S, S) heatmaps.
    """
    from fracturelib.explain.faithfulness import to_input
    cams, _ = compute(method, model, images, target=target)
    return to_input(cams, images.shape[1])
