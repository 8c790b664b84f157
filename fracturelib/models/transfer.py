"""Transfer learning on a registered backbone (:mod:`fracturelib.models.backbones`): the model shape
(preprocessing layer, nested frozen backbone, pooled head) and the two-phase recipe (cached frozen
features for the head, then fine-tuning the top of the backbone)."""
from __future__ import annotations

import numpy as np

from fracturelib import config
from fracturelib.models import backbones
from fracturelib.models.backbones import (  # noqa: F401 - re-exported for callers of the old transfer API
    FRACATLAS_BACKBONE,
    WeightsUnavailable,
    custom_objects,
    preprocess_layer,
)
from fracturelib.models.kerasutil import layer_output
from fracturelib.progress import keras_verbose


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


def _task(model, classes):
    """Loss, metric and monitored quantity: binary (one sigmoid unit) or multiclass."""
    import keras
    if model.output.shape[-1] == 1:
        return "binary_crossentropy", [keras.metrics.AUC(name="auc")], "val_auc"
    return "sparse_categorical_crossentropy", ["accuracy"], "val_accuracy"


def _arrays(x, y, batch_size: int, seed: int | None = None):
    """Cached features as a batched dataset, reshuffled each epoch when ``seed`` is given."""
    import tensorflow as tf
    ds = tf.data.Dataset.from_tensor_slices((x.astype("float32"), y))
    if seed is not None:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size)


def two_phase(model, train_rows, val_rows, classes, image_size: int, channels: int = 3,
              phase1_epochs: int = 40, phase2_epochs: int = 10, fine_tune_layers: int | str = 30,
              lr_head: float = 1e-3, lr_fine: float = 1e-4, batch_size: int = 32,
              class_weight: dict | None = None, patience: int = 6, checkpoint=None,
              seed: int = config.SEED, verbose: int = 2, flip_features: bool = True,
              logs=None) -> dict:
    """Two phases, binary (one sigmoid unit, monitored by validation AUC) or multiclass
    (validation accuracy).

    Phase 1: backbone frozen, its features computed once and the head trained on them; with
    ``flip_features`` the features of the mirrored training images are added (fracture types and
    fractured/not do not depend on the side: +1-2 points of grouped-CV accuracy on Bone Break).
    Phase 2 (``phase2_epochs`` > 0): the top of the backbone (``fine_tune_layers``, see
    :func:`unfreeze_top`) trained end to end on augmented images at ``lr_fine`` with a cosine
    decay; BatchNorm frozen in inference mode. Early stopping with the best weights restored;
    phase 2 is undone when it does not beat phase 1 on validation. ``logs``: a folder for the
    TensorBoard logs of both phases (``head/``, ``fine_tune/``).

    Args:
        model: a transfer model from :func:`build_transfer_model` (changed in place).
        train_rows, val_rows: manifest slices (``path``, ``label``) to train on and validate with.
        classes: class names in label order.
        image_size, channels: the model input.
        phase1_epochs, phase2_epochs: maximum epochs of each phase (0 skips phase 2).
        fine_tune_layers: what to unfreeze in phase 2 (see :func:`unfreeze_top`).
        lr_head, lr_fine: learning rates of phase 1 and (initial, cosine-decayed) phase 2.
        batch_size: images per batch.
        class_weight: class index -> loss weight, or None.
        patience: early-stopping patience in epochs.
        checkpoint: file to save phase 2's best epoch to, or None.
        seed: seed of shuffling and augmentation.
        verbose: Keras verbosity of phase 2 (phase 1 is silent).
        flip_features: add the features of mirrored training images in phase 1.
        logs: TensorBoard log folder, or None.

    Returns:
        Timings, images/s, the histories, the best validation scores of both phases and the
        pooled frozen features of train and val (for a linear probe).
    """
    import time

    import keras

    from fracturelib.data.pipeline import labels_for, make_dataset
    from fracturelib.models.train import fit
    loss, metrics, monitor = _task(model, classes)
    y_tr, y_va = labels_for(train_rows, classes), labels_for(val_rows, classes)
    feats = features_model(model)
    t = time.perf_counter()
    tr_images = make_dataset(train_rows, classes, image_size, channels, batch_size, with_labels=False, cache=False)
    f_tr = feats.predict(tr_images, verbose=keras_verbose()).mean(axis=(1, 2))
    f_va = feats.predict(make_dataset(val_rows, classes, image_size, channels, batch_size,
                                      with_labels=False, cache=False), verbose=keras_verbose()).mean(axis=(1, 2))
    t_feat = time.perf_counter() - t
    pooled = {"train": f_tr, "val": f_va}
    if flip_features:    # mirrored copies of the training images: a label-preserving augmentation
        f_tr = np.concatenate([f_tr, feats.predict(tr_images.map(mirror), verbose=keras_verbose()).mean(axis=(1, 2))])
        y_tr = np.concatenate([y_tr, y_tr])
    head = head_model(model)
    head.compile(keras.optimizers.Adam(lr_head), loss, metrics=metrics)
    t = time.perf_counter()
    h1 = fit(head, _arrays(f_tr, y_tr, batch_size, seed), _arrays(f_va, y_va, batch_size),
             phase1_epochs, class_weight=class_weight, monitor=monitor, patience=patience, verbose=0,
             logs=logs and f"{logs}/head")
    t_head = time.perf_counter() - t
    out = {"monitor": monitor, "features_seconds": t_feat,
           "features_img_per_s": (len(f_tr) + len(f_va)) / t_feat,
           "head_seconds": t_head, "phase1_history": h1.history,
           "phase1_best": float(max(h1.history[monitor])),
           "pooled": pooled}
    if phase2_epochs > 0:
        before = model.get_weights()
        out["trainable_params"] = unfreeze_top(model, fine_tune_layers)
        tr = make_dataset(train_rows, classes, image_size, channels, batch_size, training=True, seed=seed)
        va = make_dataset(val_rows, classes, image_size, channels, batch_size)
        steps = phase2_epochs * -(-len(train_rows) // batch_size)
        schedule = keras.optimizers.schedules.CosineDecay(lr_fine, steps)
        model.compile(keras.optimizers.Adam(schedule), loss, metrics=metrics)
        t = time.perf_counter()
        h2 = fit(model, tr, va, phase2_epochs, checkpoint, class_weight, monitor, patience, verbose,
                 logs=logs and f"{logs}/fine_tune")
        out["phase2_seconds"] = time.perf_counter() - t
        out["phase2_img_per_s"] = len(train_rows) * len(h2.history["loss"]) / out["phase2_seconds"]
        out["phase2_history"] = h2.history
        out["phase2_best"] = float(max(h2.history[monitor]))
        out["phase2_kept"] = out["phase2_best"] > out["phase1_best"]
        if not out["phase2_kept"]:        # fine-tuning did not help on validation: undo it
            model.set_weights(before)
    return out


def predict_proba(model, rows, classes, image_size: int, channels: int = 3, batch_size: int = 32,
                  tta_flip: bool = False):
    """Model scores for every row of a manifest slice; with ``tta_flip`` the mean of the scores
    of each image and its mirror image (test-time augmentation).

    Args:
        model: a trained classifier.
        rows: manifest slice of images to score.
        classes: class names in label order.
        image_size, channels: the model input.
        batch_size: images per batch.
        tta_flip: average with the scores of the left-right mirrored images.

    Returns:
        Array of shape (N,) (positive-class probability, binary) or (N, K) class probabilities.
    """
    from fracturelib.data.pipeline import make_dataset
    from fracturelib.models.train import predict
    ds = make_dataset(rows, classes, image_size, channels, batch_size, with_labels=False, cache=False)
    p = predict(model, ds)
    return (p + predict(model, ds.map(mirror))) / 2 if tta_flip else p


def pooled_features(model, rows, image_size: int, channels: int = 3, batch_size: int = 32) -> np.ndarray:
    """Frozen backbone features, globally average-pooled: one vector per row (no augmentation).

    Args:
        model: a transfer model.
        rows: manifest slice of images.
        image_size, channels: the model input.
        batch_size: images per batch.

    Returns:
        float32 array of shape (N, C), C the backbone's channel count ((0, C) for no rows).
    """
    from fracturelib.data.pipeline import make_dataset
    fm = features_model(model)
    ds = make_dataset(rows, None, image_size, channels, batch_size, with_labels=False, cache=False)
    if not len(rows):
        return np.zeros((0, fm.output.shape[-1]), "float32")
    return fm.predict(ds, verbose=keras_verbose()).mean(axis=(1, 2))


def linear_probe(train_features, train_labels, C: float = 0.03, class_weight: str | None = "balanced"):
    """The floor every fine-tuned model must beat: standardised logistic regression on frozen
    pooled features (scikit-learn). ``C`` was chosen by 5-fold grouped cross-validation on Bone
    Break Train (0.01-0.3 within noise), never on Test.

    Args:
        train_features: pooled features, shape (N, C).
        train_labels: integer class labels, length N.
        C: inverse regularisation strength of the logistic regression.
        class_weight: ``"balanced"`` or None, passed to scikit-learn.

    Returns:
        The fitted scikit-learn pipeline (``StandardScaler`` -> ``LogisticRegression``).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000, class_weight=class_weight))
    return clf.fit(train_features, train_labels)


def test_scores(model, test_rows, classes, image_size: int, channels: int = 3, batch_size: int = 32,
                tta_flip: bool = False):
    """Integer labels, class probabilities and the honest mask (no copy in Train) of a Test part.

    Args:
        model: a trained classifier.
        test_rows: the Test manifest slice, with ``label`` and ``leak`` columns.
        classes: class names in label order.
        image_size, channels: the model input.
        batch_size: images per batch.
        tta_flip: average with the scores of mirrored images.

    Returns:
        ``(y, proba, honest)``: labels (N,), scores as :func:`predict_proba`, and a boolean mask (N,)
        that is True where the image has no copy in Train.
    """
    proba = predict_proba(model, test_rows, classes, image_size, channels, batch_size, tta_flip)
    y = np.array([list(classes).index(c) for c in test_rows["label"]])
    return y, proba, ~test_rows["leak"].to_numpy(bool)


def choose_tta_flip(model, val_rows, classes, image_size: int, channels: int = 3, batch_size: int = 32) -> dict:
    """Decide test-time flip averaging on validation (never on Test): kept only when it raises
    validation accuracy. Returns both accuracies and the decision.

    Args:
        model: a trained multiclass classifier.
        val_rows: the validation manifest slice, with a ``label`` column.
        classes: class names in label order.
        image_size, channels: the model input.
        batch_size: images per batch.

    Returns:
        Dict: ``val_accuracy`` and ``val_accuracy_flip`` (floats), and ``tta_flip`` (bool).
    """
    y = np.array([list(classes).index(c) for c in val_rows["label"]])
    acc = {}
    for flip in (False, True):
        p = predict_proba(model, val_rows, classes, image_size, channels, batch_size, flip)
        acc[flip] = float((p.argmax(1) == y).mean())
    return {"val_accuracy": acc[False], "val_accuracy_flip": acc[True], "tta_flip": acc[True] > acc[False]}


def compare_backbones(configs: str, parts: dict, classes, image_size: int, channels: int = 3,
                      phase1_epochs: int = 40, lr_head: float = 1e-3, batch_size: int = 32,
                      class_weight: dict | None = None, patience: int = 6, seed: int = config.SEED):
    """Phase 1 only (frozen backbone) for each ``"backbone:weights"`` in a comma-separated
    ``configs`` string, on the same split, plus a linear-probe row for each: honest and all-Test
    accuracy. A configuration whose weights cannot be had is a row with the reason.

    Args:
        configs: e.g. ``"efficientnet_lite0:imagenet,mobilenet_v2:none"`` (weights default ``imagenet``).
        parts: ``{"train": rows, "val": rows, "test": rows}`` manifest slices.
        classes: class names in label order.
        image_size, channels: the model input.
        phase1_epochs, lr_head, batch_size, class_weight, patience, seed: as for :func:`two_phase`.

    Returns:
        A pandas DataFrame, one row per (configuration, classifier).
    """
    import time

    import pandas as pd

    from fracturelib.data.pipeline import labels_for
    from fracturelib.metrics import evaluate
    rows = []
    for item in [c.strip() for c in configs.split(",") if c.strip()]:
        bb, w = (item.split(":") + ["imagenet"])[:2]
        alpha = FRACATLAS_BACKBONE["alpha"] if w == "fracatlas" else 1.0
        try:
            m, desc = build_transfer_model(len(classes), bb, image_size, channels, w, alpha=alpha)
        except (WeightsUnavailable, ValueError, ImportError) as e:
            rows.append({"backbone": bb, "weights": w, "classifier": "-", "note": str(e)[:160]})
            continue
        t = time.perf_counter()
        r = two_phase(m, parts["train"], parts["val"], classes, image_size, channels, phase1_epochs, 0,
                      lr_head=lr_head, batch_size=batch_size, class_weight=class_weight,
                      patience=patience, seed=seed, verbose=0)
        yt, pt, keep = test_scores(m, parts["test"], classes, image_size, channels, batch_size)
        t_head = time.perf_counter() - t
        t = time.perf_counter()
        probe = linear_probe(r["pooled"]["train"], labels_for(parts["train"], classes))
        pp = probe.predict_proba(pooled_features(m, parts["test"], image_size, channels, batch_size))
        t_probe = time.perf_counter() - t
        for name, p, secs in (("linear probe (logistic regression)", pp, t_probe),
                              ("Keras head, phase 1", pt, t_head)):
            h, a = evaluate.multiclass_metrics(yt[keep], p[keep]), evaluate.multiclass_metrics(yt, p)
            rows.append({"backbone": backbone_of(m),
                         "weights": desc, "classifier": name,
                         "honest acc": round(h["accuracy"], 3), "honest macro-F1": round(h["macro_f1"], 3),
                         "all-test acc": round(a["accuracy"], 3),
                         "features img/s": round(r["features_img_per_s"], 1), "seconds": round(secs, 1)})
    return pd.DataFrame(rows)
