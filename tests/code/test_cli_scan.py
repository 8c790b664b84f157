import pytest

from fracturelib.app.cli import main
from tests.conftest import BAD_CORPUS, write_tree


def test_scan_broken_folder_exits_zero_and_lists_each_skip(bad_corpus, tmp_path, capsys):
    out = tmp_path / "m.csv"
    assert main(["scan", str(bad_corpus), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    n_ok = sum(v == "ok" for v in BAD_CORPUS.values())
    n = len(BAD_CORPUS)
    assert f"files: {n} accounted for = {n_ok} used + {n - n_ok} skipped" in text
    for name, expected in BAD_CORPUS.items():
        if expected != "ok":
            assert f"- {name}: {expected}" in text
    import pandas as pd
    assert len(pd.read_csv(out)) == n


def test_scan_missing_and_unknown(tmp_path, capsys):
    assert main(["scan", str(tmp_path / "missing"), "--quiet"]) == 2
    assert "no such folder" in capsys.readouterr().err
    write_tree(tmp_path / "odd", {"test/y": 1, "w": 1})
    assert main(["scan", str(tmp_path / "odd"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "mixes split folders" in err and "Traceback" not in err


def test_scan_reports_cross_split_copies(tmp_path, capsys):
    from tests.code.test_duplicates_splits import _tree_with_copies
    _tree_with_copies(tmp_path / "ds")
    assert main(["scan", str(tmp_path / "ds"), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "1 of 7 test images have a copy in train" in text
    assert "groups with conflicting labels: 1" in text


def test_out_that_is_an_existing_file_of_the_dataset_is_refused_before_the_scan(tmp_path, capsys):
    """`scan ds --out ds/dataset.csv` would replace the dataset's own metadata: refused, file untouched."""
    write_tree(tmp_path / "ds", {"images/Fractured": 2, "images/Non_fractured": 2})
    meta = tmp_path / "ds" / "dataset.csv"
    meta.write_text("image_id,fractured\nimg0000.jpg,1\n")
    before = meta.read_bytes()
    assert main(["scan", str(tmp_path / "ds"), "--out", str(meta)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "would overwrite the input" in err and len(err.strip().splitlines()) == 1
    assert meta.read_bytes() == before
    assert main(["scan", str(tmp_path / "ds"), "--out", str(tmp_path / "ds" / "new.csv")]) == 0   # a new file is fine


def test_out_that_is_a_pipe_or_a_missing_folder_is_refused_and_left_alone(tmp_path, capsys):
    import os
    import stat
    write_tree(tmp_path / "ds", {"a": 2, "b": 2})
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    assert main(["scan", str(tmp_path / "ds"), "--out", str(fifo)]) == 2
    assert "not a regular file" in capsys.readouterr().err and stat.S_ISFIFO(os.stat(fifo).st_mode)
    link = tmp_path / "link.csv"
    link.symlink_to(fifo)                              # through a link too
    assert main(["scan", str(tmp_path / "ds"), "--out", str(link)]) == 2
    assert link.is_symlink() and stat.S_ISFIFO(os.stat(fifo).st_mode)
    capsys.readouterr()
    assert main(["scan", str(tmp_path / "ds"), "--out", str(tmp_path / "nowhere" / "m.csv")]) == 2
    out, err = capsys.readouterr()
    assert "does not exist" in err and "dataset:" not in out      # refused before the scan ran


def test_hostile_names_cannot_break_or_recolour_the_terminal(tmp_path, capsys):
    """File and folder names with escape sequences, newlines and bidi overrides are printed escaped."""
    from tests.conftest import xray_like
    for cls in ("ok", "evil\x1b[31mred", "rtl\u202egnp.exe"):
        (tmp_path / "ds" / cls).mkdir(parents=True)
        for k in range(2):
            xray_like(k + hash(cls) % 100).save(tmp_path / "ds" / cls / f"a{k}\r\x1b[2J.png")
    (tmp_path / "ds" / "ok" / "bad\n.jpg").write_text("not an image")
    assert main(["scan", str(tmp_path / "ds"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out
    assert "bad\\n.jpg" in out and "\\x1b" in out


@pytest.mark.parametrize("where,content", [
    ("dataset.csv", "foo,bar\n1,2\n"), ("dataset.csv", "\xff\xfe\x00garbage"),
    ("Utilities/Fracture Split/train.csv", "a\n1\n"),
    ("Annotations/COCO JSON/COCO_fracture_masks.json", '{"images": [{"id": 1}]}'),
    ("Annotations/COCO JSON/COCO_fracture_masks.json", "[" * 5000),
])
def test_damaged_fracatlas_metadata_is_named_and_the_images_still_used(tmp_path, capsys, where, content):
    write_tree(tmp_path / "fa", {"images/Fractured": 2, "images/Non_fractured": 2})
    (tmp_path / "fa" / where).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "fa" / where).write_bytes(content.encode("latin-1"))
    assert main(["scan", str(tmp_path / "fa"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "files: 4 accounted for = 4 used" in out
    assert f"metadata {tmp_path / 'fa' / where}: not used (" in out
