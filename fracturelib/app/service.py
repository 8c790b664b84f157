"""What the web app (page and JSON API) does, thin over :class:`~fracturelib.app.predict.Predictor`:
the models of one folder (by their cards), one loaded predictor per model, bounded concurrency,
uploads kept in private temporary files that are removed after each request, and the answers as
``fracturelib predict --json`` gives them (same code path: :func:`~fracturelib.app.predict.predict_many`).

No web framework is imported here: :mod:`fracturelib.app.web` draws the page, :mod:`fracturelib.app.serve`
mounts it beside the API.
"""
from __future__ import annotations

import base64
import csv
import io
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from fracturelib import config
from fracturelib.models.cards import ModelCard, ModelCardError

#: The largest upload (MB) the server takes; ``fracturelib serve --max-upload-mb`` or the environment
#: variable ``FRACTURELIB_MAX_UPLOAD_MB`` change it.
MAX_UPLOAD_MB = 50
#: Predictions running at once (each holds a decoded image within ``config.DECODE_BUDGET_MB``); more wait.
CONCURRENCY = 2
#: Requests that may wait for a slot; beyond this the API answers 503 (the page: "busy, try again").
MAX_WAITING = 64
#: The image formats the page offers in its file picker (any file is read by content, not by name).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")
RESEARCH_NOTE = ("Research tool, not a medical device: the answers are a research model's, for study and "
                 "teaching; a clinician must read every radiograph.")
CSV_COLUMNS = ("file", "decision", "probability", "threshold", "in_distribution", "fracture_point",
               "fracture_point_mm", "boxes", "warning", "error")
#: A CSV cell starting with one of these is a formula to a spreadsheet: it is written behind a quote.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class ServiceError(Exception):
    """A request the service refuses, with the HTTP status the API answers and a readable message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def max_upload_bytes(mb: float | None = None) -> int:
    """The upload limit in bytes: ``mb``, else ``FRACTURELIB_MAX_UPLOAD_MB``, else :data:`MAX_UPLOAD_MB`.

    Args:
        mb: the limit in MB, or None.

    Returns:
        The limit in bytes.
    """
    if mb is None:
        mb = float(os.environ.get("FRACTURELIB_MAX_UPLOAD_MB", MAX_UPLOAD_MB))
    return int(mb * (1 << 20))


def display_name(name: str | None) -> str:
    """An uploaded file's name as shown (never used as a path): its last part, printable, at most 120
    characters.

    Args:
        name: the name the client sent (may hold folders, control characters, or be empty).

    Returns:
        The name to show, ``upload`` when nothing is left.
    """
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(c for c in base if c.isprintable()).strip()
    return base[:120] or "upload"


@dataclass
class ModelEntry:
    """A model of the served folder: its menu name (the file's stem), path and card."""
    name: str
    path: Path
    card: ModelCard

    @property
    def task(self) -> str:
        """binary, fracture-type (or the card's task)."""
        if self.card.task:
            return self.card.task
        return "binary" if len(self.card.classes) == 2 else "fracture-type"

    def key_metric(self) -> tuple[str, dict] | None:
        """(name, {value, ci_low, ci_high}) of the card's headline test metric: ROC-AUC for binary
        models, macro-F1 (else accuracy) for the others; None when the card has no test metrics.

        Returns:
            The metric's name and its value with CI, or None.
        """
        metrics = self.card.test_metrics or self.card.test_metrics_honest or {}
        for key in ("roc_auc", "macro_f1", "accuracy"):
            if isinstance(metrics.get(key), dict) and metrics[key].get("value") is not None:
                return key, metrics[key]
        return None

    def label(self) -> str:
        """The model menu's text: name, task and the key metric with its CI.

        Returns:
            E.g. ``binary_transfer - binary - test ROC-AUC 0.85 (95% CI 0.80-0.90)``.
        """
        km = self.key_metric()
        metric = f"test {METRIC_NAMES.get(km[0], km[0])} {with_ci(km[1])}" if km else "no test metrics on its card"
        title = self.card.model_name if self.card.model_name and self.card.model_name != self.name else ""
        fmt = f"LiteRT {self.card.quantization or ''}".strip() if self.card.format == "litert" else ""
        return " - ".join(x for x in (self.name + (f" ({title})" if title else ""), self.task, fmt, metric) if x)

    def describe(self) -> dict:
        """The model as ``GET /api/models`` lists it.

        Returns:
            name, file, task, classes, format (``keras`` or ``litert``), quantization (None for Keras),
            threshold, key_metric ({name, value, ci_low, ci_high} or None), metrics_at_threshold, preferred,
            label.
        """
        km = self.key_metric()
        return {"name": self.name, "file": self.path.name, "task": self.task, "classes": list(self.card.classes),
                "format": self.card.format or "keras", "quantization": self.card.quantization,
                "threshold": self.card.threshold if self.task == "binary" else None,
                "key_metric": {"name": km[0], **km[1]} if km else None,
                "metrics_at_threshold": self.card.test_metrics_at_threshold or None,
                "preferred": bool(self.card.preferred), "label": self.label()}


METRIC_NAMES = {"roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "macro_f1": "macro-F1", "accuracy": "accuracy",
                "recall": "sensitivity", "sensitivity": "sensitivity", "specificity": "specificity"}


def with_ci(m: dict | None) -> str:
    """A card metric as text.

    Args:
        m: {value, ci_low, ci_high} (CIs may be missing).

    Returns:
        ``0.912 (95% CI 0.880-0.940)``, or ``n/a``.
    """
    if not isinstance(m, dict) or m.get("value") is None:
        return "n/a"
    text = f"{float(m['value']):.3f}"
    if m.get("ci_low") is not None and m.get("ci_high") is not None:
        text += f" (95% CI {float(m['ci_low']):.3f}-{float(m['ci_high']):.3f})"
    return text


def find_models(models_dir: str | Path) -> tuple[list[ModelEntry], list[str]]:
    """The classifiers of ``models_dir`` with a readable card (localisers and detectors are companions, not menu
    entries).

    Args:
        models_dir: the folder ``fracturelib serve --models`` names; nothing outside it is loaded.

    Returns:
        (entries, the preferred binary model first, then by name; one line per model file passed over).
        A ``.keras`` model is named by its file's stem, an exported ``.tflite`` (``fracturelib export``, its
        card ``<name>.tflite.json``) too, or ``<stem>-litert`` beside a ``.keras`` of the same stem; the
        exported OOD feature extractor (a companion without a card of its own) is no entry.
    """
    from fracturelib.models.cards import read_card
    from fracturelib.models.export import OOD_FEATURES_LITE
    from fracturelib.models.litert import SUFFIX
    folder = Path(models_dir)
    entries, skipped = [], []
    paths = sorted([*folder.glob("*.keras"), *folder.glob("*" + SUFFIX)]) if folder.is_dir() else []
    stems = {p.stem for p in paths if p.suffix == ".keras"}
    for path in paths:
        if path.name == OOD_FEATURES_LITE:
            continue
        try:
            card = read_card(path)
        except ModelCardError as e:
            skipped.append(str(e))
            continue
        if card.task in ("localisation", "detection"):
            continue
        lite = path.suffix == SUFFIX
        entries.append(ModelEntry(f"{path.stem}-litert" if lite and path.stem in stems else path.stem, path, card))
    entries.sort(key=lambda e: (not (e.card.preferred and len(e.card.classes) == 2), e.task != "binary", e.name))
    return entries, skipped


class Service:
    """The served models and how requests reach them: at most ``concurrency`` predictions at once (the
    others wait, up to ``max_waiting``), each model loaded once on first use.

    Attributes:
        models: name -> :class:`ModelEntry`, in menu order.
        skipped: the model files passed over (unreadable cards), one line each.
        max_upload: the upload limit in bytes.
    """

    def __init__(self, models_dir: str | Path | None = None, max_upload_mb: float | None = None,
                 concurrency: int = CONCURRENCY, max_waiting: int = MAX_WAITING, cam: str = "gradcam"):
        """``models_dir`` (default ``config.MODELS_DIR``): the only folder models are loaded from."""
        self.models_dir = Path(models_dir or config.MODELS_DIR)
        entries, self.skipped = find_models(self.models_dir)
        self.models = {e.name: e for e in entries}
        self.max_upload = max_upload_bytes(max_upload_mb)
        self.cam = cam
        self.concurrency, self.max_waiting = max(1, concurrency), max(0, max_waiting)
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        self._waiting = threading.BoundedSemaphore(max(1, concurrency) + max(0, max_waiting))
        self._loading = threading.Lock()
        self._predictors: dict = {}
        self._locks: dict[str, threading.Lock] = {}
        self.tmp_root = Path(tempfile.mkdtemp(prefix="fracturelib-serve-"))

    def close(self) -> None:
        """Remove the service's temporary folder (what is left in it)."""
        shutil.rmtree(self.tmp_root, ignore_errors=True)

    @property
    def default(self) -> str | None:
        """The model used when none is named: the preferred binary one, else the first (None: no models)."""
        return next(iter(self.models), None)

    def entry(self, name: str | None) -> ModelEntry:
        """The model ``name`` (None or empty: the default).

        Args:
            name: a menu name (a file stem of ``--models``); never a path.

        Returns:
            Its :class:`ModelEntry`.

        Raises:
            ServiceError: no models are served, or ``name`` is not one of them (404).
        """
        if not self.models:
            raise ServiceError(f"no models in {self.models_dir}: run `make reports` (or pass --models)", 503)
        name = name or self.default
        if name not in self.models:
            raise ServiceError(f"unknown model {display_name(str(name))!r}; the models served are: "
                               f"{', '.join(self.models)}", 404)
        return self.models[name]

    def predictor(self, name: str | None):
        """The loaded :class:`~fracturelib.app.predict.Predictor` of model ``name`` (loaded once).

        Args:
            name: a menu name, or None for the default.

        Returns:
            (the entry, its predictor, the lock that serialises its use).

        Raises:
            ServiceError: unknown model (404), or a model that does not load (500).
        """
        from fracturelib.app.predict import Predictor
        e = self.entry(name)
        with self._loading:
            if e.name not in self._predictors:
                try:
                    self._predictors[e.name] = Predictor(e.path, cam=self.cam)
                except ModelCardError as err:
                    raise ServiceError(f"model {e.name} cannot be used: {err}", 500) from None
                self._locks[e.name] = threading.Lock()
        return e, self._predictors[e.name], self._locks[e.name]

    def _slot(self):
        """A context manager that holds one of the prediction slots (ServiceError 503 when too many wait)."""
        service = self

        class _Held:
            def __enter__(self):
                if not service._waiting.acquire(blocking=False):
                    raise ServiceError("the server is busy (too many requests waiting); try again shortly", 503)
                service._slots.acquire()

            def __exit__(self, *exc):
                service._slots.release()
                service._waiting.release()
                return False
        return _Held()

    def workdir(self) -> Path:
        """A new private temporary folder for one request (remove it with ``shutil.rmtree``).

        Returns:
            The folder, inside the service's temporary folder.
        """
        return Path(tempfile.mkdtemp(dir=self.tmp_root))

    def check_size(self, size: int, name: str) -> None:
        """ServiceError unless an upload of ``size`` bytes is non-empty and within the limit.

        Args:
            size: the upload's size in bytes.
            name: the shown name.

        Raises:
            ServiceError: empty (400) or too large (413).
        """
        if size > self.max_upload:
            raise ServiceError(f"{name}: too large ({size / (1 << 20):.1f} MB; the limit is "
                               f"{self.max_upload / (1 << 20):.0f} MB)", 413)
        if size == 0:
            raise ServiceError(f"{name}: empty file (0 bytes); upload an image (PNG, JPEG, TIFF, BMP, DICOM)", 400)

    def predict_upload(self, data: bytes, filename: str | None, model: str | None = None) -> dict:
        """The API's answer for one uploaded file: exactly what ``fracturelib predict IMAGE --json``
        prints, computed by the same code (:func:`~fracturelib.app.predict.predict_many`), with
        ``image`` the uploaded file's shown name and ``overlay`` the overlay PNG as a ``data:`` URL
        (or None). The upload and the overlay are written to a private temporary folder under a fixed
        name and removed before this returns.

        Args:
            data: the file's bytes.
            filename: the name the client sent (shown only).
            model: a model name of :meth:`models` (None: the default).

        Returns:
            The JSON result.

        Raises:
            ServiceError: an empty, too large or unusable file (4xx), an unknown model (404), the server
                busy (503) or the prediction failing (500); the message is one readable line.
        """
        from fracturelib.app.predict import predict_many
        name = display_name(filename)
        self.check_size(len(data), name)
        entry, predictor, lock = self.predictor(model)
        work = self.workdir()
        try:
            src = work / "upload"
            src.write_bytes(data)
            with self._slot(), lock:
                result = predict_many(predictor, [src], work / "overlay")[0]
            if "error" in result:
                raise ServiceError(_renamed(result["error"], src, name), _status(result["error"]))
            result["image"] = name
            if result.get("overlay"):
                result["overlay"] = "data:image/png;base64," + base64.b64encode(
                    Path(result["overlay"]).read_bytes()).decode("ascii")
            return result
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def analyse_file(self, path: str | Path, name: str, model: str | None = None) -> dict:
        """The page's answer for one file already on disk (nothing written): the prediction's fields,
        the overlay array and the model's entry, or an ``error`` line.

        Args:
            path: the file (the web framework's temporary upload).
            name: its shown name (replaces ``path`` in the answer and in messages).
            model: a model name (None: the default).

        Returns:
            ``{"name", "fields", "overlay", "entry"}`` or ``{"name", "error"}``.

        Raises:
            ServiceError: an unknown model, the server busy or a model that does not load.
        """
        from fracturelib.data.imageio import ImageError
        entry, predictor, lock = self.predictor(model)
        try:
            self.check_size(Path(path).stat().st_size, name)
            with self._slot(), lock:
                pred = predictor.analyse(path)
                overlay = pred.overlay()
        except ImageError as e:
            return {"name": name, "error": _renamed(str(e), path, name)}
        except ServiceError as e:
            if e.status in (400, 413, 422):
                return {"name": name, "error": str(e)}
            raise
        except OSError as e:
            return {"name": name, "error": f"{name}: cannot be read ({e.strerror or e})"}
        fields = {**pred.fields, "image": name}
        return {"name": name, "fields": fields, "overlay": overlay, "entry": entry}


def _renamed(message: str, path: str | Path, name: str) -> str:
    """A message about the temporary ``path`` as one about the uploaded file ``name``."""
    return message.replace(str(path), name)


def _status(message: str) -> int:
    """The API status of a failed prediction: 413 for a too-large image, 500 for a failure of the
    model (``prediction failed``), else 422 (the file is not a usable image)."""
    if "prediction failed" in message:
        return 500
    if "too large" in message or "decoding budget" in message:
        return 413
    return 422


def row(answer: dict) -> dict:
    """One table / CSV row of a page answer (:meth:`Service.analyse_file`).

    Args:
        answer: the answer.

    Returns:
        file, decision, probability, threshold, in_distribution, fracture_point, fracture_point_mm (DICOM with
        a pixel spacing), boxes (the detector's, ``x0 y0 x1 y1 score`` in the file's pixels, ``; `` between
        boxes; ``none`` when none reaches its threshold; empty without a detector), warning, error.
    """
    if "error" in answer:
        return {**dict.fromkeys(CSV_COLUMNS, ""), "file": answer["name"], "error": answer["error"]}
    f = answer["fields"]
    decided = f.get("class") is not None
    point, mm = f.get("fracture_point"), f.get("fracture_point_mm")
    return {"file": answer["name"],
            "decision": f["class"] if decided else "no answer (not a radiograph)",
            "probability": round(float(f["confidence"]), 4) if decided else "",
            "threshold": round(float(f["threshold"]), 4) if f.get("threshold") is not None else "",
            "in_distribution": "" if f.get("in_distribution") is None else str(f["in_distribution"]).lower(),
            "fracture_point": f"{point[0]} {point[1]}" if point else "",
            "fracture_point_mm": f"{mm[0]:.1f} {mm[1]:.1f}" if mm else "",
            "boxes": boxes_text(f.get("boxes")), "warning": f.get("warning") or "", "error": ""}


def boxes_text(boxes: list | None) -> str:
    """The detector's boxes as one table cell.

    Args:
        boxes: ``[[x0, y0, x1, y1, score], ...]`` (a result's ``boxes``), ``[]`` or None.

    Returns:
        ``"x0 y0 x1 y1 score; ..."`` (score to 3 decimals), ``"none"`` for ``[]``, ``""`` for None.
    """
    if boxes is None:
        return ""
    return "; ".join(f"{x0} {y0} {x1} {y1} {score:.3f}" for x0, y0, x1, y1, score in boxes) or "none"


def csv_text(rows: list[dict]) -> str:
    """The table as CSV text (header :data:`CSV_COLUMNS`).

    Args:
        rows: rows of :func:`row`.

    Returns:
        The CSV; a text cell that a spreadsheet would run as a formula (an uploaded file named ``=cmd|...``)
        is written behind a ``'``.
    """
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows([{k: f"'{v}" if isinstance(v, str) and v.startswith(FORMULA_START) else v for k, v in r.items()}
                 for r in rows])
    return buf.getvalue()
