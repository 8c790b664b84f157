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
from fracturelib.models.cards import _int as _is_int
from fracturelib.models.cards import _number as _is_number

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

        The .json must give a registered ``backbone``, an ``image_size`` in [MIN_SIZE, MAX_SIZE], a
        finite ``threshold`` > 0 and a ``quantile`` in (0, 1); the arrays' shapes and dtypes are read
        from the .npy headers inside the archive before any array is loaded (mean (d,), precision
        (d, d), floating point, d <= MAX_DIM), so a small file cannot make loading allocate gigabytes.

        Args:
            path: the .npz archive written by :meth:`save` (its .json beside it).

        Returns:
            The :class:`Detector`.

        Raises:
            DetectorError: either file is missing, damaged or inconsistent; the message names the fix.
        """
        import zipfile
        path = Path(path)
        meta_path = path.with_suffix(".json")
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise DetectorError(f"{path}: radiograph (OOD) detector without its {meta_path.name}; {FIX}") from None
        except (OSError, ValueError, RecursionError):      # invalid JSON, encoding, a > 4300-digit integer
            raise DetectorError(f"{meta_path}: not a valid radiograph (OOD) detector description; {FIX}") from None
        threshold, quantile, n_train, size, backbone = _settings(meta, meta_path)
        shapes = _array_headers(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                mean, precision = np.asarray(z["mean"], np.float64), np.asarray(z["precision"], np.float64)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            raise DetectorError(f"{path}: not a radiograph (OOD) detector archive (truncated or damaged); "
                                f"{FIX}") from None
        if ((mean.shape, precision.shape) != (shapes["mean"], shapes["precision"])
                or not (np.isfinite(mean).all() and np.isfinite(precision).all())):
            raise DetectorError(f"{path}: radiograph (OOD) detector arrays are inconsistent (mean {mean.shape}, "
                                f"precision {precision.shape}, or not finite); {FIX}")
        return cls(mean, precision, threshold, quantile, n_train, size, backbone)

    @property
    def dim(self) -> int:
        """The feature width d the detector was fitted on (the feature model's output width)."""
        return int(self.mean.shape[-1])


FIX = "re-fit it with notebook 02 (or delete it to predict without the radiograph check)"
#: The input sides a detector's feature model may have (pixels).
MIN_SIZE, MAX_SIZE = 32, 1024
#: The widest feature vector a detector may hold (precision d x d float64: 128 MiB at 4096).
MAX_DIM = 4096


def _settings(meta, meta_path: Path) -> tuple[float, float, int, int, str]:
    """(threshold, quantile, n_train, image_size, backbone) of a detector's .json, checked;
    DetectorError naming ``meta_path`` and the first value that is wrong."""
    from fracturelib.models import backbones
    from fracturelib.models.cards import _shown
    if not isinstance(meta, dict):
        raise DetectorError(f"{meta_path}: not a valid radiograph (OOD) detector description (not a JSON "
                            f"object); {FIX}")
    meta = {"image_size": SIZE, "backbone": BACKBONE, **meta}
    checks = (
        ("threshold", lambda v: _is_number(v) and v > 0, "a finite number > 0"),
        ("quantile", lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
        ("n_train", lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
        ("image_size", lambda v: _is_int(v) and MIN_SIZE <= v <= MAX_SIZE,
         f"a whole number of pixels in [{MIN_SIZE}, {MAX_SIZE}]"),
        ("backbone", lambda v: isinstance(v, str) and v in backbones.REGISTRY,
         f"one of {', '.join(sorted(backbones.REGISTRY))}"))
    for key, ok, want in checks:
        if key not in meta:
            raise DetectorError(f"{meta_path}: not a valid radiograph (OOD) detector description (no "
                                f"{key!r}); {FIX}")
        if not ok(meta[key]):
            raise DetectorError(f"{meta_path}: not a valid radiograph (OOD) detector description ({key} is "
                                f"{_shown(meta[key], 40)}, but must be {want}); {FIX}")
    return (float(meta["threshold"]), float(meta["quantile"]), meta["n_train"], meta["image_size"],
            meta["backbone"])


def _array_headers(path: Path) -> dict[str, tuple[int, ...]]:
    """The shapes of ``mean`` and ``precision`` in the .npz ``path``, read from their .npy headers
    without loading them; DetectorError unless mean is (d,) and precision (d, d) of a floating-point
    dtype with 1 <= d <= MAX_DIM."""
    import zipfile

    from numpy.lib import format as npy
    damaged = f"{path}: not a radiograph (OOD) detector archive (truncated or damaged); {FIX}"
    shapes, dtypes = {}, {}
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            for key in ("mean", "precision"):
                if f"{key}.npy" not in names:
                    raise DetectorError(f"{path}: radiograph (OOD) detector archive has no {key!r} array; {FIX}")
                with z.open(f"{key}.npy") as f:
                    version = npy.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = npy.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, _, dtype = npy.read_array_header_2_0(f)
                    else:
                        raise ValueError(f"unsupported .npy version {version}")
                shapes[key], dtypes[key] = tuple(shape), dtype
    except DetectorError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, RuntimeError, SyntaxError, TypeError):
        raise DetectorError(damaged) from None
    mean, precision = shapes["mean"], shapes["precision"]
    d = mean[0] if len(mean) == 1 else -1
    if not (1 <= d <= MAX_DIM and precision == (d, d)):
        raise DetectorError(f"{path}: radiograph (OOD) detector arrays are inconsistent (mean {mean}, precision "
                            f"{precision}; they must be (d,) and (d, d) with d <= {MAX_DIM}); {FIX}")
    bad = [k for k, t in dtypes.items() if t.kind != "f" or t.itemsize > 8]
    if bad:
        raise DetectorError(f"{path}: radiograph (OOD) detector arrays are inconsistent ({bad[0]} is of dtype "
                            f"{dtypes[bad[0]]}, not floating point); {FIX}")
    return shapes


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
