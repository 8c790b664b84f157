"""Saving and loading models with a typed JSON model card that loading checks.

The card (``<model>.json`` beside ``<model>.keras``) is a :class:`ModelCard`: every key a reader
relies on is a typed attribute, checked when the card is read (one-line :class:`ModelCardError`
naming the card file and the fix); keys this version does not know are kept in ``extra`` and
written back, so newer cards of the same version survive a round trip. On disk it stays a flat
JSON object; cards of version 1 (before the schema was typed) still load.
"""
from __future__ import annotations

import dataclasses
import json
import math
import platform
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from fracturelib import config
from fracturelib.files import atomic_write, sha256_file

#: The schema version this fracturelib writes; it reads this and every earlier one.
CARD_VERSION = 2
#: Tasks whose model is a classifier (one sigmoid unit for 2 classes, else one softmax unit a class).
CLASSIFIER_TASKS = ("binary", "fracture-type")
FIX = "fix the card or re-save the model with fracturelib.models.cards.save_model"


class ModelCardError(ValueError):
    """A saved model does not match its card or what the caller expects."""


def package_versions() -> dict:
    """Versions of Python and of the packages a saved model depends on, recorded in its card.

    Returns:
        Name -> version string (``python`` first); packages that are not installed are left out.
    """
    import importlib.metadata as md
    out = {"python": platform.python_version()}
    for p in ("fracturelib", "tensorflow-cpu", "tensorflow", "keras", "numpy", "scikit-learn",
              "opencv-python-headless", "pillow"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out





def _shown(value, limit: int = 60) -> str:
    """A value as one short line (JSON, so strings are quoted and newlines escaped)."""
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:                  # an int beyond any float
        return False


#: Bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): they make a
#: class name print as another text ("Trojan Source").
_BIDI = frozenset(map(chr, (*range(0x202A, 0x202F), *range(0x2066, 0x206A))))
#: The longest class name a card may give (it is printed in every answer).
MAX_CLASS_NAME = 100
#: The temperature a card may give: a calibration outside this range is a damaged card (and a
#: temperature near 0 would overflow the scaled logits).
TEMPERATURE_RANGE = config.TEMPERATURE_RANGE


def _class_name(v) -> bool:
    """A printable class name: a non-empty string of at most MAX_CLASS_NAME characters without
    control characters, surrogates, line or paragraph separators or bidi overrides."""
    return (isinstance(v, str) and 0 < len(v) <= MAX_CLASS_NAME and v.strip() != ""
            and not any(c in _BIDI or unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in v))


def _file_name(v) -> bool:
    return (isinstance(v, str) and v not in ("", ".", "..") and not any(c in v for c in "/\\\0"))


#: field -> (accepts a value, what it must be). ``None`` means "not given" for optional fields.
_CHECKS = {
    "card_version": (lambda v: _int(v) and v >= 1, "a whole number >= 1"),
    "task": (lambda v: isinstance(v, str), "a string (binary, fracture-type, localisation, detection)"),
    "classes": (lambda v: isinstance(v, list) and len(v) > 0 and all(_class_name(c) for c in v)
                and len(set(v)) == len(v),
                f"a non-empty list of distinct printable class names (at most {MAX_CLASS_NAME} characters, "
                "no control characters or bidi overrides)"),
    "image_size": (lambda v: _int(v) and v > 0, "a positive whole number of pixels"),
    "channels": (lambda v: _int(v) and v in (1, 3), "1 (grayscale) or 3 (RGB)"),
    "preprocessing": (lambda v: isinstance(v, str), "a string"),
    "positive_class": (lambda v: isinstance(v, str), "a class name"),
    "threshold": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "target_sensitivity": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "box_threshold": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "preferred": (lambda v: isinstance(v, bool), "true or false"),
    "temperature": (lambda v: _number(v) and TEMPERATURE_RANGE[0] <= v <= TEMPERATURE_RANGE[1],
                    f"a number in [{TEMPERATURE_RANGE[0]}, {TEMPERATURE_RANGE[1]:g}]"),
    "tta_flip": (lambda v: isinstance(v, bool), "true or false"),
    "model_name": (lambda v: isinstance(v, str), "a string"),
    "backbone": (lambda v: isinstance(v, str), "a backbone name"),
    "alpha": (lambda v: _number(v) and v > 0, "a positive number"),
    "weights": (lambda v: isinstance(v, str), "a string"),
    "data": (lambda v: isinstance(v, dict) and all(isinstance(v.get(k, {}), dict) for k in ("split", "n")),
             "an object (root, manifest_hash, split {...}, n {...})"),
    "trained_on": (lambda v: isinstance(v, str), "a string"),
    "honest_test": (lambda v: _int(v) and v >= 0, "a whole number >= 0"),
    "test_metrics": (lambda v: isinstance(v, dict), "an object (metric -> value, ci_low, ci_high)"),
    "test_metrics_at_threshold": (lambda v: isinstance(v, dict), "an object (metric -> value, ci_low, ci_high)"),
    "test_metrics_honest": (lambda v: isinstance(v, dict), "an object (metric -> value, ci_low, ci_high)"),
    "test_metrics_all": (lambda v: isinstance(v, dict), "an object (metric -> value, ci_low, ci_high)"),
    "test_localisation": (lambda v: isinstance(v, dict), "an object"),
    "calibration": (lambda v: isinstance(v, dict) and all(isinstance(r, dict) for r in v.values()),
                    "an object of rows (scores -> metric -> value)"),
    "localisation": (lambda v: isinstance(v, (str, dict)), "a string or an object"),
    "companions": (lambda v: isinstance(v, dict) and all(_file_name(f) for f in v.values()),
                   "an object of kind -> file name beside the card (e.g. {\"ood\": \"ood.npz\"})"),
    "input_shape": (lambda v: isinstance(v, list) and len(v) == 3 and all(_int(d) and d > 0 for d in v),
                    "[height, width, channels] of positive whole numbers"),
    "model_file": (_file_name, "a file name"),
    "model_sha256": (lambda v: isinstance(v, str), "a hex digest"),
    "versions": (lambda v: isinstance(v, dict), "an object (package -> version)"),
    "format": (lambda v: v in ("keras", "litert"), "keras or litert"),
    "quantization": (lambda v: v in ("none", "float16", "int8"), "none, float16 or int8"),
    "parity": (lambda v: isinstance(v, dict), "an object (the export's parity figures against the Keras model)"),
    "exported_from": (lambda v: isinstance(v, dict), "an object (file, sha256 of the Keras model)"),
}
_FLOATS = ("threshold", "target_sensitivity", "box_threshold", "temperature", "alpha")
#: What any card must give; saving also needs ``preprocessing``, and save_model adds SAVED.
REQUIRED = ("classes", "image_size", "channels")
SAVED = ("input_shape", "model_sha256")


@dataclass
class ModelCard:
    """What a saved model needs to be fed, judged and explained; see :data:`_CHECKS` for the types.

    ``source`` is the card file it was read from (companions are resolved next to it); ``extra``
    holds keys this version does not know, written back unchanged.
    """
    classes: list[str]
    image_size: int
    channels: int
    preprocessing: str = ""                 # how an image becomes the model's input (said, not run)
    card_version: int = CARD_VERSION
    task: str | None = None
    positive_class: str | None = None
    threshold: float | None = None          # binary: the decision threshold chosen on validation
    target_sensitivity: float | None = None
    box_threshold: float | None = None      # detection: boxes scoring at least this are shown (chosen on validation)
    preferred: bool = False                 # the default model of `fracturelib predict`
    temperature: float | None = None        # fitted on validation (calibration)
    tta_flip: bool = False                  # average with the left-right flip (chosen on validation)
    model_name: str | None = None
    backbone: str | None = None
    alpha: float | None = None
    weights: str | None = None
    data: dict = field(default_factory=dict)  # root, manifest_hash, split_seed, split, n
    trained_on: str | None = None
    honest_test: int | None = None
    test_metrics: dict | None = None
    test_metrics_at_threshold: dict | None = None
    test_metrics_honest: dict | None = None
    test_metrics_all: dict | None = None
    test_localisation: dict | None = None
    calibration: dict | None = None
    localisation: str | dict | None = None
    companions: dict = field(default_factory=dict)   # kind (localiser, detector = the fracture detector, ood) -> file
    input_shape: list[int] | None = None
    model_file: str | None = None
    model_sha256: str | None = None
    versions: dict = field(default_factory=dict)
    format: str | None = None               # litert: an exported .tflite (fracturelib export); None: .keras
    quantization: str | None = None         # litert: none, float16 or int8
    parity: dict | None = None              # litert: agreement, ROC-AUCs, max |dp|, gate passed or forced
    exported_from: dict | None = None       # litert: the Keras model's file name and SHA-256
    extra: dict = field(default_factory=dict)
    source: Path | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_dict(cls, d, source: str | Path | None = None) -> ModelCard:
        """The card of the JSON object ``d``; ModelCardError (one line naming ``source``) on a
        newer version, a missing key or a value of the wrong type.

        Args:
            d: the card's JSON object; keys this version does not know go to ``extra``.
            source: the card file (named in messages; companions are resolved next to it), or None.

        Returns:
            The typed :class:`ModelCard` (``threshold``, ``temperature`` ... as floats).

        Raises:
            ModelCardError: ``d`` is no object, is of a newer version, lacks a required key or has a
                value of the wrong type.
        """
        where = f"{source}: model card" if source is not None else "model card"
        if not isinstance(d, dict):
            raise ModelCardError(f"{where} is not a JSON object; {FIX}")
        version = d.get("card_version", 1)
        ok, want = _CHECKS["card_version"]
        if not ok(version):
            raise ModelCardError(f"{where}: card_version is {_shown(version)}, but must be {want}; {FIX}")
        if version > CARD_VERSION:
            raise ModelCardError(f"{where} (version {version}) was written by a newer fracturelib than "
                                 f"this one (reads versions up to {CARD_VERSION}); upgrade fracturelib")
        missing = [k for k in REQUIRED if d.get(k) is None]
        if missing:
            raise ModelCardError(f"{where} is missing {', '.join(map(repr, missing))}; {FIX}")
        known, extra = {}, {}
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "source"}
        for key, value in d.items():
            if key not in names:
                extra[key] = value
                continue
            if value is None:
                continue                   # not given: the default
            ok, want = _CHECKS[key]
            if not ok(value):
                raise ModelCardError(f"{where}: {key} is {_shown(value)}, but must be {want}; {FIX}")
            known[key] = float(value) if key in _FLOATS else value
        if known.get("task") == "detection" and "box_threshold" not in known:
            raise ModelCardError(f"{where} of a fracture detector has no box_threshold (the score from which its "
                                 f"boxes are shown, chosen on validation by notebook 04); {FIX}")
        known["card_version"] = version
        return cls(**known, extra=extra, source=Path(source) if source is not None else None)

    def to_dict(self) -> dict:
        """The JSON object on disk: the fields that are set (not their default), then ``extra``.

        Returns:
            A JSON-ready dict; classes, image_size, channels, card_version and preprocessing are always
            in it, and an ``extra`` key never overrides a field.
        """
        out = {}
        for f in dataclasses.fields(self):
            if f.name in ("extra", "source"):
                continue
            value = getattr(self, f.name)
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if f.name in (*REQUIRED, "card_version", "preprocessing") or value != default:
                out[f.name] = value
        return {**out, **{k: v for k, v in self.extra.items() if k not in out}}

    @property
    def decision_threshold(self) -> float:
        """A binary model's threshold on p(positive): the card's, else 0.5."""
        return 0.5 if self.threshold is None else self.threshold

    def companion(self, kind: str) -> str | None:
        """The file name of the companion ``kind`` (``localiser``, ``detector``, ``ood``) the card names. Cards
        of version 1 named none: a classifier's then are the defaults (config.COMPANIONS).

        Args:
            kind: the companion's kind, e.g. ``localiser`` or ``ood``.

        Returns:
            The file name beside the card, or None when the card names none.
        """
        if kind in self.companions:
            return self.companions[kind]
        if self.card_version < 2 and self.task != "localisation":
            return config.COMPANIONS.get(kind)
        return None

    def companion_path(self, kind: str) -> Path | None:
        """The companion ``kind`` resolved next to the card file (None when the card names none).

        Args:
            kind: the companion's kind, e.g. ``localiser`` or ``ood``.

        Returns:
            The path (it may not exist; relative to the working folder when the card has no ``source``),
            or None.
        """
        name = self.companion(kind)
        if name is None:
            return None
        return (self.source.parent if self.source is not None else Path(".")) / name


def card_path(model_path: str | Path) -> Path:
    """Where the JSON card of a model file lives: the same path with .json; for an exported LiteRT
    model ``<name>.tflite.json``, so it never replaces the card of the ``<name>.keras`` beside it.

    Args:
        model_path: the model file (.keras or .tflite).

    Returns:
        The card's path (it may not exist).
    """
    path = Path(model_path)
    if path.suffix.lower() == ".tflite":
        return path.with_name(path.name + ".json")
    return path.with_suffix(".json")


def _plain(card: dict) -> dict:
    """``card`` as JSON would give it back (numpy scalars and arrays become numbers and lists)."""
    return json.loads(json.dumps(card, default=_jsonable))


def save_model(model, path: str | Path, card: ModelCard | dict) -> Path:
    """Save ``model`` as ``path`` (.keras), its card as ``path`` with .json and the readable
    model card (Hugging Face shape) with .md.

    ``card`` (from :func:`make_card`, or a dict of the card's keys) must give classes, image_size,
    channels and preprocessing, and agree with the model (input shape; outputs vs classes); the
    file hash, input shape and package versions are added here.

    Args:
        model: the Keras model.
        path: the .keras file to write (its folder is created; an existing one is replaced).
        card: a :class:`ModelCard` or a dict of the card's keys.

    Returns:
        ``path``, as a Path.

    Raises:
        ValueError: ``path`` does not end in .keras.
        ModelCardError: the card is incomplete, has a value of the wrong type or disagrees with the model.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: models are saved in the native Keras format; use a .keras name")
    if not isinstance(card, ModelCard):
        card = ModelCard.from_dict(_plain(card))
    if not card.preprocessing:
        raise ModelCardError(f"{path}: model card is missing 'preprocessing' (how an image becomes the "
                             "model's input); give it to make_card")
    check_agrees(model, card, f"{path}: the model to save")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    full = dataclasses.replace(card, card_version=CARD_VERSION, input_shape=list(model.input_shape[1:]),
                               model_file=path.name, model_sha256=sha256_file(path),
                               versions=package_versions(), source=card_path(path))
    atomic_write(card_path(path), json.dumps(full.to_dict(), indent=2, default=_jsonable))
    from fracturelib.models import card_markdown
    card_markdown.write(read_card(path), path)      # the card people read
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


def read_card(path: str | Path) -> ModelCard:
    """The checked card of the model ``path`` (its .json beside it).

    Args:
        path: the model file (.keras).

    Returns:
        The :class:`ModelCard`, with ``source`` set to the card file.

    Raises:
        ModelCardError: no card, invalid JSON, a newer version, a missing key or a value of the wrong
            type; one line naming the card and the fix.
    """
    cp = card_path(path)
    if not cp.exists():
        raise ModelCardError(f"{path}: no model card {cp.name} next to it; models are only "
                             "loaded with their card (save them with fracturelib.models.cards.save_model)")
    try:
        d = json.loads(cp.read_text())
    except (ValueError, RecursionError) as e:      # JSON, encoding, an integer of > 4300 digits, nesting
        why = (str(e).splitlines() or [type(e).__name__])[0].split("; ")[0][:120]
        raise ModelCardError(f"{cp}: not a valid model card (invalid JSON: {why}); re-save the model "
                             "with fracturelib.models.cards.save_model") from None
    except OSError as e:                           # a folder, unreadable
        raise ModelCardError(f"{cp}: cannot read the model card ({e.strerror or type(e).__name__}); "
                             "re-save the model with fracturelib.models.cards.save_model") from None
    card = ModelCard.from_dict(d, source=cp)
    missing = [k for k in SAVED if getattr(card, k) is None]
    if missing:
        raise ModelCardError(f"{cp}: model card is missing {', '.join(map(repr, missing))}; re-save the "
                             "model with fracturelib.models.cards.save_model")
    return card


def _check_archive(path: Path) -> None:
    """A .keras file is a zip holding config.json; anything else (truncated, damaged, another
    format) is said so, not "File not found" (what Keras answers)."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            ok = "config.json" in z.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        ok = False
    if not ok:
        raise ModelCardError(f"{path}: not a Keras model archive (truncated or damaged); re-save it "
                             "(fracturelib.models.cards.save_model) or copy it again")


def check_agrees(model, card: ModelCard, where: str) -> None:
    """ModelCardError unless ``model``'s input is the card's image_size x image_size x channels and
    its output fits the classes: one sigmoid unit for 2 classes, else one softmax unit a class;
    a heatmap (rank 4) only for a localisation card; a detection card's model has the three CenterNet
    maps (heatmap, box size, box offset) on one grid.

    Args:
        model: the Keras model.
        card: its :class:`ModelCard`.
        where: how messages name the model (e.g. its path).

    Raises:
        ModelCardError: several inputs or outputs, or an input or output that differs from the card.
    """
    said = [card.image_size, card.image_size, card.channels]
    if card.task == "detection":
        _check_detector_outputs(model, where)
    elif not isinstance(model.input_shape, tuple) or not isinstance(model.output_shape, tuple):
        raise ModelCardError(f"{where}: has several inputs or outputs; fracturelib models have one each")
    shape = list(model.input_shape[1:])
    if shape != said or (card.input_shape is not None and shape != card.input_shape):
        raise ModelCardError(f"{where}: model input {shape} differs from its card (input_shape "
                             f"{card.input_shape}, image_size {card.image_size}, channels "
                             f"{card.channels}); {FIX}")
    out = model.output_shape
    n = len(card.classes)
    if card.task == "detection":
        return
    if len(out) == 2:
        if card.task == "localisation":
            raise ModelCardError(f"{where}: is a classifier ({out[-1]} output units), but its card says "
                                 f"task 'localisation'; {FIX}")
        units = out[-1]
        if (units == 1 and n != 2) or (units != 1 and units != n):
            what = "one sigmoid unit: 2 classes" if units == 1 else f"softmax over {units} classes"
            raise ModelCardError(f"{where}: the model has {units} output unit{'s' * (units != 1)} ({what}) "
                                 f"but its card lists {n} class{'es' * (n != 1)} {_shown(card.classes, 50)}; {FIX}")
    elif card.task in CLASSIFIER_TASKS:
        raise ModelCardError(f"{where}: its output {list(out[1:])} is not a classifier's, but its card says "
                             f"task {card.task!r}; {FIX}")


def _check_detector_outputs(model, where: str) -> None:
    """ModelCardError unless ``model`` has one input and the detector's three outputs: a one-channel
    heatmap and two-channel size and offset maps on the same grid, whose cells are whole input pixels."""
    ins, outs = model.input_shape, model.output_shape
    shapes = [tuple(o) for o in outs] if isinstance(outs, list) else []
    if not isinstance(ins, tuple) or len(shapes) != 3 or any(len(o) != 4 for o in shapes) \
            or [o[-1] for o in shapes] != [1, 2, 2] or len({o[1:3] for o in shapes}) != 1 \
            or not shapes[0][1] or (ins[1] or 0) % shapes[0][1]:       # whole input pixels per cell
        raise ModelCardError(f"{where}: is no detector (one image input; heatmap, box size and box offset "
                             f"outputs on one grid), its outputs are {_shown(outs, 80)}; its card says task "
                             f"'detection'; {FIX}")


def load_model(path: str | Path, expect: dict | None = None):
    """Load a .keras model after checking its card; returns ``(model, card)`` (a :class:`ModelCard`).

    Refuses: a missing, malformed or newer card, a file that is no Keras archive, a file whose hash
    differs from the card's, an input shape or output width that differs from the card, and any
    ``expect`` entry (e.g. ``{"channels": 1}``) that the card contradicts.
    Loading uses Keras ``safe_mode`` (no arbitrary code from lambda layers).

    Args:
        path: the .keras file; its card is the .json beside it.
        expect: card key -> the value the caller needs (tuples compare as lists), or None.

    Returns:
        (the Keras model, not compiled; its :class:`ModelCard`).

    Raises:
        ModelCardError: any of the refusals above; one line naming the file and the fix.
    """
    import keras

    path = Path(path)
    if not path.is_file():
        raise ModelCardError(f"{path}: {'a folder, not a model file' if path.is_dir() else 'no such model file'}; "
                             "give the .keras file a notebook wrote (02/03: classifiers, 04: localiser and detector)")
    card = read_card(path)
    _check_archive(path)
    if card.model_sha256 != sha256_file(path):
        raise ModelCardError(f"{path}: file differs from the one its card describes "
                             "(hash mismatch); re-save the model with its card")
    have_all = card.to_dict()
    for key, want in (expect or {}).items():
        have = have_all.get(key)
        if isinstance(want, tuple):
            want = list(want)
        if have != want:
            raise ModelCardError(f"{path}: card says {key}={have!r}, expected {want!r}")
    import zipfile

    from fracturelib.models.backbones import custom_objects
    try:
        model = keras.models.load_model(path, safe_mode=True, compile=False,
                                        custom_objects=custom_objects())
    except (ValueError, TypeError, KeyError, OSError, EOFError, RuntimeError, zipfile.BadZipFile) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]   # a damaged member: Bad CRC-32 ...
        raise ModelCardError(f"{path}: Keras cannot load this model ({why}); re-save it with this "
                             "fracturelib or copy it again") from None
    check_agrees(model, card, str(path))
    return model, card


def metrics_dict(table) -> dict:
    """A metrics table (metric x value/ci_low/ci_high) as the card's nested dict.

    Args:
        table: a DataFrame indexed by metric, columns value, ci_low, ci_high.

    Returns:
        Metric -> {column -> value}.
    """
    return {k: table.loc[k].to_dict() for k in table.index}


def make_card(task: str, classes, image_size: int, channels: int, preprocessing: str, data_dir=None,
              manifest=None, split: dict | None = None, parts: dict | None = None, *, data: dict | None = None,
              companions: dict | None = None, **extra) -> ModelCard:
    """The one place a model card is made (``splits.split_from_card`` reads its data back).

    Args:
        task: ``binary``, ``fracture-type``, ``localisation`` or ``detection`` (then ``box_threshold`` too).
        classes, image_size, channels, preprocessing: what a caller needs to feed the model.
        data_dir, manifest: the data it was trained on (its manifest hash is recorded).
        split: seed, val_fraction, test_fraction, subset_fraction, respect_existing.
        parts: ``{"train": rows, "val": rows, "test": rows}`` (their sizes are recorded).
        data: instead of the four above, another card's ``data`` (a model trained on that split).
        companions: kind -> file name beside the model (``config.COMPANIONS``: the localiser, the
            fracture detector and the radiograph (OOD) detector that `fracturelib predict` uses with it).
        **extra: the card's other fields (threshold, backbone, weights, test metrics ...); keys
            the card does not know are kept in ``extra``.

    Returns:
        The :class:`ModelCard` for :func:`save_model` (ModelCardError when a value has the wrong type).

    Raises:
        ValueError: neither ``data`` nor all of data_dir, manifest, split and parts given, or
            ``split`` lacks one of its keys.
        ModelCardError: a value of the wrong type.
    """
    if data is None:
        from fracturelib.data import manifest_hash
        if manifest is None or split is None or parts is None or data_dir is None:
            raise ValueError("make_card needs data_dir, manifest, split and parts, or data=")
        need = {"seed", "val_fraction", "test_fraction", "subset_fraction", "respect_existing"}
        if need - set(split):
            raise ValueError(f"split is missing {sorted(need - set(split))}")
        data = {"root": Path(data_dir).name, "manifest_hash": manifest_hash(manifest),
                "split_seed": split["seed"], "split": dict(split),
                "n": {s: int(len(v)) for s, v in parts.items()}}
    d = {"task": task, "classes": list(classes), "image_size": image_size, "channels": channels,
         "preprocessing": preprocessing, "data": data, "companions": dict(companions or {}), **extra}
    return ModelCard.from_dict(_plain(d))
