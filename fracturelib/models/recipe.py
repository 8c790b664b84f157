"""The two-phase transfer recipe: the head trained on cached frozen features, then the top of the
backbone fine-tuned (kept only when validation says it helps); the linear-probe floor."""
from __future__ import annotations

import numpy as np

from fracturelib import config
from fracturelib.models import feature_cache
from fracturelib.models.transfer import features_model, head_model, unfreeze_top


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
        pooled frozen features of train and val (for a linear probe). The frozen features come
        from :mod:`fracturelib.models.feature_cache`: ``features_cached`` says every one of them
        was there already (the same weights on the same images); ``features_img_per_s`` counts only
        the images the backbone ran on here (NaN when none).
    """
    import time

    import keras

    from fracturelib.data.pipeline import labels_for, make_dataset
    from fracturelib.models.train import fit
    loss, metrics, monitor = _task(model, classes)
    y_tr, y_va = labels_for(train_rows, classes), labels_for(val_rows, classes)
    feats = features_model(model)
    t = time.perf_counter()
    digest = feature_cache.model_digest(feats)
    f_tr, hit_tr = feature_cache.pooled(feats, train_rows, image_size, channels, batch_size, digest=digest)
    f_va, hit_va = feature_cache.pooled(feats, val_rows, image_size, channels, batch_size, digest=digest)
    pooled = {"train": f_tr, "val": f_va}
    computed = len(f_tr) * (not hit_tr) + len(f_va) * (not hit_va)     # images the backbone ran on here
    if flip_features:    # mirrored copies of the training images: a label-preserving augmentation
        f_mi, hit_mi = feature_cache.pooled(feats, train_rows, image_size, channels, batch_size, True, digest)
        f_tr, y_tr = np.concatenate([f_tr, f_mi]), np.concatenate([y_tr, y_tr])
        computed += len(f_mi) * (not hit_mi)
    t_feat = time.perf_counter() - t
    head = head_model(model)
    head.compile(keras.optimizers.Adam(lr_head), loss, metrics=metrics)
    t = time.perf_counter()
    h1 = fit(head, _arrays(f_tr, y_tr, batch_size, seed), _arrays(f_va, y_va, batch_size),
             phase1_epochs, class_weight=class_weight, monitor=monitor, patience=patience, verbose=0,
             logs=logs and f"{logs}/head")
    t_head = time.perf_counter() - t
    out = {"monitor": monitor, "features_seconds": t_feat, "features_cached": computed == 0,
           "features_img_per_s": computed / t_feat if computed else float("nan"),
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


def describe(res: dict) -> str:
    """What :func:`two_phase` did, in one line per phase (as notebook 03 prints it).

    Args:
        res: the dictionary :func:`two_phase` returned.

    Returns:
        "phase 1: ..." (features: speed, or reused from the cache; head seconds; best validation score)
        and, after fine-tuning, "phase 2: ..." (seconds, speed, best score, kept or undone).
    """
    score = {"val_accuracy": "val acc", "val_auc": "val AUC"}.get(res["monitor"], res["monitor"])
    feats = ("frozen features reused from earlier in this session" if res["features_cached"]
             else f"features at {res['features_img_per_s']:.0f} img/s")
    lines = [f"phase 1: {feats}, head {res['head_seconds']:.0f} s; best {score} {res['phase1_best']:.3f}"]
    if "phase2_seconds" in res:
        lines.append(f"phase 2: {res['phase2_seconds']:.0f} s at {res['phase2_img_per_s']:.1f} training img/s; best "
                     f"{score} {res['phase2_best']:.3f} -> "
                     f"{'kept' if res['phase2_kept'] else 'undone (no gain on validation)'}")
    return "\n".join(lines)


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
