"""Notebooks are committed clean (no outputs, no execution counts) with one `parameters` cell."""
import json

import pytest

from fracturelib import config

NOTEBOOKS = sorted(config.NOTEBOOKS_DIR.glob("*.ipynb"))


def test_there_are_notebooks():
    names = [p.stem for p in NOTEBOOKS]
    assert {"01_eda", "02_binary_cnn", "03_multiclass_transfer", "04_gradcam"} <= set(names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_clean_with_parameters_cell(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        f"{path.name} has outputs: clear them before committing"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    src = "".join(tagged[0]["source"])
    for name in ("data_dir", "seed", "output_dir"):
        assert f"{name} =" in src
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_parameters_parse_for_papermill(path):
    from papermill.inspection import inspect_notebook
    params = inspect_notebook(str(path))
    assert "data_dir" in params and "output_dir" in params


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _colab_cell(path) -> str:
    code = [c for c in _cells(path) if c["cell_type"] == "code"]
    i = next(k for k, c in enumerate(code) if "parameters" in c["metadata"].get("tags", []))
    return "".join(code[i + 1]["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_open_in_colab_badge_and_key_figure(path):
    from fracturelib.workflow.colab import badge_url
    first = "".join(_cells(path)[0]["source"])
    assert "colab-badge.svg" in first and f"({badge_url(path.stem)})" in first
    tagged = [c for c in _cells(path) if "key-figure" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1                 # the index's thumbnail of this report


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_colab_setup_cell_does_nothing_elsewhere(path, monkeypatch):
    import subprocess
    import sys

    src = _colab_cell(path)
    assert 'if "google.colab" in sys.modules:' in src and config.REPO_URL in src
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran a command outside Colab"))
    namespace = {"data_dir": "keep/me"}
    exec(compile(src, path.name, "exec"), namespace)
    assert namespace["data_dir"] == "keep/me"


def test_colab_setup_cell_installs_and_fetches_on_colab(tmp_path, monkeypatch):
    import subprocess
    import sys
    import types

    from fracturelib.data import fetch
    from fracturelib.workflow import colab

    calls = []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **k: calls.append(cmd))
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "repo" / "notebooks").mkdir(parents=True)
    monkeypatch.setattr(colab, "REPO_DIR", tmp_path / "repo")
    monkeypatch.setattr(colab.prepare, "__defaults__", (tmp_path / "repo", tmp_path / "data"))
    monkeypatch.setattr(fetch, "fetch_fracatlas", lambda dest: tmp_path / "data" / "FracAtlas")
    monkeypatch.chdir(tmp_path)
    ns = {"data_dir": ""}
    exec(_colab_cell(config.NOTEBOOKS_DIR / "02_binary_cnn.ipynb"), ns)
    assert calls[0][:2] == ["git", "clone"] and calls[1][-2:] == ["-e", "/content/fracturelib"]
    assert ns["data_dir"] == str(tmp_path / "data" / "FracAtlas")
    import os
    assert os.getcwd() == str(tmp_path / "repo" / "notebooks")
    ns = {"data_dir": ""}
    exec(_colab_cell(config.NOTEBOOKS_DIR / "03_multiclass_transfer.ipynb"), ns)
    assert ns["data_dir"] == ""                         # Bone Break: the embedded copy
