"""Parameter sweeps: the Cartesian product of ``--grid`` values, each combination an independent
job (its own folder, parameters, models and reports) submitted to a ``concurrent.futures``
executor: local processes by default, or a Dask distributed cluster (``Client.get_executor()``)
when a scheduler address is given, so the same sweep runs on many machines without new code.
Its index (one row per combination, a plot of the main metric) is written by :mod:`.sweep_report`.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from fracturelib.workflow.profiles import ProfileError, Run, check_overrides, notebook_parameters, parse_overrides
from fracturelib.workflow.run_cache import MODEL_SUFFIXES, OUTPUT_SUFFIX, resolve_path
from fracturelib.workflow.sweep_report import write_sweep_index

#: Seconds to wait for a Dask scheduler before saying it cannot be reached.
CONNECT_TIMEOUT = 30
#: The most combinations one sweep may have.
MAX_COMBINATIONS = 1000
#: The most local worker processes one sweep may start (``--workers``).
MAX_WORKERS = 256


def check_workers(workers) -> int:
    """Refuse a ``--workers`` that is not a whole number from 1 to :data:`MAX_WORKERS`.

    Args:
        workers: the number of local processes asked for.

    Returns:
        ``workers``.

    Raises:
        ProfileError: one line naming the allowed range.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise ProfileError(f"--workers {workers}: must be 1 or more and at most {MAX_WORKERS}")
    return workers


def check_sweep(runs: list[Run], specs: list[str], extra: dict | None = None, workers: int = 1) -> list[dict]:
    """Every check of a sweep that needs no folder: ``workers``, the ``--grid`` values, each
    combination's parameters, distinct combination folders.

    Args:
        runs: the runs of the profile.
        specs: the ``--grid`` values.
        extra: parameter overrides common to every combination.
        workers: the number of local processes.

    Returns:
        The combinations (see :func:`grid`).

    Raises:
        ProfileError: any of them is invalid (one line).
    """
    check_workers(workers)
    combos = grid(specs)
    for c in combos:
        check_overrides(runs, {**(extra or {}), **c})
    names = [folder_name(c) for c in combos]
    if len(set(names)) != len(names):
        raise ProfileError("--grid: two combinations would share a folder; give distinct values")
    return combos


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
        ProfileError: ``workers`` is not an int from 1 to ``MAX_WORKERS``, a spec or override is
            invalid, or two combinations would share a folder (all before any folder is made), or
            the scheduler cannot be reached.
    """
    combos = check_sweep(runs, specs, extra, workers)
    out = Path(out_dir)
    with executor(workers, scheduler) as ex:
        out.mkdir(parents=True, exist_ok=True)          # once the executor exists: no empty folder
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
