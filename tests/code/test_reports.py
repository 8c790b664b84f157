"""The papermill runner: index rows, key figures, failures that still leave an HTML report."""
import nbformat
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from fracturelib.app.cli import main


def _notebook(path, body, params='output_dir = "x"\nvalue = 1'):
    nb = new_notebook(cells=[new_code_cell(params, metadata={"tags": ["parameters"]}),
                             new_code_cell(body)],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, path)
    return str(path)


def test_runner_ok_and_failed_rows(tmp_path, capsys):
    good = _notebook(tmp_path / "good.ipynb",
                     "from fracturelib.workflow.notebook import record\nrecord(output_dir, answer=value * 42)")
    bad = _notebook(tmp_path / "bad.ipynb", "raise ValueError('bad data path: /nope')")
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({"runs": [{"name": "nb_good", "notebook": good},
                                                {"name": "nb_bad", "notebook": bad},
                                                {"name": "nb_after", "notebook": good,
                                                 "parameters": {"value": 2}}]}))
    out = tmp_path / "reports"
    code = main(["run", "--profile", str(profile), "--out", str(out)])
    assert code == 1
    index = (out / "index.html").read_text()
    assert index.count("<td>ok</td>") == 2 and index.count("<td>failed</td>") == 1
    assert "answer: <b>42</b>" in index and "answer: <b>84</b>" in index
    assert "bad data path" in (out / "nb_bad.html").read_text()
    assert (out / "nb_after.html").exists()
    printed = capsys.readouterr().out
    assert "[2/3] nb_bad ... failed" in printed




def _profile(tmp_path, runs):
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({"runs": runs}))
    return str(p)


def test_unchanged_runs_are_cached_and_changed_inputs_rerun(tmp_path, capsys):
    import os

    model = tmp_path / "m.keras"
    model.write_bytes(b"v1")
    first = _notebook(tmp_path / "first.ipynb", "from fracturelib.workflow.notebook import record\n"
                      "record(output_dir, answer=value)")
    reader = _notebook(tmp_path / "reader.ipynb", "from fracturelib.workflow.notebook import record\n"
                       "record(output_dir, size=len(open(value, 'rb').read()))")
    prof = _profile(tmp_path, [{"name": "a_first", "notebook": first},
                               {"name": "b_reader", "notebook": reader, "parameters": {"value": str(model)}}])
    out = tmp_path / "r"
    assert main(["run", "--profile", prof, "--out", str(out)]) == 0
    assert main(["run", "--profile", prof, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("cached (") == 2
    index = (out / "index.html").read_text()
    assert index.count("cached<br>") == 2 and "2 of 2 ok" in index and "size: <b>2</b>" in index

    model.write_bytes(b"v2 longer")                  # the model the second notebook reads changed
    os.utime(first)                                  # touching a notebook reruns it
    assert main(["run", "--profile", prof, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "a_first ... ok" in printed and "b_reader ... ok" in printed
    assert "size: <b>9</b>" in (out / "index.html").read_text()

    assert main(["run", "--profile", prof, "--out", str(out), "--force"]) == 0
    assert capsys.readouterr().out.count("... cached") == 0
    (out / "a_first.html").unlink()                  # a lost report is a miss
    assert main(["run", "--profile", prof, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "a_first ... ok" in printed and "b_reader ... cached" in printed


def test_failed_runs_are_never_cached(tmp_path, capsys):
    flag = tmp_path / "fail"
    flag.write_text("x")
    nb = _notebook(tmp_path / "f.ipynb", f"import os\nassert not os.path.exists({str(flag)!r}), 'flag set'")
    prof = _profile(tmp_path, [{"name": "f", "notebook": nb}])
    out = tmp_path / "r"
    assert main(["run", "--profile", prof, "--out", str(out)]) == 1
    assert main(["run", "--profile", prof, "--out", str(out)]) == 1
    assert capsys.readouterr().out.count("failed in") == 2
    assert not (out / ".cache" / "f.json").exists()


def test_written_outputs_are_checked_before_reuse(tmp_path, capsys):
    models = tmp_path / "models"
    nb = _notebook(tmp_path / "w.ipynb", "from pathlib import Path\nPath(model_path).parent.mkdir(exist_ok=True)\n"
                   "Path(model_path).write_text('weights')",
                   params=f'output_dir = "x"\nmodel_path = "{models}/w.keras"')
    prof = _profile(tmp_path, [{"name": "w", "notebook": nb}])
    out = tmp_path / "r"
    assert main(["run", "--profile", prof, "--out", str(out)]) == 0
    (models / "w.keras").unlink()                    # the model it wrote is gone: run it again
    assert main(["run", "--profile", prof, "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("w ... ok") == 2 and (models / "w.keras").exists()


def test_code_free_report_and_key_figure_thumbnail(tmp_path):
    nb = _notebook(tmp_path / "plot.ipynb", "import matplotlib.pyplot as plt\nSECRET_CODE = 1\n"
                   "plt.plot([0, 1], [0, 1]); plt.show()")
    prof = _profile(tmp_path, [{"name": "plot", "notebook": nb}])
    out = tmp_path / "r"
    assert main(["run", "--profile", prof, "--out", str(out)]) == 0
    assert "SECRET_CODE" in (out / "plot.html").read_text()
    assert "SECRET_CODE" not in (out / "plot.report.html").read_text()
    from PIL import Image
    thumb = Image.open(out / "thumbs" / "plot.png")
    assert thumb.width <= 320 and "thumbs/plot.png" in (out / "index.html").read_text()


def test_progress_bars_in_notebooks_not_in_papermill_runs(tmp_path, monkeypatch):
    import sys

    from fracturelib import progress
    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "ipykernel", sys)        # as inside a notebook kernel
    items = range(3)
    assert progress.bar(items, "x") is not items and progress.keras_verbose() == 1
    monkeypatch.setenv(progress.QUIET_ENV, "1")
    assert progress.bar(items, "x") is items and progress.keras_verbose() == 0
    nb = _notebook(tmp_path / "q.ipynb", "import os\nfrom fracturelib.workflow.notebook import record\n"
                   "record(output_dir, quiet=os.environ.get('FRACTURELIB_QUIET'))")
    monkeypatch.delenv(progress.QUIET_ENV)
    out = tmp_path / "r"
    assert main(["run", "--profile", _profile(tmp_path, [{"name": "q", "notebook": nb}]), "--out", str(out)]) == 0
    assert "quiet: <b>1</b>" in (out / "index.html").read_text()
    import os
    assert progress.QUIET_ENV not in os.environ                  # restored after the run


def test_tensorboard_logs_are_written(tmp_path):
    import numpy as np
    import tensorflow as tf

    from fracturelib.models import cnn, train
    m = cnn.build_binary_cnn(32, 1)
    x = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 1)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, np.arange(16) % 2)).batch(8)
    train.fit(m, ds, ds, epochs=1, logs=tmp_path / "tb", verbose=0)
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))


def test_full_disk_while_writing_reports_is_one_line_and_keeps_the_old_index(tmp_path, capsys, full_disk):
    good = _notebook(tmp_path / "good.ipynb", "print(1)")
    out = tmp_path / "r"
    out.mkdir()
    (out / "index.html").write_text("earlier index")
    full_disk()
    assert main(["run", "--profile", _profile(tmp_path, [{"name": "nb", "notebook": good}]),
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write") and "disk is full" in err and err.count("\n") == 1
    assert (out / "index.html").read_text() == "earlier index"
    assert not (out / "nb.html").exists() and not [p for p in out.rglob("*.tmp")]


def test_out_that_would_overwrite_a_notebook_is_refused(tmp_path, capsys):
    nb = tmp_path / "nb.ipynb"
    _notebook(nb, "print(1)")
    before = nb.read_bytes()
    assert main(["run", "--profile", _profile(tmp_path, [{"name": "nb", "notebook": str(nb)}]),
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "would overwrite the input" in err and nb.read_bytes() == before


def test_the_source_digest_covers_every_stage_of_the_package(tmp_path, monkeypatch):
    """A change anywhere in fracturelib (data/, models/, app/ ...) must rerun cached notebooks, not only a
    change next to run_cache itself."""
    from fracturelib import config
    from fracturelib.workflow import run_cache
    for rel in ("data/imageio.py", "models/cnn.py", "workflow/run_cache.py", "fracture_info.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    monkeypatch.setattr(config, "PACKAGE_DIR", tmp_path)
    before = run_cache.source_digest()
    for rel in ("data/imageio.py", "models/cnn.py", "fracture_info.json"):
        (tmp_path / rel).write_text("x = 2\n")
        after = run_cache.source_digest()
        assert after != before, rel
        before = after
