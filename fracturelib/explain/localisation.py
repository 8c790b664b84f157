"""Does the heat fall on the fracture? Scores of heatmaps against expert boxes or polygons.

Per image (heatmap and mask in the image's own pixel coordinates):
- pointing game: the heatmap's maximum lies inside an expert region grown by ``tolerance`` px
  (15 px, as in Zhang et al.'s pointing game);
- energy in box: the share of the heatmap's total mass inside the regions;
- IoU: the heatmap thresholded at ``threshold`` x its maximum against the regions.
Baselines: smooth random heatmaps scored the same way, and the region's area share, which is the
expected energy (and, grown by the tolerance, the pointing hit rate) of an uninformative map.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def region_mask(width: int, height: int, boxes=(), polygons=()) -> np.ndarray:
    """Boolean mask of COCO boxes [x, y, w, h] and/or polygons [x0, y0, x1, y1, ...].

    Args:
        width, height: the image's size in pixels.
        boxes: COCO boxes in image pixels (clipped to the image).
        polygons: flat coordinate lists in image pixels (filled).

    Returns:
        bool array (height, width), True inside any box or polygon.
    """
    import cv2
    m = np.zeros((height, width), np.uint8)
    for x, y, w, h in boxes:
        x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
        x1, y1 = min(width, int(np.ceil(x + w))), min(height, int(np.ceil(y + h)))
        m[y0:y1, x0:x1] = 1
    for poly in polygons:
        pts = np.round(np.asarray(poly, np.float32).reshape(-1, 2)).astype(np.int32)
        cv2.fillPoly(m, [pts], 1)
    return m.astype(bool)


def _grow(mask: np.ndarray, px: int) -> np.ndarray:
    import cv2
    if px <= 0:
        return mask
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool)


def score(heat: np.ndarray, mask: np.ndarray, tolerance: int = 15, threshold: float = 0.5) -> dict:
    """Pointing game, energy in the regions and IoU of one heatmap against one region mask.

    Args:
        heat: heatmap (H, W) in the image's pixels (negative values clipped to 0).
        mask: bool region mask (H, W), e.g. from :func:`region_mask`.
        tolerance: pixels the mask is grown by for the pointing game.
        threshold: share of the heatmap's maximum above which a pixel counts as hot for IoU.

    Returns:
        Dict of floats: ``pointing`` (1.0 hit / 0.0 miss), ``energy`` (share of heat mass inside the
        mask) and ``iou``; energy and IoU are 0.0 for an all-zero heatmap.
    """
    heat = np.clip(heat.astype(np.float64), 0, None)
    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
    total = heat.sum()
    hot = heat >= threshold * heat.max() if heat.max() > 0 else np.zeros_like(mask)
    union = (hot | mask).sum()
    return {"pointing": float(_grow(mask, tolerance)[peak]),
            "energy": float((heat * mask).sum() / total) if total > 0 else 0.0,
            "iou": float((hot & mask).sum() / union) if union else 0.0}


def random_heatmap(shape, rng, cells: int = 8) -> np.ndarray:
    """A smooth random field normalised to [0, 1]: uniform noise on a ``cells`` x ``cells`` grid,
    upsampled bicubically (blobs about 1/8 of the image, like a coarse CAM; cheap at any size).

    Args:
        shape: ``(height, width)`` of the output.
        rng: a ``numpy.random.Generator``.
        cells: side of the noise grid.

    Returns:
        float32 array of ``shape`` in [0, 1].
    """
    import cv2
    h, w = shape
    f = cv2.resize(rng.random((cells, cells)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    f -= f.min()
    return f / f.max() if f.max() > 0 else f


def _at_most(heat, mask, tolerance, max_side):
    """Score large radiographs at <= max_side px (area-averaged heat, nearest-neighbour mask,
    tolerance scaled alike): the scores barely move and the random baselines get 10x cheaper."""
    import cv2
    h, w = mask.shape
    f = max_side / max(h, w)
    if f >= 1:
        return heat, mask, tolerance
    size = (max(1, round(w * f)), max(1, round(h * f)))
    small = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    if not small.any():
        small = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_AREA) > 0
    return (cv2.resize(heat.astype(np.float32), size, interpolation=cv2.INTER_AREA), small,
            max(1, round(tolerance * f)))


def localisation_scores(heats, masks, tolerance: int = 15, threshold: float = 0.5,
                        n_random: int = 10, seed: int = 0, max_side: int = 512) -> pd.DataFrame:
    """One row per image: the model's scores, the random-heatmap baseline, and chance levels.
    ``tolerance`` is in pixels of the image as given.

    Args:
        heats: heatmaps, one per image, in the image's own pixels.
        masks: bool region masks of the same shapes.
        tolerance, threshold: as for :func:`score`.
        n_random: random heatmaps averaged per image for the baseline.
        seed: seed of the random heatmaps.
        max_side: images larger than this are scored downscaled to it (tolerance scaled alike).

    Returns:
        DataFrame with ``pointing``, ``energy``, ``iou``, their ``random_*`` means, ``area_share``
        (mask share of the image) and ``pointing_chance`` (grown mask share).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for heat, mask in zip(heats, masks):
        heat, mask, tol = _at_most(heat, mask, tolerance, max_side)
        r = score(heat, mask, tol, threshold)
        rand = [score(random_heatmap(mask.shape, rng), mask, tol, threshold) for _ in range(n_random)]
        for k in ("pointing", "energy", "iou"):
            r[f"random_{k}"] = float(np.mean([x[k] for x in rand]))
        r["area_share"] = float(mask.mean())
        r["pointing_chance"] = float(_grow(mask, tol).mean())
        rows.append(r)
    return pd.DataFrame(rows)


def summarise_localisation(df: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean of each score with a 95% bootstrap CI over images, beside its baselines.

    Args:
        df: the table of :func:`localisation_scores`.
        n_boot, seed: number of resamples and random seed.

    Returns:
        DataFrame indexed by score (pointing game, energy in box, IoU) with ``model``, ``ci_low``,
        ``ci_high``, ``random heatmap``, ``random ci_low``, ``random ci_high`` and ``chance (area share)``
        (NaN for IoU).
    """
    from fracturelib.metrics.evaluate import mean_ci
    chance = {"pointing": "pointing_chance", "energy": "area_share", "iou": None}
    rows = []
    for k, label in (("pointing", "pointing game (hit rate)"), ("energy", "energy in box"),
                     ("iou", "IoU (heat >= 0.5 max)")):
        lo, hi = mean_ci(df[k].to_numpy(), n_boot, seed)
        rlo, rhi = mean_ci(df[f"random_{k}"].to_numpy(), n_boot, seed)
        rows.append({"score": label, "model": df[k].mean(), "ci_low": lo, "ci_high": hi,
                     "random heatmap": df[f"random_{k}"].mean(), "random ci_low": rlo, "random ci_high": rhi,
                     "chance (area share)": df[chance[k]].mean() if chance[k] else np.nan})
    return pd.DataFrame(rows).set_index("score")


def verdict(table: pd.DataFrame, n_images: int, tolerance: int, who: str = "the model",
            shortcut_table: pd.DataFrame | None = None) -> tuple[str, dict]:
    """One paragraph a reader can quote, and the key figures for the report index.

    Args:
        table: :func:`summarise_localisation` of one model and method.
        n_images: fractured test images scored.
        tolerance: pointing-game tolerance in pixels.
        who: the model's name in the sentence.
        shortcut_table: mean shortcut scores per true class of the same model's heatmaps
            (``shortcuts.shortcut_scores``); adds a sentence on markers and text.

    Returns:
        ``(text, figures)``: the paragraph, and a dict of formatted strings ``pointing_game``,
        ``mean_iou``, ``energy_in_box`` plus ``n_fractured_test`` (int).
    """
    pg, en, iou = (table.loc[r] for r in table.index)
    text = (f"On {n_images} held-out fractured radiographs, {who}'s heatmap peak falls on an expert box "
            f"(±{tolerance} px) in {pg['model']:.0%} of images (95% CI {pg['ci_low']:.0%}-{pg['ci_high']:.0%}); "
            f"a random smooth heatmap does so in {pg['random heatmap']:.0%} and the boxes' grown area is "
            f"{pg['chance (area share)']:.0%} of the image. Energy in the boxes: {en['model']:.3f} vs "
            f"{en['chance (area share)']:.3f} by chance; IoU {iou['model']:.3f} vs {iou['random heatmap']:.3f} "
            "for random maps. ")
    if shortcut_table is not None:
        ratio = shortcut_table["text/marker energy"] / shortcut_table["text/marker area"].clip(lower=1e-6)
        text += ("Heat on markers/text is " + ", ".join(f"{r:.1f}x its area share for {c}" for c, r in ratio.items())
                 + "; values well above 1 mean the model partly looks at labels, not bone.")
    figures = {"pointing_game": f"{pg['model']:.3f} (95% CI {pg['ci_low']:.3f}-{pg['ci_high']:.3f}) vs random "
                                f"{pg['random heatmap']:.3f}, chance {pg['chance (area share)']:.3f}",
               "mean_iou": f"{iou['model']:.3f} (95% CI {iou['ci_low']:.3f}-{iou['ci_high']:.3f}) vs random "
                           f"{iou['random heatmap']:.3f}",
               "energy_in_box": f"{en['model']:.3f} vs area share {en['chance (area share)']:.3f}",
               "n_fractured_test": n_images}
    return text, figures


def by_region(per_image: dict, rows: pd.DataFrame, regions=None, score: str = "pointing") -> pd.DataFrame:
    """Mean ``score`` per body region (FracAtlas' dataset.csv flags) for each (model, method) of
    ``per_image`` (scores aligned with ``rows``), with the number of images per region.

    Args:
        per_image: (model, method) or name -> per-image table of :func:`localisation_scores`.
        rows: the manifest rows of those images, with FracAtlas region flag columns.
        regions: region columns to use; default hand, leg, hip, shoulder (those present in ``rows``).
        score: the per-image column to average.

    Returns:
        DataFrame with a (model, method) MultiIndex, one column per region (NaN where no image), and a
        last row ``("images", "")`` of image counts.
    """
    from fracturelib.data.fracatlas import REGIONS
    present = [r for r in (regions or REGIONS[:4]) if r in rows]
    flags = {r: rows[r].fillna(0).to_numpy(float) == 1 for r in present}
    table = pd.DataFrame(
        [[float(df[score].to_numpy()[flags[r]].mean()) if flags[r].any() else np.nan for r in present]
         for df in per_image.values()],
        index=pd.MultiIndex.from_tuples([k if isinstance(k, tuple) else (k, "") for k in per_image]),
        columns=present)
    counts = pd.DataFrame([[int(flags[r].sum()) for r in present]], columns=present,
                          index=pd.MultiIndex.from_tuples([("images", "")]))
    table = pd.concat([table, counts])
    return table
