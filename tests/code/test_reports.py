"""The papermill runner: index rows, key figures, failures that still leave an HTML report."""
import nbformat
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from fracturelib.cli import main


def _notebook(path, body):
    nb = new_notebook(cells=[new_code_cell('output_dir = "x"\nvalue = 1', metadata={"tags": ["parameters"]}),
                             new_code_cell(body)],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, path)
    return str(path)


def test_runner_ok_and_failed_rows(tmp_path, capsys):
    good = _notebook(tmp_path / "good.ipynb",
                     "from fracturelib.reports import record\nrecord(output_dir, answer=value * 42)")
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
    assert "answer: 42" in index and "answer: 84" in index
    assert "bad data path" in (out / "nb_bad.html").read_text()
    assert (out / "nb_after.html").exists()
    printed = capsys.readouterr().out
    assert "[2/3] nb_bad ... failed" in printed


