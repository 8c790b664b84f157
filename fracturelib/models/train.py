"""Training: seeds, class weights, early stopping on validation AUC, best checkpoint kept."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Same seed -> same split, same initial weights, same augmentation; on CPU, same metrics.

    Args:
        seed: seed for Python, NumPy and TensorFlow (``keras.utils.set_random_seed``).
        deterministic: also enable TensorFlow's deterministic ops (slower, reproducible).
    """
    import keras
    import tensorflow as tf
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def class_weights(labels, classes) -> dict[int, float]:
    """Balanced class weights (n_samples / (n_classes * n_c)) keyed by class index.

    Args:
        labels: class names, one per image.
        classes: class names in label order (the index of each is its key).

    Returns:
        Dict class index -> weight, for the classes present in ``labels`` only.
    """
    from sklearn.utils.class_weight import compute_class_weight
    idx = {c: i for i, c in enumerate(classes)}
    y = np.array([idx[v] for v in labels])
    present = np.unique(y)
    w = compute_class_weight("balanced", classes=present, y=y)
    return {int(k): float(v) for k, v in zip(present, w)}


class _Timer:
    def __init__(self):
        import keras

        class T(keras.callbacks.Callback):
            def on_train_begin(s, logs=None):
                s.t0, s.epoch_times = time.perf_counter(), []

            def on_epoch_begin(s, epoch, logs=None):
                s.te = time.perf_counter()

            def on_epoch_end(s, epoch, logs=None):
                s.epoch_times.append(time.perf_counter() - s.te)
        self.cb = T()


def callbacks(monitor: str, patience: int, checkpoint: str | Path | None = None,
              logs: str | Path | None = None) -> list:
    """Early stopping on ``monitor`` (mode max, best weights restored); when ``checkpoint`` is
    given, the best epoch saved there; when ``logs`` is given, TensorBoard logs written there
    (``make tensorboard`` shows them): the one setup every training loop here uses.

    Args:
        monitor: the logged quantity to maximise, e.g. ``"val_auc"``.
        patience: epochs without improvement before stopping.
        checkpoint: model file for the best epoch (its folder is created), or None.
        logs: TensorBoard log folder, or None.

    Returns:
        List of Keras callbacks: ``EarlyStopping``, then ``TensorBoard`` and ``ModelCheckpoint`` if asked for.
    """
    import keras
    cbs = [keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=patience,
                                         restore_best_weights=True)]
    if logs:
        cbs.append(keras.callbacks.TensorBoard(str(logs), profile_batch=0))
    if checkpoint:
        Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
        cbs.append(keras.callbacks.ModelCheckpoint(str(checkpoint), monitor=monitor, mode="max",
                                                   save_best_only=True, verbose=0))
    return cbs


def fit(model, train_ds, val_ds, epochs: int, checkpoint: str | Path | None = None,
        class_weight: dict | None = None, monitor: str = "val_auc", patience: int = 5,
        verbose: int = 2, logs: str | Path | None = None):
    """Train with early stopping on ``monitor`` (mode max) and the best weights restored.

    Returns the Keras History, with ``history.epoch_times`` (seconds per epoch) added. A model
    built under a multi-worker strategy is trained by :func:`distribute.fit_multiworker`.

    Args:
        model: a compiled Keras model.
        train_ds, val_ds: batched ``(image, label)`` datasets.
        epochs: maximum number of epochs.
        checkpoint: model file for the best epoch, or None.
        class_weight: class index -> loss weight, or None.
        monitor: the logged quantity to maximise.
        patience: epochs without improvement before stopping.
        verbose: Keras verbosity.
        logs: TensorBoard log folder, or None (ignored for multi-worker training).

    Returns:
        The Keras ``History`` (or :class:`distribute.History`) with ``epoch_times`` in seconds.
    """
    from fracturelib.models import distribute
    if distribute.is_multiworker(model):
        return distribute.fit_multiworker(model, train_ds, val_ds, epochs, class_weight, monitor,
                                          patience, checkpoint)

    timer = _Timer()
    h = model.fit(train_ds, validation_data=val_ds, epochs=epochs, class_weight=class_weight,
                  callbacks=[*callbacks(monitor, patience, checkpoint, logs), timer.cb], verbose=verbose)
    h.epoch_times = timer.cb.epoch_times
    return h


def _images_only(x, *_):
    # a named function: AutoGraph cannot read a lambda's source inside a notebook and warns
    return x


def predict(model, ds) -> np.ndarray:
    """Scores for every batch of ``ds`` (labels, if any, are ignored).

    Args:
        model: a Keras model.
        ds: a batched dataset of images or ``(image, label, ...)`` tuples.

    Returns:
        Array of shape (N,) for a one-unit (sigmoid) output, else the model's output (N, K).
    """
    out = model.predict(ds.map(_images_only), verbose=0)
    return out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out
