"""Saving and loading models with a JSON model card that loading checks."""
from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

CARD_VERSION = 1


class ModelCardError(ValueError):
    """A saved model does not match its card or what the caller expects."""


def package_versions() -> dict:
    import importlib.metadata as md
    out = {"python": platform.python_version()}
    for p in ("fracturelib", "tensorflow-cpu", "tensorflow", "keras", "numpy", "scikit-learn",
              "opencv-python-headless", "pillow"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def card_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def save_model(model, path: str | Path, card: dict) -> Path:
    """Save ``model`` as ``path`` (.keras), its card as ``path`` with .json and the readable
    model card (Hugging Face shape) with .md.

    ``card`` must give classes, image_size, channels and preprocessing; the file hash, input
    shape and package versions are added here.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: models are saved in the native Keras format; use a .keras name")
    for key in ("classes", "image_size", "channels", "preprocessing"):
        if key not in card:
            raise ValueError(f"model card is missing {key!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    full = {"card_version": CARD_VERSION, **card,
            "input_shape": list(model.input_shape[1:]),
            "model_file": path.name, "model_sha256": _sha256(path),
            "versions": package_versions()}
    card_path(path).write_text(json.dumps(full, indent=2, default=_jsonable))
    from fracturelib.models import card_markdown
    card_markdown.write(json.loads(card_path(path).read_text()), path)      # the card people read
    return path


def _jsonable(o):
    import numpy as np
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def read_card(path: str | Path) -> dict:
    cp = card_path(path)
    if not cp.exists():
        raise ModelCardError(f"{path}: no model card {cp.name} next to it; models are only "
                             "loaded with their card (save them with fracturelib.models.cards.save_model)")
    try:
        card = json.loads(cp.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelCardError(f"{cp}: not a valid model card (invalid JSON: {e}); re-save the model "
                             "with fracturelib.models.cards.save_model") from None
    if not isinstance(card, dict):
        raise ModelCardError(f"{cp}: not a valid model card (a JSON object is expected)")
    missing = [k for k in CARD_REQUIRED if k not in card]
    if missing:
        raise ModelCardError(f"{cp}: model card lacks {', '.join(missing)}; re-save the model with "
                             "fracturelib.models.cards.save_model")
    return card


#: Keys every reader of a card relies on.
CARD_REQUIRED = ("classes", "image_size", "channels", "input_shape", "model_sha256")


def load_model(path: str | Path, expect: dict | None = None):
    """Load a .keras model after checking its card; returns ``(model, card)``.

    Refuses: a missing card, a file whose hash differs from the card's, an input shape that differs,
    and any ``expect`` entry (e.g. ``{"channels": 1}``) that the card contradicts.
    Loading uses Keras ``safe_mode`` (no arbitrary code from lambda layers).
    """
    import keras

    path = Path(path)
    if not path.exists():
        raise ModelCardError(f"{path}: no such model file; train one with notebook 02/03 first")
    card = read_card(path)
    if card.get("card_version", 0) > CARD_VERSION:
        raise ModelCardError(f"{path}: its card (version {card.get('card_version')}) was written by a newer "
                             f"fracturelib than this one (reads version {CARD_VERSION}); upgrade fracturelib")
    if card.get("model_sha256") != _sha256(path):
        raise ModelCardError(f"{path}: file differs from the one its card describes "
                             "(hash mismatch); re-save the model with its card")
    for key, want in (expect or {}).items():
        have = card.get(key)
        if isinstance(want, tuple):
            want = list(want)
        if have != want:
            raise ModelCardError(f"{path}: card says {key}={have!r}, expected {want!r}")
    from fracturelib.models.backbones import custom_objects
    model = keras.models.load_model(path, safe_mode=True, compile=False,
                                    custom_objects=custom_objects())
    shape = list(model.input_shape[1:])
    said = [card["image_size"], card["image_size"], card["channels"]]
    if shape != card["input_shape"] or shape != said:
        raise ModelCardError(f"{path}: model input {shape} differs from its card (input_shape "
                             f"{card['input_shape']}, image_size {card['image_size']}, channels "
                             f"{card['channels']}); re-save the model with its card")
    return model, card


def metrics_dict(table) -> dict:
    """A metrics table (metric x value/ci_low/ci_high) as the card's nested dict."""
    return {k: table.loc[k].to_dict() for k in table.index}


def make_card(task: str, classes, image_size: int, channels: int, preprocessing: str, data_dir,
              manifest, split: dict, parts: dict, **extra) -> dict:
    """The one place a model card's schema is written (``splits.split_from_card`` reads it back).

    Args:
        task: ``binary`` or ``fracture-type``.
        classes, image_size, channels, preprocessing: what a caller needs to feed the model.
        data_dir, manifest: the data it was trained on (its manifest hash is recorded).
        split: seed, val_fraction, test_fraction, subset_fraction, respect_existing.
        parts: ``{"train": rows, "val": rows, "test": rows}`` (their sizes are recorded).
        **extra: task-specific entries (threshold, backbone, weights, test metrics ...).

    Returns:
        The card dict for :func:`save_model`.
    """
    from fracturelib.data import manifest_hash
    need = {"seed", "val_fraction", "test_fraction", "subset_fraction", "respect_existing"}
    if need - set(split):
        raise ValueError(f"split is missing {sorted(need - set(split))}")
    return {"task": task, "classes": list(classes), "image_size": int(image_size), "channels": int(channels),
            "preprocessing": preprocessing,
            "data": {"root": Path(data_dir).name, "manifest_hash": manifest_hash(manifest),
                     "split_seed": split["seed"], "split": dict(split),
                     "n": {s: int(len(v)) for s, v in parts.items()}},
            **extra}
