"""CenterNet's three heads -> boxes in an image's own pixels, in NumPy and SciPy (no TensorFlow): the
LiteRT path of ``predict`` decodes with the same code as training and notebook 04."""
from __future__ import annotations

import numpy as np

STRIDE = 8


def decode(heat: np.ndarray, size: np.ndarray, offset: np.ndarray, k: int = 100, threshold: float = 0.0,
           image_wh: tuple[int, int] | None = None, input_size: int | None = None,
           stride: float = STRIDE) -> np.ndarray:
    """Boxes of one image from its heads: the 3x3 max-pool peaks of the heatmap (no NMS), best first.

    Args:
        heat: heatmap (g, g) or (g, g, 1), values in [0, 1].
        size: (g, g, 2) box width and height in cells.
        offset: (g, g, 2) the centre's x and y offset within its cell.
        k: at most this many boxes (the top-k peaks).
        threshold: keep peaks with a score at least this (scores are the heatmap clipped to [0, 1]).
        image_wh: the original image's ``(width, height)``: boxes in its pixels (the letterbox undone
            per axis, clipped to the image; a box centred on the padding is no box); None: boxes in the
            model input's pixels.
        input_size: the model's input side S (default ``g * stride``).
        stride: input pixels per heatmap cell.

    Returns:
        float array (n, 5): ``x0, y0, x1, y1, score`` per box, by descending score; boxes with a non-finite
        head value and (with ``image_wh``) those centred off the image are dropped before the top ``k``.
    """
    heat = np.nan_to_num(np.asarray(heat, np.float32).reshape(np.shape(heat)[:2]), nan=0.0)
    heat = np.clip(heat, 0.0, 1.0)                # a score is a probability, whatever a broken head says
    ys, xs = np.nonzero(_peaks(heat) & (heat >= threshold))
    order = np.argsort(-heat[ys, xs], kind="stable")
    ys, xs = ys[order], xs[order]
    cx, cy = (xs + offset[ys, xs, 0]) * stride, (ys + offset[ys, xs, 1]) * stride
    w, h = size[ys, xs, 0] * stride, size[ys, xs, 1] * stride
    ok = np.isfinite(cx) & np.isfinite(cy) & np.isfinite(w) & np.isfinite(h)   # a NaN or infinite head: no box
    w, h = np.maximum(w, 0), np.maximum(h, 0)
    out = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, heat[ys, xs]], 1).astype(np.float64)[ok]
    cx, cy = cx[ok], cy[ok]
    if image_wh is not None:
        from fracturelib.data.geometry import letterbox
        iw, ih = int(image_wh[0]), int(image_wh[1])
        left, top, rw, rh = letterbox(iw, ih, input_size or heat.shape[0] * stride)
        cx, cy = (cx - left) * iw / rw, (cy - top) * ih / rh
        out[:, [0, 2]] = np.clip((out[:, [0, 2]] - left) * iw / rw, 0, iw)
        out[:, [1, 3]] = np.clip((out[:, [1, 3]] - top) * ih / rh, 0, ih)
        out = out[(cx >= 0) & (cx < iw) & (cy >= 0) & (cy < ih)]
    return out[:k].reshape(-1, 5)


def _peaks(heat: np.ndarray) -> np.ndarray:
    """The 3x3 local maxima of a heatmap, one cell per tie: a cell equal to an earlier neighbour (raster
    order) that is itself a maximum is no peak, so a plateau (a saturated sigmoid, scores rounded alike by
    float16 or int8) gives one box, the same in Keras and LiteRT."""
    from scipy.ndimage import maximum_filter
    peak = heat == maximum_filter(heat, size=3, mode="constant", cval=-np.inf)
    keep = peak.copy()
    g0, g1 = heat.shape
    for dy, dx in ((-1, -1), (-1, 0), (-1, 1), (0, -1)):          # the neighbours that come first
        y0, y1, x0, x1 = max(0, -dy), g0 - max(0, dy), max(0, -dx), g1 - max(0, dx)
        here, there = (slice(y0, y1), slice(x0, x1)), (slice(y0 + dy, y1 + dy), slice(x0 + dx, x1 + dx))
        keep[here] &= ~(peak[there] & (heat[there] == heat[here]))
    return keep


def detect(detector, images: np.ndarray, sizes, k: int = 100, threshold: float = 0.0,
           batch_size: int = 16) -> list[np.ndarray]:
    """Boxes of each image in its own pixels.

    Args:
        detector: the detector (:func:`fracturelib.models.centernet.build`, or its LiteRT export).
        images: input batch (N, S, S, channels), pixels as the detector takes them.
        sizes: per image, its original ``(width, height)``.
        k: at most this many boxes per image.
        threshold: keep boxes scoring at least this.
        batch_size: prediction batch size.

    Returns:
        One (n, 5) array ``x0, y0, x1, y1, score`` per image.
    """
    if not len(images):
        return []
    outs = (detector.predict_on_batch(images) if len(images) <= batch_size
            else detector.predict(images, batch_size=batch_size, verbose=0))
    heat, size, off = (np.asarray(o) for o in outs)
    s = detector.input_shape[1]
    stride = s / heat.shape[1]                    # the detector's own grid (CenterNet here: 8)
    return [decode(heat[i], size[i], off[i], k, threshold, wh, s, stride) for i, wh in enumerate(sizes)]


def image_scores(dets: list[np.ndarray]) -> np.ndarray:
    """The image-level fracture score: each image's best box score (0 where it has none).

    Args:
        dets: per image, its (n, 5) boxes from :func:`detect` or :func:`decode`.

    Returns:
        float array (N,).
    """
    return np.array([float(d[:, 4].max()) if len(d) else 0.0 for d in dets])
