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
from fracturelib.explain.localisation import localisation_scores, region_mask, summarise_localisation
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


def methods_per_model(models, methods: list[str], skip: list[str], always: str = "design CNN") -> dict[str, list[str]]:
    """The methods each model is explained with: all of ``methods`` for ``always``, the others less ``skip``
    (notebook 04's ``transfer_skip``: Score-CAM costs 64 forward passes an image on a large backbone).

    Args:
        models: model names (e.g. the keys of notebook 04's ``binary_models``).
        methods: registered CAM names, in order.
        skip: names left out for every model but ``always``.
        always: the model that keeps every method.

    Returns:
        Model name -> its methods, in the order of ``methods`` (possibly empty).
    """
    return {name: [m for m in methods if name == always or m not in skip] for name in models}


def localisation_tables(models: dict, used: dict, rows: pd.DataFrame, masks: list[np.ndarray], target,
                        tolerance: int, n_boot: int, seed: int) -> tuple[dict, dict]:
    """Each model's heatmaps of each of its methods scored against the expert boxes.

    Args:
        models: name -> (model, card).
        used: name -> its methods (:func:`methods_per_model`).
        rows: the fractured test rows with boxes.
        masks: their expert masks (:func:`expert_masks`).
        target: what is explained (:mod:`fracturelib.explain.targets`).
        tolerance: pointing-game tolerance in pixels.
        n_boot, seed: the bootstrap of the summaries.

    Returns:
        (summary table per (model, method), per-image scores per (model, method)).
    """
    tables, per_image = {}, {}
    for name, (model, card) in models.items():
        for m in used[name]:
            h, _ = heatmaps(model, card, rows, m, target=target)
            per_image[name, m] = localisation_scores(h, masks, tolerance=tolerance, seed=seed)
            tables[name, m] = summarise_localisation(per_image[name, m], n_boot=n_boot, seed=seed)
    return tables, per_image
