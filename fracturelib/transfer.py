"""Transfer learning: pretrained Keras backbones (MobileNetV2, EfficientNetB0, ResNet50), each with
its own ``preprocess_input`` inside the model, weights from ImageNet, a local file, our in-domain
FracAtlas backbone or none, and the two-phase recipe (frozen features, then fine-tuning)."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import config

ASSETS = config.PACKAGE_DIR / "assets"
#: The in-domain backbone shipped with the package (made by scripts/pretrain_fracatlas.py).
FRACATLAS_BACKBONE = {"backbone": "mobilenetv2", "alpha": 0.35, "image_size": 160,
                      "file": "mobilenetv2_a035_160_fracatlas.weights.h5"}


@dataclass(frozen=True)
class Backbone:
    name: str
    module: str            # keras.applications submodule with preprocess_input
    constructor: str
    default_size: int


BACKBONES = {
    "mobilenetv2": Backbone("mobilenetv2", "mobilenet_v2", "MobileNetV2", 224),
    "efficientnetb0": Backbone("efficientnetb0", "efficientnet", "EfficientNetB0", 224),
    "resnet50": Backbone("resnet50", "resnet50", "ResNet50", 224),
}


class WeightsUnavailable(RuntimeError):
    """Pretrained weights could not be had; the message says how to provide them."""


def _keras():
    import keras
    return keras


def _register():
    keras = _keras()

    @keras.saving.register_keras_serializable(package="fracturelib")
    class PreprocessInput(keras.layers.Layer):
        """The backbone's own ``keras.applications.<module>.preprocess_input`` as a layer (so a
        saved model carries it and loads in safe mode); grayscale input is repeated to RGB."""

        def __init__(self, backbone: str, **kwargs):
            super().__init__(**kwargs)
            self.backbone = backbone

        def call(self, x):
            from keras import ops
            if x.shape[-1] == 1:
                x = ops.concatenate([x, x, x], axis=-1)
            mod = getattr(keras.applications, BACKBONES[self.backbone].module)
            return mod.preprocess_input(x)

        def compute_output_shape(self, s):
            return (*s[:-1], 3)

        def get_config(self):
            return {**super().get_config(), "backbone": self.backbone}

    return PreprocessInput


_PREPROCESS = None


def custom_objects() -> dict:
    """Classes a saved transfer model needs to load (registering them with Keras once)."""
    global _PREPROCESS
    if _PREPROCESS is None:
        _PREPROCESS = _register()
    return {"fracturelib>PreprocessInput": _PREPROCESS}


def preprocess_layer(backbone: str, **kw):
    return custom_objects()["fracturelib>PreprocessInput"](backbone, **kw)


def keras_cache_file(backbone: str, image_size: int, alpha: float = 1.0) -> Path:
    """Where Keras looks for the no-top ImageNet weights of ``backbone`` ($KERAS_HOME/models)."""
    from keras.src.backend import config as keras_config   # where keras.utils.get_file looks
    home = Path(keras_config.keras_home())
    if backbone == "mobilenetv2":
        rows = image_size if image_size in (96, 128, 160, 192, 224) else 224
        name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
    elif backbone == "efficientnetb0":
        name = "efficientnetb0_notop.h5"
    else:
        name = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    return home / "models" / name


def resolve_weights(weights: str, backbone: str, image_size: int, alpha: float = 1.0,
                    allow_download: bool | None = None) -> tuple[str | None, str]:
    """Turn the ``weights`` parameter into what the Keras constructor takes, and a description.

    ``imagenet`` | a path to a weights file | ``fracatlas`` | ``none`` | ``auto`` (ImageNet when in
    the Keras cache or downloadable now, else the in-domain FracAtlas backbone).
    ``allow_download`` defaults to False when $FRACTURELIB_OFFLINE is set.
    """
    if allow_download is None:
        allow_download = not os.environ.get("FRACTURELIB_OFFLINE")
    w = str(weights).strip()
    if w.lower() in ("none", "", "random", "scratch"):
        return None, "none (random initialisation)"
    if w.lower() == "fracatlas":
        fb = FRACATLAS_BACKBONE
        if backbone != fb["backbone"] or float(alpha) != fb["alpha"]:
            raise ValueError(f"the in-domain FracAtlas backbone is a {fb['backbone']} with alpha "
                             f"{fb['alpha']}; use backbone='{fb['backbone']}', alpha={fb['alpha']}")
        p = ASSETS / fb["file"]
        if not p.exists():
            raise WeightsUnavailable(f"{p} is missing; rebuild it with scripts/pretrain_fracatlas.py")
        return str(p), f"fracatlas (in-domain, {fb['file']})"
    if w.lower() == "imagenet":
        return "imagenet", "imagenet"
    if w.lower() == "auto":
        cached = keras_cache_file(backbone, image_size, alpha)
        if cached.exists():
            return "imagenet", f"imagenet (auto: found {cached.name} in the Keras cache)"
        if allow_download:
            try:
                _build_base(backbone, image_size, "imagenet", alpha, timeout=15)
                return "imagenet", "imagenet (auto: downloaded)"
            except WeightsUnavailable:
                pass
        if backbone == FRACATLAS_BACKBONE["backbone"] and float(alpha) == FRACATLAS_BACKBONE["alpha"]:
            path, _ = resolve_weights("fracatlas", backbone, image_size, alpha)
            return path, "fracatlas (auto: ImageNet weights not cached and not downloadable)"
        return None, "none (auto: ImageNet unavailable and no in-domain backbone for this architecture)"
    p = Path(w).expanduser()
    if p.exists():
        return str(p), f"file {p.name}"
    raise ValueError(f"weights={weights!r}: not 'imagenet', 'fracatlas', 'none', 'auto' or an existing "
                     "weights file")


def _build_base(backbone: str, image_size: int, weights, alpha: float = 1.0, timeout: float | None = None):
    keras = _keras()
    spec = BACKBONES[backbone]
    ctor = getattr(keras.applications, spec.constructor)
    kw = {"include_top": False, "weights": weights, "input_shape": (image_size, image_size, 3),
          "name": "backbone"}
    if backbone == "mobilenetv2":
        kw["alpha"] = alpha
    old = socket.getdefaulttimeout()
    if timeout:
        socket.setdefaulttimeout(timeout)
    try:
        return ctor(**kw)
    except Exception as e:  # noqa: BLE001 - Keras raises a plain Exception ("URL fetch failure")
        if weights != "imagenet":
            raise
        target = keras_cache_file(backbone, image_size, alpha)
        raise WeightsUnavailable(
            f"ImageNet weights for {backbone} could not be downloaded ({str(e).splitlines()[0][:120]}). "
            f"Offline? Copy the file {target.name} (from keras-applications' release on a "
            f"connected machine) to {target.parent}/, or pass weights=<path to a weights file>, "
            "or use weights='fracatlas' (in-domain, offline) or 'none'.") from e
    finally:
        if timeout:
            socket.setdefaulttimeout(old)


def build_transfer_model(num_classes: int, backbone: str = "mobilenetv2", image_size: int = 160,
                         channels: int = 3, weights: str = "auto", alpha: float = 1.0,
                         dropout: float = 0.3):
    """``Input -> PreprocessInput -> backbone (nested, frozen, BatchNorm in inference mode)
    -> GlobalAveragePooling -> Dropout -> Dense(softmax)``. Returns (model, weights description)."""
    keras = _keras()
    from keras import layers
    if backbone not in BACKBONES:
        raise ValueError(f"backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
    w, desc = resolve_weights(weights, backbone, image_size, alpha)
    base = _build_base(backbone, image_size, w, alpha)
    base.trainable = False
    inp = keras.Input((image_size, image_size, channels), name="image")
    x = preprocess_layer(backbone, name="preprocess")(inp)
    x = base(x, training=False)       # BatchNorm stays in inference mode, also when fine-tuned
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    out = layers.Dense(num_classes, activation="softmax", name="classes")(x)
    return keras.Model(inp, out, name=f"{backbone}_transfer"), desc


def head_model(model):
    """The part after the backbone as its own model (pool -> dropout -> dense), so phase 1 can
    train on cached backbone features."""
    keras = _keras()
    from .explain.gradcam import layer_output
    inp = keras.Input(layer_output(model, model.get_layer("backbone")).shape[1:])
    x = inp
    for name in ("pool", "dropout", "classes"):
        x = model.get_layer(name)(x)
    return keras.Model(inp, x, name="head")


def features_model(model):
    """Image -> backbone feature map (for caching features once)."""
    keras = _keras()
    from .explain.gradcam import layer_output
    return keras.Model(model.inputs, layer_output(model, model.get_layer("backbone")))


def unfreeze_top(model, n_layers: int) -> int:
    """Make the top ``n_layers`` of the backbone trainable, BatchNorm layers excepted (they stay
    frozen and, being called with training=False, in inference mode). Returns trainable count."""
    keras = _keras()
    base = model.get_layer("backbone")
    base.trainable = True
    for layer in base.layers[:-n_layers] if n_layers > 0 else base.layers:
        layer.trainable = False
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def two_phase(model, train_rows, val_rows, classes, image_size: int, channels: int = 3,
              phase1_epochs: int = 40, phase2_epochs: int = 10, fine_tune_layers: int = 30,
              lr_head: float = 1e-3, lr_fine: float = 1e-4, batch_size: int = 32,
              class_weight: dict | None = None, patience: int = 6, checkpoint=None,
              seed: int = config.SEED, verbose: int = 2) -> dict:
    """Phase 1: backbone frozen, its features computed once (no augmentation) and the head trained
    on them. Phase 2 (``phase2_epochs`` > 0): the top ``fine_tune_layers`` of the backbone
    unfrozen (BatchNorm frozen, inference mode) and trained end to end on augmented images at
    ``lr_fine``. Early stopping on validation accuracy, best weights restored.
    Returns timings, images/s and the histories."""
    import time

    import keras

    from .data.pipeline import labels_for, make_dataset
    stop = lambda: keras.callbacks.EarlyStopping("val_accuracy", mode="max", patience=patience,  # noqa: E731
                                                 restore_best_weights=True)
    y_tr, y_va = labels_for(train_rows, classes), labels_for(val_rows, classes)
    feats = features_model(model)
    t = time.perf_counter()
    f_tr = feats.predict(make_dataset(train_rows, classes, image_size, channels, batch_size,
                                      with_labels=False, cache=False), verbose=0)
    f_va = feats.predict(make_dataset(val_rows, classes, image_size, channels, batch_size,
                                      with_labels=False, cache=False), verbose=0)
    t_feat = time.perf_counter() - t
    head = head_model(model)
    head.compile(keras.optimizers.Adam(lr_head), "sparse_categorical_crossentropy", metrics=["accuracy"])
    t = time.perf_counter()
    h1 = head.fit(f_tr, y_tr, validation_data=(f_va, y_va), epochs=phase1_epochs,
                  batch_size=batch_size, class_weight=class_weight, callbacks=[stop()],
                  verbose=0, shuffle=True)
    t_head = time.perf_counter() - t
    out = {"features_seconds": t_feat, "features_img_per_s": (len(f_tr) + len(f_va)) / t_feat,
           "head_seconds": t_head, "phase1_history": h1.history,
           "phase1_best_val_accuracy": float(max(h1.history["val_accuracy"]))}
    if phase2_epochs > 0:
        before = model.get_weights()
        out["trainable_params"] = unfreeze_top(model, fine_tune_layers)
        model.compile(keras.optimizers.Adam(lr_fine), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        cbs = [stop()]
        if checkpoint:
            Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
            cbs.append(keras.callbacks.ModelCheckpoint(str(checkpoint), "val_accuracy", mode="max",
                                                       save_best_only=True))
        tr = make_dataset(train_rows, classes, image_size, channels, batch_size, training=True, seed=seed)
        va = make_dataset(val_rows, classes, image_size, channels, batch_size)
        t = time.perf_counter()
        h2 = model.fit(tr, validation_data=va, epochs=phase2_epochs, class_weight=class_weight,
                       callbacks=cbs, verbose=verbose)
        out["phase2_seconds"] = time.perf_counter() - t
        out["phase2_img_per_s"] = len(train_rows) * len(h2.history["loss"]) / out["phase2_seconds"]
        out["phase2_history"] = h2.history
        out["phase2_best_val_accuracy"] = float(max(h2.history["val_accuracy"]))
        out["phase2_kept"] = out["phase2_best_val_accuracy"] >= out["phase1_best_val_accuracy"]
        if not out["phase2_kept"]:        # fine-tuning did not help on validation: undo it
            model.set_weights(before)
    return out


def predict_proba(model, rows, classes, image_size: int, channels: int = 3, batch_size: int = 32):
    from .data.pipeline import make_dataset
    from .train import predict
    return predict(model, make_dataset(rows, classes, image_size, channels, batch_size,
                                       with_labels=False, cache=False))
