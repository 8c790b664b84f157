"""Is this a radiograph at all? A Mahalanobis-distance detector on frozen ImageNet features.

Why: a classifier trained on radiographs answers *something* for any input, and random noise or
a holiday photo can come out "fractured" with confidence 1.00. Following Lee et al. (2018), the
pooled EfficientNet-Lite0 ImageNet features of the training radiographs are modelled as one
Gaussian (mean and a Ledoit-Wolf shrunk covariance, scikit-learn); an input whose distance lies
beyond the ``quantile`` of the training images' own distances is flagged as out of distribution.
The detector is independent of the classifier, so it serves the CNN and the transfer models alike.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fracturelib.models.cards import ModelCardError

BACKBONE = "efficientnet_lite0"
SIZE = 224


class DetectorError(ModelCardError):
    """A model's radiograph (OOD) detector companion is missing a part, damaged or inconsistent."""


def feature_model(channels: int = 1, size: int = SIZE, backbone: str = BACKBONE, weights: str = "imagenet"):
    """Image (size x size x channels, [0, 255]) -> pooled ImageNet features of any registered backbone.

    With the default EfficientNet-Lite0 these are the features of a frozen transfer model's phase 1,
    which notebook 02 reuses instead of a second pass.

    Args:
        channels: 1 (grayscale, repeated to RGB inside) or 3.
        size: the square input side.
        backbone: a registry name; its own preprocessing is part of the model.
        weights: the backbone's weights (``imagenet``; ``none`` only for tests of the wiring).

    Returns:
        A Keras model ``image -> features``.
    """
    import keras

    from fracturelib.models import backbones
    base = backbones.build_backbone(backbone, weights, input_shape=(size, size, 3))
    inp = keras.Input((size, size, channels))
    x = base(backbones.preprocess_layer(backbone)(inp), training=False)
    return keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x), name="ood_features")


@dataclass
class Detector:
    mean: np.ndarray
    precision: np.ndarray
    threshold: float
    quantile: float
    n_train: int
    image_size: int = SIZE
    backbone: str = BACKBONE

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each feature vector to the training radiographs' mean.

        Args:
            features: pooled features (N, D), or one vector (D,).

        Returns:
            (N,) distances, on the scale of ``threshold``.
        """
        d = np.atleast_2d(features) - self.mean
        return np.sqrt(np.einsum("ij,jk,ik->i", d, self.precision, d))

    def in_distribution(self, features: np.ndarray, images: np.ndarray | None = None) -> np.ndarray:
        """True where the features lie within the threshold and, when ``images`` are given, the
        image is not blank (a uniform image has features near a radiograph's dark background).

        Args:
            features: pooled features (N, D) of :func:`feature_model`.
            images: the same N images as pixels, or None to skip the blank-image check.

        Returns:
            (N,) bool; True where the input looks like a training radiograph.
        """
        ok = self.distance(features) <= self.threshold
        if images is not None:
            ok &= ~is_blank(images)
        return ok

    def save(self, path: str | Path) -> Path:
        """Write the mean and precision to ``path`` (.npz) and the threshold and settings to its .json.

        Args:
            path: the archive (written under exactly this name, atomically); its folder is created.

        Returns:
            ``path``, as a Path.
        """
        from fracturelib.files import atomic_output, atomic_write, ensure_dir
        path = Path(path)
        ensure_dir(path.parent)
        with atomic_output(path) as f:                     # a file object: np.savez adds no suffix
            np.savez(f, mean=self.mean, precision=self.precision)
        atomic_write(path.with_suffix(".json"), json.dumps(
            {"threshold": self.threshold, "quantile": self.quantile, "n_train": self.n_train,
             "backbone": self.backbone, "image_size": self.image_size,
             "what": "Mahalanobis OOD detector on pooled features"}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Detector:
        """The detector saved as ``path`` (.npz) with its .json; DetectorError, one line naming the
        file, when either is missing, damaged or inconsistent.

        Args:
            path: the .npz archive written by :meth:`save` (its .json beside it).

        Returns:
            The :class:`Detector`.

        Raises:
            DetectorError: either file is missing, damaged or inconsistent; the message names the fix.
        """
        import zipfile
        path = Path(path)
        fix = "re-fit it with notebook 02 (or delete it to predict without the radiograph check)"
        meta_path = path.with_suffix(".json")
        try:
            meta = json.loads(meta_path.read_text())
            threshold, quantile = float(meta["threshold"]), float(meta["quantile"])
            n_train, size = int(meta["n_train"]), int(meta.get("image_size", SIZE))
            backbone = str(meta.get("backbone", BACKBONE))
        except FileNotFoundError:
            raise DetectorError(f"{path}: radiograph (OOD) detector without its {meta_path.name}; {fix}") from None
        except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
            raise DetectorError(f"{meta_path}: not a valid radiograph (OOD) detector description; {fix}") from None
        try:
            with np.load(path, allow_pickle=False) as z:
                mean, precision = np.asarray(z["mean"], np.float64), np.asarray(z["precision"], np.float64)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            raise DetectorError(f"{path}: not a radiograph (OOD) detector archive (truncated or damaged); "
                                f"{fix}") from None
        d = mean.shape[0] if mean.ndim == 1 else -1
        if d < 1 or precision.shape != (d, d) or not (np.isfinite(mean).all() and np.isfinite(precision).all()):
            raise DetectorError(f"{path}: radiograph (OOD) detector arrays are inconsistent (mean {mean.shape}, "
                                f"precision {precision.shape}); {fix}")
        if not (np.isfinite(threshold) and threshold >= 0 and size > 0):
            raise DetectorError(f"{meta_path}: radiograph (OOD) detector threshold {threshold} or image size "
                                f"{size} is invalid; {fix}")
        return cls(mean, precision, threshold, quantile, n_train, size, backbone)


def is_blank(images: np.ndarray, min_std: float = 2.0) -> np.ndarray:
    """Images with (almost) no contrast: standard deviation of the pixels below ``min_std``.

    Args:
        images: N images, any shape per image, pixels in [0, 255].
        min_std: the standard deviation, in pixel values, below which an image is blank.

    Returns:
        (N,) bool.
    """
    x = np.asarray(images, np.float32)
    return x.reshape(len(x), -1).std(axis=1) < min_std


def fit(features: np.ndarray, calibration: np.ndarray | None = None, quantile: float = 0.99,
        image_size: int = SIZE, backbone: str = BACKBONE) -> Detector:
    """Fit the Gaussian on the training radiographs' features; the threshold is the ``quantile``
    of the distances of held-out radiographs (``calibration``, e.g. the validation images: in-sample
    distances are optimistic in 1280 dimensions), or of the training images when none are given.

    Args:
        features: pooled features (N, D) of the training radiographs (:func:`feature_model`).
        calibration: pooled features (M, D) of held-out radiographs, or None.
        quantile: the share of the reference radiographs that falls within the threshold.
        image_size, backbone: the feature model's input side and backbone, recorded in the detector.

    Returns:
        The fitted :class:`Detector`.
    """
    from sklearn.covariance import LedoitWolf
    lw = LedoitWolf().fit(features)
    det = Detector(lw.location_, lw.precision_, 0.0, quantile, len(features), image_size, backbone)
    ref = features if calibration is None else calibration
    det.threshold = float(np.quantile(det.distance(ref), quantile))
    return det
