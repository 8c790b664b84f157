"""Shortcut check: how much of a heatmap lies on image borders and on burnt-in text or markers.

Side markers ("L", "R"), clinic logos and labels are bright, high-contrast, compact blobs on a
dark background. We find them with OpenCV: a white top-hat (bright detail smaller than the
kernel) thresholded with Otsu, then connected components kept when small, compact and much
brighter than their surroundings. Borders are the outer ``border`` share of each side.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def marker_mask(gray: np.ndarray, min_area: float = 2e-4, max_area: float = 0.03) -> np.ndarray:
    """Boolean mask of text/marker-like components in an 8-bit grayscale image.

    Args:
        gray: grayscale image (H, W) or (H, W, C) (first channel used), values 0-255.
        min_area, max_area: component size limits as shares of the image area.

    Returns:
        bool array (H, W), True on the bounding boxes of kept components; all False when the image
        has no bright detail.
    """
    import cv2
    g = gray if gray.ndim == 2 else gray[..., 0]
    g = g.astype(np.uint8)
    h, w = g.shape
    k = max(9, int(0.06 * max(h, w)) | 1)
    tophat = cv2.morphologyEx(g, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    if tophat.max() < 40:
        return np.zeros_like(g, dtype=bool)
    _, bw = cv2.threshold(tophat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    bw &= ((g > 170) * 255).astype(np.uint8)      # markers are burnt in near white
    bw = cv2.morphologyEx(bw, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(bw, connectivity=8)
    out = np.zeros((h, w), bool)
    area_img = h * w
    for i in range(1, n):
        x, y, bw_, bh, area = stats[i]
        if not (min_area * area_img <= area <= max_area * area_img):
            continue
        if max(bw_, bh) > 0.25 * max(h, w):      # long structures are bone edges, not labels
            continue
        out[y:y + bh, x:x + bw_] = True
    return out


def border_mask(height: int, width: int, border: float = 0.08) -> np.ndarray:
    """Boolean mask of the image's outer frame, where markers and collimation edges sit.

    Args:
        height, width: the image's size in pixels.
        border: share of each side's length in the frame (at least one pixel).

    Returns:
        bool array (height, width), True in the frame.
    """
    m = np.zeros((height, width), bool)
    bh, bw = max(1, int(border * height)), max(1, int(border * width))
    m[:bh], m[-bh:], m[:, :bw], m[:, -bw:] = True, True, True, True
    return m


def shortcut_masks(gray: np.ndarray, border: float = 0.08) -> dict[str, np.ndarray]:
    """The regions a shortcut-taking model would look at: the border frame and text/markers.

    Args:
        gray: grayscale image (H, W) or (H, W, C), values 0-255.
        border: share of each side in the border frame.

    Returns:
        Dict ``{"border": mask, "text/marker": mask}`` of bool arrays (H, W).
    """
    return {"border": border_mask(*gray.shape[:2], border), "text/marker": marker_mask(gray)}


def shortcut_scores(heats, grays, labels, border: float = 0.08) -> pd.DataFrame:
    """Per image: heat energy share on borders and on text/markers, with those regions' area
    shares (what a map that ignores them would put there).

    Args:
        heats: heatmaps, one per image, the same size as its image.
        grays: the grayscale images.
        labels: one label per image, copied into the table.
        border: share of each side in the border frame.

    Returns:
        DataFrame with ``label``, ``border energy``, ``border area``, ``text/marker energy`` and
        ``text/marker area`` (shares in [0, 1]).
    """
    rows = []
    for heat, gray, label in zip(heats, grays, labels):
        heat = np.clip(heat, 0, None)
        total = heat.sum() or 1.0
        r = {"label": label}
        for name, m in shortcut_masks(gray, border).items():
            r[f"{name} energy"] = float((heat * m).sum() / total)
            r[f"{name} area"] = float(m.mean())
        rows.append(r)
    return pd.DataFrame(rows)
