"""Predict one image with a saved model (checked against its card): class, confidence, top
classes, a Grad-CAM overlay, and for fracture types a short information card."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from fracturelib import config
from fracturelib.data.imageio import read_image
from fracturelib.models.cards import ModelCard, ModelCardError

NOT_ADVICE = ("Not medical advice: this is a research model and general information; a clinician "
              "must read the radiograph.")


@lru_cache(maxsize=1)
def fracture_info() -> dict:
    return json.loads((config.PACKAGE_DIR / "fracture_info.json").read_text())


def info_card(label: str) -> dict | None:
    """Plain-language card for a fracture type (None for labels that are not a type)."""
    card = fracture_info().get(label)
    return None if card is None else {**card, "note": NOT_ADVICE}


def default_model(models_dir: str | Path | None = None) -> Path:
    """The binary model whose card says ``preferred`` (notebook 02 chooses it by validation
    ROC-AUC); else the first of :data:`config.BINARY_MODELS` that exists; else the CNN's path."""
    folder = Path(models_dir or config.MODELS_DIR)
    present = [folder / n for n in config.BINARY_MODELS if (folder / n).exists()]
    for path in present:
        try:
            if json.loads(path.with_suffix(".json").read_text()).get("preferred"):
                return path
        except (OSError, ValueError):
            continue
    return present[0] if present else folder / config.BINARY_CNN_FILE


def prepare(path: str | Path, card: ModelCard) -> tuple[np.ndarray, np.ndarray]:
    """(model input 1xSxSxC float32 in [0,255], the decoded image as uint8) for ``path``.

    Any mode is accepted (grayscale, RGBA, 16-bit, CMYK, palette); broken, truncated, oversized or
    out-of-geometry files raise ImageError with the reason ``scan`` gives. Large JPEGs are decoded
    reduced (libjpeg's DCT scaling): to ``config.DECODE_OVERSAMPLE`` x the model size for the
    model, and no smaller than ``config.PREDICT_DISPLAY_SIDE`` for the overlay, so an image under
    twice that side is returned at full size (its pixel coordinates are the file's own).

    Args:
        path: the image file.
        card: the model's card (``image_size``, ``channels``).

    Returns:
        (model input, decoded image HxWxC uint8; for very large JPEGs, 1/2 .. 1/8 of the file's size).

    Raises:
        ImageError: the file is not usable.
    """
    from fracturelib.data.pipeline import pad_resize
    need = max(config.DECODE_OVERSAMPLE * card.image_size, config.PREDICT_DISPLAY_SIDE)
    img = read_image(path, channels=card.channels, need=need)
    return pad_resize(img, card.image_size).numpy()[None], img


class Predictor:
    """A loaded model with its card; call :meth:`predict` per image (warm after the first)."""

    def __init__(self, model_path: str | Path | None = None, localiser_path: str | Path | None = None,
                 cam: str = "gradcam"):
        """``localiser_path``: the box-trained localiser (notebook 04); default the one the model's
        card names (``localiser.keras``), beside the model, when present. Without one, "where" is
        answered by the CAM's peak.
        ``cam``: the heatmap method, a name of :func:`fracturelib.explain.cams.names`."""
        from fracturelib.explain import cams
        from fracturelib.models.cards import load_model
        cams.get(cam)                             # an unknown name fails before the model loads
        self.cam = cam
        self.path = Path(model_path or default_model())
        self.model, self.card = load_model(self.path)
        if len(self.model.output_shape) != 2:
            raise ModelCardError(f"{self.path}: a localiser (its output is a heatmap), not a classifier; pass a "
                                 "model of notebook 02 or 03 as --model (and this one as --localiser)")
        self.classes = list(self.card.classes)
        self.localiser, self.localiser_card = self._localiser(localiser_path)
        self.ood, self.ood_missing = self._detector()

    def _localiser(self, path: str | Path | None):
        """The localiser given, else the one the card names beside it when present (None, None: the
        CAM's peak answers "where"). A classifier given as the localiser is a ModelCardError."""
        from fracturelib.models.cards import load_model
        if path is None:
            path = self.card.companion_path("localiser")
            if path is None or not path.exists():
                return None, None
        model, card = load_model(path)
        if card.task not in (None, "localisation") or len(model.output_shape) != 4:
            raise ModelCardError(f"{path}: not a localiser but a {card.task or 'classifier'} model "
                                 f"({len(card.classes)} classes); pass as --localiser the {config.LOCALISER_FILE} "
                                 "notebook 04 writes, or leave --localiser out")
        return model, card

    def _detector(self):
        """(the radiograph (OOD) detector the card names, beside it; None) or, when the card names
        none or the file is absent, (None, the warning every result then carries)."""
        path = self.card.companion_path("ood")
        if path is None:
            return None, ("the model's card names no radiograph (OOD) detector: whether the image is a "
                          "radiograph was not checked")
        if not path.exists():
            return None, (f"the radiograph (OOD) detector {path} is missing: whether the image is a radiograph "
                          "was not checked (notebook 02 fits it)")
        from fracturelib.models import ood
        det = ood.Detector.load(path)                 # fitted on radiographs by notebook 02
        self.ood_features = ood.feature_model(1, det.image_size, det.backbone)
        return det, None

    def _radiograph_check(self, img: np.ndarray) -> dict:
        """``in_distribution`` of the decoded image and, for inputs that do not look like
        radiographs, a warning and no fracture answer (class and confidence set to None). Without
        a detector: ``in_distribution`` None and a warning saying the check was not made."""
        from fracturelib.data.pipeline import pad_resize
        if self.ood is None:
            return {"in_distribution": None, "warning": self.ood_missing}
        gray = img if img.shape[-1] == 1 else np.round(img.astype(np.float32).mean(axis=-1, keepdims=True))
        g = pad_resize(gray, self.ood.image_size).numpy()[None]
        ok = bool(self.ood.in_distribution(self.ood_features.predict_on_batch(g), g)[0])
        if ok:
            return {"in_distribution": True}
        return {"in_distribution": False, "class": None, "confidence": None, "top": [],
                "warning": "this image does not look like the radiographs the model was trained on "
                           "(blank, a photo, or another kind of image): no fracture answer is given"}

    def predict(self, image_path: str | Path, gradcam_dir: str | Path | None = None,
                top: int = 3, overlay_name: str | None = None) -> dict:
        """Class, confidence, where, and an overlay PNG (``overlay_name``, default
        ``<stem>_gradcam.png``, in ``gradcam_dir`` or the current folder). An overlay that cannot be
        written is a ``warning`` in the result, not a failed prediction."""
        from fracturelib.data.geometry import heatmap_to_image, overlay
        from fracturelib.explain import compute, targets
        x, img = prepare(image_path, self.card)
        binary = len(self.classes) == 2 and self.model.output.shape[-1] == 1
        thr = self.card.decision_threshold if binary else None
        rule = targets.predicted(0.5 if thr is None else thr)     # p >= the card's threshold; else arg-max
        cams, out = compute(self.cam, self.model, x, target=rule)
        explained = int(rule.classes(out)[0])
        if self.card.tta_flip:             # chosen on validation by notebook 03
            out = (out + self.model.predict(x[:, :, ::-1], verbose=0)) / 2
        k = int(rule.classes(out)[0])
        out = out[0]
        probs = np.array([1 - float(out[0]), float(out[0])]) if binary else out.astype(float)
        label = self.classes[k]
        if k != explained:                        # the flip moved the decision: explain the class we report
            cams, _ = compute(self.cam, self.model, x, target=targets.ClassTarget(k))
        order = np.argsort(probs)[::-1][:top]
        result = {"image": str(image_path), "model": str(self.path), "class": label,
                  "confidence": float(probs[self.classes.index(label)]),
                  "top": [{"class": self.classes[i], "probability": float(probs[i])} for i in order]}
        if thr is not None:
            result["threshold"] = thr
        result.update(self._radiograph_check(img))
        h, w = img.shape[:2]
        heat = heatmap_to_image(cams[0], w, h, self.card.image_size)
        where, method = heat, self.cam
        if self.localiser is not None:
            from fracturelib.models.localiser import heatmaps
            lx, _ = prepare(image_path, self.localiser_card)
            where, method = heatmaps(self.localiser, lx, [(w, h)])[0], "localiser (box-trained heatmap)"
        from fracturelib.models.localiser import peak
        result["fracture_point"] = list(peak(where))
        result["localisation"] = method
        out_dir = Path(gradcam_dir) if gradcam_dir else Path.cwd()
        ov = out_dir / (overlay_name or f"{Path(image_path).stem}_gradcam.png")
        from PIL import Image
        shown = where / where.max() if where.max() > 0 else where          # the localiser's map is a probability
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mark_point(overlay(img, shown), result["fracture_point"])).save(ov)
            result["gradcam"] = str(ov)
        except OSError as e:
            result["gradcam"] = None
            msg = f"overlay not written to {ov} ({e.strerror or e}); pass --gradcam-dir with a writable folder"
            result["warning"] = "; ".join(x for x in (result.get("warning"), msg) if x)
        card = info_card(label)
        if card:
            result["info"] = card
        result["note"] = NOT_ADVICE
        return result


def overlay_names(images: list) -> list[str]:
    """One overlay file name per input, unique even when two inputs share a stem
    (``a/x.jpg`` and ``b/x.png`` -> ``x_gradcam.png`` and ``x_2_gradcam.png``)."""
    names, seen = [], {}
    for img in images:
        stem = Path(img).stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(f"{stem}_gradcam.png" if seen[stem] == 1 else f"{stem}_{seen[stem]}_gradcam.png")
    return names


def predict_many(predictor: "Predictor", images: list, gradcam_dir=None) -> list[dict]:
    """Predict each image in turn; one that fails is its own result with an ``error`` and the
    others still run (no failure of one image loses another's answer).

    Args:
        predictor: a loaded :class:`Predictor`.
        images: image paths.
        gradcam_dir: where overlays go (default: the current folder).

    Returns:
        One dict per image, in order: the prediction, or ``{"image", "error"}`` (for unusable files
        the file, the reason and the fix; for any other failure its type and message).
    """
    from fracturelib.data.imageio import ImageError
    results = []
    for img, name in zip(images, overlay_names(images)):
        try:
            results.append(predictor.predict(img, gradcam_dir, overlay_name=name))
        except ImageError as e:
            results.append({"image": str(img), "error": str(e)})
        except Exception as e:  # noqa: BLE001 - one image's failure is that image's row
            results.append({"image": str(img), "error": f"{img}: prediction failed "
                                                        f"({type(e).__name__}: {e})"})
    return results


def mark_point(rgb: np.ndarray, point, colour=(255, 255, 255)) -> np.ndarray:
    """A ring and a cross at ``point`` (x, y), sized to the image, so the answer to "where" is seen."""
    import cv2
    out = np.ascontiguousarray(rgb).copy()
    r = max(6, min(out.shape[:2]) // 25)
    x, y = int(point[0]), int(point[1])
    cv2.circle(out, (x, y), r, colour, max(1, r // 4))
    cv2.drawMarker(out, (x, y), colour, cv2.MARKER_CROSS, r, max(1, r // 6))
    return out


def format_result(r: dict) -> str:
    if "error" in r:
        return f"{Path(r['image']).name}: not assessed. Error: {r['error']}"
    if r.get("in_distribution") is False:
        lines = [f"{Path(r['image']).name}: not assessed. Warning: {r['warning']}"]
    else:
        lines = [f"{Path(r['image']).name}: {r['class']} (confidence {r['confidence']:.2f})"]
    if "threshold" in r:
        lines[0] += f", decision threshold {r['threshold']:.3f}"
    if r["top"]:
        lines.append("top: " + ", ".join(f"{t['class']} {t['probability']:.2f}" for t in r["top"]))
    if "fracture_point" in r:
        lines.append(f"where: x={r['fracture_point'][0]}, y={r['fracture_point'][1]} px ({r['localisation']})")
    loc = r.get("localisation", "gradcam")
    kind = "localiser" if loc.startswith("localiser") else ("Grad-CAM" if loc == "gradcam" else loc)
    lines.append(f"{kind} overlay: {r['gradcam'] or 'not written'}")
    if r.get("warning") and r.get("in_distribution") is not False:
        lines.append(f"Warning: {r['warning']}")
    if "info" in r:
        lines.append("")
        for k in ("overview", "symptoms", "causes", "diagnosis", "treatment", "prognosis"):
            lines.append(f"{k.capitalize()}: {r['info'][k]}")
    lines.append("")
    lines.append(r["note"])
    return "\n".join(lines)
