"""Augmentation for radiographs, as Keras preprocessing layers applied to batches in tf.data.

Geometry (rotation, zoom, shift, horizontal flip) is ONE Keras layer, ``RandomAffine``, that
composes the four into a single matrix and resamples once with ``keras.ops.image.affine_transform``.
Keras' separate RandomRotation + RandomZoom + RandomTranslation resample three times: three
bilinear interpolations blur thin fracture lines three times, and cost about three times the CPU
(0.75 vs 0.25 ms an image at 128 px on this 2-core machine), which starved training.
Light is Keras' own RandomBrightness and RandomContrast.
"""
from __future__ import annotations

import math

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="fracturelib")
class RandomAffine(layers.Layer):
    """Random rotation (fraction of a full turn), zoom, shift (fraction of size) and h-flip,
    composed and applied in one resampling pass. Identity when ``training`` is False."""

    def __init__(self, rotation=0.04, zoom=0.10, shift=0.06, flip=True, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rotation, self.zoom, self.shift, self.flip, self.seed = rotation, zoom, shift, flip, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        """Warp each image of the batch by its own random affine transform (bilinear, zero fill).

        Args:
            images: batch (B, H, W, C), channels last.
            training: apply the augmentation; when False the batch is returned unchanged.

        Returns:
            Tensor of the same shape as ``images``.
        """
        if not training:
            return images
        shape = ops.shape(images)
        b = shape[0]
        h = ops.cast(shape[1], "float32")
        w = ops.cast(shape[2], "float32")
        rnd = keras.random.uniform((b, 5), 0.0, 1.0, seed=self.seed_generator)
        ang = (rnd[:, 0] * 2 - 1) * self.rotation * 2 * math.pi
        scale = 1 + (rnd[:, 1] * 2 - 1) * self.zoom
        tx = (rnd[:, 2] * 2 - 1) * self.shift * w
        ty = (rnd[:, 3] * 2 - 1) * self.shift * h
        f = ops.where(rnd[:, 4] < 0.5, -1.0, 1.0) if self.flip else ops.ones_like(ang)
        cx, cy = (w - 1) / 2, (h - 1) / 2
        cos, sin = ops.cos(ang) / scale, ops.sin(ang) / scale
        a0, a1, b0, b1 = f * cos, -sin, f * sin, cos
        a2 = cx + tx - a0 * cx - a1 * cy
        b2 = cy + ty - b0 * cx - b1 * cy
        zeros = ops.zeros_like(a0)
        transform = ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        return ops.image.affine_transform(images, transform, interpolation="bilinear",
                                          fill_mode="constant", fill_value=0)

    def compute_output_shape(self, input_shape):
        """The output shape: the input's (the transform keeps the image size).

        Args:
            input_shape: shape of the input batch.

        Returns:
            ``input_shape`` unchanged.
        """
        return input_shape

    def get_config(self):
        """The layer's configuration, so a saved model reloads with the same ranges.

        Returns:
            Keras' base config plus ``rotation``, ``zoom``, ``shift``, ``flip`` and ``seed``.
        """
        return {**super().get_config(), "rotation": self.rotation, "zoom": self.zoom,
                "shift": self.shift, "flip": self.flip, "seed": self.seed}


def augmenter(seed: int = 42, strength: float = 1.0) -> keras.Sequential:
    """Small rotations, zoom, shifts, flips, brightness and contrast changes.

    Args:
        seed: seed of the affine layer (brightness and contrast use seed + 1 and seed + 2).
        strength: multiplies every range (1.0: rotation 0.04 turn, zoom 10%, shift 6%,
            brightness 10%, contrast 15%).

    Returns:
        A ``keras.Sequential`` named ``augment`` for pixel values in [0, 255]; active only with ``training=True``.
    """
    s = strength
    return keras.Sequential([
        RandomAffine(0.04 * s, 0.10 * s, 0.06 * s, flip=True, seed=seed),
        layers.RandomBrightness(0.10 * s, value_range=(0, 255), seed=seed + 1),
        layers.RandomContrast(0.15 * s, seed=seed + 2),
    ], name="augment")
