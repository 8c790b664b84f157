"""The notebook's "predict an image of your own" widget. Each model is loaded once, on first use,
not on every upload."""
from __future__ import annotations

import tempfile
from pathlib import Path


def choices(binary_models: list[str], types_model: str | None = None) -> dict[str, str]:
    """Menu label -> model path for the models that exist, the card's preferred binary model first.

    Args:
        binary_models: paths of binary (fractured or not) models; those not on disk are left out.
        types_model: path of the fracture-type model, or None.

    Returns:
        Label -> model path, in menu order; a binary model whose card cannot be read comes last.
    """
    from fracturelib.models.cards import ModelCardError, read_card

    def preferred(p: str) -> bool:
        try:
            return read_card(p).preferred
        except ModelCardError:             # listed last; loading it says what is wrong
            return False

    present = [p for p in binary_models if Path(p).exists()]
    out = {f"fractured or not (02, {Path(p).stem})": p
           for p in sorted(present, key=lambda p: not preferred(p))}
    if types_model and Path(types_model).exists():
        out["fracture type (03)"] = types_model
    return out


def upload_widget(models: dict[str, str]):
    """A model menu, a file upload and an output area; returns the ipywidgets box to display.

    Each model is loaded once, on first use; a file that is no usable image is reported in the
    output area instead of raising.

    Args:
        models: menu label -> model path (:func:`choices`).

    Returns:
        The ``ipywidgets.VBox`` (menu, upload, output) to display.
    """
    import ipywidgets as widgets
    from IPython.display import display

    from fracturelib.app.predict import Predictor, format_result
    from fracturelib.data.imageio import ImageError
    from fracturelib.models.cards import ModelCardError
    loaded: dict[str, Predictor] = {}
    which = widgets.Dropdown(options=list(models), description="model")
    upload = widgets.FileUpload(accept="image/*,.dcm,.dicom,application/dicom", multiple=False, description="X-ray")
    shown = widgets.Output()

    def on_upload(change):
        shown.clear_output()
        files = change["new"]
        if not files:
            return
        f = files[0] if isinstance(files, (list, tuple)) else next(iter(files.values()))
        tmp = Path(tempfile.mkdtemp()) / Path(f["name"]).name
        tmp.write_bytes(bytes(f["content"]))
        with shown:
            try:
                if which.value not in loaded:
                    loaded[which.value] = Predictor(models[which.value])
                r = loaded[which.value].predict(tmp, overlay_dir=tmp.parent)
            except (ImageError, ModelCardError) as e:
                print(f"cannot use this file: {e}")
                return
            print(format_result(r))
            if r.get("overlay"):
                display(widgets.Image(value=Path(r["overlay"]).read_bytes(), format="png", width=360))

    upload.observe(on_upload, names="value")
    return widgets.VBox([which, upload, shown])
