"""A model card people read: ``<name>.md`` rendered from the JSON card (a ``ModelCard``), in the Hugging Face
model-card shape (YAML front matter, then model details, intended use, data, metrics with CIs,
calibration, limitations, how to load). The JSON stays the machine contract; this is its reading.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from fracturelib.files import atomic_write

DATASETS = {"fracatlas": ("FracAtlas",
                          "Abedeen et al., Scientific Data 10, 521 (2023), doi:10.1038/s41597-023-02432-4"),
            "bone-break-classification": ("Bone Break Classification",
                                          "Roboflow Universe curso-rphcb/bone-break-classification (2023)")}


def _dataset(card) -> tuple[str, str]:
    root = str(card.data.get("root", "")).lower()
    for key, value in DATASETS.items():
        if key in root:
            return value
    return root or "unknown", "see the data folder's README"


def _ci(m: dict) -> str:
    if not all(isinstance(m.get(k), (int, float)) for k in ("ci_low", "ci_high")):
        return f"{m['value']:.3f} (no CI)"
    return f"{m['value']:.3f} (95% CI {m['ci_low']:.3f}-{m['ci_high']:.3f})"


def _metrics_rows(metrics: dict) -> list[str]:
    return [f"| {k} | {_ci(v)} |" for k, v in metrics.items() if isinstance(v, dict) and "value" in v]


def _details(card, binary: bool) -> list[str]:
    versions = card.versions
    classes = card.classes
    if card.task == "localisation":
        task = "localisation: a stride-8 heatmap whose peak is the fracture (trained on the expert boxes)"
    elif card.task == "detection":
        task = ("detection: fracture boxes (CenterNet: centre heatmap, box size and offset at stride 8), trained "
                "on all training images, fractured or not")
    else:
        task = f"binary ({' / '.join(classes)})" if binary else f"{len(classes)} fracture types"
    arch = card.backbone or "the design CNN (Conv 32, pool, Conv 64, pool, Dense 128, sigmoid)"
    if card.weights:
        arch += f", weights {card.weights}"
    if binary and card.threshold is not None:
        decision = (f"threshold {card.threshold:.3f}, chosen on validation for sensitivity "
                    f">= {card.target_sensitivity or 0:.2f}")
    elif card.task == "localisation":
        decision = "the heatmap's peak (the fracture point); no class"
    elif card.task == "detection":
        decision = (f"boxes scoring >= {card.box_threshold:.3f} (chosen on validation: false positives per image)"
                    if card.box_threshold is not None else "boxes by score")
    else:
        decision = "arg-max class"
    size = card.image_size
    return ["## Model details", "", f"- Task: {task}", f"- Architecture: {arch}",
            f"- Input: {size} x {size} px, {card.channels} channel(s); {card.preprocessing}",
            f"- Decision: {decision}",
            f"- File: `{card.model_file}` (sha256 `{(card.model_sha256 or '')[:16]}...`), "
            f"fracturelib {versions.get('fracturelib', '?')}, Keras {versions.get('keras', '?')}", ""]


def _data(card, binary: bool) -> list[str]:
    name, citation = _dataset(card)
    data = card.data
    split = data.get("split", {})
    how = ("the official Train/Test split kept" if split.get("respect_existing")
           else "group-aware (duplicates on one side)")
    if card.task == "detection":
        evaluation = ("All held-out test images of the same split (never read in training): COCO mAP50 and "
                      "mAP50-95 on the fractured ones, FROC over all (a hit: a box centred in an expert box).")
    elif card.task == "localisation":
        evaluation = ("The fractured held-out test images of the same split with expert boxes (never read in "
                      "training): pointing game, energy in the box and IoU, per body region in notebook 04.")
    elif binary:
        evaluation = "Held-out test images of the same split, never used for training or for choosing the threshold."
    else:
        evaluation = (f"The official Test images; the honest subset ({card.honest_test} images) "
                      "has no near copy in Train and is reported first.")
    return ["## Training data and split", "",
            f"- Dataset: {name} ({citation}), CC BY 4.0; folder `{data.get('root')}`, "
            f"manifest `{data.get('manifest_hash')}`",
            f"- Split: seed {split.get('seed')}, validation {split.get('val_fraction')}, "
            f"test {split.get('test_fraction')}, {how}; images: {data.get('n')}", "",
            "## Evaluation data", "", evaluation, ""]


def _calibration(card) -> list[str]:
    table = card.calibration
    if not table:
        return []
    cols = list(next(iter(table.values())))
    rows = [f"| {k} | " + " | ".join(f"{v:.3f}" for v in row.values()) + " |" for k, row in table.items()]
    return ["## Calibration", "", f"Temperature fitted on validation: {card.temperature or 1.0:.2f}.", "",
            "| scores | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols), *rows, ""]


def render(card) -> str:
    """Markdown with YAML front matter from a saved model's card.

    Args:
        card: the :class:`~fracturelib.models.cards.ModelCard` (as ``read_card`` gives it).

    Returns:
        The Markdown text (Hugging Face model-card shape).
    """
    binary = card.task == "binary"
    name, _ = _dataset(card)
    metrics = card.test_metrics or card.test_metrics_honest or {}
    front = {"license": "mit", "library_name": "keras",
             "tags": ["medical-imaging", "x-ray", "radiograph", "fracture", "image-classification", "fracturelib"],
             "datasets": [name], "metrics": sorted(metrics),
             "pipeline_tag": "object-detection" if card.task == "localisation" else "image-classification"}
    title = card.model_name or card.model_file or "model"
    what = {"binary": "fractured or not", "localisation": "where the fracture is"}.get(card.task, "fracture type")
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {title}: {what} on radiographs", "",
             *_details(card, binary),
             "## Intended use", "",
             "Research and teaching: studying fracture classification on radiographs, comparing methods, "
             "reproducing the reports of this project.", "",
             "**Out of scope:** any clinical use. This is not a medical device and not medical advice; a "
             "clinician must read every radiograph. Not for patients, triage or screening.", "",
             *_data(card, binary),
             "## Metrics (test, 95% bootstrap CIs)", "", "| metric | value |", "| --- | --- |",
             *_metrics_rows(metrics), ""]
    if card.test_metrics_at_threshold:
        lines += [f"At the validation threshold {card.threshold or 0:.3f}:", "", "| metric | value |",
                  "| --- | --- |", *_metrics_rows(card.test_metrics_at_threshold), ""]
    lines += _calibration(card)
    if card.localisation:
        lines += ["## Localisation and shortcut findings", "", str(card.localisation), ""]
    lines += ["## Limitations", "",
              "- Trained on one public dataset; performance on other hospitals, devices and populations is unknown.",
              "- Burnt-in markers and text can act as shortcuts: see notebook 04's shortcut check.",
              "- Confidence intervals are wide on small test sets; differences inside them are not findings.",
              ("- Inputs that are not radiographs are flagged by the radiograph detector named in this card "
              f"(`{card.companion('ood')}`) and get no answer; it was fitted on one dataset's radiographs."
              if card.companion("ood") else "- Inputs that are not radiographs are not recognised as such."), "",
              "## How to load", "", "```python", "from fracturelib.models.cards import load_model",
              f"model, card = load_model(\"{card.model_file}\")   # checks this card and the file's hash",
              "```", "", f"Or from a terminal: `fracturelib predict IMAGE --model {card.model_file}`.", ""]
    return "\n".join(lines)


def front_matter(text: str) -> dict:
    """The YAML front matter of a rendered card (what a Hugging Face-style viewer reads).

    Args:
        text: a rendered card (:func:`render`).

    Returns:
        The front matter, parsed (a dict).

    Raises:
        ValueError: ``text`` has no front matter (no opening or no closing ``---`` line).
    """
    if not text.startswith("---\n"):
        raise ValueError("no YAML front matter")
    return yaml.safe_load(text[4:text.index("\n---\n", 4)])


def write(card, model_path: str | Path) -> Path:
    """Write the readable card (:func:`render`) beside the model, as ``model_path`` with .md.

    Args:
        card: the model's :class:`~fracturelib.models.cards.ModelCard`.
        model_path: the model file.

    Returns:
        The .md path.
    """
    p = Path(model_path).with_suffix(".md")
    atomic_write(p, render(card))
    return p
