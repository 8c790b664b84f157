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
from dataclasses import dataclass, field

import keras
import numpy as np

STRIDE = 8
SIZE_WEIGHT = 0.1      # CenterNet's lambda_size
OFFSET_WEIGHT = 1.0    # CenterNet's lambda_off


def build(image_size: int = 384, channels: int = 1, backbone: str = "efficientnet_lite0",
          weights: str = "imagenet", width: int = 64):
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
        left, top, rw, _ = letterbox(int(w), int(h), image_size)
        f = rw / w / STRIDE
        for x, y, bw, bh in boxes:
            cx, cy = min(g - 1e-3, left / STRIDE + (x + bw / 2) * f), min(g - 1e-3, top / STRIDE + (y + bh / 2) * f)
            ix, iy = int(cx), int(cy)
            sigma = (2 * int(gaussian_radius(bh * f, bw * f)) + 1) / 6
            gauss = np.exp(-((xx - ix) ** 2 + (yy - iy) ** 2) / (2 * sigma * sigma))
            heat[i, :, :, 0] = np.maximum(heat[i, :, :, 0], gauss)
            size[i, iy, ix] = (bw * f, bh * f, 1.0)
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


def decode(heat: np.ndarray, size: np.ndarray, offset: np.ndarray, k: int = 100, threshold: float = 0.0,
           image_wh: tuple[int, int] | None = None, input_size: int | None = None,
           stride: int = STRIDE) -> np.ndarray:
    """Boxes of one image from its heads: the 3x3 max-pool peaks of the heatmap (no NMS), best first.

    Args:
        heat: heatmap (g, g) or (g, g, 1), values in [0, 1].
        size: (g, g, 2) box width and height in cells.
        offset: (g, g, 2) the centre's x and y offset within its cell.
        k: at most this many boxes (the top-k peaks).
        threshold: keep peaks with a score at least this.
        image_wh: the original image's ``(width, height)``: boxes in its pixels (the letterbox undone,
            clipped to the image); None: boxes in the model input's pixels.
        input_size: the model's input side S (default ``g * stride``).
        stride: input pixels per heatmap cell.

    Returns:
        float array (n, 5): ``x0, y0, x1, y1, score`` per box, by descending score.
    """
    from scipy.ndimage import maximum_filter
    heat = np.asarray(heat, np.float32).reshape(np.shape(heat)[:2])
    peaks = (heat == maximum_filter(heat, size=3, mode="constant", cval=-np.inf)) & (heat >= threshold)
    ys, xs = np.nonzero(peaks)
    order = np.argsort(-heat[ys, xs], kind="stable")[:k]
    ys, xs = ys[order], xs[order]
    cx, cy = (xs + offset[ys, xs, 0]) * stride, (ys + offset[ys, xs, 1]) * stride
    w, h = np.maximum(size[ys, xs, 0], 0) * stride, np.maximum(size[ys, xs, 1], 0) * stride
    out = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, heat[ys, xs]], 1).astype(np.float64)
    if image_wh is not None:
        from fracturelib.data.geometry import letterbox
        iw, ih = int(image_wh[0]), int(image_wh[1])
        left, top, rw, _ = letterbox(iw, ih, input_size or heat.shape[0] * stride)
        scale = rw / iw
        out[:, [0, 2]] = np.clip((out[:, [0, 2]] - left) / scale, 0, iw)
        out[:, [1, 3]] = np.clip((out[:, [1, 3]] - top) / scale, 0, ih)
    return out.reshape(-1, 5)


def detect(detector, images: np.ndarray, sizes, k: int = 100, threshold: float = 0.0,
           batch_size: int = 16) -> list[np.ndarray]:
    """Boxes of each image in its own pixels.

    Args:
        detector: the model :func:`build` returned.
        images: input batch (N, S, S, channels), pixels as the detector takes them.
        sizes: per image, its original ``(width, height)``.
        k: at most this many boxes per image.
        threshold: keep boxes scoring at least this.
        batch_size: prediction batch size.

    Returns:
        One (n, 5) array ``x0, y0, x1, y1, score`` per image.
    """
    if not len(images):
        return []
    outs = (detector.predict_on_batch(images) if len(images) <= batch_size
            else detector.predict(images, batch_size=batch_size, verbose=0))
    heat, size, off = (np.asarray(o) for o in outs)
    s = detector.input_shape[1]
    return [decode(heat[i], size[i], off[i], k, threshold, wh, s) for i, wh in enumerate(sizes)]


def image_scores(dets: list[np.ndarray]) -> np.ndarray:
    """The image-level fracture score: each image's best box score (0 where it has none).

    Args:
        dets: per image, its (n, 5) boxes from :func:`detect` or :func:`decode`.

    Returns:
        float array (N,).
    """
    return np.array([float(d[:, 4].max()) if len(d) else 0.0 for d in dets])


class _Batches(keras.utils.PyDataset):
    """Cached float16 features and targets, shuffled each epoch, cast to float32 per batch."""

    def __init__(self, feats, ys, batch_size, seed, negatives: float = 1.0):
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


def features(detector, images, batch_size: int = 16) -> list[np.ndarray]:
    """The frozen backbone's three feature maps of ``images`` (float16, to keep a full data set in memory).

    Args:
        detector: the model :func:`build` returned.
        images: (N, S, S, channels) as the detector takes them.
        batch_size: images per forward pass.

    Returns:
        [stride-8, stride-16, stride-32] float16 arrays.
    """
    from fracturelib.models.kerasutil import layer_outputs
    feats = keras.Model(detector.inputs, layer_outputs(detector, detector.get_layer("backbone")))
    out = [[] for _ in feats.outputs]
    for i in range(0, len(images), batch_size):
        for j, a in enumerate(feats.predict_on_batch(images[i:i + batch_size])):
            out[j].append(np.asarray(a, np.float16))
    return [np.concatenate(o) for o in out]


def train(detector, head, train_images, train_boxes, train_sizes, val_images, val_boxes, val_sizes,
          epochs: int = 40, batch_size: int = 16, learning_rate: float = 1e-3, patience: int = 8,
          seed: int = 0, verbose: bool = False) -> TrainResult:
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

    Returns:
        A :class:`TrainResult` (epochs run, best epoch, its validation mAP50, seconds with feature
        caching, training images before mirroring, per-epoch history).
    """
    t0 = time.perf_counter()
    s = detector.input_shape[1]
    mirror = [i for i, b in enumerate(train_boxes) if b]
    m_boxes = [[[train_sizes[i][0] - x - bw, y, bw, bh] for x, y, bw, bh in train_boxes[i]] for i in mirror]
    f_tr = features(detector, train_images, batch_size)
    f_mi = features(detector, train_images[mirror][:, :, ::-1], batch_size)
    x_tr = [np.concatenate([a, b]) for a, b in zip(f_tr, f_mi)]
    sizes = list(train_sizes) + [train_sizes[i] for i in mirror]
    return train_on_features(head, x_tr, list(train_boxes) + m_boxes, sizes,
                             features(detector, val_images, batch_size), val_boxes, val_sizes, s, epochs=epochs,
                             batch_size=batch_size, learning_rate=learning_rate, patience=patience, seed=seed,
                             verbose=verbose, t0=t0, n_images=len(train_images))


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
    for i in range(0, len(feats[0]), batch_size):
        for j, o in enumerate(head.predict_on_batch([f[i:i + batch_size].astype(np.float32) for f in feats])):
            outs[j].append(np.asarray(o))
    heat, size, off = (np.concatenate(o) for o in outs)
    return 1 / (1 + np.exp(-heat)), size, off


def train_on_features(head, train_feats, train_boxes, train_sizes, val_feats, val_boxes, val_sizes, image_size: int,
                      epochs: int = 40, batch_size: int = 16, learning_rate: float = 1e-3, patience: int = 8,
                      seed: int = 0, verbose: bool = False, t0: float | None = None,
                      n_images: int | None = None, negatives: float = 1.0) -> TrainResult:
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
            0.5: a different random half each epoch, all fractured images every epoch).

    Returns:
        A :class:`TrainResult`.
    """
    from fracturelib.metrics.detection import coco_map
    t0 = time.perf_counter() if t0 is None else t0
    y_tr = list(targets(train_boxes, train_sizes, image_size))
    keras.utils.set_random_seed(seed)
    steps = epochs * math.ceil(len(y_tr[0]) / batch_size)
    head.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps)),
                 loss=[_focal(), masked_l1, masked_l1], loss_weights=[1.0, SIZE_WEIGHT, OFFSET_WEIGHT])
    data = _Batches(train_feats, y_tr, batch_size, seed, negatives)
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
    return TrainResult(len(history), best_epoch, best, time.perf_counter() - t0,
                       len(train_boxes) if n_images is None else n_images, history)


def _focal():
    from fracturelib.models.losses import focal_loss
    return focal_loss


def fit_on_split(split_rows, boxes: dict, image_size: int = 384, channels: int = 1, epochs: int = 40,
                 backbone: str = "efficientnet_lite0", weights: str = "imagenet", seed: int = 0,
                 verbose: bool = False):
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

    Returns:
        (detector, TrainResult).

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
    return det, train(det, head, *args, epochs=epochs, seed=seed, verbose=verbose)
