"""Overlay names: one per input, unique, never an input's own path (a user's file is never overwritten)."""
import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fracturelib.app.predict import overlay_names

EXAMPLES = int(os.environ.get("FRACTURELIB_FUZZ_EXAMPLES", 200))


def test_inputs_that_share_a_stem_or_look_like_overlays_get_distinct_names(tmp_path):
    images = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.png", tmp_path / "c" / "x_2.jpg"]
    names = overlay_names(images, tmp_path / "out")
    assert len(set(names)) == 3 and names[0] == "x_overlay.png"


def test_an_input_in_the_overlay_folder_is_never_the_overlay_of_another(tmp_path):
    d = tmp_path / "d"
    images = [d / "x.jpg", d / "x_overlay.png"]             # predict d/x.jpg d/x_overlay.png --overlay-dir d
    names = overlay_names(images, d)
    assert "x_overlay.png" not in names and len(set(names)) == 2


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "."]),
                          st.sampled_from(["x", "x_2", "x_gradcam", "x_2_gradcam", "y", "x_3"]),
                          st.sampled_from([".jpg", ".png", ".tif"])), min_size=1, max_size=12))
def test_property_names_are_unique_and_never_an_input(parts):
    out = Path("/tmp/overlay-names-out")
    images = [(out / folder / (stem + ext)) for folder, stem, ext in parts]
    names = overlay_names(images, out)
    assert len(names) == len(images) and len(set(names)) == len(names)
    resolved = {p.resolve() for p in images}
    assert not any((out / n).resolve() in resolved for n in names)
