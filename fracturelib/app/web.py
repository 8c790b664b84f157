"""The web page: a Gradio Blocks app over :class:`~fracturelib.app.service.Service` (the same code runs
as a Hugging Face Space). Upload one or many radiographs, choose a model from the cards of the served
folder, and read the decision at the card's threshold, the probability, what that threshold means,
the overlay (heat, the fracture detector's boxes and the fracture point), and for fracture types the top
three and the type's card;
several files give a table and a CSV. Every bad file is a readable line, never a stopped server.
"""
from __future__ import annotations

import html
import shutil
from pathlib import Path

from fracturelib.app.service import (
    CSV_COLUMNS,
    IMAGE_SUFFIXES,
    RESEARCH_NOTE,
    Service,
    ServiceError,
    csv_text,
    display_name,
    row,
    with_ci,
)

TITLE = "fracturelib: fracture on a radiograph?"
CSS = """
#research-note {border-left: 4px solid #b45309; background: #fffbeb; color: #78350f; padding: 6px 12px;}
.fl-error {border-left: 4px solid #b91c1c; background: #fef2f2; color: #7f1d1d; padding: 8px 12px;}
.fl-warning {border-left: 4px solid #b45309; background: #fffbeb; color: #78350f; padding: 8px 12px;}
.fl-decision {font-size: 1.4em; margin: 4px 0;}
.fl-small {color: #4b5563; font-size: 0.9em;}
"""
INFO_SECTIONS = ("overview", "symptoms", "causes", "diagnosis", "treatment", "prognosis")


def _e(x) -> str:
    return html.escape(str(x))


def answer_html(answer: dict, n_files: int = 1) -> str:
    """The page's account of one file's answer (HTML, every value escaped).

    Args:
        answer: :meth:`~fracturelib.app.service.Service.analyse_file`'s answer.
        n_files: how many files were analysed (more than one: the table holds them all).

    Returns:
        The HTML: the error, or the radiograph warning and no decision, or the decision, the probability,
        what the threshold means, the fracture point, the detector's boxes and, for fracture types, the top
        three and the card.
    """
    head = (f"<p class='fl-small'>{n_files} files: the table below has one row each; shown here: "
            f"<b>{_e(answer['name'])}</b></p>" if n_files > 1 else "")
    if "error" in answer:
        return head + f"<div class='fl-error' role='alert' id='fl-error'>Cannot analyse: {_e(answer['error'])}</div>"
    f, entry = answer["fields"], answer["entry"]
    parts = [head]
    if f.get("in_distribution") is False:
        parts.append(f"<div class='fl-warning' role='alert' id='fl-not-radiograph'><b>No decision.</b> "
                     f"{_e(f['warning'])}</div>")
        parts.append(f"<p class='fl-small'>{_e(f['note'])}</p>")
        return "".join(parts)
    card = entry.card
    if entry.task == "binary":
        positive = card.positive_class or card.classes[-1]
        p = next(t["probability"] for t in f["top"] if t["class"] == positive)
        parts.append(f"<div class='fl-decision' id='fl-decision'>Decision: <b>{_e(f['class'])}</b></div>")
        parts.append(f"<p id='fl-probability'>Probability of {_e(positive)}: <b>{p:.3f}</b> "
                     f"(decision threshold {float(f.get('threshold', card.decision_threshold)):.3f})</p>")
        parts.append(f"<p id='fl-threshold'>{_e(threshold_meaning(entry))}</p>")
    else:
        parts.append(f"<div class='fl-decision' id='fl-decision'>Most likely type: <b>{_e(f['class'])}</b></div>")
        parts.append(f"<p id='fl-probability'>Probability: <b>{float(f['confidence']):.3f}</b></p>")
        items = "".join(f"<li>{_e(t['class'])}: {float(t['probability']):.3f}</li>" for t in f["top"])
        parts.append(f"<p>Top {len(f['top'])} types:</p><ol id='fl-top'>{items}</ol>")
    if f.get("fracture_point"):
        x, y = f["fracture_point"]
        mm = f.get("fracture_point_mm")
        at = f" = ({mm[0]:.1f}, {mm[1]:.1f}) mm from the top-left corner" if mm else ""
        parts.append(f"<p class='fl-small' id='fl-point'>Fracture point (x, y) = ({x}, {y}) in the file's pixels{at}, "
                     f"by {_e(f.get('localisation'))}; the overlay marks it with a ring.</p>")
    parts.append(boxes_html(f))
    if f.get("warning"):
        parts.append(f"<div class='fl-warning'>{_e(f['warning'])}</div>")
    info = f.get("info")
    if info:
        rows = "".join(f"<dt><b>{s.capitalize()}</b></dt><dd>{_e(info[s])}</dd>" for s in INFO_SECTIONS if info.get(s))
        parts.append(f"<details open id='fl-info'><summary>About {_e(f['class'])} fractures</summary>"
                     f"<dl>{rows}</dl></details>")
    parts.append(f"<p class='fl-small'>{_e(f['note'])}</p>")
    return "".join(parts)


def boxes_html(f: dict) -> str:
    """The fracture detector's boxes of one answer as a list (empty without a detector).

    Args:
        f: the answer's fields (``boxes``, ``box_threshold``).

    Returns:
        HTML: one item per box (corners in the file's pixels, score), or the sentence that no box reaches
        the threshold.
    """
    boxes = f.get("boxes")
    if boxes is None:
        return ""
    t = float(f.get("box_threshold") or 0)
    if not boxes:
        return f"<p class='fl-small' id='fl-boxes'>Fracture detector: no box reaches the threshold {t:.2f}.</p>"
    items = "".join(f"<li>({int(b[0])}, {int(b[1])}) to ({int(b[2])}, {int(b[3])}) px, score {float(b[4]):.3f}</li>"
                    for b in boxes)
    return (f"<p class='fl-small'>Fracture detector: {len(boxes)} box{'es' * (len(boxes) != 1)} scoring at least "
            f"{t:.2f} (corners in the file's pixels; drawn on the overlay, best first):</p>"
            f"<ol class='fl-small' id='fl-boxes'>{items}</ol>")


def threshold_meaning(entry) -> str:
    """What a binary model's threshold means, from its card: sensitivity and specificity there on the
    test set, with their CIs.

    Args:
        entry: the model's :class:`~fracturelib.app.service.ModelEntry`.

    Returns:
        One sentence.
    """
    card = entry.card
    at = card.test_metrics_at_threshold or {}
    sens = at.get("sensitivity") or at.get("recall")
    spec = at.get("specificity")
    chosen = (f"chosen on validation for sensitivity >= {card.target_sensitivity:.2f}"
              if card.target_sensitivity else "from the model's card")
    if not (sens or spec):
        return (f"Threshold {card.decision_threshold:.3f} ({chosen}); the card gives no test sensitivity or "
                "specificity at it.")
    return (f"Threshold {card.decision_threshold:.3f} ({chosen}): at it, on the test set, sensitivity "
            f"{with_ci(sens)} (fractures found) and specificity {with_ci(spec)} (intact bones called intact).")


def analyse(service: Service, files, model: str | None):
    """The page's one action: analyse every uploaded file with the chosen model.

    A generator: it yields the outputs once, then removes the CSV's temporary folder (by then the
    web framework has copied the file for download).

    Args:
        service: the :class:`~fracturelib.app.service.Service`.
        files: the uploaded files' paths (or objects with ``.name``), or None.
        model: the model's menu name.

    Yields:
        (answer HTML, overlay RGB array or None, table rows as a DataFrame, CSV path or None).
    """
    import pandas as pd
    paths = [getattr(f, "name", f) for f in (files or [])]
    empty = pd.DataFrame(columns=list(CSV_COLUMNS))
    if not paths:
        yield "<p class='fl-small'>Drop one or more radiographs above, or click to choose files.</p>", None, empty, None
        return
    try:
        answers = [service.analyse_file(p, display_name(Path(p).name), model) for p in paths]
    except ServiceError as e:
        yield f"<div class='fl-error' role='alert' id='fl-error'>{_e(e)}</div>", None, empty, None
        return
    shown = next((a for a in answers if "fields" in a), answers[0])
    rows = [row(a) for a in answers]
    work = service.workdir()
    try:
        out = work / "predictions.csv"
        out.write_text(csv_text(rows))
        yield answer_html(shown, len(paths)), shown.get("overlay"), pd.DataFrame(rows, columns=list(CSV_COLUMNS)), \
            str(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build(service: Service):
    """The Gradio Blocks of the page (queue set: ``service``'s concurrency, bounded waiting).

    Args:
        service: the :class:`~fracturelib.app.service.Service` that answers.

    Returns:
        The ``gradio.Blocks`` (not launched; :func:`fracturelib.app.serve.create_app` mounts it).
    """
    import gradio as gr
    choices = [(e.label(), e.name) for e in service.models.values()]
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(60, 600)) as demo:
        gr.Markdown(f"# {TITLE}")
        gr.Markdown(f"**{RESEARCH_NOTE}**", elem_id="research-note")
        with gr.Row():
            files = gr.File(label="Radiographs (PNG, JPEG, TIFF, BMP, DICOM): drop them here or click to choose",
                            file_count="multiple", file_types=list(IMAGE_SUFFIXES), type="filepath",
                            elem_id="upload", scale=2)
            with gr.Column(scale=1):
                model = gr.Dropdown(choices=choices, value=service.default, label="Model (test metric, 95% CI)",
                                    elem_id="model", interactive=True)
                go = gr.Button("Analyse", variant="primary", elem_id="analyse")
        if not choices:
            gr.Markdown(f"No models in `{service.models_dir}`: run `make reports`, or pass `--models`.")
        with gr.Row():
            answer = gr.HTML(elem_id="answer")
            overlay = gr.Image(label="Overlay: where the model looked (heat), the detector's boxes and the "
                               "fracture point (ring)",
                               type="numpy", format="png", interactive=False, elem_id="overlay")
        table = gr.Dataframe(headers=list(CSV_COLUMNS), label="One row per file", interactive=False, elem_id="table",
                             wrap=False)
        download = gr.File(label="CSV of the table", interactive=False, elem_id="csv")

        def run(uploaded, chosen):
            yield from analyse(service, uploaded, chosen)
        outputs = [answer, overlay, table, download]
        go.click(run, [files, model], outputs, api_name="analyse")
        files.upload(run, [files, model], outputs, api_name=False)
        model.change(run, [files, model], outputs, api_name=False)
    demo.queue(default_concurrency_limit=service.concurrency, max_size=service.max_waiting)
    return demo
