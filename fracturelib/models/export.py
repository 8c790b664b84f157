"""Export a saved Keras model to LiteRT (``.tflite``) behind a parity gate (``fracturelib export``).

The classifier is converted by TensorFlow's converter (through a SavedModel of its batch-1 call,
built-in ops only, so the LiteRT interpreter of ``ai-edge-litert`` runs it without TensorFlow), with
``quantize`` ``none`` (float32), ``float16`` (weights) or ``int8`` (full-integer kernels with float
input and output, activations calibrated on ``calibration`` training images drawn evenly from every
class). The localiser, the fracture detector and the radiograph (OOD) feature extractor the card names
are exported with it (``localiser.tflite``, ``detector.tflite``, ``ood_features.tflite``) and the OOD
detector's ``ood.npz`` stays as it is. The fracture detector's three outputs are checked against the
Keras model's, head by head, when it is exported.

The gate: on the validation images of the split the card records (re-created from the card's data
folder), the exported classifier's decisions must agree with the Keras model's on at least
:data:`MIN_AGREEMENT` of the images and its ROC-AUC be within :data:`MAX_AUC_DIFF`; otherwise the
export is refused with the figures (:class:`ParityError`), or written with ``force`` and the card
says so. The card of the ``.tflite`` (``<name>.tflite.json``, the same :class:`ModelCard` schema)
records the format, the quantization and the figures.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fracturelib import config
from fracturelib.files import atomic_write, sha256_file
from fracturelib.models.cards import CARD_VERSION, ModelCard, ModelCardError, card_path, load_model, package_versions

QUANTIZE = ("none", "float16", "int8")
#: The gate: decisions that agree with the Keras model's on at least this share of validation images ...
MIN_AGREEMENT = 0.995
#: ... and a ROC-AUC within this of the Keras model's.
MAX_AUC_DIFF = 0.005
#: A binary decision is a tie, not a disagreement, when the Keras score is within this of the threshold and
#: the LiteRT score within this of the Keras score: notebook 02 picks the threshold among the validation
#: scores, so one validation image sits on it and float rounding alone (float32 LiteRT, |dp| ~1e-7) decides.
TIE = 1e-4
#: The exported detector's boxes must overlap the Keras model's by at least this IoU (same number of boxes).
DETECTOR_IOU = 0.9
#: Calibration images for int8 (drawn from the training images, evenly from each class).
CALIBRATION = 200
#: Companion file names of an exported classifier (beside its .tflite).
LOCALISER_LITE = "localiser.tflite"
DETECTOR_LITE = "detector.tflite"
OOD_FEATURES_LITE = "ood_features.tflite"


class ExportError(ModelCardError):
    """The export cannot be checked or written (no data for the gate, a model that cannot convert)."""


class ParityError(Exception):
    """The exported model does not agree with the Keras model (the gate's figures in the message)."""


def convert(model, quantize: str = "none", representative=None) -> bytes:
    """A Keras model as LiteRT flatbuffer bytes (batch 1, float input and output, built-in ops only).

    Args:
        model: the Keras model (one input, one output).
        quantize: ``none``, ``float16`` (weights) or ``int8`` (full integer kernels; needs ``representative``).
        representative: for int8, an array (N, S, S, C) of calibration inputs.

    Returns:
        The ``.tflite`` file's bytes.

    Raises:
        ValueError: an unknown ``quantize``, or int8 without calibration images.
    """
    import tempfile
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize {quantize!r}: use one of {', '.join(QUANTIZE)}")
    if quantize == "int8" and (representative is None or not len(representative)):
        raise ValueError("int8 needs calibration images")
    with tempfile.TemporaryDirectory() as d:
        return converter(model, d, quantize, representative).convert()


def converter(model, folder: str | Path, quantize: str = "none", representative=None):
    """TensorFlow's LiteRT converter for ``model`` (exported as a SavedModel of its batch-1 call into
    ``folder``, which must outlive the conversion), set up as :func:`convert` uses it.

    Args:
        model: the Keras model (one input, one output).
        folder: an empty folder for the SavedModel.
        quantize: ``none``, ``float16`` or ``int8``.
        representative: for int8, an array (N, S, S, C) of calibration inputs.

    Returns:
        The ``tf.lite.TFLiteConverter`` (for :func:`layer_errors`, or ``.convert()``).
    """
    import functools

    import keras
    import tensorflow as tf
    shape = [1, *model.input_shape[1:]]
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", functools.partial(model.__call__, training=False),
                         input_signature=[tf.TensorSpec(shape, tf.float32)])
    archive.write_out(str(folder), verbose=False)
    conv = tf.lite.TFLiteConverter.from_saved_model(str(folder))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([x[None].astype(np.float32)] for x in representative)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    return conv


def layer_errors(model, representative, images, denylisted_nodes=None) -> list[dict]:
    """Per-tensor int8 error of ``model``, in the order the LiteRT graph computes them, from TensorFlow's
    quantization debugger: each quantized op's output against the same op run in float on the same
    (quantized) inputs, so an entry is that op's own error, not the error accumulated before it.

    Args:
        model: the Keras model.
        representative: (N, S, S, C) calibration inputs (as :func:`convert` takes them).
        images: (M, S, S, C) inputs the errors are measured on.
        denylisted_nodes: tensor names kept in float (selective quantization), or None.

    Returns:
        One dict per quantized tensor: ``tensor`` (its name), ``op``, ``scale`` (its int8 step),
        ``rmse``, ``max_abs_error``, ``rmse_per_step`` (``rmse / scale``: about 0.29 is pure rounding,
        well above 1 means clipping or a range too wide for the values that matter) and ``range``
        (``scale * 255``).
    """
    import io
    import tempfile

    import pandas as pd
    import tensorflow as tf
    with tempfile.TemporaryDirectory() as d:
        conv = converter(model, d, "int8", representative)
        opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=denylisted_nodes)
        dbg = tf.lite.experimental.QuantizationDebugger(
            converter=conv, debug_dataset=lambda: ([x[None].astype(np.float32)] for x in images),
            debug_options=opts)
        dbg.run()
    buf = io.StringIO()
    dbg.layer_statistics_dump(buf)
    buf.seek(0)
    df = pd.read_csv(buf)
    out = []
    for r in df.sort_values("tensor_idx").itertuples():
        rmse = float(np.sqrt(r.mean_squared_error))
        out.append({"tensor": r.tensor_name, "op": r.op_name, "scale": float(r.scale), "rmse": rmse,
                    "max_abs_error": float(r.max_abs_error), "rmse_per_step": rmse / float(r.scale),
                    "range": 255 * float(r.scale)})
    return out


def positive_scores(outputs: np.ndarray, binary: bool) -> np.ndarray:
    """Model outputs as scores: p(positive) (N,) for a binary model, else the class probabilities (N, K).

    Args:
        outputs: (N, 1) sigmoid or (N, K) softmax outputs.
        binary: one sigmoid unit.

    Returns:
        (N,) or (N, K) float64.
    """
    out = np.asarray(outputs, np.float64)
    return out[:, 0] if binary else out


def parity(ref: np.ndarray, lite: np.ndarray, labels: np.ndarray | None, threshold: float | None) -> dict:
    """How far the exported model's scores are from the Keras model's on the same images.

    Args:
        ref, lite: scores of :func:`positive_scores` (binary (N,), else (N, K)).
        labels: the true labels (0/1, or class indices), or None (no ROC-AUC).
        threshold: the binary decision threshold (None: arg-max).

    Returns:
        ``{"n", "agreement", "ties", "max_abs_diff", "roc_auc_keras", "roc_auc_litert", "roc_auc_diff"}``:
        ``ties`` counts the binary decisions that differ only within :data:`TIE` of the threshold (they
        count as agreeing); the ROC-AUCs are None when ``labels`` is None or has one class.
    """
    binary = ref.ndim == 1
    d_ref = ref >= threshold if binary else ref.argmax(axis=1)
    d_lite = lite >= threshold if binary else lite.argmax(axis=1)
    same = d_ref == d_lite
    ties = ~same & (np.abs(ref - threshold) <= TIE) & (np.abs(lite - ref) <= TIE) if binary else np.zeros_like(same)
    out = {"n": int(len(ref)), "agreement": float(np.mean(same | ties)) if len(ref) else 1.0, "ties": int(ties.sum()),
           "max_abs_diff": float(np.abs(ref - lite).max()) if len(ref) else 0.0,
           "roc_auc_keras": None, "roc_auc_litert": None, "roc_auc_diff": None}
    if labels is not None and len(np.unique(labels)) > 1:
        from sklearn.metrics import roc_auc_score
        kw = {} if binary else {"multi_class": "ovr", "labels": list(range(ref.shape[1]))}
        try:
            a, b = roc_auc_score(labels, ref, **kw), roc_auc_score(labels, lite, **kw)
        except ValueError:                          # a class absent from validation (multi-class)
            return out
        out.update(roc_auc_keras=float(a), roc_auc_litert=float(b), roc_auc_diff=float(abs(a - b)))
    return out


def passes(figures: dict) -> bool:
    """Whether parity figures pass the gate (agreement >= MIN_AGREEMENT, ROC-AUC within MAX_AUC_DIFF).

    Args:
        figures: a result of :func:`parity`.

    Returns:
        True when both hold (a missing ROC-AUC is judged on agreement alone).
    """
    auc_ok = figures.get("roc_auc_diff") is None or figures["roc_auc_diff"] <= MAX_AUC_DIFF
    return figures["agreement"] >= MIN_AGREEMENT and auc_ok


def describe(figures: dict) -> str:
    """The gate's figures as one line.

    Args:
        figures: a result of :func:`parity`.

    Returns:
        E.g. ``decisions agree on 99.6% of 120 validation images (gate >= 99.5%), ROC-AUC 0.812 vs 0.811 ...``.
    """
    s = (f"decisions agree on {100 * figures['agreement']:.1f}% of {figures['n']} validation images "
         f"(gate >= {100 * MIN_AGREEMENT:.1f}%)")
    if figures.get("roc_auc_diff") is not None:
        s += (f", ROC-AUC {figures['roc_auc_litert']:.4f} vs Keras {figures['roc_auc_keras']:.4f} "
              f"(|diff| {figures['roc_auc_diff']:.4f}, gate <= {MAX_AUC_DIFF})")
    return s + f", max |dp| {figures['max_abs_diff']:.4f}"


def data_folder(card: ModelCard, data_dir: str | Path | None = None) -> Path | None:
    """The folder of the data the card records: ``data_dir`` when given, else the card's data root
    under ``dataset/`` or the shared data folder.

    Args:
        card: the Keras model's card (``data["root"]``: the folder's name).
        data_dir: a folder the user named (``--data``), or None.

    Returns:
        The folder, or None when none is found.
    """
    if data_dir is not None:
        return Path(data_dir)
    root = (card.data or {}).get("root")
    if not root:
        return None
    for base in (config.DATASET_DIR, config.SHARED_DATA_DIR):
        if (base / root).is_dir():
            return base / root
    return None


def split_rows(card: ModelCard, data_dir: str | Path | None = None):
    """The manifest rows of the card's split (``split`` column), re-created from its data folder.

    Args:
        card: the Keras model's card.
        data_dir: the data folder (``--data``), or None to look for the card's.

    Returns:
        The rows (``data.splits.split_from_card``).

    Raises:
        ExportError: the card records no split, its data is not found, or the data differs from the card's.
    """
    from fracturelib.data.manifest import build_manifest
    from fracturelib.data.splits import split_from_card
    if not (card.data or {}).get("split"):
        raise ExportError("the model card records no data split, so the exported model cannot be checked "
                          "against the Keras model on its validation images; pass --force to export unchecked")
    folder = data_folder(card, data_dir)
    if folder is None or not folder.is_dir():
        root = (card.data or {}).get("root")
        raise ExportError(f"the model's data ({root!r}, needed for its validation images) is not available"
                          f"{f' at {folder}' if folder else ''}; pass --data DIR (the folder it was trained on) "
                          "or --force to export without the parity check")
    try:
        return split_from_card(build_manifest(folder, progress=False), card)
    except ValueError as e:
        raise ExportError(f"{folder}: {e}; pass --data DIR or --force") from None


def calibration_images(rows, card: ModelCard, n: int, size: int | None = None, channels: int | None = None,
                       seed: int = config.SEED) -> np.ndarray:
    """``n`` training images drawn evenly from each class (seeded), as the model's input.

    Args:
        rows: the split's rows (:func:`split_rows`).
        card: the model's card (classes; input size and channels unless given).
        n: how many images in all.
        size, channels: the input wanted (default the card's).
        seed: the draw's seed.

    Returns:
        (n', S, S, C) float32 in [0, 255] (n' <= n when the training set is smaller).
    """
    from fracturelib.data.pipeline import load_images
    train = rows[rows["split"] == "train"]
    per = max(1, n // max(1, train["label"].nunique()))
    picked = [g.sample(min(len(g), per), random_state=seed) for _, g in train.groupby("label")]
    import pandas as pd
    draw = pd.concat(picked).sample(frac=1, random_state=seed) if picked else train.head(0)
    return load_images(draw, size or card.image_size, channels or card.channels)


@dataclass
class ExportResult:
    """What :func:`export_litert` wrote and measured.

    Attributes:
        path: the .tflite written (None when refused).
        card: its card.
        figures: the classifier's parity figures (None when not checked).
        passed: the gate's verdict (None when not checked).
        companions: kind -> the file written (localiser, detector, ood_features).
        seconds: wall time.
    """
    path: Path | None
    card: ModelCard | None
    figures: dict | None
    passed: bool | None
    companions: dict
    seconds: float


def _lite_card(card: ModelCard, model_path: Path, out: Path, quantize: str, figures: dict | None,
               companions: dict, forced: bool, reason: str | None) -> ModelCard:
    checked = figures is not None
    par = {**(figures or {}), "checked": checked, "passed": passes(figures) if checked else None,
           "min_agreement": MIN_AGREEMENT, "max_auc_diff": MAX_AUC_DIFF, "forced": forced}
    if reason:
        par["not_checked_because"] = reason
    return dataclasses.replace(
        card, card_version=CARD_VERSION, format="litert", quantization=quantize, parity=par, companions=companions,
        exported_from={"file": model_path.name, "sha256": card.model_sha256}, model_file=out.name,
        model_sha256=sha256_file(out), versions={**package_versions(), **_litert_version()}, preferred=False,
        source=card_path(out))


def _litert_version() -> dict:
    import importlib.metadata as md
    try:
        return {"ai-edge-litert": md.version("ai-edge-litert")}
    except md.PackageNotFoundError:
        return {}


def _write_card(card: ModelCard, out: Path) -> None:
    from fracturelib.models import card_markdown
    from fracturelib.models.cards import _jsonable
    atomic_write(card_path(out), json.dumps(card.to_dict(), indent=2, default=_jsonable))
    atomic_write(out.with_name(out.name + ".md"), card_markdown.render(card))


def export_litert(model_path: str | Path, quantize: str = "none", calibration: int = CALIBRATION,
                  force: bool = False, data_dir: str | Path | None = None, out: str | Path | None = None,
                  num_threads: int | None = None, companions: bool = True, log=print) -> ExportResult:
    """Export a saved Keras model (and its localiser, detector and OOD feature extractor) to LiteRT behind
    the gate.

    Args:
        model_path: the .keras classifier (its card beside it).
        quantize: ``none``, ``float16`` or ``int8``.
        calibration: int8 calibration images (training images, evenly from each class).
        force: write even when the gate fails or cannot be checked (the card says so).
        data_dir: the data folder of the card's split (default: the card's own, when present).
        out: the .tflite to write (default ``<model>.tflite`` beside it); companions go beside it.
        num_threads: LiteRT threads for the parity check.
        companions: export the localiser, detector and OOD feature extractor the card names, when present.
        log: where progress lines go (None: nowhere).

    Returns:
        An :class:`ExportResult`.

    Raises:
        ModelCardError: the model or its card cannot be used.
        ExportError: the gate cannot be checked (no split, no data) and ``force`` is off.
        ParityError: the gate failed and ``force`` is off (nothing is written).
    """
    from fracturelib.models.litert import LiteModel
    say = log or (lambda *_: None)
    t0 = time.perf_counter()
    model_path = Path(model_path)
    if model_path.suffix != ".keras":
        raise ExportError(f"{model_path}: export takes a .keras model (with its card)")
    if quantize not in QUANTIZE:
        raise ExportError(f"--quantize {quantize}: use one of {', '.join(QUANTIZE)}")
    model, card = load_model(model_path)
    if card.task in ("localisation", "detection") or len(model.output_shape) != 2:
        what = "a fracture detector" if card.task == "detection" else "a localiser"
        raise ExportError(f"{model_path}: {what}; export the classifier whose card names it, it goes with it")
    out = Path(out) if out else model_path.with_suffix(".tflite")
    binary = model.output_shape[-1] == 1
    rows, reason = None, None
    try:
        rows = split_rows(card, data_dir)
    except ExportError as e:
        if not force:
            raise
        reason = str(e).split("; pass")[0]
        say(f"warning: {reason}: exporting unchecked (--force)")
    need_cal = quantize == "int8"
    if need_cal and rows is None:
        raise ExportError("int8 needs calibration images from the model's training data; pass --data DIR")
    cal = calibration_images(rows, card, calibration) if need_cal else None
    say(f"converting {model_path.name} to LiteRT ({quantize}) ...")
    blob = convert(model, quantize, cal)
    lite = LiteModel(blob, num_threads)
    figures = None
    if rows is not None:
        from fracturelib.data.pipeline import labels_for, load_images
        val = rows[rows["split"] == "val"]
        x = load_images(val, card.image_size, card.channels)
        ref = positive_scores(model.predict(x, verbose=0, batch_size=32), binary)
        got = positive_scores(lite.predict_on_batch(x), binary)
        labels = labels_for(val, card.classes).astype(int)
        figures = parity(ref, got, labels, card.decision_threshold if binary else None)
        if not passes(figures):
            if not force:
                raise ParityError(f"{model_path}: LiteRT export ({quantize}) refused: {describe(figures)}; "
                                  "nothing written (--force writes it and says so in its card)")
            say(f"warning: parity gate failed, written anyway (--force): {describe(figures)}")
        else:
            say(f"parity: {describe(figures)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    written = _export_companions(card, model_path, out, quantize, rows, calibration, num_threads, say, force) \
        if companions else {}
    atomic_write(out, blob)
    names = {k: v for k, v in card.companions.items() if k not in ("localiser", "detector")}   # .keras: no LiteRT ones
    names.update({k: Path(v).name for k, v in written.items()})
    full = _lite_card(card, model_path, out, quantize, figures, names, force and (figures is None or
                      not passes(figures)), reason)
    _write_card(full, out)
    return ExportResult(out, full, figures, None if figures is None else passes(figures), written,
                        time.perf_counter() - t0)


def _export_companion(kind: str, src: Path, dest: Path, quantize: str, rows, calibration: int,
                      num_threads: int | None, say, force: bool = False) -> Path:
    """One Keras companion (localiser or detector) as ``dest`` with its card (``box_threshold`` and all kept);
    int8 without calibration data falls back to float16. A detector's LiteRT outputs must match its Keras
    heads one to one (:func:`detector_parity`, recorded in its card)."""
    model, mc = load_model(src)
    cal = calibration_images(rows, mc, calibration) if quantize == "int8" and rows is not None else None
    q = quantize if cal is not None or quantize != "int8" else "float16"
    say(f"converting the {kind} {src.name} ({q}) ...")
    blob = convert(model, q, cal)
    par = None
    if kind == "detector":
        probe = (calibration_images(rows, mc, 4) if rows is not None
                 else np.random.default_rng(0).uniform(0, 255, (2, *model.input_shape[1:])).astype(np.float32))
        par = detector_parity(model, blob, probe, num_threads, str(src), mc.box_threshold, force)
    atomic_write(dest, blob)
    lc = dataclasses.replace(
        mc, card_version=CARD_VERSION, format="litert", quantization=q, model_file=dest.name,
        model_sha256=sha256_file(dest), exported_from={"file": src.name, "sha256": mc.model_sha256},
        versions={**package_versions(), **_litert_version()}, source=card_path(dest),
        parity=par if par is not None else mc.parity)
    _write_card(lc, dest)
    return dest


def detector_parity(model, blob: bytes, images: np.ndarray, num_threads: int | None = None,
                    where: str = "detector", box_threshold: float | None = None, force: bool = False) -> dict:
    """The exported detector's heads against the Keras model's on ``images``: every value finite; each LiteRT
    output (taken in the order :class:`~fracturelib.models.litert.LiteModel` gives) of its Keras head's shape
    and closer to it than to any other head of that shape (a size and an offset head swapped by the converter
    are caught here, not read as wrong boxes later); and the gate: the boxes at ``box_threshold`` the same in
    number, each overlapping its Keras box by IoU >= :data:`DETECTOR_IOU`, unless ``force``.

    Args:
        model: the Keras detector (outputs heatmap, box_size, box_offset).
        blob: its ``.tflite`` bytes.
        images: (N, S, S, C) inputs as the detector takes them.
        num_threads: LiteRT threads.
        where: how a message names the detector.
        box_threshold: the detector card's threshold (None: 0.5).
        force: export a detector whose boxes differ anyway (the figures say so).

    Returns:
        ``{"n": N, "max_abs_diff": {head: max |LiteRT - Keras|}, "boxes_keras": n, "boxes_litert": n,
        "min_iou": the lowest IoU of matched boxes (1.0 without boxes), "passed": bool}``.

    Raises:
        ExportError: a non-finite output, an output of another shape or one that matches another head
            better, or (without ``force``) boxes that differ.
    """
    from fracturelib.models.box_decode import detect
    from fracturelib.models.litert import HEADS, LiteModel
    ref = [np.asarray(o, np.float64) for o in model.predict_on_batch(images)]
    got = LiteModel(blob, num_threads).predict_on_batch(images)
    got = [np.asarray(o, np.float64) for o in (got if isinstance(got, list) else [got])]
    if [o.shape for o in got] != [o.shape for o in ref]:
        raise ExportError(f"{where}: LiteRT outputs {[list(o.shape[1:]) for o in got]} differ from the Keras "
                          f"heads {[list(o.shape[1:]) for o in ref]}; export it again")
    if not all(np.isfinite(o).all() for o in (*ref, *got)):
        raise ExportError(f"{where}: its heads give NaN or infinite values on the check images (Keras or LiteRT); "
                          "train it again (notebook 04) before exporting")
    diff = [[float(np.abs(g - r).max()) if g.shape == r.shape else np.inf for r in ref] for g in got]
    for i, row in enumerate(diff):
        if min(row) < row[i]:
            other = HEADS[row.index(min(row))]
            raise ExportError(f"{where}: LiteRT output {i} matches the Keras head {other} better than its own "
                              f"({HEADS[i]}); export it again")
    thr = 0.5 if box_threshold is None else float(box_threshold)
    sizes = [(images.shape[2], images.shape[1])] * len(images)
    keras_boxes = detect(model, images, sizes, k=10, threshold=thr)
    lite_boxes = detect(LiteModel(blob, num_threads), images, sizes, k=10, threshold=thr)
    ious = [_iou(a[:4], b[:4]) for ka, kb in zip(keras_boxes, lite_boxes) if len(ka) == len(kb) for a, b in zip(ka, kb)]
    same = all(len(a) == len(b) for a, b in zip(keras_boxes, lite_boxes)) and min(ious, default=1.0) >= DETECTOR_IOU
    figures = {"n": int(len(images)), "max_abs_diff": dict(zip(HEADS, (diff[i][i] for i in range(len(ref))))),
               "boxes_keras": int(sum(map(len, keras_boxes))), "boxes_litert": int(sum(map(len, lite_boxes))),
               "min_iou": round(float(min(ious, default=1.0)), 4), "passed": bool(same)}
    if not same and not force:
        raise ExportError(f"{where}: the exported detector's boxes at the threshold {thr:.3f} differ from the Keras "
                          f"model's on {len(images)} check images ({figures['boxes_litert']} vs "
                          f"{figures['boxes_keras']} boxes, lowest IoU {figures['min_iou']:.2f}); export without "
                          "--quantize, or pass --force to keep it (its card says so)")
    return figures


def _iou(a, b) -> float:
    """IoU of two ``x0, y0, x1, y1`` boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else float(np.allclose(a, b))


def _export_companions(card: ModelCard, model_path: Path, out: Path, quantize: str, rows, calibration: int,
                       num_threads: int | None, say, force: bool = False) -> dict:
    """The localiser and the fracture detector (each with its card) and the OOD feature extractor the card
    names, exported beside ``out``; the OOD detector's ``ood.npz`` and ``.json`` copied there when ``out`` is
    elsewhere."""
    import shutil
    written = {}
    for kind, name in (("localiser", LOCALISER_LITE), ("detector", DETECTOR_LITE)):
        src = card.companion_path(kind)
        if src is not None and src.exists():
            written[kind] = _export_companion(kind, src, out.parent / name, quantize, rows, calibration,
                                              num_threads, say, force)
    ood_path = card.companion_path("ood")
    if ood_path is not None and ood_path.exists():
        from fracturelib.models import ood
        det = ood.Detector.load(ood_path)
        if ood_path.parent.resolve() != out.parent.resolve():
            for p in (ood_path, ood_path.with_suffix(".json")):
                shutil.copyfile(p, out.parent / p.name)
        feats = ood.feature_model(1, det.image_size, det.backbone)
        cal = calibration_images(rows, card, calibration, det.image_size, 1) \
            if quantize == "int8" and rows is not None else None
        q = quantize if cal is not None or quantize != "int8" else "float16"
        say(f"converting the radiograph (OOD) feature extractor ({det.backbone}, {q}) ...")
        dest = out.parent / OOD_FEATURES_LITE
        atomic_write(dest, convert(feats, q, cal))
        written["ood_features"] = dest
    return written
