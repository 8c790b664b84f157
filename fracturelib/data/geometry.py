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
