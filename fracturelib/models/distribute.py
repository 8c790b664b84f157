"""Training on more than one device or machine: one ``tf.distribute`` strategy, chosen by name.

Notebooks 02 and 03 build and compile their models inside ``strategy.scope()`` and multiply the
batch size by the number of replicas, so that each replica still sees ``batch_size`` images:

* ``none``        the default strategy (one device);
* ``mirrored``    synchronous data parallelism over this machine's GPUs (or its logical CPUs);
* ``multiworker`` the same across machines; each worker runs the notebook with its ``TF_CONFIG``
  (cluster addresses and this worker's index, see README);
* ``auto``        ``multiworker`` when ``TF_CONFIG`` names a cluster, ``mirrored`` with two or more
  GPUs, else ``none``.
"""
from __future__ import annotations

import json
import os

STRATEGIES = ("auto", "mirrored", "multiworker", "none")


def _cluster_size() -> int:
    try:
        spec = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except ValueError:
        raise ValueError("TF_CONFIG is not valid JSON; see README (Multi-device training)") from None
    return sum(len(v) for v in spec.values())


def resolve(name: str) -> str:
    """The strategy ``auto`` stands for on this machine (other names unchanged).

    Args:
        name: one of :data:`STRATEGIES`.

    Returns:
        ``"multiworker"``, ``"mirrored"`` or ``"none"`` (or ``name`` itself when not ``auto``).

    Raises:
        ValueError: if ``name`` is not a known strategy, or ``TF_CONFIG`` is not valid JSON.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    if name != "auto":
        return name
    import tensorflow as tf
    if _cluster_size() > 1:
        return "multiworker"
    return "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "none"


def make_strategy(name: str = "auto"):
    """The ``tf.distribute.Strategy`` for ``name`` (see the module docstring).

    Args:
        name: one of :data:`STRATEGIES`.

    Returns:
        The default strategy, a ``MirroredStrategy`` over the GPUs (else the logical CPUs), or a
        ``MultiWorkerMirroredStrategy``.

    Raises:
        ValueError: for an unknown name, or ``multiworker`` without a cluster in ``TF_CONFIG``.
    """
    import tensorflow as tf
    kind = resolve(name)
    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "multiworker":
        if _cluster_size() < 1:
            raise ValueError("strategy 'multiworker' needs TF_CONFIG with the cluster's workers; "
                             "see README (Multi-device training)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices=devices)


def global_batch(batch_size: int, strategy) -> int:
    """The batch all replicas share: ``batch_size`` images for each.

    Args:
        batch_size: images per replica.
        strategy: a ``tf.distribute.Strategy``.

    Returns:
        ``batch_size`` times the number of replicas in sync.
    """
    return int(batch_size) * int(strategy.num_replicas_in_sync)


def describe(strategy) -> str:
    """"MirroredStrategy: 2 replica(s) on /job:localhost/.../CPU:0, ..." for the notebook.

    Args:
        strategy: a ``tf.distribute.Strategy``.

    Returns:
        One line: the strategy's class, replica count and devices.
    """
    try:
        devices = ", ".join(strategy.extended.worker_devices)
    except RuntimeError:                  # the default strategy has no device list
        devices = "the default device"
    return f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replica(s) on {devices}"


def is_multiworker(model) -> bool:
    """Whether ``model`` was built under a ``MultiWorkerMirroredStrategy`` (so :func:`fit_multiworker` must train it).

    Args:
        model: a Keras model.

    Returns:
        True if its ``distribute_strategy`` is a ``MultiWorkerMirroredStrategy``.
    """
    import tensorflow as tf
    return isinstance(getattr(model, "distribute_strategy", None),
                      tf.distribute.MultiWorkerMirroredStrategy)


def is_chief() -> bool:
    """Worker 0 (or no cluster) writes checkpoints and reports.

    Returns:
        True on the chief, on worker 0, or when ``TF_CONFIG`` is absent or unreadable.
    """
    try:
        task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    except ValueError:
        return True
    return task.get("type", "worker") in ("worker", "chief") and int(task.get("index", 0)) == 0


class History:
    """What ``model.fit`` returns, as far as our notebooks read it."""

    def __init__(self):
        self.history: dict[str, list] = {}
        self.epoch_times: list[float] = []


def fit_multiworker(model, train_ds, val_ds, epochs: int, class_weight: dict | None = None,
                    monitor: str = "val_auc", patience: int = 5, checkpoint=None) -> History:
    """Synchronous training across workers with a custom loop: Keras 3's ``fit`` cannot run under
    ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585: it reduces scalar metrics along an
    axis they do not have). The model's compiled optimizer and loss are used; each worker scores
    the whole validation set with the same weights, so all take the same early-stopping decision;
    the best weights are restored; only the chief writes ``checkpoint``.

    Args:
        model: a compiled model built in the strategy's scope.
        train_ds, val_ds: batched ``(image, label)`` datasets.
        epochs: maximum number of epochs.
        class_weight: class index -> loss weight, or None.
        monitor: ``"val_auc"`` (binary ROC-AUC) or anything else for validation accuracy.
        patience: epochs without improvement before stopping.
        checkpoint: file the chief saves the best model to, or None.

    Returns:
        A :class:`History` with ``history["loss"]``, ``history[monitor]`` and ``epoch_times`` (seconds).
    """
    import time

    import keras
    import numpy as np
    import tensorflow as tf
    from sklearn.metrics import roc_auc_score

    strategy = model.distribute_strategy
    loss_fn = keras.losses.get(model.loss) if isinstance(model.loss, str) else model.loss
    weights = tf.constant([class_weight.get(i, 1.0) for i in range(max(class_weight) + 1)]
                          if class_weight else [1.0], tf.float32)
    dist = strategy.experimental_distribute_dataset(train_ds)

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            p = model(x, training=True)
            target = tf.reshape(tf.cast(y, p.dtype), [-1, 1]) if p.shape[-1] == 1 else y
            per_example = loss_fn(target, p)
            if class_weight:
                per_example *= tf.gather(weights, tf.cast(tf.reshape(y, [-1]), tf.int32))
            loss = tf.nn.compute_average_loss(per_example)
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def step(x, y):
        return strategy.reduce("SUM", strategy.run(replica_step, args=(x, y)), axis=None)

    def score() -> float:
        ys, ps = [], []
        for x, y in val_ds:
            ys.append(y.numpy())
            ps.append(model(x, training=False).numpy())
        y, p = np.concatenate(ys), np.concatenate(ps)
        if monitor == "val_auc":
            return float(roc_auc_score(y, p.ravel()))
        return float(np.mean(p.argmax(axis=1) == y.ravel()))

    h, best, best_weights, waited = History(), -np.inf, None, 0
    for _ in range(epochs):
        t0, losses = time.perf_counter(), []
        for x, y in dist:
            losses.append(float(step(x, y)))
        h.epoch_times.append(time.perf_counter() - t0)
        h.history.setdefault("loss", []).append(float(np.mean(losses)))
        s = score()
        h.history.setdefault(monitor, []).append(s)
        if s > best:
            best, best_weights, waited = s, model.get_weights(), 0
            if checkpoint and is_chief():
                model.save(checkpoint)
        else:
            waited += 1
            if waited >= patience:
                break
    if best_weights is not None:
        model.set_weights(best_weights)
    return h
