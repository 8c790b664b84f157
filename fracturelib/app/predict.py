"""Predict one image with a saved model (checked against its card): is it a radiograph, class,
confidence, top classes, where (the fracture detector's best box, else the localiser's or the CAM's
peak) with an overlay and the detector's boxes, and for fracture types a short information card."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fracturelib import config
from fracturelib.files import OutputError, atomic_write, ensure_dir
from fracturelib.models.cards import ModelCard, ModelCardError

NOT_ADVICE = ("Not medical advice: this is a research model and general information; a clinician "
              "must read the radiograph.")
#: At most this many detector boxes are reported per image, best first.
MAX_BOXES = 10
#: The box threshold when the detector's card gives none.
DEFAULT_BOX_THRESHOLD = 0.5
#: ``localisation`` when the detector's best box answers "where".
DETECTOR_POINT = "detector (best box's centre)"


@lru_cache(maxsize=1)
def fracture_info() -> dict:
    """The plain-language cards of the ten fracture types (``fracture_info.json``), read once.

    Returns:
        Fracture type -> {overview, symptoms, causes, diagnosis, treatment, prognosis}.
    """
    return json.loads((config.PACKAGE_DIR / "fracture_info.json").read_text())


def info_card(label: str) -> dict | None:
    """Plain-language card for a fracture type, with the not-medical-advice note.

    Args:
        label: a class name.

    Returns:
        The card (overview, symptoms, causes, diagnosis, treatment, prognosis, note), or None for labels
        that are not a fracture type (the binary classes).
    """
    card = fracture_info().get(label)
    return None if card is None else {**card, "note": NOT_ADVICE}


def default_model(models_dir: str | Path | None = None) -> Path:
    """The binary model ``predict`` uses when none is named.

    Args:
        models_dir: the folder of models (default ``config.MODELS_DIR``).

    Returns:
        The model whose card says ``preferred`` (notebook 02 chooses it by validation ROC-AUC); else the
        first of ``config.BINARY_MODELS`` that exists (a damaged card is passed over); else the CNN's path.
    """
    from fracturelib.models.cards import read_card
    folder = Path(models_dir or config.MODELS_DIR)
    present = [folder / n for n in config.BINARY_MODELS if (folder / n).exists()]
    for path in present:
        try:
            if read_card(path).preferred:
                return path
        except ModelCardError:
            continue
    return present[0] if present else folder / config.BINARY_CNN_FILE


def prepare(path: str | Path, card: ModelCard,
            modalities=config.RADIOGRAPH_MODALITIES) -> tuple[np.ndarray, np.ndarray]:
    """(model input 1xSxSxC float32 in [0,255], the decoded image as uint8) for ``path``.

    Any mode is accepted (grayscale, RGBA, 16-bit, CMYK, palette); broken, truncated, oversized or
    out-of-geometry files raise ImageError with the reason ``scan`` gives. Large JPEGs are decoded
    reduced (libjpeg's DCT scaling): to ``config.DECODE_OVERSAMPLE`` x the model size for the
    model, and no smaller than ``config.PREDICT_DISPLAY_SIDE`` for the overlay, so an image under
    twice that side is returned at full size (its pixel coordinates are the file's own).

    Args:
        path: the image file.
        card: the model's card (``image_size``, ``channels``).
        modalities: DICOM Modality codes accepted (default: radiographs); None accepts any.

    Returns:
        (model input, decoded image HxWxC uint8; for very large JPEGs, 1/2 .. 1/8 of the file's size).

    Raises:
        ImageError: the file is not usable.
    """
    x, img, _ = prepare_checked(path, card, modalities)
    return x, img


def prepare_checked(path: str | Path, card: ModelCard, modalities=config.RADIOGRAPH_MODALITIES):
    """:func:`prepare` plus the file's check: its own size as displayed and, for DICOM, ``meta`` (the
    pixel spacing that turns a point into millimetres).

    Args:
        path: the image file.
        card: the model's card.
        modalities: DICOM Modality codes accepted (default: radiographs); None accepts any.

    Returns:
        (model input, decoded image, the :class:`~fracturelib.data.imageio.ImageCheck` without its image).

    Raises:
        ImageError: the file is not usable.
    """
    from fracturelib.data.imageio import read_image_checked
    need = max(config.DECODE_OVERSAMPLE * card.image_size, config.PREDICT_DISPLAY_SIDE)
    img, chk = read_image_checked(path, channels=card.channels, need=need, modalities=modalities)
    return _pad_resize(img, card.image_size, getattr(card, "format", None) == "litert")[None], img, chk


def _pad_resize(img: np.ndarray, size: int, lite: bool) -> np.ndarray:
    """The model input of a decoded image: NumPy's copy of TensorFlow's resize for a LiteRT model
    (no TensorFlow on its path), TensorFlow's own for a Keras model."""
    if lite:
        from fracturelib.data.resize import pad_resize_np
        return pad_resize_np(img, size)
    from fracturelib.data.pipeline import pad_resize
    return pad_resize(img, size).numpy()


@dataclass
class Prediction:
    """One image's answer before anything is written: the JSON ``fields`` and what its overlay is drawn
    from (the web page and the widget draw it in memory; ``predict`` writes it to a file).

    Attributes:
        fields: the JSON result without ``overlay`` (see :meth:`Predictor.predict`).
        image: the decoded image (HxWxC uint8; very large JPEGs reduced), None on failure.
        heat: the CAM's or localiser's map in ``image``'s pixels, peak 1; None when there is none.
        point: the fracture point in ``image``'s pixels (``fields`` has it in the file's).
        boxes: the detector's boxes in ``image``'s pixels, ``[x0, y0, x1, y1, score]`` best first
            (``fields["boxes"]`` has them in the file's).
    """
    fields: dict
    image: np.ndarray | None
    heat: np.ndarray | None
    point: tuple[int, int] | None = None
    boxes: list | None = None

    def overlay(self) -> np.ndarray | None:
        """The heat over the image, the detector's boxes on top and the fracture point marked (RGB uint8);
        the boxes over the grey image when there is no heat; None with neither.

        Returns:
            The overlay image, the decoded image's size.
        """
        if self.image is None or (self.heat is None and not self.boxes):
            return None
        from fracturelib.data.geometry import overlay
        heat = self.heat if self.heat is not None else np.zeros(self.image.shape[:2], np.float32)
        out = overlay(self.image, heat, alpha=0.45 if self.heat is not None else 0.0)
        if self.point is not None:
            out = mark_point(out, self.point)
        from fracturelib.data.geometry import draw_boxes
        return draw_boxes(out, self.boxes) if self.boxes else out


class Predictor:
    """A loaded model with its card; call :meth:`predict` per image (warm after the first)."""

    def __init__(self, model_path: str | Path | None = None, localiser_path: str | Path | None = None,
                 cam: str = "gradcam", num_threads: int | None = None,
                 modalities=config.RADIOGRAPH_MODALITIES, detector_path: str | Path | None = None):
        """``localiser_path``: the box-trained localiser (notebook 04); default the one the model's
        card names (``localiser.keras``), beside the model, when present. Without one, "where" is
        answered by the CAM's peak.
        ``detector_path``: the fracture detector (notebook 04, boxes); default the one the model's card
        names (``detector.keras``), beside the model, when present. With one, each answer lists its boxes
        scoring at least the detector card's ``box_threshold`` and "where" is the best box's centre.
        ``cam``: the heatmap method, a name of :func:`fracturelib.explain.cams.names`.
        A ``.tflite`` model (``fracturelib export``) runs in the LiteRT interpreter with ``num_threads``
        threads, its localiser and radiograph (OOD) features too, and never imports TensorFlow; "where"
        is then the localiser's (Grad-CAM needs the Keras model).
        ``modalities``: the DICOM Modality codes read (default: radiographs; None: any)."""
        from fracturelib.explain import cams
        from fracturelib.models.cards import load_model
        from fracturelib.models.litert import is_litert, load_lite
        cams.get(cam)                             # an unknown name fails before the model loads
        self.cam = cam
        self.modalities = modalities
        self.path = Path(model_path or default_model())
        self.lite, self.num_threads = is_litert(self.path), num_threads
        if self.lite:
            self.model, self.card = load_lite(self.path, num_threads=num_threads)
        else:
            self.model, self.card = load_model(self.path)
        if len(self.model.output_shape) != 2:
            what, flag = (("a fracture detector (its outputs are boxes)", "--detector") if self.card.task == "detection"
                          else ("a localiser (its output is a heatmap)", "--localiser"))
            raise ModelCardError(f"{self.path}: {what}, not a classifier; pass a model of notebook 02 or 03 as "
                                 f"--model (and this one as {flag})")
        self.classes = list(self.card.classes)
        self.localiser, self.localiser_card = self._localiser(localiser_path)
        self.box_model, self.box_card = self._box_detector(detector_path)
        self.ood, self.ood_missing = self._ood_detector()

    def _localiser(self, path: str | Path | None):
        """The localiser given, else the one the card names beside it when present (None, None: the
        CAM's peak answers "where"). A classifier given as the localiser is a ModelCardError."""
        return self._companion("localiser", path, ("localisation", None), lambda outs: len(outs) == 4,
                               config.LOCALISER_FILE)

    def _box_detector(self, path: str | Path | None):
        """The fracture detector given, else the one the card names beside it when present (None, None: no
        boxes). Anything but a detection model of three outputs (heatmap, box size, offset) is a
        ModelCardError, so a classifier or localiser given by mistake is said so in one line."""
        return self._companion("detector", path, ("detection",), lambda outs: isinstance(outs, list) and len(outs) == 3,
                               config.DETECTOR_FILE)

    def _companion(self, kind: str, path: str | Path | None, tasks: tuple, outputs_ok, file_name: str):
        """(model, card) of the companion ``kind`` (``localiser`` or ``detector``): the path given, else the
        one the classifier's card names beside it when it exists in the classifier's format (else (None,
        None)). A file of the other format, or of another task or output shape, is a ModelCardError
        naming the file and the flag."""
        from fracturelib.models.cards import load_model
        from fracturelib.models.litert import is_litert, load_lite
        if path is None:
            path = self.card.companion_path(kind)
            if path is None or not path.exists() or is_litert(path) != self.lite:
                return None, None
        fmt = lambda lite: "LiteRT" if lite else "Keras"  # noqa: E731
        if is_litert(path) != self.lite:
            raise ModelCardError(f"{path}: a {fmt(is_litert(path))} {kind} with a {fmt(self.lite)} model; pass the "
                                 f"{kind} of the same format (fracturelib export writes {kind}.tflite beside the "
                                 ".tflite)")
        model, card = load_lite(path, num_threads=self.num_threads) if self.lite else load_model(path)
        if card.task not in tasks or not outputs_ok(model.output_shape):
            raise ModelCardError(f"{path}: not a {'fracture detector' if kind == 'detector' else kind} but a "
                                 f"{card.task or 'classifier'} model ({len(card.classes)} classes); pass as "
                                 f"--{kind} the {file_name} notebook 04 writes, or leave --{kind} out")
        return model, card

    @property
    def box_threshold(self) -> float | None:
        """The detector card's box threshold (chosen on validation), else 0.5; None without a detector."""
        if self.box_card is None:
            return None
        t = self.box_card.box_threshold
        return DEFAULT_BOX_THRESHOLD if t is None else float(t)

    def _boxes(self, image_path: str | Path, img: np.ndarray) -> tuple[np.ndarray, float]:
        """The detector's boxes of the decoded image in its pixels, (n, 5) ``x0, y0, x1, y1, score``: at most
        :data:`MAX_BOXES`, best first, scoring at least :attr:`box_threshold`, all finite; and the best box's
        score whatever the threshold (the image-level score notebook 04 fuses; 0 without any box)."""
        from fracturelib.models.box_decode import detect
        h, w = img.shape[:2]
        bx = self._input(self.box_card, image_path, img)
        found = detect(self.box_model, bx, [(w, h)], k=MAX_BOXES)[0]
        found = found[np.isfinite(found).all(axis=1)]
        best = float(found[0, 4]) if len(found) else 0.0
        return found[found[:, 4] >= self.box_threshold], best

    def _input(self, card: ModelCard, image_path: str | Path, img: np.ndarray) -> np.ndarray:
        """A companion's input (1xSxSxC) from the image already decoded when its channels fit (it was decoded
        to the size ``prepare`` would give), else from the file again."""
        if img.shape[-1] == card.channels:
            return _pad_resize(img, card.image_size, self.lite)[None]
        return prepare(image_path, card, self.modalities)[0]

    def _ood_detector(self):
        """(the radiograph (OOD) detector the card names, beside it; None) or, when the card names
        none or the file is absent, (None, the warning every result then carries)."""
        path = self.card.companion_path("ood")
        if path is None:
            return None, ("the model's card names no radiograph (OOD) detector: whether the image is a "
                          "radiograph was not checked")
        if not path.exists():
            return None, (f"the radiograph (OOD) detector {path} is missing: whether the image is a radiograph "
                          "was not checked (notebook 02 fits it)")
        from fracturelib.models import backbones, ood
        det = ood.Detector.load(path)                 # fitted on radiographs by notebook 02
        if self.lite:
            self.ood_features = self._lite_features(path, det)
            return det, None
        try:
            self.ood_features = ood.feature_model(1, det.image_size, det.backbone)
        except (backbones.WeightsUnavailable, ValueError) as e:
            why = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise ood.DetectorError(f"{path}: the radiograph (OOD) detector's feature model ({det.backbone}, "
                                    f"{det.image_size} px) cannot be built ({why}); {ood.FIX}") from None
        width = self.ood_features.output_shape[-1]
        if width != det.dim:                          # else every image fails with a broadcast error
            raise ood.DetectorError(f"{path}: radiograph (OOD) detector was fitted on {det.dim} features, but its "
                                    f"feature model ({det.backbone}) gives {width}; {ood.FIX}")
        return det, None

    def _lite_features(self, path: Path, det):
        """The LiteRT OOD feature extractor the card names (``ood_features.tflite``), checked against the
        detector's input size and feature width; DetectorError (one line) when missing or different."""
        from fracturelib.models import ood
        from fracturelib.models.litert import LiteModel
        fx = self.card.companion_path("ood_features")
        fix = "export the model again (fracturelib export MODEL.keras --format litert)"
        if fx is None or not fx.exists():
            raise ood.DetectorError(f"{path}: the radiograph (OOD) detector's LiteRT feature extractor "
                                    f"{fx.name if fx else 'ood_features.tflite'} is missing; {fix}")
        try:
            model = LiteModel(fx, self.num_threads)
        except (ValueError, RuntimeError, OSError, ModelCardError) as e:
            raise ood.DetectorError(f"{fx}: LiteRT cannot load it ({str(e).splitlines()[0][:120]}); {fix}") from None
        if model.input_shape[1:] != (det.image_size, det.image_size, 1) or model.output_shape[-1] != det.dim:
            raise ood.DetectorError(f"{fx}: input {list(model.input_shape[1:])} and {model.output_shape[-1]} features "
                                    f"differ from the detector's ({det.image_size} px, {det.dim}); {fix}")
        return model

    def _radiograph_check(self, img: np.ndarray) -> dict:
        """``in_distribution`` of the decoded image and, for inputs that do not look like
        radiographs, a warning and no fracture answer (class and confidence set to None). Without
        a detector: ``in_distribution`` None and a warning saying the check was not made."""
        if self.ood is None:
            return {"in_distribution": None, "warning": self.ood_missing}
        gray = img if img.shape[-1] == 1 else np.round(img.astype(np.float32).mean(axis=-1, keepdims=True))
        g = _pad_resize(gray, self.ood.image_size, self.lite)[None]
        ok = bool(self.ood.in_distribution(self.ood_features.predict_on_batch(g), g)[0])
        if ok:
            return {"in_distribution": True}
        return {"in_distribution": False, "class": None, "confidence": None, "top": [],
                "warning": "this image does not look like the radiographs the model was trained on "
                           "(blank, a photo, or another kind of image): no fracture answer is given"}

    def analyse(self, image_path: str | Path, top: int = 3) -> Prediction:
        """What the model says about one image, with nothing written to disk.

        The radiograph check comes first: an image that does not look like a radiograph gets the
        warning and no class, no CAM and no information card. Otherwise the decision (at the card's
        threshold, with the card's flip averaging), the CAM of the reported class, the fracture detector's
        boxes when there is one, and "where": the best box's centre, else the localiser's peak when there
        is one, else the CAM's.

        Args:
            image_path: the image file (any format :mod:`fracturelib.data.imageio` reads).
            top: how many classes the ``top`` list keeps.

        Returns:
            A :class:`Prediction`: the JSON fields and the arrays the overlay is drawn from.

        Raises:
            ImageError: the file is not usable (the message names it and the reason).
        """
        x, img, chk = prepare_checked(image_path, self.card, self.modalities)
        size = (int(chk.width), int(chk.height))
        fields = {"image": str(image_path), "model": str(self.path)}
        spacing = (chk.meta.get("spacing_row_mm"), chk.meta.get("spacing_col_mm"))
        if None not in spacing:                   # DICOM with (Imager)PixelSpacing: [row, column] mm per pixel
            fields["pixel_spacing_mm"] = [float(spacing[0]), float(spacing[1])]
        check = self._radiograph_check(img)
        if check["in_distribution"] is False:
            fields.update(check, fracture_point=None, localisation=None)
            if self.box_model is not None:            # not assessed: no boxes either
                fields.update(boxes=None, box_threshold=self.box_threshold)
            fields["note"] = NOT_ADVICE
            return Prediction(fields, img, None)
        found, best = self._boxes(image_path, img) if self.box_model is not None else (None, None)
        label, probs, cams, thr, fused = self._decide(x, best)      # the fusion (if any) needs the best box
        order = np.argsort(probs)[::-1][:top]
        fields.update({"class": label, "confidence": float(probs[self.classes.index(label)]),
                       "top": [{"class": self.classes[i], "probability": float(probs[i])} for i in order]})
        if thr is not None:
            fields["threshold"] = thr
        if fused is not None:                     # notebook 04's fusion decided: what went into it
            fields["fused"] = fused
        if self.card.temperature and self.card.temperature != 1 and fused is None:
            fields["temperature"] = self.card.temperature
        fields.update(check)
        scale = size[0] / img.shape[1]            # a very large JPEG is decoded reduced: answer in file pixels
        shown, in_file = None, None               # the boxes in the decoded image's and in the file's pixels
        if found is not None:
            shown = [_pixel_box(b, 1.0, img.shape[1], img.shape[0]) + [float(b[4])] for b in found]
            in_file = [_pixel_box(b, scale, *size) + [round(float(b[4]), 4)] for b in found]
        # a box answers "where": the localiser (one more backbone pass) only runs when there is none
        heat, method = self._where(image_path, img, None if cams is None else cams[0], localiser=not in_file)
        point = None
        if in_file:                               # the detector's best box answers "where"
            x0, y0, x1, y1, _ = in_file[0]
            fx, fy = (x0 + x1) // 2, (y0 + y1) // 2
            point = ((shown[0][0] + shown[0][2]) // 2, (shown[0][1] + shown[0][3]) // 2)
            fields["overlay_heat"] = method       # what the heat under the boxes is (None: boxes over the image)
            method = DETECTOR_POINT
        elif heat is not None:
            from fracturelib.models.localiser import peak
            point = peak(heat)
            fx, fy = point[0] * scale, point[1] * scale
        if point is None:                         # a LiteRT model without its localiser and no box: no "where"
            note = ("no localiser beside this LiteRT model: 'where' is not answered (Grad-CAM needs the "
                    "Keras model)")
            fields.update(fracture_point=None, localisation=None,
                          warning="; ".join(w for w in (fields.get("warning"), note) if w))
        else:
            fields["fracture_point"] = [int(round(fx)), int(round(fy))]
            if "pixel_spacing_mm" in fields:      # x along columns, y along rows, from the image's corner
                row_mm, col_mm = fields["pixel_spacing_mm"]
                fields["fracture_point_mm"] = [round(fx * col_mm, 2), round(fy * row_mm, 2)]
            fields["localisation"] = method
        if self.box_model is not None:
            fields.update(boxes=in_file, box_threshold=self.box_threshold)
        card = info_card(label)
        if card:
            fields["info"] = card
        fields["note"] = NOT_ADVICE
        return Prediction(fields, img, heat, point, shown)

    def _decide(self, x: np.ndarray, box_score: float | None = None):
        """(label, class probabilities, the CAM of the reported class (None for a LiteRT model), the
        binary threshold or None, the fusion's inputs or None). With ``box_score`` (the detector's best box)
        and a fusion for this classifier in the detector's card, the binary decision is the fused one."""
        binary = len(self.classes) == 2 and self.model.output_shape[-1] == 1
        thr = self.card.decision_threshold if binary else None
        if self.lite:                      # no gradients in LiteRT: no CAM, "where" is the localiser's
            cams, out = None, self.model.predict_on_batch(x)
            if self.card.tta_flip:
                out = (out + self.model.predict_on_batch(x[:, :, ::-1])) / 2
            explained = None
        else:
            from fracturelib.explain import compute, targets
            rule = targets.predicted(0.5 if thr is None else thr)     # p >= the card's threshold; else arg-max
            cams, out = compute(self.cam, self.model, x, target=rule)
            explained = int(rule.classes(out)[0])
            if self.card.tta_flip:             # chosen on validation by notebook 03
                out = (out + self.model.predict(x[:, :, ::-1], verbose=0)) / 2
        fusion = self.fusion if binary and box_score is not None else None
        fused = None
        if fusion is not None:                 # chosen on validation by notebook 04: the classifier and the best box
            from fracturelib.metrics.detection import fused_probability
            p_clf = float(out[0, 0])
            out = np.array([[float(fused_probability(fusion["weights"], fusion["intercept"],
                                                     {"classifier": p_clf, "best box": box_score}))]])
            thr = float(fusion["threshold"])
            fused = {"classifier_probability": round(p_clf, 6), "best_box_score": round(float(box_score), 6),
                     "threshold": thr}
        k = int(out[0, 0] >= (0.5 if thr is None else thr)) if binary else int(np.argmax(out[0]))
        if explained is not None and k != explained:     # the flip or the fusion moved the decision: explain it
            from fracturelib.explain import compute, targets
            cams, _ = compute(self.cam, self.model, x, target=targets.ClassTarget(k))
        out = out[0]
        probs = np.array([1 - float(out[0]), float(out[0])]) if binary else out.astype(float)
        t = self.card.temperature
        if t and t != 1 and fused is None:  # calibrated on validation (notebooks 02/03): same ranking, honest scale
            from fracturelib.metrics.calibration import apply_temperature
            if binary:
                p1 = float(apply_temperature(np.array([probs[1]]), t)[0])
                probs = np.array([1 - p1, p1])
                thr = float(apply_temperature(np.array([thr]), t)[0])   # the same decision on the same scale
            else:
                probs = apply_temperature(probs[None], t)[0]
        return self.classes[k], probs, cams, thr, fused

    @property
    def fusion(self) -> dict | None:
        """The fused decision the detector's card keeps for this very classifier (its SHA-256, or the Keras
        model's a LiteRT export came from), chosen by notebook 04 only when it beat the classifier on
        validation; None otherwise (then the classifier decides alone)."""
        f = self.box_card.extra.get("fusion") if self.box_card is not None else None
        if not isinstance(f, dict):
            return None
        mine = {self.card.model_sha256, (self.card.exported_from or {}).get("sha256")} - {None}
        try:
            ok = (f.get("classifier_sha256") in mine and set(f["weights"]) == {"classifier", "best box"}
                  and all(math.isfinite(float(v)) for v in (*f["weights"].values(), f["intercept"]))
                  and 0 <= float(f["threshold"]) <= 1)
        except (KeyError, TypeError, ValueError, AttributeError):
            ok = False
        return f if ok else None

    def _where(self, image_path: str | Path, img: np.ndarray, cam: np.ndarray | None, localiser: bool = True):
        """The map that answers "where" in the decoded image's pixels, scaled to a peak of 1, and its name:
        the localiser's when there is one and ``localiser``, else the CAM's; (None, None) with neither."""
        from fracturelib.data.geometry import heatmap_to_image
        h, w = img.shape[:2]
        heat, method = (None, None) if cam is None else (heatmap_to_image(cam, w, h, self.card.image_size), self.cam)
        if localiser and self.localiser is not None:
            from fracturelib.models.localiser import heatmaps
            lx = self._input(self.localiser_card, image_path, img)
            heat, method = heatmaps(self.localiser, lx, [(w, h)])[0], "localiser (box-trained heatmap)"
        if heat is None:
            return None, None
        peak_value = float(heat.max())
        return (heat / peak_value if peak_value > 0 else heat), method    # the localiser's map is a probability

    def predict(self, image_path: str | Path, overlay_dir: str | Path | None = None,
                top: int = 3, overlay_name: str | None = None) -> dict:
        """:meth:`analyse`, then the overlay PNG written (``overlay_name``, default ``<stem>_overlay.png``,
        in ``overlay_dir``, default ``./overlays``). An overlay that cannot be written is a ``warning`` in
        the result, not a failed prediction; an input is never overwritten.

        Args:
            image_path: the image file.
            overlay_dir: where the overlay goes.
            top: how many classes the ``top`` list keeps.
            overlay_name: the overlay's file name (``predict_many`` makes them unique per input).

        Returns:
            The JSON result (``fracturelib predict --json`` prints a list of them): image, model, class,
            confidence, top, threshold (binary; like the probabilities, temperature-scaled when the card has
            a ``temperature``, which is then given), in_distribution, warning, fracture_point (x, y in the
            file's pixels), pixel_spacing_mm and fracture_point_mm (DICOM with a pixel spacing: [row, column]
            mm per pixel, and the point in mm from the top-left corner), localisation (the method; when a box
            answers, ``overlay_heat`` names the heat drawn under the boxes, None for none), boxes and
            box_threshold (with a fracture detector: ``[x0, y0, x1, y1, score]`` in the file's pixels, best
            first, at most :data:`MAX_BOXES`, those scoring at least the threshold; ``[]`` when none does,
            None for an image not assessed), fused (when the detector's card keeps a fusion for this
            classifier, chosen on validation: the decision, confidence and threshold are the fused ones, and
            this gives the classifier's probability and the best box's score), overlay (its path or None),
            info (fracture types), note.

        Raises:
            ImageError: the file is not usable.
        """
        pred = self.analyse(image_path, top)
        result = dict(pred.fields)
        result["overlay"] = None
        drawn = pred.overlay()
        if drawn is None:
            return result
        out_dir = Path(overlay_dir) if overlay_dir else Path.cwd() / config.OVERLAY_DIR
        ov = out_dir / (overlay_name or overlay_names([image_path], out_dir)[0])
        try:
            if _resolved(ov) == _resolved(image_path):
                raise OutputError(f"{ov}: is the input image; pass another --overlay-dir", exit_code=2)
            ensure_dir(out_dir, "--overlay-dir")
            atomic_write(ov, png_bytes(drawn))
            result["overlay"] = str(ov)
        except OSError as e:
            msg = (f"overlay not written to {ov} ({getattr(e, 'strerror', None) or e}); "
                   "pass --overlay-dir with a writable folder")
            result["warning"] = "; ".join(x for x in (result.get("warning"), msg) if x)
        return result


def overlay_names(images: list, out_dir: str | Path | None = None) -> list[str]:
    """One overlay file name per input: unique within the call, and never the name of an input.

    ``a/x.jpg``, ``b/x.png`` and ``c/x_2.jpg`` get ``x_overlay.png``, ``x_2_overlay.png`` and
    ``x_2_2_overlay.png``: a name is taken once, whoever asked for it first. A name that would land on
    one of the inputs in ``out_dir`` (``predict d/x.jpg d/x_overlay.png --overlay-dir d``) moves on to
    the next free one, so an input is never overwritten, let alone before it is read.

    Args:
        images: the image paths, in the order they are predicted.
        out_dir: where the overlays go (inputs there are avoided); default: the overlay folder.

    Returns:
        One file name per image, in order.
    """
    folder = Path(out_dir) if out_dir else Path.cwd() / config.OVERLAY_DIR
    inputs = {_resolved(i) for i in images}
    names, taken = [], set()
    for img in images:
        stem, k = Path(img).stem, 1
        name = f"{stem}_overlay.png"
        while name in taken or _resolved(folder / name) in inputs:
            k += 1
            name = f"{stem}_{k}_overlay.png"
        taken.add(name)
        names.append(name)
    return names


def _resolved(path: str | Path) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):          # a link loop: compare the path as given
        return Path(path).absolute()


def predict_many(predictor: "Predictor", images: list, overlay_dir=None) -> list[dict]:
    """Predict each image in turn; one that fails is its own result with an ``error`` and the
    others still run (no failure of one image loses another's answer).

    Args:
        predictor: a loaded :class:`Predictor`.
        images: image paths.
        overlay_dir: where overlays go (default: ./overlays).

    Returns:
        One dict per image, in order: the prediction, or ``{"image", "error"}`` (for unusable files
        the file, the reason and the fix; for any other failure its type and message).
    """
    from fracturelib.data.imageio import ImageError
    results = []
    for img, name in zip(images, overlay_names(images, overlay_dir)):
        try:
            results.append(predictor.predict(img, overlay_dir, overlay_name=name))
        except ImageError as e:
            results.append({"image": str(img), "error": str(e)})
        except Exception as e:  # noqa: BLE001 - one image's failure is that image's row
            results.append({"image": str(img), "error": f"{img}: prediction failed "
                                                        f"({type(e).__name__}: {e})"})
    return results


def png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB (or gray) uint8 image encoded as PNG.

    Args:
        rgb: the image.

    Returns:
        The PNG file's bytes.
    """
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def mark_point(rgb: np.ndarray, point, colour=(255, 255, 255)) -> np.ndarray:
    """A ring and a cross at ``point`` (x, y), sized to the image, so the answer to "where" is seen.

    Args:
        rgb: the overlay (HxWx3 uint8); not changed.
        point: (x, y) in its pixels.
        colour: the mark's RGB colour.

    Returns:
        A marked copy.
    """
    import cv2
    out = np.ascontiguousarray(rgb).copy()
    r = max(6, min(out.shape[:2]) // 25)
    x, y = int(point[0]), int(point[1])
    cv2.circle(out, (x, y), r, colour, max(1, r // 4))
    cv2.drawMarker(out, (x, y), colour, cv2.MARKER_CROSS, r, max(1, r // 6))
    return out


def _pixel_box(box, scale: float, width: int, height: int) -> list[int]:
    """A box ``x0, y0, x1, y1`` scaled by ``scale`` to whole pixels inside a ``width`` x ``height`` image,
    at least 1 px a side: a predicted box of zero size (or clipped to an edge) stays valid and drawable."""
    x0 = min(max(int(np.floor(box[0] * scale)), 0), width - 1)
    y0 = min(max(int(np.floor(box[1] * scale)), 0), height - 1)
    x1 = min(max(int(np.ceil(box[2] * scale)), x0 + 1), width)
    y1 = min(max(int(np.ceil(box[3] * scale)), y0 + 1), height)
    return [x0, y0, x1, y1]


def format_result(r: dict) -> str:
    """The text ``fracturelib predict`` prints for one result (its ``--json`` prints the dict itself).

    Args:
        r: a result of :meth:`Predictor.predict` or an error row of :func:`predict_many`.

    Returns:
        Lines: the answer (or why there is none), top classes, where, the detector's boxes, the overlay,
        warnings, the fracture-type card, and the note that this is not medical advice.
    """
    from fracturelib.files import shown
    name = shown(Path(r["image"]).name)
    if "error" in r:
        return f"{name}: not assessed. Error: {shown(r['error'])}"
    if r.get("in_distribution") is False:
        lines = [f"{name}: not assessed. Warning: {r['warning']}"]
    else:
        lines = [f"{name}: {shown(r['class'])} (confidence {r['confidence']:.2f})"]
    if "threshold" in r:
        lines[0] += f", decision threshold {r['threshold']:.3f}"
    if r.get("fused"):
        f = r["fused"]
        lines.append(f"decided by the fusion of the classifier ({f['classifier_probability']:.2f}) and the fracture "
                     f"detector's best box ({f['best_box_score']:.2f}), chosen on validation by notebook 04")
    if r.get("top"):
        lines.append("top: " + ", ".join(f"{shown(t['class'])} {t['probability']:.2f}" for t in r["top"]))
    if r.get("fracture_point"):
        mm = r.get("fracture_point_mm")
        at = f" = {mm[0]:.1f}, {mm[1]:.1f} mm" if mm else ""
        lines.append(f"where: x={r['fracture_point'][0]}, y={r['fracture_point'][1]} px{at} ({r['localisation']})")
    if r.get("boxes") is not None:
        t = r.get("box_threshold")
        lines.append(f"boxes (fracture detector, score >= {t:.2f}):" if r["boxes"] else
                     f"boxes: no box reaches the threshold {t:.2f}")
        for i, (x0, y0, x1, y1, score) in enumerate(r["boxes"], 1):
            lines.append(f"  {i}. x={x0}-{x1}, y={y0}-{y1} px, score {score:.3f}")
    if r.get("localisation"):
        loc = r["localisation"]
        name = lambda m: "localiser" if m.startswith("localiser") else "Grad-CAM" if m == "gradcam" else m  # noqa: E731
        heat = r.get("overlay_heat")
        kind = (f"detector boxes{' over the ' + name(heat) + ' heat' if heat else ''}" if loc == DETECTOR_POINT
                else name(loc))
        lines.append(f"{kind} overlay: {shown(r.get('overlay') or 'not written')}")
    if r.get("warning") and r.get("in_distribution") is not False:
        lines.append(f"Warning: {shown(r['warning'])}")
    if "info" in r:
        lines.append("")
        for k in ("overview", "symptoms", "causes", "diagnosis", "treatment", "prognosis"):
            lines.append(f"{k.capitalize()}: {r['info'][k]}")
    lines.append("")
    lines.append(r["note"])
    return "\n".join(lines)
