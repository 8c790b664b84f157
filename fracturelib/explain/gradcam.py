"""Batch Grad-CAM and Grad-CAM++ for any model this project builds.

Our own small implementation (about 40 lines of maths) rather than tf-keras-vis: that library's
last release (0.8.7, 2024) predates Keras 3.15, and nested backbones are simple here because the
transfer models expose the backbone's 4-D feature map as one layer of the outer graph.
"""
from __future__ import annotations

import weakref

import numpy as np

from fracturelib.models.kerasutil import layer_output  # noqa: F401 - part of this module's API


def find_target_layer(model, name: str | None = None):
    """The layer whose feature map Grad-CAM weighs: ``name``, or the last layer with a 4-D output
    that is a convolution or a nested model (a pretrained backbone)."""
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
    """One model and one explained layer: the compiled (tf.function) forward + gradient steps,
    built once and kept here (weakly keyed by the model, so nothing is stored on the model).
    Eager execution of a 150-layer backbone costs several times the graph's time.

    What is explained is explicit: ``target=None`` is the predicted class (for one sigmoid unit:
    positive when p >= 0.5), an int is that class (for one sigmoid unit: 1 = positive, 0 = negative).
    """

    _engines: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    @classmethod
    def for_model(cls, model, layer: str | None = None) -> CAMEngine:
        target = find_target_layer(model, layer)
        per_model = cls._engines.setdefault(model, {})
        if target.name not in per_model:
            per_model[target.name] = cls(model, target)
        return per_model[target.name]

    def __init__(self, model, target):
        import keras
        import tensorflow as tf
        self.grad_model = keras.Model(model.inputs, [layer_output(model, target), model.output])
        self.binary = model.output.shape[-1] == 1

        def score_of(pred, want):
            if self.binary:
                p = pred[:, 0]
                return tf.where(want, p, 1.0 - p)
            return tf.gather(pred, want, axis=1, batch_dims=1)

        def run(x, want_fn):
            with tf.GradientTape() as tape:
                fmap, pred = self.grad_model(x, training=False)
                score = score_of(pred, want_fn(pred))
            return fmap, pred, tape.gradient(score, fmap)

        def predicted(pred):
            return pred[:, 0] >= 0.5 if self.binary else tf.argmax(pred, axis=-1, output_type=tf.int32)

        def given(cls):
            def want(pred):
                n = tf.shape(pred)[0]
                return tf.fill([n], tf.equal(cls, 1)) if self.binary else tf.fill([n], cls)
            return want

        self._predicted = tf.function(lambda x: run(x, predicted), reduce_retracing=True)
        self._given = tf.function(lambda x, cls: run(x, given(cls)), reduce_retracing=True)

    def step(self, x, target: int | None):
        """(feature maps, outputs, gradients of the explained score) for one batch."""
        import tensorflow as tf
        x = tf.convert_to_tensor(x)
        return self._predicted(x) if target is None else self._given(x, tf.constant(int(target), tf.int32))


def _gradcam_map(fmap, grads):
    """Grad-CAM (Selvaraju et al. 2017): channels weighted by their spatially averaged gradient."""
    import tensorflow as tf
    return tf.einsum("bhwk,bk->bhw", fmap, tf.reduce_mean(grads, axis=(1, 2)))


def _gradcampp_map(fmap, grads):
    """Grad-CAM++ (Chattopadhay et al. 2018), closed form with first-order gradients."""
    import tensorflow as tf
    g2, g3 = grads ** 2, grads ** 3
    denom = 2.0 * g2 + tf.reduce_sum(fmap, axis=(1, 2), keepdims=True) * g3
    alpha = g2 / tf.where(denom != 0.0, denom, tf.ones_like(denom))
    return tf.einsum("bhwk,bk->bhw", fmap, tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2)))


def _hirescam_map(fmap, grads):
    """HiResCAM (Draelos & Carin 2020): gradient times activation at each position, summed over
    channels; provably shows the locations the score depends on (no spatial averaging)."""
    import tensorflow as tf
    return tf.reduce_sum(grads * fmap, axis=-1)


def _layercam_map(fmap, grads):
    """LayerCAM (Jiang et al. 2021): activations weighted by their positive gradients, position by
    position; meaningful on earlier, finer layers too (``layer=``)."""
    import tensorflow as tf
    return tf.reduce_sum(tf.nn.relu(grads) * fmap, axis=-1)


#: method name -> how one batch's feature maps and gradients become a heatmap (before ReLU).
CAM_METHODS = {"gradcam": _gradcam_map, "gradcam++": _gradcampp_map, "hirescam": _hirescam_map,
               "layercam": _layercam_map}


def gradcam(model, images, class_index: int | None = None, layer: str | None = None,
            method: str = "gradcam", batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (N, h, w) in [0, 1] at the feature map's resolution, and the model's outputs.

    Args:
        model: any model of this project (nested backbones too).
        images: N x S x S x C, raw pixels.
        class_index: class explained; default the predicted class (for a one-unit sigmoid output,
            1 = positive, 0 = negative).
        layer: the feature map explained (default: the last convolutional one).
        method: a key of :data:`CAM_METHODS` (gradcam, gradcam++, hirescam, layercam); Score-CAM,
            which needs no gradients, is :func:`fracturelib.explain.scorecam.scorecam`.
    """
    import tensorflow as tf

    if method not in CAM_METHODS:
        raise ValueError(f"method must be one of {', '.join(CAM_METHODS)}, not {method!r}")
    engine = CAMEngine.for_model(model, layer)
    cams, outs = [], []
    images = np.asarray(images, dtype="float32")
    for s in range(0, len(images), batch_size):
        fmap, pred, grads = engine.step(images[s:s + batch_size], class_index)
        cam = tf.nn.relu(CAM_METHODS[method](fmap, grads)).numpy()
        peak = cam.reshape(len(cam), -1).max(axis=1)
        cams.append(cam / np.where(peak > 0, peak, 1.0)[:, None, None])
        outs.append(pred.numpy())
    return np.concatenate(cams), np.concatenate(outs)
