import pandas as pd
from PIL import ImageOps

from fracturelib.data.duplicates import cross_label_groups, cross_split_copies, leaked_test_images
from fracturelib.data.manifest import build_manifest
from fracturelib.data.splits import assign_splits, group_ids
from tests.conftest import write_tree, xray_like


def _tree_with_copies(root):
    write_tree(root, {"a/Train": 12, "a/Test": 3, "b/Train": 12, "b/Test": 3})
    src = xray_like(0)                              # = a/Train/img0000.jpg
    src.resize((200, 166)).save(root / "a/Test/resized_copy.jpg", quality=70)   # near, cross split
    ImageOps.mirror(src).save(root / "a/Train/mirrored.jpg", quality=92)       # near, mirrored
    (root / "b/Train/exact.jpg").write_bytes((root / "a/Train/img0001.jpg").read_bytes())  # exact, 2 labels
    return root


def test_exact_near_and_mirrored_groups(tmp_path):
    df = build_manifest(_tree_with_copies(tmp_path)).set_index("relpath")
    g0 = df.at["a/Train/img0000.jpg", "dup_group"]
    assert g0 >= 0
    assert df.at["a/Test/resized_copy.jpg", "dup_group"] == g0
    assert df.at["a/Train/mirrored.jpg", "dup_group"] == g0
    assert df.at["b/Train/exact.jpg", "dup_group"] == df.at["a/Train/img0001.jpg", "dup_group"]
    assert df.at["b/Train/exact.jpg", "dup_kind"] == "exact"
    # distinct images stay apart: only the two groups above
    assert df.loc[df["dup_group"] >= 0, "dup_group"].nunique() == 2


def test_cross_split_and_cross_label_reports(tmp_path):
    df = build_manifest(_tree_with_copies(tmp_path))
    assert set(cross_split_copies(df)["relpath"]) == {"a/Train/img0000.jpg", "a/Test/resized_copy.jpg",
                                                       "a/Train/mirrored.jpg"}
    assert set(cross_label_groups(df)["label"]) == {"a", "b"}
    assert list(df.loc[leaked_test_images(df), "relpath"]) == ["a/Test/resized_copy.jpg"]


def test_existing_split_respected_and_leak_flagged(tmp_path):
    df = build_manifest(_tree_with_copies(tmp_path))
    d = assign_splits(df, val_fraction=0.2, seed=1)
    assert (d.loc[d["given_split"] == "test", "split"] == "test").all()
    assert set(d["split"]) == {"train", "val", "test"}
    leaked = d[d["leak"]]
    assert list(leaked["relpath"]) == ["a/Test/resized_copy.jpg"]
    _assert_groups_one_side(d[d["split"] != "test"])


def _assert_groups_one_side(d):
    sides = d.groupby(group_ids(d))["split"].nunique()
    assert (sides == 1).all()


def test_carved_split_is_group_aware_stratified_and_seeded(tmp_path):
    write_tree(tmp_path, {"fractured": 30, "non-fractured": 60})
    for k in range(5):   # five copies of one image: the whole group must stay together
        xray_like(3).resize((90 + k, 75 + k)).save(tmp_path / f"fractured/copy{k}.jpg")
    df = build_manifest(tmp_path)
    d1 = assign_splits(df, seed=5)
    d2 = assign_splits(df, seed=5)
    pd.testing.assert_series_equal(d1["split"], d2["split"])
    _assert_groups_one_side(d1)
    assert not d1["leak"].any()
    frac = d1[d1["split"] == "test"]["label"].value_counts(normalize=True)
    assert abs(frac["fractured"] - 40 / 95) < 0.12
    assert 0.08 < (d1["split"] == "test").mean() < 0.25
    d3 = assign_splits(df, seed=6)
    assert not d3["split"].equals(d1["split"])


def test_copies_turned_by_exif_orientation_or_in_pixels_are_grouped(tmp_path):
    from PIL import Image
    exif = Image.Exif()
    exif[0x0112] = 6                                   # same pixels, shown turned 90 degrees
    stored = xray_like(11, size=(120, 80))
    stored.save(tmp_path / "upright.jpg", quality=92)
    stored.save(tmp_path / "exif6.jpg", quality=92, exif=exif)
    other = xray_like(12, size=(120, 80))
    other.save(tmp_path / "b.jpg", quality=92)
    other.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "b_turned.jpg", quality=92)
    xray_like(13, size=(120, 80)).save(tmp_path / "c.jpg", quality=92)
    xray_like(14, size=(120, 80)).save(tmp_path / "d.jpg", quality=92)
    df = build_manifest(tmp_path, workers=1, progress=False).set_index("relpath")
    g = df["dup_group"]
    assert g["upright.jpg"] >= 0 and g["upright.jpg"] == g["exif6.jpg"]
    assert g["b.jpg"] >= 0 and g["b.jpg"] == g["b_turned.jpg"] != g["upright.jpg"]
    assert g["c.jpg"] == g["d.jpg"] == -1              # distinct images stay apart
    assert (df.loc[g >= 0, "dup_kind"] == "near").all()
