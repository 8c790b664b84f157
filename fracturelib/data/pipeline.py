"""tf.data input pipeline built from a manifest: decode, resize with padding, cache, augment, prefetch.

Files in formats/modes that TensorFlow decodes exactly like PIL (8-bit grayscale/RGB JPEG and PNG)
are read directly; the rest (CMYK, 16-bit, palette, RGBA, TIFF ...) are converted once to 8-bit PNG
in the cache folder, so the graph stays pure TensorFlow. Pixel values stay in [0, 255]: models carry
their own rescaling / ``preprocess_input``, which keeps predict and Grad-CAM on raw images simple.
"""
from __future__ import annotations

import pandas as pd

from fracturelib import config
from fracturelib.data.imageio import check_image


def converted_path(path: str, sha256: str) -> str:
    """Path of an 8-bit PNG copy of ``path`` (made once, keyed by content hash)."""
    out = config.CACHE_DIR / "converted" / f"{sha256}.png"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        chk = check_image(path)
        if not chk.ok:
            raise ValueError(f"{path}: {chk.reason}; rebuild the manifest, this file changed.")
        tmp = out.with_suffix(".tmp")
        chk.image.save(tmp, "PNG")
        tmp.replace(out)
    return str(out)


def source_paths(df: pd.DataFrame) -> list[str]:
    return [p if native else converted_path(p, sha)
            for p, native, sha in zip(df["path"], df["native"], df["sha256"])]


def pad_resize(img, image_size: int):
    """Decoded image (HxWxC, any dtype) -> float32 SxSxC in [0, 255], aspect kept, zero padding.
    The one place training, evaluation and prediction prepare pixels."""
    import tensorflow as tf
    img = tf.image.resize_with_pad(tf.cast(img, tf.float32), image_size, image_size, antialias=True)
    return tf.clip_by_value(img, 0.0, 255.0)


def labels_for(df: pd.DataFrame, classes: list[str] | tuple[str, ...]):
    """Binary (two classes): float 0/1 for the second class. Otherwise: integer class index."""
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
    """
    import tensorflow as tf

    augment = training if augment is None else augment
    paths = source_paths(df)
    AUTOTUNE = tf.data.AUTOTUNE

    def load(path):
        img = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
        return pad_resize(img, image_size)

    if with_labels:
        ds = tf.data.Dataset.from_tensor_slices((paths, labels_for(df, classes)))
        ds = ds.map(lambda p, y: (load(p), y), num_parallel_calls=AUTOTUNE, deterministic=True)
    else:
        ds = tf.data.Dataset.from_tensor_slices(paths).map(load, num_parallel_calls=AUTOTUNE)
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


def load_images(df: pd.DataFrame, image_size: int, channels: int):
    """All images of ``df`` as one float32 array (for small sets: galleries, Grad-CAM)."""
    import numpy as np
    ds = make_dataset(df, classes=None, image_size=image_size, channels=channels,
                      batch_size=64, cache=False, with_labels=False)
    if not len(df):
        return np.zeros((0, image_size, image_size, channels), "float32")
    return np.concatenate([b.numpy() for b in ds])
