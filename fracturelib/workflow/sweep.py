"""Parameter sweeps: the Cartesian product of ``--grid`` values, each combination an independent
job (its own folder, parameters, models and reports) submitted to a ``concurrent.futures``
executor: local processes by default, or a Dask distributed cluster (``Client.get_executor()``)
when a scheduler address is given, so the same sweep runs on many machines without new code.
The sweep index has one row per combination with its parameters and key figures, and a plot of
the main metric (with its confidence interval) against the first swept parameter.
"""
from __future__ import annotations

import hashlib
import html
import itertools
import json
import re
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from fracturelib.files import atomic_write
from fracturelib.workflow.profiles import ProfileError, Run, check_overrides, notebook_parameters, parse_overrides
from fracturelib.workflow.report_index import write_html_index
from fracturelib.workflow.run_cache import MODEL_SUFFIXES, OUTPUT_SUFFIX, resolve_path

#: "0.742 (95% CI 0.692-0.792)" as notebooks record a figure (evaluate.format_ci).
CI_FIGURE = re.compile(r"^\s*(-?[\d.]+)\s*\((?:95% CI)?\s*(-?[\d.]+)\s*[-\u2013]\s*(-?[\d.]+)\s*\)")
#: Seconds to wait for a Dask scheduler before saying it cannot be reached.
CONNECT_TIMEOUT = 30
#: The most combinations one sweep may have.
MAX_COMBINATIONS = 1000


def grid(specs: list[str]) -> list[dict]:
    """``["image_size=128,192", "seed=1,2"]`` -> the 4 combinations, values read as YAML.

    Args:
        specs: the ``--grid`` values, each ``KEY=V1,V2,...``.

    Returns:
        One dict (parameter name -> value) per combination, in ``itertools.product`` order.

    Raises:
        ProfileError: a spec is malformed, or there are more than ``MAX_COMBINATIONS`` combinations.
    """
    axes = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not values.strip():
            raise ProfileError(f"--grid {spec!r}: expected KEY=V1,V2,... e.g. --grid seed=1,2,3")
        name = name.strip()
        axes[name] = [parse_overrides([f"{name}={v.strip()}"], "--grid")[name] for v in values.split(",")]
    n = 1
    for values in axes.values():
        n *= len(values)
    if n > MAX_COMBINATIONS:
        raise ProfileError(f"--grid: {n} combinations (limit {MAX_COMBINATIONS}); sweep fewer values")
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def sweep_folder(specs: list[str]) -> str:
    """``sweep_image_size_seed`` for ``--grid image_size=... --grid seed=...``.

    Args:
        specs: the ``--grid`` values.

    Returns:
        The folder name: the swept parameter names, unsafe characters replaced by ``-``.
    """
    names = "_".join(s.partition("=")[0].strip() for s in specs)
    return "sweep_" + re.sub(r"[^A-Za-z0-9._-]+", "-", names)[:120]


def folder_name(combo: dict) -> str:
    """The folder of one combination, a single safe path component: ``seed-1_image_size-128``.

    Characters outside ``A-Za-z0-9._=-`` become ``-``; when that (or the length cap) changed the
    text, a short hash of the combination is appended, so that two values never share a folder
    (``a/b`` and ``a-b``) and no value forms a path (``../x``).

    Args:
        combo: parameter name -> value.

    Returns:
        The folder name.
    """
    text = "_".join(f"{k}-{v}" for k, v in combo.items())
    safe = re.sub(r"[^A-Za-z0-9._=-]+", "-", text)[:120].strip(".") or "run"
    if safe != text:
        digest = hashlib.sha256(json.dumps(combo, sort_keys=True, default=repr).encode()).hexdigest()[:8]
        safe = f"{safe[:110]}-{digest}"
    return safe


def localised(runs: list[Run], folder: Path) -> list[Run]:
    """The runs with every model file the sweep writes moved into ``folder/models`` (so that
    parallel combinations never share or overwrite a model). A model one run writes and another
    reads (02's model for 04) moves for both; a model no run of the sweep writes (sweeping 04
    alone) is read where it is.

    Args:
        runs: the runs of one combination.
        folder: the combination's folder.

    Returns:
        New runs whose model parameters point into ``folder/models`` where moved.
    """
    full = [{**notebook_parameters(r), **r.parameters} for r in runs]
    written = {resolve_path(v) for p in full for k, v in p.items()
               if k.endswith(OUTPUT_SUFFIX) and isinstance(v, str) and v.endswith(MODEL_SUFFIXES)}
    out = []
    for run, params in zip(runs, full):
        moved = {k: str(folder / "models" / Path(v).name) for k, v in params.items()
                 if isinstance(v, str) and v.endswith(MODEL_SUFFIXES) and resolve_path(v) in written}
        out.append(Run(run.name, run.notebook, {**run.parameters, **moved}))
    return out


def job(runs: list[Run], folder: str, params: dict, label: str) -> dict:
    """Run one combination (in a worker process or on a Dask worker); a row for the sweep index.

    Args:
        runs: the runs of the sweep.
        folder: the combination's output folder (a string, so that it pickles simply).
        params: the combination's parameter overrides.
        label: the label shown in its reports.

    Returns:
        ``{"folder", "parameters", "runs"}``; each run has its name, status, seconds, figures and error.
    """
    from fracturelib.workflow.runner import run_runs

    folder = Path(folder)
    results = run_runs(localised(runs, folder), folder, label, params, echo=lambda *a, **k: None)
    return {"folder": str(folder), "parameters": params,
            "runs": [{"name": r.run.name, "status": r.status, "seconds": round(r.seconds, 1),
                      "figures": r.figures, "error": r.error} for r in results]}


@contextmanager
def executor(workers: int, scheduler: str | None = None) -> Iterator[Executor]:
    """Local processes, or the Dask cluster at ``scheduler`` (e.g. ``tcp://host:8786``).

    Args:
        workers: the number of local processes (ignored with a scheduler).
        scheduler: the Dask scheduler address, or None for local processes.

    Yields:
        The executor to submit jobs to; it is shut down on exit.

    Raises:
        ProfileError: Dask is not installed, or the scheduler cannot be reached.
    """
    if scheduler:
        try:
            from dask.distributed import Client
        except ImportError:
            raise ProfileError("--scheduler needs Dask: pip install 'fracturelib[cluster]'") from None
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except OSError as e:
            raise ProfileError(f"--scheduler {scheduler}: cannot reach it ({e}); start one with "
                               "`dask scheduler` (see README, Sweeps)") from None
        with client:
            ex = client.get_executor(pure=False)
            yield ex
            ex.shutdown(wait=True)
        return
    import multiprocessing as mp
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        yield ex


def run_sweep(runs: list[Run], out_dir: str | Path, specs: list[str], extra: dict | None = None,
              workers: int = 1, scheduler: str | None = None, label: str = "",
              echo=print) -> tuple[Path, list[dict]]:
    """Run every combination of ``specs`` over ``runs``; write the sweep index and return its path
    with the rows (one per combination, each with its runs' status and figures).

    Args:
        runs: the runs of the profile.
        out_dir: the sweep's folder; each combination gets a subfolder.
        specs: the ``--grid`` values.
        extra: parameter overrides common to every combination.
        workers: the number of local processes.
        scheduler: a Dask scheduler address, or None to run locally.
        label: the label shown in the reports.
        echo: prints one progress line per finished combination.

    Returns:
        The path of the sweep's ``index.html`` and the rows; a crashed combination is a failed row.

    Raises:
        ProfileError: ``workers`` is not a positive int, a spec or override is invalid, or two
            combinations would share a folder.
    """
    if not isinstance(workers, int) or workers < 1:
        raise ProfileError(f"--workers {workers}: must be 1 or more")
    combos = grid(specs)
    for c in combos:
        check_overrides(runs, {**(extra or {}), **c})
    names = [folder_name(c) for c in combos]
    if len(set(names)) != len(names):
        raise ProfileError("--grid: two combinations would share a folder; give distinct values")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with executor(workers, scheduler) as ex:
        futures = [ex.submit(job, runs, str(out / folder_name(c)), {**(extra or {}), **c}, label)
                   for c in combos]
        rows = []
        for c, f in zip(combos, futures):
            try:
                rows.append(f.result())
            except Exception as e:  # noqa: BLE001 - a combination that crashed is a row, not an abort
                rows.append({"folder": str(out / folder_name(c)), "parameters": c,
                             "runs": [{"name": "-", "status": "failed", "seconds": 0,
                                       "figures": {}, "error": f"{type(e).__name__}: {e}"}]})
            echo(f"{folder_name(c)}: " + ", ".join(f"{r['name']} {r['status']}" for r in rows[-1]["runs"]))
    return write_sweep_index(rows, out, [s.partition("=")[0].strip() for s in specs]), rows


def main_metric(rows: list[dict]) -> str | None:
    """The first figure recorded with a confidence interval (e.g. 02's test ROC-AUC).

    Args:
        rows: the sweep's rows.

    Returns:
        The figure's name, or None when no figure has a confidence interval.
    """
    for row in rows:
        for run in row["runs"]:
            for k, v in run["figures"].items():
                if CI_FIGURE.match(str(v)):
                    return k
    return None


def _plot(rows: list[dict], swept: list[str], metric: str, target: Path) -> Path | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = []
    for row in rows:
        for run in row["runs"]:
            m = CI_FIGURE.match(str(run["figures"].get(metric, "")))
            if m:
                pts.append((row["parameters"], *map(float, m.groups())))
    if not pts:
        return None
    x_name = swept[0]
    others = swept[1:]
    fig, ax = plt.subplots(figsize=(6, 4))
    series = {}
    for p, v, lo, hi in pts:
        series.setdefault(tuple(p[o] for o in others), []).append((p[x_name], v, lo, hi))
    for k, s in series.items():
        s.sort(key=lambda t: (str(type(t[0])), t[0]))
        xs = [str(t[0]) for t in s]
        ys = [t[1] for t in s]
        err = [[t[1] - t[2] for t in s], [t[3] - t[1] for t in s]]
        name = ", ".join(f"{o}={v}" for o, v in zip(others, k)) or metric
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=4, label=name)
    ax.set_xlabel(x_name)
    ax.set_ylabel(f"{metric} (95% CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        atomic_write(target, lambda f: fig.savefig(f, dpi=100, format="png"))
    finally:
        plt.close(fig)
    return target


def write_sweep_index(rows: list[dict], out: Path, swept: list[str]) -> Path:
    """``sweep.json`` (machine-readable), ``sweep.png`` and ``index.html`` in ``out``.

    Args:
        rows: the sweep's rows.
        out: the sweep's folder.
        swept: the swept parameter names; the first is the plot's x axis.

    Returns:
        The path of ``index.html``.
    """
    atomic_write(out / "sweep.json", json.dumps(rows, indent=1, default=str))
    metric = main_metric(rows)
    plot = _plot(rows, swept, metric, out / "sweep.png") if metric else None
    body = []
    for row in rows:
        folder = Path(row["folder"]).name
        params = "<br>".join(f"{html.escape(str(k))} = <b>{html.escape(str(v))}</b>"
                             for k, v in row["parameters"].items())
        for run in row["runs"]:
            figs = "<br>".join(f"{html.escape(k)}: {html.escape(str(v))}" for k, v in run["figures"].items())
            body.append(f"<tr><td><a href='{html.escape(folder)}/index.html'>{html.escape(folder)}</a></td>"
                        f"<td>{params}</td><td>{html.escape(run['name'])}</td><td>{run['status']}</td>"
                        f"<td>{run['seconds']:.0f} s</td><td>{figs}</td>"
                        f"<td>{html.escape(run.get('error', ''))}</td></tr>")
    img = f"<p><img src='sweep.png' alt='{html.escape(metric or '')}'></p>" if plot else ""
    intro = (f"<p>{len(rows)} runs; main metric:\n<b>{html.escape(metric or 'none recorded')}</b>.</p>"
             f"{img}")
    return write_html_index(out, "fracturelib sweep", f"Sweep over {', '.join(swept)}", intro,
                            ["run", "parameters", "notebook", "status", "duration", "key figures",
                             "error"], body)
