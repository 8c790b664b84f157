"""Class activation maps: one registry, one signature for every method.

In the style of MONAI's ``CAMBase`` and pytorch-grad-cam: each method is a small function, what is
explained is apart from it (:mod:`fracturelib.explain.targets`), and everything is dispatched by
name through :func:`compute`::

    cams, outputs = compute("hirescam", model, images, target=targets.POSITIVE)

A method is ``method(model, images, target, layer, batch_size, **options) -> (maps, outputs)``:
raw maps (N, h, w) at the explained feature map's resolution and the model's outputs (N, units);
:func:`compute` applies ReLU and scales each map to a peak of 1. Methods that weigh a feature map
by its gradients are one line of maths each, lifted by :func:`from_gradients` onto the compiled
:class:`CAMEngine`. Adding a method is one registered function (and its test).

Our own small implementation rather than tf-keras-vis: that library's last release (0.8.7, 2024)
predates Keras 3.15, and nested backbones are simple here because the transfer models expose the
backbone's 4-D feature map as one layer of the outer graph.
"""
from __future__ import annotations

import functools
import weakref
from typing import Callable

import numpy as np

from fracturelib.explain import targets
from fracturelib.explain.targets import Target
from fracturelib.models.kerasutil import layer_output

_METHODS: dict[str, Callable] = {}


def register(name: str) -> Callable:
    """Decorator: register a CAM method under ``name``.

    Args:
        name: the method's name in :func:`compute`, :func:`names` and ``fracturelib predict --cam``.

    Returns:
        The decorator (it returns the function unchanged).

    Raises:
        ValueError: ``name`` is already registered (when the decorator is applied).
    """
    def add(method: Callable) -> Callable:
        if name in _METHODS:
            raise ValueError(f"CAM method {name!r} is already registered")
        _METHODS[name] = method
        return method
    return add


def unregister(name: str) -> None:
    """Remove a method (tests and plug-ins that registered their own).

    Args:
        name: a registered method name.

    Raises:
        ValueError: unknown name.
    """
    get(name)
    del _METHODS[name]


def names() -> list[str]:
    """The registered method names.

    Returns:
        The names, in registration order.
    """
    return list(_METHODS)


def get(name: str) -> Callable:
    """The method registered as ``name``.

    Args:
        name: a method name.

    Returns:
        The method (see the module docstring for its signature).

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown CAM method {name!r}; known: {', '.join(_METHODS)}") from None


def compute(name: str, model, images, target: Target | int | None = None, layer: str | None = None,
            batch_size: int = 32, **options) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps of the method ``name`` and the model's outputs.

    Args:
        name: a registered method (:func:`names`): gradcam, gradcam++, hirescam, layercam, scorecam.
        model: any model of this project (nested backbones too).
        images: N x S x S x C, raw pixels.
        target: what is explained (:mod:`~fracturelib.explain.targets`); None is the predicted
            class at 0.5, an int that class (one sigmoid unit: 1 positive, 0 negative).
        layer: the feature map explained (default: :func:`find_target_layer`'s choice).
        batch_size: images per forward pass.
        **options: method-specific settings (Score-CAM: ``max_channels``).

    Returns:
        (maps (N, h, w) in [0, 1] at the feature map's resolution, outputs (N, units)).

    Raises:
        ValueError: an unknown method or layer, or a target class the model does not have.
    """
    method = get(name)
    target = targets.as_target(target)
    target.check(int(model.output.shape[-1]))
    images = np.asarray(images, dtype="float32")
    maps, outputs = method(model, images, target, layer, batch_size, **options)
    maps = np.maximum(np.asarray(maps, dtype="float32"), 0.0)
    peak = maps.reshape(len(maps), -1).max(axis=1) if len(maps) else np.zeros(0, "float32")
    return maps / np.where(peak > 0, peak, 1.0)[:, None, None], np.asarray(outputs)


def gradcam(model, images, target: Target | int | None = None, layer: str | None = None,
            batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM heatmaps: a shortcut for ``compute("gradcam", ...)``.

    Args:
        model: the model explained.
        images: N x S x S x C, raw pixels.
        target: what is explained (see :func:`compute`).
        layer: the feature map explained.
        batch_size: images per forward pass.

    Returns:
        (maps (N, h, w) in [0, 1], outputs (N, units)).
    """
    return compute("gradcam", model, images, target, layer, batch_size)


def find_target_layer(model, name: str | None = None):
    """The layer whose feature map a CAM weighs.

    Args:
        model: the model explained.
        name: a layer name; None: the last layer with a 4-D output that is a convolution or a
            nested model (a pretrained backbone).

    Returns:
        The Keras layer.

    Raises:
        ValueError: no layer named ``name``, or (``name`` None) no convolutional layer with a 4-D output.
    """
    import keras
    if name:
        return model.get_layer(name)
    for layer in reversed(model.layers):
        try:
            rank = len(layer.output.shape)
        except (AttributeError, ValueError):
            continue
        if rank == 4 and (isinstance(layer, (keras.layers.Conv2D, keras.Model))
                          or "conv" in type(layer).__name__.lower()):
            return layer
    raise ValueError(f"{model.name}: no convolutional layer with a 4-D output; pass layer=NAME")


class CAMEngine:
    """One model and one explained layer: the compiled (tf.function) forward + gradient step,
    built once per target rule and kept here (weakly keyed by the model, so nothing is stored on
    the model). Eager execution of a 150-layer backbone costs several times the graph's time.
    The target's value (class index or threshold) is a tensor argument: no retracing per class.
    """

    _engines: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    @classmethod
    def for_model(cls, model, layer: str | None = None) -> CAMEngine:
        """The engine of ``model`` and its explained layer, built on first use.

        Args:
            model: the model explained.
            layer: the explained layer's name (default: :func:`find_target_layer`'s choice).

        Returns:
            The cached engine.
        """
        target = find_target_layer(model, layer)
        per_model = cls._engines.setdefault(model, {})
        if target.name not in per_model:
            per_model[target.name] = cls(model, target)
        return per_model[target.name]

    def __init__(self, model, layer):
        import keras
        self.grad_model = keras.Model(model.inputs, [layer_output(model, layer), model.output])
        self._steps: dict[type, Callable] = {}

    def _compiled(self, rule: Callable) -> Callable:
        import tensorflow as tf

        def run(x, value):
            with tf.GradientTape() as tape:
                fmap, pred = self.grad_model(x, training=False)
                explained = targets.score(pred, rule(pred, value))
            return fmap, pred, tape.gradient(explained, fmap)
        return tf.function(run, reduce_retracing=True)

    def step(self, x, target: Target | int | None):
        """One batch through the compiled graph.

        Args:
            x: images B x S x S x C.
            target: what is explained (:func:`fracturelib.explain.targets.as_target`).

        Returns:
            (feature maps (B, h, w, K), outputs (B, units), gradients of the explained score
            with respect to the feature maps), as tensors.
        """
        import tensorflow as tf
        target = targets.as_target(target)
        kind = type(target)
        if kind not in self._steps:
            self._steps[kind] = self._compiled(kind.rule)
        return self._steps[kind](tf.convert_to_tensor(x), tf.constant(target.value, tf.float32))


def from_gradients(weigh: Callable) -> Callable:
    """Lift a gradient weighting to a CAM method that runs batch by batch on the model's
    compiled :class:`CAMEngine`.

    Args:
        weigh: ``weigh(fmap, grads) -> maps``, tensors (B, h, w, K) -> (B, h, w).

    Returns:
        The method, with the registry's signature.
    """
    @functools.wraps(weigh)
    def method(model, images, target, layer=None, batch_size=32):
        engine = CAMEngine.for_model(model, layer)
        maps, outs = [], []
        for s in range(0, len(images), batch_size):
            fmap, pred, grads = engine.step(images[s:s + batch_size], target)
            maps.append(np.asarray(weigh(fmap, grads)))
            outs.append(pred.numpy())
        if not maps:
            return np.zeros((0, 1, 1), "float32"), np.zeros((0, int(model.output.shape[-1])), "float32")
        return np.concatenate(maps), np.concatenate(outs)
    return method


@register("gradcam")
@from_gradients
def gradcam_map(fmap, grads):
    """Grad-CAM (Selvaraju et al. 2017): channels weighted by their spatially averaged gradient.

    Args:
        fmap: feature maps (B, h, w, K).
        grads: gradients of the explained score with respect to ``fmap``.

    Returns:
        Maps (B, h, w) before ReLU.
    """
    import tensorflow as tf
    return tf.einsum("bhwk,bk->bhw", fmap, tf.reduce_mean(grads, axis=(1, 2)))


@register("gradcam++")
@from_gradients
def gradcampp_map(fmap, grads):
    """Grad-CAM++ (Chattopadhay et al. 2018), closed form with first-order gradients.

    Args:
        fmap: feature maps (B, h, w, K).
        grads: gradients of the explained score with respect to ``fmap``.

    Returns:
        Maps (B, h, w) before ReLU.
    """
    import tensorflow as tf
    g2, g3 = grads ** 2, grads ** 3
    denom = 2.0 * g2 + tf.reduce_sum(fmap, axis=(1, 2), keepdims=True) * g3
    alpha = g2 / tf.where(denom != 0.0, denom, tf.ones_like(denom))
    return tf.einsum("bhwk,bk->bhw", fmap, tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2)))


@register("hirescam")
@from_gradients
def hirescam_map(fmap, grads):
    """HiResCAM (Draelos & Carin 2020): gradient times activation at each position, summed over
    channels; provably shows the locations the score depends on (no spatial averaging).

    Args:
        fmap: feature maps (B, h, w, K).
        grads: gradients of the explained score with respect to ``fmap``.

    Returns:
        Maps (B, h, w) before ReLU.
    """
    import tensorflow as tf
    return tf.reduce_sum(grads * fmap, axis=-1)


@register("layercam")
@from_gradients
def layercam_map(fmap, grads):
    """LayerCAM (Jiang et al. 2021): activations weighted by their positive gradients, position by
    position; meaningful on earlier, finer layers too (``layer=``).

    Args:
        fmap: feature maps (B, h, w, K).
        grads: gradients of the explained score with respect to ``fmap``.

    Returns:
        Maps (B, h, w) before ReLU.
    """
    import tensorflow as tf
    return tf.reduce_sum(tf.nn.relu(grads) * fmap, axis=-1)


@register("scorecam")
def scorecam(model, images, target, layer=None, batch_size=32, max_channels: int = 64):
    """Score-CAM (Wang et al. 2020): no gradients. Each channel of the feature map, upsampled to
    the input and scaled to [0, 1], masks the image; the model's score for the explained class on
    that masked image is the channel's weight (softmax over channels). One forward pass per
    channel, so for wide backbones only the ``max_channels`` most active channels of each image are
    scored (the others weigh 0).

    Args:
        model: the model explained.
        images: N x S x S x C, float32.
        target: what is explained; each image's class is decided on the unmasked image.
        layer: the feature map explained.
        batch_size: images per forward pass.
        max_channels: channels scored per image.

    Returns:
        (maps (N, h, w) before ReLU, outputs (N, units)).
    """
    import cv2
    import keras
    fmodel = keras.Model(model.inputs, [layer_output(model, find_target_layer(model, layer)), model.output])
    fmaps, preds = fmodel.predict(images, batch_size=batch_size, verbose=0)
    explained = target.classes(preds)
    h, w = images.shape[1:3]
    maps = []
    for x, fmap, cls in zip(images, fmaps, explained):
        keep = np.argsort(fmap.mean(axis=(0, 1)))[::-1][:max_channels]
        masks = []
        for k in keep:
            m = cv2.resize(fmap[:, :, k].astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
            lo, hi = m.min(), m.max()
            masks.append((m - lo) / (hi - lo) if hi > lo else np.zeros_like(m))
        masked = x[None] * np.stack(masks)[..., None]
        scores = targets.ClassTarget(int(cls)).scores(model.predict(masked, batch_size=batch_size, verbose=0))
        wts = np.exp(scores - scores.max())
        maps.append((fmap[:, :, keep] * (wts / wts.sum())).sum(axis=-1))
    return (np.stack(maps) if maps else np.zeros((0,) + fmaps.shape[1:3], "float32")), preds
