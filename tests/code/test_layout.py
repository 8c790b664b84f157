import pytest

from fracturelib.config import normalise_class_name
from fracturelib.data.layout import LayoutError, discover
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
