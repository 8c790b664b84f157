import os

import pytest

from fracturelib.config import normalise_class_name
from fracturelib.data.layout import LayoutError, discover
from fracturelib.data.manifest import build_manifest
from tests.conftest import write_tree


@pytest.mark.parametrize("raw,norm", [
    ("Fracture Dislocation", "fracture-dislocation"), ("Fracture-Dislocation", "fracture-dislocation"),
    ("fracture_dislocation", "fracture-dislocation"), ("Avulsion fracture", "avulsion"),
    ("Hairline Fracture", "hairline"), ("Non_fractured", "non-fractured"), ("Fractured", "fractured"),
    ("  Spiral   Fracture ", "spiral"), ("fracture", "fracture"),
])
def test_class_names_normalised(raw, norm):
    assert normalise_class_name(raw) == norm


def test_class_folders(tmp_path):
    write_tree(tmp_path, {"Fractured": 3, "Not Fractured": 2})
    lay = discover(tmp_path)
    assert lay.name == "class-folders"
    assert lay.classes == ["fractured", "not-fractured"]
    assert len(lay.entries) == 5 and {e.split for e in lay.entries} == {""}


@pytest.mark.parametrize("names", [("train", "val", "test"), ("Train", "Valid", "TEST"),
                                   ("training", "validation", "test")])
def test_split_folders_any_case(tmp_path, names):
    tr, va, te = names
    write_tree(tmp_path, {f"{tr}/Fracture Dislocation": 2, f"{tr}/Spiral": 2,
                          f"{va}/Fracture-Dislocation": 1, f"{va}/spiral": 1, f"{te}/Spiral": 1})
    lay = discover(tmp_path)
    assert lay.name == "split-folders"
    assert lay.classes == ["fracture-dislocation", "spiral"]
    splits = sorted(e.split for e in lay.entries)
    assert splits == ["test"] + ["train"] * 4 + ["val"] * 2


def test_class_split_layout_like_bone_break(tmp_path):
    write_tree(tmp_path, {"Avulsion fracture/Train": 3, "Avulsion fracture/Test": 1,
                          "Fracture Dislocation/Train": 2, "Fracture Dislocation/Test": 1})
    (tmp_path / "README.dataset.txt").write_text("card")
    lay = discover(tmp_path)
    assert lay.name == "class-split"
    assert lay.classes == ["avulsion", "fracture-dislocation"]
    assert sum(e.split == "test" for e in lay.entries) == 2
    assert [p.name for p in lay.other_files] == ["README.dataset.txt"]


def test_fracatlas_layout(tmp_path):
    write_tree(tmp_path, {"images/Fractured": 2, "images/Non_fractured": 3})
    (tmp_path / "dataset.csv").write_text("image_id,fractured\n")
    lay = discover(tmp_path)
    assert lay.name == "fracatlas"
    assert lay.classes == ["fractured", "non-fractured"]
    assert [p.name for p in lay.other_files] == ["dataset.csv"]


def test_flat_folder(tmp_path):
    write_tree(tmp_path, {".": 3})
    lay = discover(tmp_path)
    assert lay.name == "flat" and len(lay.entries) == 3 and lay.classes == []


def test_unknown_layout_names_folder_and_lists_layouts(tmp_path):
    write_tree(tmp_path, {"train/a": 1, "misc": 1})       # split folders mixed with others
    with pytest.raises(LayoutError) as e:
        discover(tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and "split-folders" in msg and "class-split" in msg
    assert "mixes split folders (train) with other folders (misc)" in msg


def test_missing_and_empty_folder(tmp_path):
    with pytest.raises(LayoutError, match="no such folder"):
        discover(tmp_path / "nope")
    with pytest.raises(LayoutError, match="empty"):
        discover(tmp_path)


def test_hidden_files_are_listed_as_skipped(tmp_path):
    write_tree(tmp_path, {"a": 2, "b": 1})
    (tmp_path / "a" / ".DS_Store").write_bytes(b"x")
    entries = discover(tmp_path).entries
    assert len(entries) == 4
    assert [e.skip for e in entries if e.path.name == ".DS_Store"] == ["hidden file: its name starts with '.'"]


def _rows(root):
    df = build_manifest(root, workers=1, progress=False)
    return df, dict(zip(df["relpath"], df["reason"]))


def test_case_and_spacing_variant_class_folders_are_merged_with_a_note(tmp_path):
    write_tree(tmp_path, {"images/Fractured": 3, "images/fractured": 3,
                          "images/Non_fractured": 3, "images/non fractured": 3})
    df, _ = _rows(tmp_path)
    assert df.attrs["layout"] == "fracatlas" and len(df) == 12 and (df["status"] == "ok").all()
    assert df.groupby("label").size().to_dict() == {"fractured": 6, "non-fractured": 6}
    assert (df.loc[df["label"] == "fractured", "note"]
            == "class folders 'Fractured', 'fractured' merged as one class 'fractured'").all()
    assert df.loc[df["label"] == "non-fractured", "note"].str.contains("'non fractured'").all()


def test_variant_class_folders_merge_in_every_layout(tmp_path):
    write_tree(tmp_path / "cf", {"Spiral": 1, "spiral": 2, "Avulsion fracture": 1})
    write_tree(tmp_path / "sf", {"train/Spiral": 1, "train/SPIRAL": 1, "Train/Oblique": 1})
    for name, n_merged in [("cf", 3), ("sf", 3)]:
        df, _ = _rows(tmp_path / name)
        assert (df["status"] == "ok").all() and (df["note"].str.contains("merged")).sum() == n_merged


def test_hidden_folders_at_class_level_and_root_entries_are_rows(tmp_path):
    write_tree(tmp_path / "sf", {"train/a": 1, "train/.hidden_class": 2, "test/a": 1})
    write_tree(tmp_path / "cs", {"A/Train": 1, "A/Test": 1, "A/.ipynb_checkpoints": 1})
    write_tree(tmp_path / "cf", {"a": 1, "b": 1, ".cache": 2})
    (tmp_path / "cf" / "README.md").write_text("card")
    os.mkfifo(tmp_path / "cf" / "pipe")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "cf" / "broken.jpg")
    os.symlink(tmp_path / "cf", tmp_path / "cf" / "loop")
    _, sf = _rows(tmp_path / "sf")
    assert sf["train/.hidden_class/img0001.jpg"] == "in hidden folder .hidden_class" and len(sf) == 4
    _, cs = _rows(tmp_path / "cs")
    assert cs["A/.ipynb_checkpoints/img0002.jpg"] == "in hidden folder .ipynb_checkpoints"
    df, cf = _rows(tmp_path / "cf")
    assert df.attrs["layout"] == "class-folders" and df.attrs["other_files"] == ["README.md"]
    assert cf[".cache/img0002.jpg"] == "in hidden folder .cache"
    assert cf["pipe"] == "not a regular file: a named pipe (FIFO)"
    assert cf["broken.jpg"].startswith("broken symbolic link") and cf["loop"].startswith("symbolic link loop")
    assert len(df) == 2 + 2 + 3


def test_files_the_layout_leaves_out_say_which_rule(tmp_path):
    write_tree(tmp_path, {"images/Fractured": 1, "images/Non_fractured": 1, "images/Other": 1,
                          "images": 1, "Annotations/YOLO": 0})
    (tmp_path / "Annotations" / "YOLO" / "a.txt").write_text("")
    lay = discover(tmp_path)
    skips = {e.path.relative_to(tmp_path).as_posix(): e.skip for e in lay.entries}
    assert skips["images/Other/img0002.jpg"].startswith("left out by the fracatlas layout: images/Other")
    assert skips["images/img0003.jpg"].startswith("left out by the fracatlas layout: a file directly")
    assert [p.name for p in lay.other_files] == ["a.txt"] and len(lay.entries) == 4


def test_images_outside_the_image_folders_are_rows_and_metadata_stays_metadata(tmp_path):
    """An image is never only 'metadata': one outside a layout's image folders is a row naming the rule."""
    from fracturelib.data import build_manifest
    root = tmp_path / "fa"
    write_tree(root, {"images/Fractured": 2, "images/Non_fractured": 2, "extra": 1, "Annotations": 1})
    (root / "stray.JPG").write_bytes((root / "extra").glob("*.jpg").__next__().read_bytes())
    (root / "dataset.csv").write_text("image_id,fractured\n")
    (root / "README.txt").write_text("x")
    df = build_manifest(root, progress=False)
    left = df[df["reason"].str.startswith("left out by the fracatlas layout: outside its image folders")]
    assert sorted(left["relpath"]) == sorted(["Annotations/img0005.jpg", "extra/img0004.jpg", "stray.JPG"])
    assert sorted(df.attrs["other_files"]) == ["README.txt", "dataset.csv"]
    assert (df["status"] == "ok").sum() == 4


def test_a_link_to_a_sibling_class_folder_is_one_skipped_row_not_a_new_class(tmp_path):
    """`ds/Linked class -> ds/Avulsion fracture` (and a link inside one class to another) must not copy a
    class under a second name: the whole dataset is walked once, real folders first."""
    from fracturelib.data import build_manifest
    write_tree(tmp_path / "ds", {"Avulsion fracture": 2, "Spiral": 2})
    (tmp_path / "ds" / "Linked class").symlink_to(tmp_path / "ds" / "Avulsion fracture")
    (tmp_path / "ds" / "Spiral" / "also avulsion").symlink_to(tmp_path / "ds" / "Avulsion fracture")
    df = build_manifest(tmp_path / "ds", progress=False)
    assert sorted(df.loc[df["status"] == "ok", "label"]) == ["avulsion", "avulsion", "spiral", "spiral"]
    loops = df[df["reason"].str.startswith("symbolic link loop")]
    assert sorted(loops["relpath"]) == ["Linked class", "Spiral/also avulsion"]
