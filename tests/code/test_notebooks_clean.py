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
