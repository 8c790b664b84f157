"""A fracture detector: CenterNet (Zhou et al. 2019, "Objects as Points") on any registered backbone.

Three heads on a small feature pyramid (the backbone's stride-8, 16 and 32 taps merged at stride 8):
a heatmap of box centres (sigmoid, CenterNet's penalty-reduced focal loss on Gaussian targets whose
radius follows the box size), the box size (w, h) and the sub-cell offset of the centre (both L1,
only at the centres; weights 0.1 and 1 as in the paper). Boxes are the 3x3 max-pool peaks of the
heatmap (no NMS), each with its heatmap value as score, in the image's own pixels.

Trained on **all** training images of a split: a non-fractured image has an empty heatmap (every
cell a negative), which is what makes the best box's score an image-level fracture score. The
backbone stays frozen and its features are computed once (mirrored copies of the fractured training
images added); the epoch is picked by validation mAP50 (COCO), test boxes are never read.
"""
from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass, field

import keras
import numpy as np

from fracturelib.models.box_decode import STRIDE, decode

SIZE_WEIGHT = 0.1      # CenterNet's lambda_size
OFFSET_WEIGHT = 1.0    # CenterNet's lambda_off


def build(image_size: int = 384, channels: int = 1, backbone: str = "efficientnet_lite0",
          weights: str = "imagenet", width: int = 32):
    """The detector ``image -> (heatmap, size, offset)`` at stride 8; Functional, explicit Input.

    Args:
        image_size: square input side (a multiple of 32).
        channels: 1 (grayscale radiographs, repeated to RGB inside) or 3.
        backbone: a registry name (its ``feature_taps`` give the three scales).
        weights: the backbone's weights (``imagenet`` offline, or ``none``).
        width: channels of the pyramid and of the heads.

    Returns:
        (detector, head): the detector outputs ``heatmap`` (sigmoid, S/8 x S/8 x 1), ``size`` (w, h in
        stride-8 cells, S/8 x S/8 x 2) and ``offset`` (x, y in cells); ``head`` maps the three
        backbone feature maps to (heatmap logits, size, offset) and is what :func:`train` fits.

    Raises:
        ValueError: if ``image_size`` is not a multiple of 32.
    """
    from keras import layers

    from fracturelib.models import backbones
    from fracturelib.models.localiser import feature_pyramid
    taps, (i8, i16, i32), x = feature_pyramid(image_size, backbone, weights, width)
    conv = lambda n, c=width, k=1, act=None, **kw: layers.Conv2D(c, k, padding="same", activation=act, name=n, **kw)  # noqa: E731
    prior = -math.log((1 - 0.1) / 0.1)                   # CenterNet's heatmap bias: start at 10% everywhere
    heat = conv("heat_logits", 1, bias_initializer=keras.initializers.Constant(prior))(
        conv("heat_conv", k=3, act="relu")(x))
    size = conv("size", 2)(conv("size_conv", width // 2, k=3, act="relu")(x))      # linear: a ReLU here can die
    offset = conv("offset", 2)(conv("offset_conv", width // 2, act="relu")(x))
    head = keras.Model([i8, i16, i32], [heat, size, offset], name="centernet_head")
    inp = keras.Input((image_size, image_size, channels), name="image")
    logits, wh, off = head(taps(backbones.preprocess_layer(backbone, name="preprocess")(inp), training=False))
    out = [layers.Activation("sigmoid", name="heatmap")(logits),
           layers.Identity(name="box_size")(wh), layers.Identity(name="box_offset")(off)]
    return keras.Model(inp, out, name="fracture_centernet"), head


PREPROCESSING = ("decode -> grayscale -> resize_with_pad -> [0,255]; stride-8 centre heatmap, box size and "
                 "offset out; boxes = 3x3 peaks")


def detector_card(image_size: int, channels: int, data: dict, result: TrainResult, scores, classifier_card=None):
    """The detector's card: its input, the split it was trained on, its box threshold and what that
    threshold means on validation, its test detection figures, and, when the fusion with the classifier
    beat the classifier on validation, that fusion (which ``predict`` then decides with, for that very
    classifier file only: its SHA-256 is kept).

    Args:
        image_size, channels: the detector's input.
        data: the classifier card's ``data`` (the split both use).
        result: :func:`fit_on_split`'s :class:`TrainResult`.
        scores: :class:`fracturelib.models.detector_scoring.DetectorScores` of the detector.
        classifier_card: the card of the classifier the scores were fused with (None: no fusion kept).

    Returns:
        A :class:`fracturelib.models.cards.ModelCard` of task ``detection``.
    """
    from fracturelib.models.cards import make_card
    fusion = ({"fusion": {**scores.fusion, "classifier": classifier_card.model_file,
                          "classifier_sha256": classifier_card.model_sha256}}
              if scores.fusion and classifier_card is not None else {})
    return make_card("detection", ["fracture"], image_size, channels, PREPROCESSING, data=data,
                     trained_on=f"{result.train_images} training images, fractured or not (best epoch "
                                f"{result.best_epoch} of {result.epochs} by validation mAP50)",
                     box_threshold=scores.box_threshold, box_operating_point=scores.operating_point,
                     test_metrics=scores.card_metrics(), **fusion)


def mirror_boxes(boxes, width: int) -> list[list[float]]:
    """An image's expert boxes ``[x, y, w, h]`` after a left-right flip of the image.

    Args:
        boxes: the boxes in the image's pixels.
        width: the image's width in pixels.

    Returns:
        The mirrored boxes, same order.
    """
    return [[width - x - bw, y, bw, bh] for x, y, bw, bh in boxes]


def heatmap_model(detector):
    """The detector's centre heatmap alone, a model ``image -> (N, S/8, S/8, 1)`` that
    :func:`fracturelib.models.localiser.heatmaps` maps to image pixels (scored like the localiser).

    Args:
        detector: the model :func:`build` returned.

    Returns:
        A Keras model sharing the detector's layers.
    """
    return keras.Model(detector.inputs, detector.get_layer("heatmap").output, name="detector_heatmap")


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's Gaussian radius (cells): how far a corner may move and keep IoU >= ``min_overlap``.

    Args:
        height, width: the box's size in heatmap cells.
        min_overlap: the IoU a box of this size, shifted by the radius, still reaches.

    Returns:
        The radius (the reference implementation's three-case formula), >= 0.
    """
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return max(0.0, min(r1, r2, r3))


def targets(boxes_per_image, sizes, image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CenterNet's targets from COCO boxes [x, y, w, h] in each image's own pixels, placed where
    ``resize_with_pad`` puts the image.

    Args:
        boxes_per_image: per image, a list of boxes ``[x, y, w, h]`` (empty for a non-fractured image).
        sizes: per image, its ``(width, height)`` in pixels.
        image_size: the model's square input side S.

    Returns:
        (heat (N, g, g, 1), size (N, g, g, 3), offset (N, g, g, 3)), g = S/8: the heatmap is 1 at each
        centre cell with a Gaussian of CenterNet's radius around it (overlaps take the maximum; all
        zero for an empty image); size holds (w, h) in cells and offset the centre's (x, y) fraction
        within its cell, their third channel the mask of centre cells (1 there, 0 elsewhere).
    """
    from fracturelib.data.geometry import letterbox
    g = image_size // STRIDE
    yy, xx = np.mgrid[0:g, 0:g]
    heat = np.zeros((len(sizes), g, g, 1), np.float32)
    size = np.zeros((len(sizes), g, g, 3), np.float32)
    off = np.zeros((len(sizes), g, g, 3), np.float32)
    for i, (boxes, (w, h)) in enumerate(zip(boxes_per_image, sizes)):
        left, top, rw, rh = letterbox(int(w), int(h), image_size)
        fx, fy = rw / w / STRIDE, rh / h / STRIDE          # per axis, as resize_with_pad scales
        for x, y, bw, bh in boxes:
            cx = min(g - 1e-3, left / STRIDE + (x + bw / 2) * fx)
            cy = min(g - 1e-3, top / STRIDE + (y + bh / 2) * fy)
            ix, iy = int(cx), int(cy)
            sigma = (2 * int(gaussian_radius(bh * fy, bw * fx)) + 1) / 6
            gauss = np.exp(-((xx - ix) ** 2 + (yy - iy) ** 2) / (2 * sigma * sigma))
            heat[i, :, :, 0] = np.maximum(heat[i, :, :, 0], gauss)
            size[i, iy, ix] = (bw * fx, bh * fy, 1.0)
            off[i, iy, ix] = (cx - ix, cy - iy, 1.0)
    return heat, size, off


@keras.saving.register_keras_serializable(package="fracturelib", name="masked_l1")
def masked_l1(y_true, y_pred):
    """L1 of the size or offset head at the centre cells only, per centre (CenterNet's L_size, L_off).

    Args:
        y_true: targets (N, g, g, 3): two values and the centre mask in the last channel.
        y_pred: predictions (N, g, g, 2).

    Returns:
        Scalar tensor: summed absolute error at the centres divided by the number of centres (>= 1).
    """
    from keras import ops
    mask = y_true[..., 2:3]
    return ops.sum(ops.abs(y_true[..., :2] - y_pred) * mask) / ops.maximum(ops.sum(mask), 1.0)


class _Batches(keras.utils.PyDataset):
    """Cached float16 features and targets, shuffled each epoch, cast to float32 per batch."""

    def __init__(self, feats, ys, batch_size, seed, negatives: float = 0.35):
        super().__init__()
        self.feats, self.ys, self.batch_size = feats, ys, batch_size
        self.rng = np.random.default_rng(seed)
        empty = ys[0].reshape(len(ys[0]), -1).max(axis=1) == 0
        self.pos, self.neg = np.flatnonzero(~empty), np.flatnonzero(empty)
        self.n_neg = len(self.neg) if negatives >= 1 else int(round(negatives * len(self.neg)))
        self.on_epoch_end()

    def __len__(self):
        return math.ceil((len(self.pos) + self.n_neg) / self.batch_size)

    def __getitem__(self, i):
        idx = np.sort(self.order[i * self.batch_size:(i + 1) * self.batch_size])
        return tuple(f[idx].astype(np.float32) for f in self.feats), tuple(y[idx] for y in self.ys)

    def on_epoch_end(self):
        neg = self.rng.permutation(self.neg)[:self.n_neg]
        self.order = self.rng.permutation(np.concatenate([self.pos, neg]))


@dataclass
class TrainResult:
    epochs: int
    best_epoch: int
    best_val_map50: float
    seconds: float
    train_images: int
    history: list = field(default_factory=list)
    # the kept epoch's boxes (file pixels) on every validation image, by its name (fit_on_split: relpath);
    # decoded from the cached float16 features the epoch was chosen on (scores within ~1e-3 of the model's)
    val_detections: dict | None = field(default=None, repr=False)


def features(detector, images, batch_size: int = 16) -> list[np.ndarray]:
    """The frozen backbone's three feature maps of ``images`` (float16, to keep a full data set in memory).

    Args:
        detector: the model :func:`build` returned.
        images: (N, S, S, channels) as the detector takes them.
        batch_size: images per forward pass.

    Returns:
        [stride-8, stride-16, stride-32] float16 arrays.
    """
    feats = _feature_model(detector)
    out = [[] for _ in feats.outputs]
    for batch in _batches(feats, [images], batch_size):
        for j, a in enumerate(batch):
            out[j].append(np.asarray(a, np.float16))
    return [np.concatenate(o) for o in out]


_TAPS = weakref.WeakKeyDictionary()           # detector -> its taps model (see _feature_model)


def _feature_model(detector):
    """The detector's frozen backbone taps as one model, built once per detector (a new model each call
    traces a new predict function: seconds each on a CPU)."""
    if detector not in _TAPS:                  # not an attribute: Keras would save it with the detector
        from fracturelib.models.kerasutil import layer_outputs
        _TAPS[detector] = keras.Model(detector.inputs, layer_outputs(detector, detector.get_layer("backbone")))
    return _TAPS[detector]


def _batches(model, arrays: list, batch_size: int):
    """``model.predict_on_batch`` over ``arrays`` in batches of one shape (the last one padded, its padding
    dropped from the outputs), so the predict function is traced once, not again for a short last batch."""
    n = len(arrays[0])
    for i in range(0, n, batch_size):
        part = [np.asarray(a[i:i + batch_size], np.float32) for a in arrays]
        k = len(part[0])
        if k < batch_size and n > batch_size:
            part = [np.concatenate([p, np.zeros((batch_size - k, *p.shape[1:]), p.dtype)]) for p in part]
        outs = model.predict_on_batch(part if len(part) > 1 else part[0])
        yield [np.asarray(o)[:k] for o in (outs if isinstance(outs, (list, tuple)) else [outs])]


def train(detector, head, train_images, train_boxes, train_sizes, val_images, val_boxes, val_sizes,
          epochs: int = 40, batch_size: int = 32, learning_rate: float = 2e-3, patience: int = 8,
          seed: int = 0, verbose: bool = False, negatives: float = 0.35, val_names: list | None = None) -> TrainResult:
    """Train the heads on cached frozen features (fractured training images also mirrored); the epoch
    with the best validation mAP50 (COCO, on the validation images with boxes) is kept.

    Args:
        detector, head: the two models :func:`build` returned (``head`` is trained in place).
        train_images, val_images: image arrays (N, S, S, channels) as the detector takes them.
        train_boxes, val_boxes: per image its expert boxes ``[x, y, w, h]`` (empty: no fracture).
        train_sizes, val_sizes: per image its original ``(width, height)``.
        epochs: maximum number of epochs.
        batch_size: images per batch.
        learning_rate: Adam's initial learning rate (cosine decay over ``epochs``).
        patience: epochs without a better validation mAP50 before stopping.
        seed: seed of initialisation and shuffling.
        verbose: print one line per epoch.
        negatives: share of the non-fractured training images drawn afresh each epoch (all fractured
            images and their mirrors every epoch; see :func:`train_on_features`).
        val_names: the validation images' names, keys of the result's ``val_detections`` (default: 0..N-1).

    Returns:
        A :class:`TrainResult` (epochs run, best epoch, its validation mAP50, seconds with feature
        caching, training images before mirroring, per-epoch history, the kept epoch's validation boxes).
    """
    t0 = time.perf_counter()
    s = detector.input_shape[1]
    mirror = [i for i, b in enumerate(train_boxes) if b]
    m_boxes = [mirror_boxes(train_boxes[i], train_sizes[i][0]) for i in mirror]
    f_tr = features(detector, train_images, batch_size)
    f_mi = features(detector, train_images[mirror][:, :, ::-1], batch_size)
    x_tr = [np.concatenate([a, b]) for a, b in zip(f_tr, f_mi)]
    sizes = list(train_sizes) + [train_sizes[i] for i in mirror]
    return train_on_features(head, x_tr, list(train_boxes) + m_boxes, sizes,
                             features(detector, val_images, batch_size), val_boxes, val_sizes, s, epochs=epochs,
                             batch_size=batch_size, learning_rate=learning_rate, patience=patience, seed=seed,
                             verbose=verbose, t0=t0, n_images=len(train_images), negatives=negatives,
                             val_names=val_names)


def head_outputs(head, feats, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The heads on cached backbone features: (heatmap probabilities, size, offset).

    Args:
        head: the head model :func:`build` returned.
        feats: the three feature arrays (:func:`features`).
        batch_size: prediction batch size.

    Returns:
        (heat (N, g, g, 1) in [0, 1], size (N, g, g, 2), offset (N, g, g, 2)).
    """
    outs = [[], [], []]
    for batch in _batches(head, feats, batch_size):
        for j, o in enumerate(batch):
            outs[j].append(o)
    heat, size, off = (np.concatenate(o) for o in outs)
    return 1 / (1 + np.exp(-heat)), size, off


def train_on_features(head, train_feats, train_boxes, train_sizes, val_feats, val_boxes, val_sizes, image_size: int,
                      epochs: int = 40, batch_size: int = 32, learning_rate: float = 2e-3, patience: int = 8,
                      seed: int = 0, verbose: bool = False, t0: float | None = None,
                      n_images: int | None = None, negatives: float = 0.35,
                      val_names: list | None = None) -> TrainResult:
    """:func:`train` on features computed beforehand (:func:`features`; mirrored copies already included).

    Args:
        head: the head model :func:`build` returned (trained in place).
        train_feats, val_feats: the three backbone feature arrays of the training and validation images.
        train_boxes, val_boxes: per image its expert boxes ``[x, y, w, h]``.
        train_sizes, val_sizes: per image its original ``(width, height)``.
        image_size: the detector's input side S.
        epochs, batch_size, learning_rate, patience, seed, verbose: as in :func:`train`.
        t0: start time to count seconds from (default: now).
        n_images: training images to report (default: all rows of ``train_feats``).
        negatives: share of the images without boxes drawn afresh each epoch (1: all every epoch;
            0.35: a different random 35% each epoch; all fractured images every epoch). On frozen
            features the head overfits the many negatives: 0.35 kept validation mAP50 rising longest.
        val_names: the validation images' names, keys of the result's ``val_detections`` (default: 0..N-1).

    Returns:
        A :class:`TrainResult`, with the kept epoch's detections on all validation images (for
        :func:`fracturelib.models.detector_scoring.score_detector`, which then need not run the backbone
        on them again).
    """
    from fracturelib.metrics.detection import coco_map
    t0 = time.perf_counter() if t0 is None else t0
    y_tr = list(targets(train_boxes, train_sizes, image_size))
    keras.utils.set_random_seed(seed)
    data = _Batches(train_feats, y_tr, batch_size, seed, negatives)
    steps = epochs * len(data)                 # the cosine reaches 0 at the last epoch, whatever share of negatives
    head.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps)),
                 loss=[_focal(), masked_l1, masked_l1], loss_weights=[1.0, SIZE_WEIGHT, OFFSET_WEIGHT])
    has_box = [i for i, b in enumerate(val_boxes) if b]
    val_pos = [f[has_box] for f in val_feats]
    best, best_w, best_epoch, history = -1.0, head.get_weights(), 0, []
    for epoch in range(1, epochs + 1):
        h = head.fit(data, epochs=1, verbose=0)
        heat, size, off = head_outputs(head, val_pos)
        dets = [decode(heat[j], size[j], off[j], 100, 0.0, val_sizes[i], image_size) for j, i in enumerate(has_box)]
        m = coco_map([val_boxes[i] for i in has_box], dets)
        history.append({"epoch": epoch, "loss": float(h.history["loss"][-1]), **m})
        if verbose:
            print(f"epoch {epoch}: loss {history[-1]['loss']:.3f} val mAP50 {m['map50']:.3f} "
                  f"mAP50-95 {m['map50_95']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if m["map50"] > best:
            best, best_w, best_epoch = m["map50"], head.get_weights(), epoch
        elif epoch - best_epoch >= patience:
            break
    head.set_weights(best_w)
    heat, size, off = head_outputs(head, val_feats)       # all validation images: what scoring reuses
    names = range(len(val_sizes)) if val_names is None else val_names
    val_dets = {n: decode(heat[i], size[i], off[i], 100, 0.0, wh, image_size)
                for i, (n, wh) in enumerate(zip(names, val_sizes))}
    return TrainResult(len(history), best_epoch, best, time.perf_counter() - t0,
                       len(train_boxes) if n_images is None else n_images, history, val_dets)


def _focal():
    from fracturelib.models.losses import focal_loss
    return focal_loss


def fit_on_split(split_rows, boxes: dict, image_size: int = 384, channels: int = 1, epochs: int = 40,
                 backbone: str = "efficientnet_lite0", weights: str = "imagenet", seed: int = 0,
                 verbose: bool = False, negatives: float = 0.35):
    """Build and train a detector on **all** training images of a split (non-fractured ones with an
    empty heatmap), the epoch picked on the validation images; test boxes are never read.

    Args:
        split_rows: a manifest with ``split``, ``width`` and ``height`` columns (``splits.split_from_card``).
        boxes: ``data.fracatlas.load_boxes(data_dir)``.
        image_size, channels: the detector's input.
        epochs: maximum number of training epochs.
        backbone, weights: the frozen backbone and its weights (see :func:`build`).
        seed: random seed of training.
        verbose: print one line per epoch.
        negatives: share of the non-fractured training images drawn afresh each epoch.

    Returns:
        (detector, TrainResult); its ``val_detections`` are keyed by the validation images' ``relpath``
        (what :func:`fracturelib.models.detector_scoring.score_detector` takes).

    Raises:
        ValueError: if the split has no training or validation image with expert boxes.
    """
    from fracturelib.data.pipeline import load_images
    from fracturelib.models.localiser import boxes_of
    parts = {s: split_rows[split_rows["split"] == s] for s in ("train", "val")}
    bx = {s: boxes_of(r, boxes) for s, r in parts.items()}
    if not any(bx["train"]) or not any(bx["val"]):
        raise ValueError("no training or validation images with expert boxes: is this a FracAtlas folder?")
    det, head = build(image_size, channels, backbone, weights)
    args = [a for s, r in parts.items()
            for a in (load_images(r, image_size, channels), bx[s], list(zip(r["width"], r["height"])))]
    return det, train(det, head, *args, epochs=epochs, seed=seed, verbose=verbose, negatives=negatives,
                      val_names=list(parts["val"]["relpath"]))
