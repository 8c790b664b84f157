"""``pad_resize`` in NumPy: the model input of :func:`fracturelib.data.pipeline.pad_resize` without
TensorFlow, for the LiteRT runtime (a ``.tflite`` prediction never imports TensorFlow).

It reproduces ``tf.image.resize_with_pad(..., antialias=True)``: TensorFlow's letterbox (resized sides
floored, padding ``floor((S - side / ratio) / 2)``, in float32: up to a pixel before what
:func:`fracturelib.data.geometry.letterbox` says), then TensorFlow's ``scale_and_translate`` with the
triangle kernel widened by the down-scale factor (half-pixel centres, weights normalised per output
pixel), applied separably; the result differs from TensorFlow's by float rounding only (< 0.01 of a
grey level, checked by a test).
"""
from __future__ import annotations

import numpy as np


def tf_letterbox(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """Where ``tf.image.resize_with_pad`` puts a width x height image: (left, top, width, height).

    Args:
        width, height: the image's own size in pixels.
        size: side of the square model input.

    Returns:
        ``(left, top, resized_width, resized_height)`` in input pixels, TensorFlow's arithmetic.
    """
    f32 = np.float32                              # TensorFlow's float32 arithmetic: 256 px -> 223, not 224
    ratio = max(f32(width) / f32(size), f32(height) / f32(size))
    fw, fh = f32(width) / ratio, f32(height) / ratio
    return (max(0, int(np.floor((f32(size) - fw) / f32(2)))), max(0, int(np.floor((f32(size) - fh) / f32(2)))),
            int(np.floor(fw)), int(np.floor(fh)))


def _weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """TensorFlow's antialiased triangle kernel from ``in_size`` to ``out_size`` pixels: per output
    pixel the source indices of its span and their normalised weights, both (out_size, span)
    (weights 0 past a span's end)."""
    scale = out_size / in_size
    kernel_scale = max(1.0 / scale, 1.0)
    sample = (np.arange(out_size) + 0.5) / scale
    start = np.clip(np.ceil(sample - kernel_scale - 0.5), 0, in_size - 1).astype(np.int64)
    end = np.clip(np.floor(sample + kernel_scale - 0.5), 0, in_size - 1).astype(np.int64) + 1
    src = start[:, None] + np.arange(int((end - start).max()))[None, :]
    k = np.maximum(0.0, 1.0 - np.abs((src + 0.5 - sample[:, None]) / kernel_scale))
    k = np.where(src < end[:, None], k, 0.0)
    total = k.sum(axis=1, keepdims=True)
    k = np.where(total > 1000 * np.finfo(np.float32).eps, k / np.maximum(total, 1e-30), 0.0)
    return np.minimum(src, in_size - 1), k.astype(np.float32)


def pad_resize_np(img: np.ndarray, image_size: int) -> np.ndarray:
    """Decoded image (HxWxC, any dtype) -> float32 SxSxC in [0, 255], aspect kept, zero padding.

    Args:
        img: HxWxC array.
        image_size: the model's input side S.

    Returns:
        A float32 array SxSxC, as :func:`fracturelib.data.pipeline.pad_resize` gives it.

    Raises:
        ImageError: an image whose short side would vanish at this size (the message ``scan`` gives).
    """
    from fracturelib.data.imageio import ImageError, geometry_problem
    a = np.asarray(img, np.float32)
    h, w = int(a.shape[0]), int(a.shape[1])
    if min(h, w) < 1 or max(h, w) > min(h, w) * image_size:
        reason = geometry_problem(w, h) or f"{w}x{h} px does not fit a {image_size} px input"
        raise ImageError(f"cannot use this image: {reason}")
    left, top, rw, rh = tf_letterbox(w, h, image_size)
    (iy, wy), (ix, wx) = _weights(h, rh), _weights(w, rw)
    out = np.zeros((image_size, image_size, a.shape[2]), np.float32)
    for c in range(a.shape[2]):
        rows = np.einsum("ok,okw->ow", wy, a[:, :, c][iy])           # (rh, w): a banded sum, not a matmul
        out[top:top + rh, left:left + rw, c] = np.einsum("ok,hok->ho", wx, rows[:, ix])
    return np.clip(out, 0.0, 255.0)
