"""Predict one image with a saved model (checked against its card): class, confidence, top
classes, a Grad-CAM overlay, and for fracture types a short information card."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from fracturelib import config
from fracturelib.data.imageio import read_image

NOT_ADVICE = ("Not medical advice: this is a research model and general information; a clinician "
              "must read the radiograph.")


@lru_cache(maxsize=1)
def fracture_info() -> dict:
    return json.loads((config.PACKAGE_DIR / "fracture_info.json").read_text())


def info_card(label: str) -> dict | None:
    """Plain-language card for a fracture type (None for labels that are not a type)."""
    card = fracture_info().get(label)
    return None if card is None else {**card, "note": NOT_ADVICE}


LOCALISER_FILE = "localiser.keras"
OOD_FILE = "ood.npz"
BINARY_MODELS = ("binary_transfer.keras", "binary_cnn.keras")


def default_model(models_dir: str | Path | None = None) -> Path:
    """The binary model whose card says ``preferred`` (notebook 02 chooses it by validation
    ROC-AUC); else the first of :data:`BINARY_MODELS` that exists; else the CNN's path."""
    folder = Path(models_dir or config.MODELS_DIR)
    present = [folder / n for n in BINARY_MODELS if (folder / n).exists()]
    for path in present:
        try:
            if json.loads(path.with_suffix(".json").read_text()).get("preferred"):
                return path
        except (OSError, ValueError):
            continue
    return present[0] if present else folder / BINARY_MODELS[-1]


def prepare(path: str | Path, card: dict) -> tuple[np.ndarray, np.ndarray]:
    """(model input 1xSxSxC float32 in [0,255], the decoded image as uint8) for ``path``.

    Any mode is accepted (grayscale, RGBA, 16-bit, CMYK, palette); broken, truncated or oversized
    files raise ImageError with the reason.
    """
    from fracturelib.data.pipeline import pad_resize
    img = read_image(path, channels=int(card["channels"]))
    return pad_resize(img, int(card["image_size"])).numpy()[None], img


class Predictor:
    """A loaded model with its card; call :meth:`predict` per image (warm after the first)."""

    def __init__(self, model_path: str | Path | None = None, localiser_path: str | Path | None = None):
        """``localiser_path``: the box-trained localiser (notebook 04); default ``localiser.keras``
        beside the model when present. Without one, "where" is answered by the Grad-CAM peak."""
        from fracturelib.models.cards import load_model
        self.path = Path(model_path or default_model())
        self.model, self.card = load_model(self.path)
        self.classes = list(self.card["classes"])
        loc = Path(localiser_path) if localiser_path else self.path.parent / LOCALISER_FILE
        self.localiser, self.localiser_card = load_model(loc) if loc.exists() else (None, None)
        ood_path = self.path.parent / OOD_FILE
        self.ood = None
        if self.card.get("task") == "binary" and ood_path.exists():     # fitted on radiographs by notebook 02
            from fracturelib.models import ood
            self.ood = ood.Detector.load(ood_path)
            self.ood_features = ood.feature_model(1, self.ood.image_size)

    def _radiograph_check(self, img: np.ndarray) -> dict:
        """``in_distribution`` of the decoded image and, for inputs that do not look like
        radiographs, a warning and no fracture answer (class and confidence set to None)."""
        from fracturelib.data.pipeline import pad_resize
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
        from fracturelib.explain import gradcam
        x, img = prepare(image_path, self.card)
        cams, out = gradcam(self.model, x)        # explains the arg-max / p >= 0.5 class
        if self.card.get("tta_flip"):             # chosen on validation by notebook 03
            out = (out + self.model.predict(x[:, :, ::-1], verbose=0)) / 2
        out = out[0]
        if len(self.classes) == 2 and out.shape[-1] == 1:
            p = float(out[0])
            probs = np.array([1 - p, p])
            thr = float(self.card.get("threshold", 0.5))
            label = self.classes[1] if p >= thr else self.classes[0]
        else:
            probs = out.astype(float)
            thr = None
            label = self.classes[int(np.argmax(probs))]
        if thr is not None and (p >= thr) != (p >= 0.5):
            # the card's threshold, not 0.5, decided the label: explain the class we report
            cams, _ = gradcam(self.model, x, class_index=self.classes.index(label))
        order = np.argsort(probs)[::-1][:top]
        result = {"image": str(image_path), "model": str(self.path), "class": label,
                  "confidence": float(probs[self.classes.index(label)]),
                  "top": [{"class": self.classes[i], "probability": float(probs[i])} for i in order]}
        if thr is not None:
            result["threshold"] = thr
        if self.ood is not None:
            result.update(self._radiograph_check(img))
        h, w = img.shape[:2]
        heat = heatmap_to_image(cams[0], w, h, int(self.card["image_size"]))
        where, method = heat, "gradcam"
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
    """Predict each image in turn; one that cannot be read is a result with an ``error`` (the file
    and the fix) and the others still run."""
    from fracturelib.data.imageio import ImageError
    results = []
    for img, name in zip(images, overlay_names(images)):
        try:
            results.append(predictor.predict(img, gradcam_dir, overlay_name=name))
        except ImageError as e:
            results.append({"image": str(img), "error": str(e)})
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
    kind = "Grad-CAM" if r.get("localisation", "gradcam") == "gradcam" else "localiser"
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
