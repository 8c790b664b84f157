"""Transfer models on a registered backbone (:mod:`fracturelib.models.backbones`): the model's shape
(preprocessing layer, nested frozen backbone, pooled head) and its parts. How they are trained is
:mod:`.recipe`; how they score a manifest is :mod:`.scoring`."""
from __future__ import annotations

import numpy as np

from fracturelib.models import backbones
from fracturelib.models.backbones import preprocess_layer
from fracturelib.models.kerasutil import layer_output


def mirror(x):
    """A batch of images flipped left-right (a named function: AutoGraph warns on lambdas).

    Args:
        x: image batch, shape (B, H, W, C).

    Returns:
        The batch with the width axis reversed, same shape.
    """
    return x[:, :, ::-1, :]


def build_transfer_model(num_classes: int, backbone: str = "efficientnet_lite0", image_size: int = 224,
                         channels: int = 3, weights: str = "auto", alpha: float = 1.0,
                         dropout: float = 0.3):
    """``Input -> PreprocessInput -> backbone (nested, frozen, BatchNorm in inference mode)
    -> GlobalAveragePooling -> Dropout -> Dense``: softmax over ``num_classes``, or one sigmoid
    unit when ``num_classes`` is 1 (binary).

    Args:
        num_classes: output units; 1 for binary (sigmoid), else softmax classes.
        backbone: registry name of the backbone (:mod:`fracturelib.models.backbones`).
        image_size, channels: the model input (square side in pixels, number of channels).
        weights: ``"imagenet"``, ``"fracatlas"``, ``"none"``, ``"auto"`` or a weights file.
        alpha: width multiplier of backbones that take one (MobileNet).
        dropout: dropout rate before the dense layer.

    Returns:
        (model, weights description). With ``weights="auto"`` offline the backbone may be
        EfficientNet-Lite0 instead of the one asked for: :func:`backbone_of` tells.

    Raises:
        ValueError: for an unknown backbone or ``weights`` value.
        WeightsUnavailable: when the asked-for pretrained weights cannot be had.
    """
    import keras
    from keras import layers
    r = backbones.resolve(weights, backbone, image_size, alpha)
    base = backbones.build_backbone(r.backbone, r.weights, input_shape=(image_size, image_size, 3),
                                    alpha=alpha)
    base.trainable = False
    inp = keras.Input((image_size, image_size, channels), name="image")
    x = preprocess_layer(r.backbone, name="preprocess")(inp)
    x = base(x, training=False)       # BatchNorm stays in inference mode, also when fine-tuned
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    act = "sigmoid" if num_classes == 1 else "softmax"
    out = layers.Dense(num_classes, activation=act, name="classes")(x)
    return keras.Model(inp, out, name=f"{r.backbone}_transfer"), r.description


def backbone_of(model) -> str:
    """The registry name of a transfer model's backbone (from its preprocessing layer).

    Args:
        model: a model built by :func:`build_transfer_model`.

    Returns:
        The backbone name, e.g. ``"efficientnet_lite0"``.
    """
    return model.get_layer("preprocess").backbone


def head_model(model):
    """The part after the global pooling as its own model (dropout -> dense, the same layers), so
    phase 1 trains on cached, already pooled backbone features: the pooling is a mean, so this is
    the same computation, about 50x cheaper than carrying 7x7 maps through every epoch.

    Args:
        model: a transfer model.

    Returns:
        A Keras model from a pooled feature vector (shape (C,)) to the class scores, sharing weights
        with ``model``.
    """
    import keras
    inp = keras.Input(layer_output(model, model.get_layer("pool")).shape[1:])
    x = inp
    for name in ("dropout", "classes"):
        x = model.get_layer(name)(x)
    return keras.Model(inp, x, name="head")


def features_model(model):
    """Image -> backbone feature map (for caching features once).

    Args:
        model: a transfer model.

    Returns:
        A Keras model from ``model``'s input to the backbone's map, shape (B, h, w, C).
    """
    import keras
    return keras.Model(model.inputs, layer_output(model, model.get_layer("backbone")))


def unfreeze_top(model, fine_tune: int | str) -> int:
    """Make the top of the backbone trainable, BatchNorm layers excepted (they stay frozen and,
    being called with training=False, in inference mode).

    Args:
        model: a transfer model.
        fine_tune: a number of top layers, or a layer-name prefix such as ``"block11"``: that
            layer and every later one are unfrozen (EfficientNet-Lite blocks are named so).

    Returns:
        The number of trainable parameters.

    Raises:
        ValueError: if a layer-name ``fine_tune`` matches no backbone layer.
    """
    import keras
    base = model.get_layer("backbone")
    names = [layer.name for layer in base.layers]
    if isinstance(fine_tune, str) and not fine_tune.lstrip("-").isdigit():
        hits = [i for i, n in enumerate(names) if n == fine_tune or n.startswith(fine_tune + "_")]
        if not hits:
            raise ValueError(f"fine_tune={fine_tune!r}: no such layer in {base.name}")
        first = hits[0]
    else:
        n = int(fine_tune)
        first = max(len(names) - n, 0) if n > 0 else len(names)
    base.trainable = True
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= first and not isinstance(layer, keras.layers.BatchNormalization)
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)
