"""Image geometry shared by every stage that maps a model's square input back onto the image:
where ``resize_with_pad`` puts an image (letterbox), a heatmap brought back to the image's own pixels,
and heat drawn over an image (the CAMs, the localiser and ``predict`` all use these)."""
from __future__ import annotations

import math

import numpy as np


def letterbox(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """Where ``tf.image.resize_with_pad`` puts a width x height image in a size x size input:
    (left, top, resized_width, resized_height).

    Args:
        width, height: the image's own size in pixels.
        size: side of the square model input.

    Returns:
        ``(left, top, resized_width, resized_height)`` in input pixels (ints).
    """
    ratio = max(width / size, height / size)
    rw, rh = int(math.floor(width / ratio)), int(math.floor(height / ratio))
    return (size - rw) // 2, (size - rh) // 2, rw, rh


def heatmap_to_image(cam: np.ndarray, width: int, height: int, size: int) -> np.ndarray:
    """A feature-map heatmap -> the model input (size x size) -> crop the padding -> the image's
    own width x height, so it can be compared with boxes in image coordinates.

    Args:
        cam: 2-D heatmap over the (letterboxed) model input, any resolution.
        width, height: the image's own size in pixels.
        size: side of the square model input.

    Returns:
        float32 array (height, width), bilinearly resized.
    """
    import cv2
    full = cv2.resize(cam.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    left, top, rw, rh = letterbox(width, height, size)
    crop = full[top:top + rh, left:left + rw]
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 overlay of a [0,1] heatmap (jet) on an image (HxW, HxWx1 or HxWx3).

    Args:
        image: image with pixel values in [0, 255] (cast to uint8).
        heat: heatmap in [0, 1] (clipped), resized to the image when its size differs.
        alpha: weight of the heat colours (1 - alpha for the image).

    Returns:
        uint8 array (H, W, 3).
    """
    import cv2
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img.astype(np.uint8)
    if heat.shape[:2] != img.shape[:2]:
        heat = cv2.resize(heat.astype(np.float32), (img.shape[1], img.shape[0]))
    colour = cv2.applyColorMap(np.uint8(255 * np.clip(heat, 0, 1)), cv2.COLORMAP_JET)[..., ::-1]
    return np.uint8((1 - alpha) * img + alpha * colour)


def overlay_with_regions(image: np.ndarray, heat: np.ndarray, mask: np.ndarray,
                         colour=(255, 255, 255)) -> np.ndarray:
    """:func:`overlay` with the outline of a region mask (e.g. the expert boxes) drawn on top.

    Args:
        image, heat: as for :func:`overlay`.
        mask: region mask (H, W), nonzero inside the regions.
        colour: RGB colour of the 2-pixel outlines.

    Returns:
        uint8 array (H, W, 3).
    """
    import cv2
    ov = overlay(image, heat)
    cnts, _ = cv2.findContours(np.asarray(mask).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(ov, cnts, -1, colour, 2)
    return ov


def draw_boxes(image: np.ndarray, boxes, colour=(255, 255, 255), scores: bool = True) -> np.ndarray:
    """Boxes outlined on an image (a copy, RGB uint8), each with its score when it has one; line width and
    text sized to the image, a dark edge under the coloured one so they show on any heat colour.

    Args:
        image: (H, W), (H, W, 1) or (H, W, 3) image, 0-255.
        boxes: rows ``x0, y0, x1, y1[, score]`` in the image's pixels (x1, y1 exclusive).
        colour: RGB colour of the outlines.
        scores: write each box's score above it (below when there is no room), when given.

    Returns:
        uint8 array (H, W, 3).
    """
    import cv2
    im = np.asarray(image)
    if im.ndim == 2 or im.shape[-1] == 1:
        im = np.repeat(im.reshape(im.shape[0], im.shape[1], -1)[..., :1], 3, axis=2)
    out = np.ascontiguousarray(np.clip(im, 0, 255).astype(np.uint8))
    h, w = out.shape[:2]
    t = max(1, min(h, w) // 300)
    font = max(0.35, min(h, w) / 1000)
    for box in boxes:
        x0, y0, x1, y1 = (int(round(float(v))) for v in box[:4])
        p0, p1 = (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1))
        cv2.rectangle(out, p0, p1, (0, 0, 0), t + 2)
        cv2.rectangle(out, p0, p1, colour, t)
        if scores and len(box) > 4:
            label = f"{float(box[4]):.2f}"
            (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, t)
            ty = y0 - t - 2 if y0 - t - 2 >= th else min(h - base, y1 + th + t)     # above the box, else below
            at = (min(x0, max(0, w - tw)), ty)
            cv2.putText(out, label, at, cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), t + 2, cv2.LINE_AA)
            cv2.putText(out, label, at, cv2.FONT_HERSHEY_SIMPLEX, font, colour, t, cv2.LINE_AA)
    return out
