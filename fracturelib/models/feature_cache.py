"""Pooled frozen-backbone features, computed once per process for the same model and images.

Notebook 03 trains the linear-probe floor and the main model's phase 1 on the same frozen
ImageNet backbone and the same images: without this, the backbone's forward passes (most of
phase 1's time on a CPU) ran twice. The key is what the features depend on: the feature model
(:func:`model_digest`: its architecture and configuration, so weightless layers such as the input
scaling count, and its weight values, so a fine-tuned or differently initialised backbone never
hits), the pipeline's image size and channels and ``config.DECODE_OVERSAMPLE``, and per row its
path, content hash, file size and modification time (a file edited in place after the scan misses
too) and what decides how it is decoded (``native``, ``format``, ``width``, ``height``), and
whether the images are mirrored. Entries are small (N x C float32: 10,000 images of 1280 channels
are 51 MB); the least recently used go first beyond :data:`MAX_BYTES`.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict

import numpy as np

from fracturelib import config
from fracturelib.progress import keras_verbose

#: bytes of feature arrays kept (least recently used dropped first)
MAX_BYTES = 512 * 2**20
_CACHE: OrderedDict[str, np.ndarray] = OrderedDict()
_STATS = {"hits": 0, "misses": 0}
#: the manifest columns that decide how a row is decoded (:func:`fracturelib.data.pipeline.jpeg_ratios`)
_DECODE_COLUMNS = ("native", "format", "width", "height")


def _layers(layer):
    """``layer`` and every layer nested in it, depth first."""
    yield layer
    for sub in getattr(layer, "layers", []):
        yield from _layers(sub)


def _structure(model) -> str:
    """The model's configuration (``to_json``) with layer names replaced by their order of appearance:
    two builds of one architecture in a process get different automatic names (``conv2d_3``)."""
    names: dict[str, str] = {}
    for layer in _layers(model):
        names.setdefault(layer.name, f"#{len(names)}")

    def canon(o):
        if isinstance(o, dict):
            return {k: canon(v) for k, v in o.items()}
        if isinstance(o, list):
            return [canon(v) for v in o]
        return names.get(o, o) if isinstance(o, str) else o
    return json.dumps(canon(json.loads(model.to_json())), sort_keys=True)


def model_digest(model) -> str:
    """SHA-256 of a Keras model's configuration (layer names aside) and weight values in layer order.

    Args:
        model: a Keras model.

    Returns:
        The hex digest: two models with the same architecture and configuration (input scaling
        included) and bit-identical weights share it, whatever their layers are called.
    """
    h = hashlib.sha256(_structure(model).encode())
    for w in model.get_weights():
        a = np.ascontiguousarray(w)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _rows_digest(rows) -> str:
    """Digest of the rows, in order: path, content hash (``sha256`` when present), the decoding
    columns, and the file's size and modification time in ns ("missing" when it cannot be read)."""
    h = hashlib.sha256()
    cols = [c for c in ("sha256", *_DECODE_COLUMNS) if c in rows]
    for p, *vals in zip(rows["path"], *(rows[c] for c in cols)):
        try:
            st = os.stat(p)
            status = f"{st.st_size}:{st.st_mtime_ns}"
        except (OSError, ValueError, TypeError):
            status = "missing"
        h.update("\0".join(map(str, [p, *vals, status])).encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()


def pooled(feats_model, rows, image_size: int, channels: int, batch_size: int = 32,
           mirrored: bool = False, digest: str | None = None) -> tuple[np.ndarray, bool]:
    """Globally average-pooled features of ``feats_model`` on ``rows``, from the cache when the same
    model already saw the same images, decoded the same way.

    Args:
        feats_model: image -> feature map (B, h, w, C) (``transfer.features_model``).
        rows: manifest slice (``path``; ``sha256``, ``native`` and the size columns as the pipeline uses them).
        image_size, channels: the pipeline's input.
        batch_size: images per batch.
        mirrored: the left-right mirror images instead.
        digest: ``model_digest(feats_model)`` when the caller has it (it copies every weight).

    Returns:
        (float32 array (N, C), whether it came from the cache). The array is a copy: callers may change it.
    """
    from fracturelib.data.pipeline import make_dataset
    from fracturelib.models.transfer import mirror
    key = "|".join([digest or model_digest(feats_model), str(image_size), str(channels),
                    str(config.DECODE_OVERSAMPLE), _rows_digest(rows), str(bool(mirrored))])
    if key in _CACHE:
        _CACHE.move_to_end(key)
        _STATS["hits"] += 1
        return _CACHE[key].copy(), True
    _STATS["misses"] += 1
    if not len(rows):
        out = np.zeros((0, feats_model.output.shape[-1]), "float32")
    else:
        ds = make_dataset(rows, None, image_size, channels, batch_size, with_labels=False, cache=False)
        out = np.asarray(feats_model.predict(ds.map(mirror) if mirrored else ds, verbose=keras_verbose()),
                         "float32").mean(axis=(1, 2))
    _CACHE[key] = out
    while len(_CACHE) > 1 and sum(a.nbytes for a in _CACHE.values()) > MAX_BYTES:
        _CACHE.popitem(last=False)
    return out.copy(), False


def clear() -> None:
    """Empty the cache (tests; or to free memory)."""
    _CACHE.clear()
    _STATS.update(hits=0, misses=0)


def stats() -> dict:
    """Hits and misses since the process started (or since :func:`clear`).

    Returns:
        ``{"hits": int, "misses": int, "entries": int, "bytes": int}``.
    """
    return {**_STATS, "entries": len(_CACHE), "bytes": sum(a.nbytes for a in _CACHE.values())}
