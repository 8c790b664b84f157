"""Every command-line mistake is one `error:` line and a documented exit code, never a traceback;
`run` writes its index atomically, only after it knows what it ran (issue 10)."""
import os
import signal

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from fracturelib.app.cli import main


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _notebook(path, body, params='output_dir = "x"\nepochs = 3\nrate = 0.5\nname = "a"'):
    nb = new_notebook(cells=[new_code_cell(params, metadata={"tags": ["parameters"]}), new_code_cell(body)],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                               "language": "python"}})
    nbformat.write(nb, path)
    return str(path)


@pytest.fixture
def profile(tmp_path):
    good = _notebook(tmp_path / "good.ipynb", "print(epochs)")
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({"runs": [{"name": "01_good", "notebook": good}]}))
    return str(p)


def test_unknown_profile_and_broken_profile(tmp_path, capsys):
    assert main(["run", "--profile", "nope", "--out", str(tmp_path)]) == 2
    assert "profile 'nope' not found" in _err(capsys) and not (tmp_path / "index.html").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("runs: [oops")
    assert main(["run", "--profile", str(bad), "--out", str(tmp_path)]) == 2
    assert "not a valid profile" in _err(capsys)


def test_only_matching_nothing_keeps_the_existing_index(tmp_path, capsys, profile):
    (tmp_path / "index.html").write_text("earlier reports")
    assert main(["run", "--profile", profile, "--only", "99", "--out", str(tmp_path)]) == 2
    assert "--only 99: no notebook" in _err(capsys) and "01_good" in capsys.readouterr().err + "01_good"
    assert (tmp_path / "index.html").read_text() == "earlier reports"


@pytest.mark.parametrize("param,why", [("epochs=-1", "expects a number above 0"),
                                       ("epochs=two", "expects a whole number"),
                                       ("rate=0", "expects a number above 0"),
                                       ("nosuch=1", "no selected notebook has this parameter"),
                                       ("epochs", "expected KEY=VALUE")])
def test_bad_parameters_are_refused_before_running(tmp_path, capsys, profile, param, why):
    assert main(["run", "--profile", profile, "--out", str(tmp_path / "r"), "-p", param]) == 2
    assert why in _err(capsys)
    assert not (tmp_path / "r").exists()


def test_out_that_is_a_file_or_unwritable(tmp_path, capsys, profile):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["run", "--profile", profile, "--out", str(f)]) == 2
    assert "is a file" in _err(capsys)
    assert main(["run", "--profile", profile, "--out", str(f / "sub")]) == 2
    assert "cannot write there" in _err(capsys)
    if os.geteuid() != 0:                  # root writes anywhere; the case above covers it
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        assert main(["run", "--profile", profile, "--out", str(ro)]) == 2
        assert "cannot write there" in _err(capsys)


def test_interrupted_notebook_is_a_row(tmp_path, capsys):
    good = _notebook(tmp_path / "good.ipynb", "print(1)")
    stop = _notebook(tmp_path / "stop.ipynb", "import os, signal, time\n"
                     "os.kill(os.getppid(), signal.SIGINT)\ntime.sleep(30)")
    never = _notebook(tmp_path / "never.ipynb", "print(2)")
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({"runs": [{"name": "01_good", "notebook": good},
                                          {"name": "02_stop", "notebook": stop},
                                          {"name": "03_never", "notebook": never}]}))
    out = tmp_path / "r"
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert main(["run", "--profile", str(p), "--out", str(out)]) == 130
    finally:
        signal.signal(signal.SIGINT, old)
    index = (out / "index.html").read_text()
    assert index.count("<td>ok</td>") == 1 and index.count("<td>interrupted</td>") == 1
    assert "03_never" not in index and "1 of 2 ok" in index
    assert "error: interrupted" in capsys.readouterr().err


def test_scan_out_that_is_a_folder(tmp_path, capsys):
    from tests.conftest import write_tree
    write_tree(tmp_path / "ds", {"a": 1, "b": 1})
    assert main(["scan", str(tmp_path / "ds"), "--quiet", "--out", str(tmp_path)]) == 2
    assert "is a folder" in _err(capsys)


@pytest.mark.parametrize("damage,why", [
    ("truncated", "not a Keras model archive (truncated or damaged); re-save it"),
    ("not a zip", "not a Keras model archive (truncated or damaged); re-save it"),
    ("card type", "threshold is \"high\", but must be a number in [0, 1]"),
    ("card classes", "card lists 10 classes"),
    ("corrupt ood", "not a radiograph (OOD) detector archive"),
    ("classifier as localiser", "not a localiser")])
def test_damaged_model_files_are_one_line_errors(tmp_path, capsys, damage, why):
    import json

    from fracturelib import config
    from fracturelib.models import cards, cnn
    path = cards.save_model(cnn.build_binary_cnn(32, 1), tmp_path / "m.keras",
                            {"classes": list(config.BINARY_CLASSES), "image_size": 32, "channels": 1,
                             "preprocessing": "t", "companions": {"ood": config.OOD_FILE}})
    card = json.loads(cards.card_path(path).read_text())
    args = []
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "not a zip":
        path.write_text("<html>not found</html>")
    elif damage == "card type":
        cards.card_path(path).write_text(json.dumps({**card, "threshold": "high"}))
    elif damage == "card classes":
        cards.card_path(path).write_text(json.dumps({**card, "classes": list(config.FRACTURE_TYPES)}))
    elif damage == "corrupt ood":
        (tmp_path / config.OOD_FILE).write_bytes(b"PK\x03\x04 truncated")
        (tmp_path / "ood.json").write_text(json.dumps({"threshold": 1, "quantile": 0.99, "n_train": 3}))
    else:
        args = ["--localiser", str(path)]
    image = next((config.DEFAULT_FRACATLAS / "images" / "Fractured").glob("*.jpg"))
    assert main(["predict", str(image), "--model", str(path), *args]) == 2
    line = _err(capsys)
    assert why in line and "File not found" not in line
    assert str(tmp_path) in line                                       # names the file


@pytest.mark.parametrize("param,why", [("rate=.nan", "finite"), ("rate=.inf", "finite"),
                                       ("name={a: 1}", "expects text"),
                                       ("x=[&a [1,1],&b [*a,*a]]", "aliases")])
def test_values_are_checked_by_one_schema(tmp_path, capsys, profile, param, why):
    assert main(["run", "--profile", profile, "--out", str(tmp_path / "r"), "-p", param]) == 2
    assert why in _err(capsys) and not (tmp_path / "r").exists()


def test_run_name_that_would_leave_out_is_refused(tmp_path, capsys):
    good = _notebook(tmp_path / "good.ipynb", "print(1)")
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({"runs": [{"name": "../../x", "notebook": good}]}))
    assert main(["run", "--profile", str(p), "--out", str(tmp_path / "r")]) == 2
    assert "run name '../../x'" in _err(capsys) and not (tmp_path / "r").exists()


# --- argparse mistakes, --only, SIGTERM (issue: one error line for every user mistake) ---

@pytest.mark.parametrize("argv,cmd,why", [
    (["predict", "x", "--cam", "GRADCAM"], "predict", "argument --cam: invalid choice: 'GRADCAM'"),
    (["scan"], "scan", "the following arguments are required: path"),
    (["scan", "x", "--bogus"], "scan", "unrecognized arguments: --bogus"),
    (["run", "--workers", "two"], "run", "argument --workers: invalid int value"),
    (["bogus"], "", "invalid choice: 'bogus'"),
    (["--bogus"], "", "required: command")])
def test_argument_mistakes_are_one_line(capsys, argv, cmd, why):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    line = _err(capsys)
    assert why in line and line.endswith(f"(see {' '.join(['fracturelib', cmd]).strip()} --help)")


def test_help_still_prints_the_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--help"])
    assert e.value.code == 0 and "--only" in capsys.readouterr().out


@pytest.mark.parametrize("only,why", [("", "empty notebook prefix"), (",", "empty notebook prefix"),
                                      ("01,../x", "matches ../x"), ("01_good,99", "matches 99")])
def test_only_empty_or_unmatched_is_refused_before_running(tmp_path, capsys, profile, only, why):
    out = tmp_path / "r"
    assert main(["run", "--profile", profile, "--only", only, "--out", str(out)]) == 2
    line = _err(capsys)
    assert why in line and "01_good" in line and not out.exists()


def test_sigterm_is_handled_like_ctrl_c(tmp_path, capsys):
    good = _notebook(tmp_path / "good.ipynb", "print(1)")
    stop = _notebook(tmp_path / "stop.ipynb", "import os, signal, time\n"
                     "os.kill(os.getppid(), signal.SIGTERM)\ntime.sleep(30)")
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({"runs": [{"name": "01_good", "notebook": good},
                                          {"name": "02_stop", "notebook": stop}]}))
    out = tmp_path / "r"
    out.mkdir()
    (out / "02_stop.ipynb").write_text("an earlier run")
    got = []
    old = signal.signal(signal.SIGTERM, lambda *a: got.append(a))   # a safety net: never kill pytest
    try:
        assert main(["run", "--profile", str(p), "--out", str(out)]) == 143
        assert signal.getsignal(signal.SIGTERM) == old or got == []
    finally:
        signal.signal(signal.SIGTERM, old)
    assert got == []                                       # the run's own handler took it
    assert (out / "02_stop.ipynb").read_text() == "an earlier run"   # never a half-executed notebook
    assert not (out / "02_stop.log").exists() and not list(out.glob(".*.tmp.*"))
    assert (out / "01_good.ipynb").exists() and (out / "01_good.log").exists()
    index = (out / "index.html").read_text()
    assert index.count("<td>ok</td>") == 1 and index.count("<td>interrupted</td>") == 1
    assert "error: terminated (SIGTERM)" in capsys.readouterr().err
