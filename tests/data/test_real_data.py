"""The real data: the embedded default (always present) and ../shared/data (skipped when absent)."""
import pytest

from fracturelib import config
from fracturelib.data import build_manifest, summary
from fracturelib.data.duplicates import cross_label_groups, leaked_test_images
from fracturelib.data.fracatlas import load_boxes
from tests.conftest import need_shared


def test_embedded_bone_break(bone_break):
    s = summary(bone_break)
    assert s["layout"] == "class-split" and s["files"] == 1129 and s["used"] == 1129
    assert s["classes"] == list(config.FRACTURE_TYPES)
    assert (bone_break["split"] == "test").sum() == 140
    assert s["exact_groups"] == 3
    assert 12 <= len(leaked_test_images(bone_break)) <= 30
    assert cross_label_groups(bone_break)["dup_group"].nunique() >= 4


def test_embedded_fracatlas(fracatlas):
    s = summary(fracatlas)
    assert s["layout"] == "fracatlas" and s["files"] == 919
    assert (fracatlas["label"] == "fractured").sum() == 333
    assert s["skipped_by_reason"] == {"truncated JPEG, decodable": 12}
    assert s["exact_groups"] >= 10
    conflict = fracatlas[fracatlas["note"].str.contains("label conflict")]
    assert list(conflict["relpath"]) == ["images/Fractured/IMG0003298.jpg"]
    assert (fracatlas.loc[fracatlas["label"] == "fractured", "n_boxes"] > 0).mean() > 0.95


def test_embedded_boxes_scaled_with_images():
    boxes = load_boxes(config.DEFAULT_FRACATLAS)
    assert len(boxes) == 333
    from PIL import Image
    for name, rec in list(boxes.items())[:20]:
        folder = config.DEFAULT_FRACATLAS / "images" / "Fractured"
        w, h = Image.open(folder / name).size
        assert (rec["width"], rec["height"]) == (w, h)
        for x, y, bw, bh in rec["boxes"]:
            assert 0 <= x and 0 <= y and x + bw <= w + 1 and y + bh <= h + 1


@pytest.mark.shared
def test_shared_bone_break():
    df = build_manifest(need_shared("bone-break-classification"))
    s = summary(df)
    assert s["files"] == 1129 and len(s["classes"]) == 10 and s["exact_groups"] == 3
    assert 15 <= len(leaked_test_images(df)) <= 30


@pytest.mark.shared
def test_shared_fracatlas():
    df = build_manifest(need_shared("fracatlas"))
    s = summary(df)
    assert s["files"] == 3515 and (df["label"] == "fractured").sum() == 630
    assert s["skipped_by_reason"] == {"truncated JPEG, decodable": 52}
    assert s["exact_groups"] == 10
