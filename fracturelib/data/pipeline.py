"""tf.data input pipeline built from a manifest: decode, resize with padding, cache, augment, prefetch.

Files in formats/modes that TensorFlow decodes exactly like PIL (8-bit grayscale/RGB JPEG and PNG)
are read directly; the rest (CMYK, 16-bit, palette, RGBA, TIFF ...) are converted once to 8-bit PNG
in the cache folder, so the graph stays pure TensorFlow. Large JPEGs are decoded reduced
(``tf.io.decode_jpeg(ratio=...)``, libjpeg's DCT scaling, the same rule as
:func:`fracturelib.data.imageio.jpeg_scale`) to ``config.DECODE_OVERSAMPLE`` times the model size,
and every row passes the one geometry rule (:func:`fracturelib.data.imageio.geometry_problem`)
before the graph is built, so a file that ``scan`` calls ok always decodes here.
Pixel values stay in [0, 255]: models carry their own rescaling / ``preprocess_input``, which keeps
predict and Grad-CAM on raw images simple.
"""
from __future__ import annotations

import pandas as pd

from fracturelib import config
from fracturelib.data.imageio import ImageError, check_image, geometry_problem, jpeg_scale
from fracturelib.files import atomic_output


def converted_path(path: str, sha256: str, need: int | None = None) -> str:
    """Path of an 8-bit PNG copy of ``path`` (made once, keyed by content hash and size).

    Args:
        path: the source file.
        sha256: its content hash (the manifest's ``sha256``).
        need: the longer side the consumer needs (see :func:`~fracturelib.data.imageio.check_image`);
            None: full resolution.

    Returns:
        The cached PNG's path, as a string.
    """
    if not isinstance(sha256, str) or not sha256.strip():     # "" or NaN: every such file would share one copy
        raise ValueError(f"{path}: the manifest row has no content hash (sha256); rebuild it with "
                         "build_manifest (or `fracturelib scan`).")
    name = f"{sha256}.png" if need is None else f"{sha256}-{need}.png"
    out = config.CACHE_DIR / "converted" / name
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        chk = check_image(path, need=need, modalities=None)   # the manifest chose the modalities
        if not chk.ok:
            raise ValueError(f"{path}: {chk.reason}; rebuild the manifest, this file changed.")
        with atomic_output(out) as f:      # a temporary file of its own: two processes may convert one file at once
            chk.image.save(f, "PNG")
    return str(out)


def source_paths(df: pd.DataFrame, need: int | None = None) -> list[str]:
    """Paths tf.data reads: the file itself when native, else its converted 8-bit PNG.

    Args:
        df: manifest rows (``path``, ``native``, ``sha256``).
        need: the longer side the consumer needs (converted copies are made at that size).

    Returns:
        One path per row.
    """
    return [p if native else converted_path(p, sha, need)
            for p, native, sha in zip(df["path"], df["native"], df["sha256"])]


def jpeg_ratios(df: pd.DataFrame, need: int | None) -> list[int]:
    """Per row, the DCT scale to decode a native JPEG at (1 for every other file).

    Args:
        df: manifest rows (``native``, ``format``, ``width``, ``height``; missing columns: 1).
        need: the longer side needed (``config.DECODE_OVERSAMPLE`` x the model size).

    Returns:
        One of 1, 2, 4, 8 per row.
    """
    if not {"native", "format", "width", "height"} <= set(df.columns):
        return [1] * len(df)
    return [jpeg_scale(int(w), int(h), need) if native and fmt == "JPEG" and _known(w) and _known(h) else 1
            for native, fmt, w, h in zip(df["native"], df["format"], df["width"], df["height"])]


def _known(v) -> bool:
    """A positive size from a manifest column (not 0, not missing)."""
    return bool(pd.notna(v) and v > 0)


def check_geometry(df: pd.DataFrame) -> None:
    """Refuse rows outside the one geometry rule, with the reason ``scan`` gives.

    Args:
        df: manifest rows (``path``, ``width``, ``height``; without them nothing is checked).

    Raises:
        ImageError: the first such row, naming the file, the reason and the fix.
    """
    if not {"width", "height"} <= set(df.columns):
        return
    for path, w, h in zip(df["path"], df["width"], df["height"]):
        reason = geometry_problem(int(w), int(h)) if _known(w) and _known(h) else ""
        if reason:
            raise ImageError(f"{path}: cannot use this file: {reason}. Rebuild the manifest "
                             "(fracturelib scan) to skip it, or crop the image.")


def pad_resize(img, image_size: int):
    """Decoded image (HxWxC, any dtype) -> float32 SxSxC in [0, 255], aspect kept, zero padding.
    The one place training, evaluation and prediction prepare pixels.

    Args:
        img: HxWxC array or tensor.
        image_size: the model's input side S.

    Returns:
        A float32 tensor SxSxC.

    Raises:
        ImageError: (when the shape is known, as in predict) an image whose short side would
            vanish at this size; ``scan`` skips these with the same reason.
    """
    import tensorflow as tf
    shape = getattr(img, "shape", None)
    if shape is not None and len(shape) == 3 and None not in tuple(shape[:2]):
        h, w = int(shape[0]), int(shape[1])
        if min(h, w) < 1 or max(h, w) > min(h, w) * image_size:
            reason = geometry_problem(w, h) or f"{w}x{h} px does not fit a {image_size} px input"
            raise ImageError(f"cannot use this image: {reason}")
    img = tf.image.resize_with_pad(tf.cast(img, tf.float32), image_size, image_size, antialias=True)
    return tf.clip_by_value(img, 0.0, 255.0)


def labels_for(df: pd.DataFrame, classes: list[str] | tuple[str, ...]):
    """The labels a model trains on.

    Args:
        df: manifest rows (``label``).
        classes: the class names, in model order.

    Returns:
        Binary (two classes): float32 0/1 for the second class; otherwise int32 class indices.

    Raises:
        ValueError: a row's label is not among ``classes``.
    """
    index = {c: i for i, c in enumerate(classes)}
    missing = sorted(set(df["label"]) - set(index))
    if missing:
        raise ValueError(f"labels {missing} are not among the model's classes {list(classes)}")
    y = df["label"].map(index).to_numpy()
    return y.astype("float32") if len(classes) == 2 else y.astype("int32")


def make_dataset(df: pd.DataFrame, classes, image_size: int = 128, channels: int = 1,
                 batch_size: int = 32, training: bool = False, augment: bool | None = None,
                 cache: bool | str = True, seed: int = config.SEED, with_labels: bool = True):
    """A batched ``tf.data.Dataset`` of (images float32 [0,255] NxSxSxC, labels) from ``df``.

    ``training`` shuffles each epoch and (unless ``augment=False``) augments after the cache.
    ``cache``: True keeps decoded, resized images in memory; a string caches to that file.
    Large JPEGs are decoded reduced to ``config.DECODE_OVERSAMPLE`` x ``image_size`` (see
    :func:`jpeg_ratios`); rows outside the geometry rule are refused before the graph is built.

    Args:
        df: manifest rows (``path``, ``native``, ``sha256``; ``format``, ``width``, ``height`` for
            reduced decoding and the geometry check; ``label`` when ``with_labels``).
        classes: the model's classes (ignored without labels).
        image_size: the model's input side S.
        channels: 1 or 3.
        batch_size: images per batch.
        training: shuffle each epoch (and augment unless ``augment`` is False).
        augment: override the augmentation choice.
        cache: True (memory), a file name, or False.
        seed: shuffle and augmentation seed.
        with_labels: yield (images, labels) or images alone.

    Returns:
        The prefetched ``tf.data.Dataset``.

    Raises:
        ImageError: a row outside the geometry rule (a manifest from before the rule).
    """
    import tensorflow as tf

    augment = training if augment is None else augment
    check_geometry(df)
    need = config.DECODE_OVERSAMPLE * image_size
    paths = source_paths(df, need)
    scales = [{1: 0, 2: 1, 4: 2, 8: 3}[r] for r in jpeg_ratios(df, need)]
    AUTOTUNE = tf.data.AUTOTUNE
    load = loader(image_size, channels)

    if with_labels:
        ds = tf.data.Dataset.from_tensor_slices(((paths, scales), labels_for(df, classes)))
        ds = ds.map(lambda p, y: (load(*p), y), num_parallel_calls=AUTOTUNE, deterministic=True)
    else:
        ds = tf.data.Dataset.from_tensor_slices((paths, scales)).map(load, num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
    if training:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment:
        from fracturelib.data.augment import augmenter
        aug = augmenter(seed)
        if with_labels:
            ds = ds.map(lambda x, y: (aug(x, training=True), y), num_parallel_calls=AUTOTUNE)
        else:
            ds = ds.map(lambda x: aug(x, training=True), num_parallel_calls=AUTOTUNE)
    opts = tf.data.Options()
    # On few cores the pipeline must not fight the training step for threads: one intra-op
    # thread per pipeline op, parallelism across elements instead (bench/pipeline.py).
    opts.threading.max_intra_op_parallelism = 1
    return ds.with_options(opts).prefetch(AUTOTUNE)


def loader(image_size: int, channels: int):
    """The per-file graph function of :func:`make_dataset`: (path, scale index) -> SxSxC float32.

    Args:
        image_size: the model's input side S.
        channels: 1 or 3.

    Returns:
        ``load(path, scale)``; ``scale`` 0 decodes any format at full size, 1/2/3 decode a JPEG
        at 1/2, 1/4, 1/8 (see :func:`jpeg_ratios`).
    """
    import tensorflow as tf

    def load(path, scale):
        data = tf.io.read_file(path)

        def full():
            img = tf.io.decode_image(data, channels=channels, expand_animations=False)
            return tf.ensure_shape(img, [None, None, channels])

        def reduced(r):
            return lambda: tf.ensure_shape(tf.io.decode_jpeg(data, channels=channels, ratio=r),
                                           [None, None, channels])

        img = tf.switch_case(tf.cast(scale, tf.int32), [full, reduced(2), reduced(4), reduced(8)])
        return pad_resize(img, image_size)

    return load


def load_images(df: pd.DataFrame, image_size: int, channels: int):
    """All images of ``df`` as one float32 array (for small sets: galleries, CAMs, tests).

    Args:
        df: manifest rows.
        image_size, channels: the model input.

    Returns:
        N x S x S x C float32 in [0, 255], prepared as for training.
    """
    import numpy as np
    ds = make_dataset(df, classes=None, image_size=image_size, channels=channels,
                      batch_size=64, cache=False, with_labels=False)
    if not len(df):
        return np.zeros((0, image_size, image_size, channels), "float32")
    return np.concatenate([b.numpy() for b in ds])
