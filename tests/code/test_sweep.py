"""Sweeps: the Cartesian product of --grid values, each an independent job on local processes or a
Dask distributed cluster (a LocalCluster on 127.0.0.1 here), and the sweep index (issue 12)."""
import json

import pytest

from fracturelib.app.cli import main
from fracturelib.workflow.profiles import ProfileError, Run
from fracturelib.workflow.sweep import grid, localised
from fracturelib.workflow.sweep_report import write_sweep_index

# the ci profile's 02 without its second (transfer) model and with one epoch: ~15 s a run
FAST = ["-p", "transfer_backbone=", "-p", "epochs=1"]


def test_grid_is_the_cartesian_product_with_yaml_values():
    assert grid(["image_size=128,192", "seed=1,2"]) == [
        {"image_size": 128, "seed": 1}, {"image_size": 128, "seed": 2},
        {"image_size": 192, "seed": 1}, {"image_size": 192, "seed": 2}]
    assert grid(["backbone=mobilenetv2,efficientnet_lite0"])[1] == {"backbone": "efficientnet_lite0"}
    with pytest.raises(ProfileError, match="expected KEY=V1,V2"):
        grid(["seed"])


def test_each_combination_gets_its_own_model_files(tmp_path):
    runs = [Run("02", "02_binary_cnn", {"model_path": "/shared/binary_cnn.keras"}),
            Run("04", "04_gradcam", {"binary_model": "/shared/binary_cnn.keras"})]
    a, b = localised(runs, tmp_path / "seed-1"), localised(runs, tmp_path / "seed-2")
    mine = str(tmp_path / "seed-1/models/binary_cnn.keras")
    assert a[0].parameters["model_path"] == a[1].parameters["binary_model"] == mine
    assert a[1].parameters["localiser_path"] != b[1].parameters["localiser_path"]   # notebook defaults too
    assert a[0].parameters["transfer_model_path"].startswith(str(tmp_path / "seed-1"))
    alone = localised([runs[1]], tmp_path / "tol-5")            # sweeping 04 alone: 02's model stays
    assert alone[0].parameters["binary_model"] == "/shared/binary_cnn.keras"
    assert alone[0].parameters["localiser_path"].startswith(str(tmp_path / "tol-5"))


def test_sweep_index_rows_and_plot(tmp_path):
    rows = [{"folder": str(tmp_path / f"seed-{s}"), "parameters": {"seed": s},
             "runs": [{"name": "02", "status": "ok", "seconds": 3,
                       "figures": {"test_roc_auc": f"0.{70 + s} (95% CI 0.6{s}-0.8{s})", "n_test": 9}}]}
            for s in (1, 2)]
    index = write_sweep_index(rows, tmp_path, ["seed"])
    page = index.read_text()
    assert page.count("<tr><td>") == 2 and "main metric:\n<b>test_roc_auc</b>" in page
    assert (tmp_path / "sweep.png").stat().st_size > 1000


def _check_two_rows(out):
    sweep = out / "sweep_seed"
    rows = json.loads((sweep / "sweep.json").read_text())
    assert [r["parameters"]["seed"] for r in rows] == [1, 2]
    assert all(r["runs"][0]["status"] == "ok" and "test_roc_auc" in r["runs"][0]["figures"] for r in rows)
    assert (sweep / "seed-1" / "models" / "binary_cnn.keras").exists()
    assert (sweep / "seed-2" / "02_binary_cnn.html").exists()
    assert (sweep / "index.html").read_text().count("<tr><td>") == 2


@pytest.mark.slow
def test_sweep_on_local_processes(tmp_path, capsys):
    assert main(["run", "--profile", "ci", "--only", "02", "--grid", "seed=1,2", "--workers", "2",
                 "--out", str(tmp_path), *FAST]) == 0
    _check_two_rows(tmp_path)
    assert "sweep index:" in capsys.readouterr().out


@pytest.mark.slow
def test_sweep_on_a_dask_cluster(tmp_path):
    from dask.distributed import LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        assert main(["run", "--profile", "ci", "--only", "02", "--grid", "seed=1,2",
                     "--scheduler", cluster.scheduler_address, "--out", str(tmp_path), *FAST]) == 0
    _check_two_rows(tmp_path)


def test_unreachable_scheduler_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("fracturelib.workflow.sweep.CONNECT_TIMEOUT", 2)
    assert main(["run", "--profile", "ci", "--only", "02", "--grid", "seed=1,2", "--scheduler",
                 "tcp://127.0.0.1:9", "--out", str(tmp_path), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --scheduler tcp://127.0.0.1:9: cannot reach it") and err.count("\n") == 1


def test_one_index_writer_for_reports_and_sweeps(tmp_path, monkeypatch, full_disk):

    from fracturelib.workflow import report_index
    rows = [{"folder": str(tmp_path / "seed-1"), "parameters": {"seed": "<1>"},
             "runs": [{"name": "02", "status": "ok", "seconds": 3, "figures": {}, "error": ""}]}]
    page = write_sweep_index(rows, tmp_path, ["seed"]).read_text()
    assert report_index.STYLE in page and "&lt;1&gt;" in page
    calls = []
    monkeypatch.setattr(report_index, "write_html_index",
                        lambda *a, **k: calls.append(a[1]) or tmp_path / "index.html")
    import fracturelib.workflow.sweep_report as sweep_report
    monkeypatch.setattr(sweep_report, "write_html_index", report_index.write_html_index)
    sweep_report.write_sweep_index(rows, tmp_path, ["seed"])
    report_index.write_index([], tmp_path, "quick")
    assert calls == ["fracturelib sweep", "fracturelib reports"]
    monkeypatch.undo()
    full_disk()
    from fracturelib.files import OutputError
    with pytest.raises(OutputError, match="disk is full"):
        write_sweep_index(rows, tmp_path, ["seed"])
    assert (tmp_path / "index.html").read_text() == page
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_sweep_folders_never_collide_or_escape(tmp_path, capsys):
    from fracturelib.workflow.sweep import folder_name
    names = {folder_name({"data_dir": v}) for v in ("a/b", "a-b", "a b", "../a-b", "/a/b")}
    assert len(names) == 5 and not any("/" in n or n in (".", "..") for n in names)
    assert main(["run", "--profile", "ci", "--only", "02", "--out", str(tmp_path), "--grid",
                 "seed=1,2", "--workers", "0"]) == 2
    assert "--workers 0: must be 1 or more" in capsys.readouterr().err


@pytest.mark.parametrize("workers", ["99999999999999999999", "257", "-3"])
def test_workers_out_of_range_is_one_line_before_any_folder(tmp_path, capsys, workers):
    out = tmp_path / "r"
    assert main(["run", "--profile", "ci", "--only", "02", "--out", str(out), "--grid", "seed=1,2",
                 "--workers", workers]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --workers {workers}: must be 1 or more and at most 256")
    assert err.count("\n") == 1 and "Traceback" not in err and not out.exists()


def test_bad_grid_values_are_refused_before_any_folder(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", "--profile", "ci", "--only", "02", "--out", str(out), "--grid", "seed=-1,2"]) == 2
    assert capsys.readouterr().err.startswith("error: ") and not out.exists()


def test_run_sweep_checks_workers_itself(tmp_path):
    from fracturelib.workflow.sweep import run_sweep
    with pytest.raises(ProfileError, match="at most 256"):
        run_sweep([], tmp_path / "s", ["seed=1"], workers=10**20)
    assert not (tmp_path / "s").exists()
