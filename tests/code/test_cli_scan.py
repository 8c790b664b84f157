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
