"""Where is the fracture? A localiser trained on the expert boxes, not a by-product of a classifier.

CenterNet-style (Zhou et al. 2019, "Objects as Points"): a small feature-pyramid head on three
scales of any registered backbone (its stride-8, 16 and 32 taps, from ``BackboneSpec``) predicts a heatmap at
stride 8 whose targets are Gaussians at the expert boxes' centres, sized by the boxes, trained
with CenterNet's penalty-reduced focal loss. The backbone stays frozen (its three feature maps
are computed once, which makes training cheap on a CPU); mirrored copies of the training images
double the data. Output: a heatmap in the image's own pixel coordinates and its peak point.
Only training images of the split are used (validation/test boxes are never seen).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

STRIDE = 8


def feature_pyramid(image_size: int, backbone: str, weights: str, width: int):
    """The frozen backbone's three taps (strides 8, 16, 32) and a small top-down pyramid merging them at
    stride 8: what the localiser and the detector (:mod:`fracturelib.models.centernet`) put their heads on.

    Args:
        image_size: square input side (a multiple of 32).
        backbone: a registry name (its ``feature_taps`` give the three scales).
        weights: the backbone's weights (``imagenet`` offline, or ``none``).
        width: channels of the pyramid.

    Returns:
        (taps: the frozen backbone model -> three feature maps, the three feature-map Inputs (s8, s16, s32),
        the merged stride-8 tensor built on them).

    Raises:
        ValueError: if ``image_size`` is not a multiple of 32.
    """
    import keras
    from keras import layers

    from fracturelib.models import backbones
    if image_size % 32:
        raise ValueError(f"image_size {image_size}: use a multiple of 32")
    base = backbones.build_backbone(backbone, weights, input_shape=(image_size, image_size, 3))
    tap_outputs = [base.get_layer(n).output for n in backbones.feature_taps(base, backbone)]
    taps = keras.Model(base.inputs, tap_outputs, name="backbone")
    taps.trainable = False
    s8, s16, s32 = (o.shape[1:] for o in taps.outputs)
    i8, i16, i32 = keras.Input(s8, name="s8"), keras.Input(s16, name="s16"), keras.Input(s32, name="s32")
    conv = lambda n, k=1, act=None: layers.Conv2D(width, k, padding="same", activation=act, name=n)  # noqa: E731
    up = lambda n: layers.UpSampling2D(2, interpolation="bilinear", name=n)  # noqa: E731
    x = conv("lat32")(i32)
    x = layers.Add(name="merge16")([up("up16")(x), conv("lat16")(i16)])
    x = conv("smooth16", 3, "relu")(x)
    x = layers.Add(name="merge8")([up("up8")(x), conv("lat8")(i8)])
    x = conv("smooth8", 3, "relu")(x)
    return taps, (i8, i16, i32), x


def build(image_size: int = 320, channels: int = 1, backbone: str = "efficientnet_lite0",
          weights: str = "imagenet", width: int = 64):
    """The localiser: ``image -> heatmap`` (stride 8, sigmoid), backbone nested and frozen.

    Args:
        image_size: square input side (a multiple of 32).
        channels: 1 (grayscale radiographs, repeated to RGB inside) or 3.
        backbone: a registry name (its ``feature_taps`` give the three scales).
        weights: the backbone's weights (``imagenet`` offline, or ``none``).
        width: channels of the head.

    Returns:
        (localiser model, head model that maps the three cached feature maps to the heatmap's
        logits; the localiser applies the sigmoid).

    Raises:
        ValueError: if ``image_size`` is not a multiple of 32.
    """
    import keras
    from keras import layers

    from fracturelib.models import backbones
    taps, inputs, x = feature_pyramid(image_size, backbone, weights, width)
    i8, i16, i32 = inputs
    prior = -math.log((1 - 0.05) / 0.05)                 # start at 5% everywhere (CenterNet's trick)
    logits = layers.Conv2D(1, 1, name="heatmap_logits", bias_initializer=keras.initializers.Constant(prior))(x)
    head = keras.Model([i8, i16, i32], logits, name="head")     # trained on logits: a stable loss
    inp = keras.Input((image_size, image_size, channels), name="image")
    feats = taps(backbones.preprocess_layer(backbone, name="preprocess")(inp), training=False)
    out = layers.Activation("sigmoid", name="heatmap")(head(feats))
    return keras.Model(inp, out, name="fracture_localiser"), head


def targets(boxes_per_image, sizes, image_size: int) -> np.ndarray:
    """Stride-8 Gaussian heatmaps (N x S/8 x S/8 x 1) from COCO boxes [x, y, w, h] in each image's
    own pixels (``sizes``: (width, height)), placed where ``resize_with_pad`` puts the image.

    Args:
        boxes_per_image: per image, a list of boxes ``[x, y, w, h]`` (may be empty).
        sizes: per image, its ``(width, height)`` in pixels.
        image_size: the model's square input side S.

    Returns:
        float32 array (N, S/8, S/8, 1) in [0, 1]: per box a Gaussian peaking at 1 at its centre,
        sigma a sixth of its side (at least 0.75 cells); overlaps take the maximum.
    """
    from fracturelib.data.geometry import letterbox
    g = image_size // STRIDE
    yy, xx = np.mgrid[0:g, 0:g]
    out = np.zeros((len(sizes), g, g, 1), np.float32)
    for i, (boxes, (w, h)) in enumerate(zip(boxes_per_image, sizes)):
        left, top, rw, _ = letterbox(int(w), int(h), image_size)
        f = rw / w / STRIDE
        for x, y, bw, bh in boxes:
            cx = min(g - 1, int((left / STRIDE) + (x + bw / 2) * f))
            cy = min(g - 1, int((top / STRIDE) + (y + bh / 2) * f))
            sx, sy = max(0.75, bw * f / 6), max(0.75, bh * f / 6)
            gauss = np.exp(-((xx - cx) ** 2 / (2 * sx * sx) + (yy - cy) ** 2 / (2 * sy * sy)))
            out[i, :, :, 0] = np.maximum(out[i, :, :, 0], gauss)
    return out


@dataclass
class TrainResult:
    epochs: int
    best_val_loss: float
    seconds: float
    train_images: int


def train(localiser, head, train_images: np.ndarray, train_targets: np.ndarray, val_images: np.ndarray,
          val_targets: np.ndarray, epochs: int = 60, batch_size: int = 16, learning_rate: float = 1e-3,
          patience: int = 10, seed: int = 0) -> TrainResult:
    """Train the head on cached frozen features of the images and their mirror images, early
    stopping on the validation focal loss (best weights restored).

    Args:
        localiser, head: the two models :func:`build` returned (``head`` is trained in place).
        train_images, val_images: image arrays (N, S, S, channels), pixels as the localiser takes them.
        train_targets, val_targets: heatmaps from :func:`targets`, (N, S/8, S/8, 1).
        epochs: maximum number of epochs.
        batch_size: images per batch.
        learning_rate: Adam learning rate.
        patience: epochs without validation improvement before stopping.
        seed: Keras random seed for the head's training.

    Returns:
        A :class:`TrainResult`: epochs run, best validation loss, seconds (feature caching included)
        and number of training images (before mirroring).
    """
    import time

    import keras

    from fracturelib.models.kerasutil import layer_outputs
    from fracturelib.models.losses import focal_loss
    feats = keras.Model(localiser.inputs, layer_outputs(localiser, localiser.get_layer("backbone")))
    t = time.perf_counter()
    f_tr = [np.asarray(a) for a in feats.predict(train_images, batch_size=batch_size, verbose=0)]
    f_mi = [np.asarray(a) for a in feats.predict(train_images[:, :, ::-1], batch_size=batch_size, verbose=0)]
    f_va = [np.asarray(a) for a in feats.predict(val_images, batch_size=batch_size, verbose=0)]
    x_tr = [np.concatenate([a, b]) for a, b in zip(f_tr, f_mi)]
    y_tr = np.concatenate([train_targets, train_targets[:, :, ::-1]])
    keras.utils.set_random_seed(seed)
    head.compile(keras.optimizers.Adam(learning_rate), focal_loss)
    h = head.fit(x_tr, y_tr, validation_data=(f_va, val_targets), epochs=epochs, batch_size=batch_size,
                 verbose=0, shuffle=True,
                 callbacks=[keras.callbacks.EarlyStopping("val_loss", patience=patience, restore_best_weights=True)])
    return TrainResult(len(h.history["loss"]), float(min(h.history["val_loss"])), time.perf_counter() - t,
                       len(train_images))


def heatmaps(localiser, images: np.ndarray, sizes, batch_size: int = 16) -> list[np.ndarray]:
    """Heatmaps in each image's own pixel coordinates (``sizes``: (width, height)).

    Args:
        localiser: the model :func:`build` returned.
        images: input batch (N, S, S, channels).
        sizes: per image, its original ``(width, height)``.
        batch_size: batch size of prediction (one ``predict_on_batch`` call up to this many images).

    Returns:
        One float array (height, width) per image, values in [0, 1].
    """
    from fracturelib.data.geometry import heatmap_to_image
    size = localiser.input_shape[1]
    raw = (np.asarray(localiser.predict_on_batch(images)) if len(images) <= batch_size     # one image: no
           else localiser.predict(images, batch_size=batch_size, verbose=0))[..., 0]      # predict() overhead
    return [heatmap_to_image(r, int(w), int(h), size) for r, (w, h) in zip(raw, sizes)]


def peak(heat: np.ndarray) -> tuple[int, int]:
    """(x, y) of a heatmap's maximum, pixels of the image, origin top-left.

    Args:
        heat: 2-D heatmap (height, width).

    Returns:
        ``(x, y)`` as ints (the first maximum in row-major order on ties).
    """
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return int(x), int(y)


def boxes_of(rows, boxes: dict) -> list[list]:
    """The expert boxes of each row's file (``data.fracatlas.load_boxes``), [] where none.

    Args:
        rows: manifest rows with a ``relpath`` column.
        boxes: file name -> ``{"boxes": [[x, y, w, h], ...], ...}``.

    Returns:
        One list of ``[x, y, w, h]`` boxes per row, in row order.
    """
    from fracturelib.data.fracatlas import records_for
    return [rec["boxes"] for rec in records_for(rows["relpath"], boxes)]


def fit_on_split(split_rows, boxes: dict, image_size: int = 320, channels: int = 1, epochs: int = 60,
                 backbone: str = "efficientnet_lite0", weights: str = "imagenet", seed: int = 0):
    """Build and train a localiser on the fractured *training* images of a split that have boxes,
    early-stopping on the validation ones (test boxes are never read here).

    Args:
        split_rows: a manifest with a ``split`` column (``splits.split_from_card``).
        boxes: ``data.fracatlas.load_boxes(data_dir)``.
        image_size, channels: the localiser's input.
        epochs: maximum number of training epochs.
        backbone, weights: the frozen backbone and its weights (see :func:`build`).
        seed: random seed of training.

    Returns:
        (localiser, TrainResult).

    Raises:
        ValueError: if the split has no fractured training or validation images with boxes.
    """
    from fracturelib.data.pipeline import load_images
    parts = {}
    for s in ("train", "val"):
        r = split_rows[(split_rows["split"] == s) & (split_rows["label"] == "fractured")]
        keep = [bool(b) for b in boxes_of(r, boxes)]
        parts[s] = r[keep]
    if not len(parts["train"]) or not len(parts["val"]):
        raise ValueError("no fractured training or validation images with expert boxes: is this a FracAtlas folder?")
    data = {s: (load_images(r, image_size, channels),
                targets(boxes_of(r, boxes), list(zip(r["width"], r["height"])), image_size))
            for s, r in parts.items()}
    loc, head = build(image_size, channels, backbone, weights)
    res = train(loc, head, *data["train"], *data["val"], epochs=epochs, seed=seed)
    return loc, res
