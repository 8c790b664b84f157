"""Run the numbered notebooks with papermill and export HTML.

A failing notebook still gets its (partial) HTML with the error visible and a failed row in the
index; the others still run. Key figures come from ``<output_dir>/figures.json``, which notebooks
write with :func:`fracturelib.workflow.notebook.record`. Each report is exported twice, with code and
code-free (``<name>.report.html``, nbconvert's exclude-input), with a thumbnail of its key figure
(the first image of the cell tagged ``key-figure``). A run whose inputs did not change since its
last success is not run again (:mod:`fracturelib.workflow.run_cache`); ``force`` reruns.
"""
from __future__ import annotations

import html
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fracturelib import config
from fracturelib.files import OutputError, atomic_write, ensure_dir, output_error, refuse_overwriting_inputs
from fracturelib.progress import QUIET_ENV
from fracturelib.workflow import run_cache
from fracturelib.workflow.profiles import (
    PROFILE_ENV,
    ProfileError,
    Run,
    check_overrides,
    load_profile,
    notebook_parameters,
    notebook_path,
)
from fracturelib.workflow.report_index import write_index


@dataclass
class Result:
    run: Run
    status: str
    seconds: float
    html: Path
    error: str = ""
    figures: dict = field(default_factory=dict)
    finished: float = 0.0            # when the result was made (a cached one is older)

    @property
    def report(self) -> Path:
        """The code-free version of the report."""
        return self.html.with_suffix(".report.html")

    @property
    def thumb(self) -> Path:
        """The report's key-figure thumbnail, ``thumbs/<name>.png`` (it may not exist)."""
        return self.html.parent / "thumbs" / f"{self.html.stem}.png"


#: Cells whose first image is a report's thumbnail in the index.
KEY_FIGURE_TAG = "key-figure"


def _to_html(ipynb: Path, out: Path) -> None:
    """``out`` with code, ``out.report.html`` without, and the key figure's thumbnail."""
    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(ipynb, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    atomic_write(out, body)
    body, _ = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                           exclude_output_prompt=True).from_notebook_node(nb)
    atomic_write(out.with_suffix(".report.html"), body)
    _thumbnail(nb, out.parent / "thumbs" / f"{out.stem}.png")


def _thumbnail(nb, target: Path, width: int = 320) -> Path | None:
    """The first PNG output of the cell tagged ``key-figure`` (else of any cell), shrunk."""
    import base64
    import io

    from PIL import Image

    cells = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in cells if KEY_FIGURE_TAG in c.get("metadata", {}).get("tags", [])]
    for cell in tagged + cells:
        for o in cell.get("outputs", []):
            png = o.get("data", {}).get("image/png")
            if png:
                im = Image.open(io.BytesIO(base64.b64decode(png)))
                im.thumbnail((width, width * 2))
                ensure_dir(target.parent)
                atomic_write(target, lambda f, im=im: im.save(f, "PNG"))
                return target
    target.unlink(missing_ok=True)
    return None


def _redirect_stderr(path: Path) -> int:
    import sys
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    return saved


def _restore_stderr(saved: int) -> None:
    import sys
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


class Terminated(KeyboardInterrupt):
    """SIGTERM during a run: handled like Ctrl-C (the interrupted notebook is a row), exit 143."""

    exit_code = 143
    MESSAGE = "terminated (SIGTERM)"

    def __str__(self) -> str:
        return self.MESSAGE


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main
    thread, so that ``kill``/``timeout`` take the Ctrl-C path: the interrupted notebook becomes a
    row, temporary files are removed. Off the main thread (a Dask worker) nothing changes.

    Yields:
        None; the previous handler is restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _temp_output(out_dir: Path, name: str, suffix: str) -> Path:
    """A fresh, empty file ``.<name>.<random>.tmp<suffix>`` in ``out_dir``, created with O_EXCL (never an
    existing file or link) and the usual permissions (it becomes the output)."""
    for _ in range(100):
        path = out_dir / f".{name}.{secrets.token_hex(4)}.tmp{suffix}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666))
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{out_dir}: cannot make a temporary file")


def run_one(run: Run, out_dir: Path, extra: dict | None = None) -> Result:
    """Execute one notebook with papermill and export its reports; a failure is a result, not an error.

    The kernel's stderr goes to ``<name>.log`` and progress bars are off, so that reports stay clean;
    a notebook that fails or is interrupted still gets its (partial) HTML. The executed notebook and
    the log are written to temporary files in ``out_dir`` and renamed to ``<name>.ipynb`` and
    ``<name>.log`` only when the run finishes (ok or failed): an interrupted run (Ctrl-C, SIGTERM)
    leaves neither, and keeps those of an earlier run.

    Args:
        run: the run.
        out_dir: the reports folder.
        extra: parameter overrides on top of the run's own (``output_dir`` is always set here).

    Returns:
        Its Result: status ``ok``, ``failed`` or ``interrupted``, duration, HTML path, error line
        and the figures the notebook recorded.
    """
    import papermill as pm

    out_dir = Path(out_dir).resolve()
    nb_in = notebook_path(run)
    nb_out, html_out = out_dir / f"{run.name}.ipynb", out_dir / f"{run.name}.html"
    artifacts = out_dir / "artifacts" / run.name
    (artifacts / "figures.json").unlink(missing_ok=True)   # no stale figures from a past run
    params = {**run.parameters, **(extra or {}), "output_dir": str(artifacts)}
    t0 = time.perf_counter()
    status, error = "ok", ""
    env_before = os.environ.get(PROFILE_ENV)
    os.environ.pop(PROFILE_ENV, None)        # the runner's own parameters win over any profile
    quiet_before = os.environ.get(QUIET_ENV)
    os.environ[QUIET_ENV] = "1"              # no progress bars in reports and logs
    log = out_dir / f"{run.name}.log"
    temps = []
    try:
        temps.append(nb_tmp := _temp_output(out_dir, run.name, ".ipynb"))
        temps.append(log_tmp := _temp_output(out_dir, run.name, ".log"))
        saved_fd = _redirect_stderr(log_tmp)   # the kernel's own stderr (TF/absl start-up lines) -> log
        try:
            pm.execute_notebook(str(nb_in), str(nb_tmp), parameters=params, kernel_name="python3",
                                cwd=str(config.NOTEBOOKS_DIR), log_output=False, progress_bar=False,
                                report_mode=False)
        except KeyboardInterrupt as e:
            status = "interrupted"
            error = str(e) if isinstance(e, Terminated) else "interrupted by the user (Ctrl-C)"
        except Exception as e:  # noqa: BLE001 - papermill raises several kinds; all mean "failed"
            status = "failed"
            error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"[:300]
        finally:
            _restore_stderr(saved_fd)
            if env_before is not None:
                os.environ[PROFILE_ENV] = env_before
            if quiet_before is None:
                os.environ.pop(QUIET_ENV, None)
        seconds = time.perf_counter() - t0
        executed = nb_tmp.stat().st_size > 0       # papermill wrote it (else it failed before)
        if status != "interrupted":                # finished: the notebook and its log take their names
            os.replace(log_tmp, log)
            if executed:
                os.replace(nb_tmp, nb_out)
                nb_tmp = nb_out
        try:
            if executed:
                _to_html(nb_tmp, html_out)
            else:
                atomic_write(html_out, f"<h1>{html.escape(run.name)}: {status} before running</h1><pre>"
                                       f"{html.escape(error)}</pre>")
        except OutputError as e:      # no half report: the row says why (and the index write may tell)
            if status == "ok":
                status = "failed"
            error = (error + "; " if error else "") + str(e)
    except OSError as e:              # the temporary files could not be made or renamed
        seconds = time.perf_counter() - t0
        status, error = "failed", f"{run.name}: {output_error(out_dir, e)}"
    finally:
        for t in temps:
            t.unlink(missing_ok=True)
    figures = {}
    fj = artifacts / "figures.json"
    if fj.exists():
        figures = json.loads(fj.read_text())
    return Result(run, status, seconds, html_out, error, figures, time.time())


def select(profile: str, only: list[str] | None = None) -> list[Run]:
    """The profile's runs whose name or notebook starts with one of ``only`` (all when None);
    refuses, before anything is written, an empty selection or a prefix that matches no run.

    Args:
        profile: the profile name or YAML path (see :func:`load_profile`).
        only: name or notebook prefixes (``--only``); None selects every run.

    Returns:
        The selected runs in profile order.

    Raises:
        ProfileError: the profile is invalid, ``only`` is empty or holds an empty prefix, or a
            prefix matches no run (the message lists the profile's runs).
    """
    runs = load_profile(profile)
    if only is None:
        return runs
    names = ", ".join(r.name for r in runs)
    prefixes = [o.strip() for o in only]
    if not prefixes or not all(prefixes):
        raise ProfileError(f"--only {','.join(only)!r}: an empty notebook prefix; give prefixes such as "
                           f"--only 01,02 (profile {profile!r} has: {names}), or leave --only out to run all")

    def matches(r: Run, o: str) -> bool:
        return r.name.startswith(o) or r.notebook.startswith(o)
    unmatched = [o for o in prefixes if not any(matches(r, o) for r in runs)]
    if unmatched:
        raise ProfileError(f"--only {','.join(prefixes)}: no notebook of profile {profile!r} matches "
                           f"{', '.join(unmatched)}; it has: {names}")
    return [r for r in runs if any(matches(r, o) for o in prefixes)]


def prepare_output(out_dir: str | Path) -> Path:
    """Create ``out_dir`` and prove it writable, or raise OSError naming it and the fix.

    Args:
        out_dir: the ``--out`` folder.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        NotADirectoryError: ``out_dir`` is a file.
        PermissionError: the folder cannot be created or written to.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out}: is a file; give a folder for the reports")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"--out {out}: cannot write there ({e.strerror or e}); "
                              "give a folder you can write to") from None
    return out


def run_outputs(runs: list[Run], out_dir: str | Path) -> list[Path]:
    """Every file ``run --out out_dir`` writes for ``runs`` (reports, executed notebooks, logs,
    thumbnails, the index), to refuse an output that is one of the inputs before anything runs.

    Args:
        runs: the selected runs.
        out_dir: the ``--out`` folder.

    Returns:
        The output paths.
    """
    out = Path(out_dir)
    files = [out / "index.html"]
    for r in runs:
        files += [out / f"{r.name}{s}" for s in (".ipynb", ".html", ".report.html", ".log")]
        files.append(out / "thumbs" / f"{r.name}.png")
    return files


def run_all(profile: str = "quick", only: list[str] | None = None, out_dir: str | Path = "reports",
            extra: dict | None = None, echo=None, force: bool = False) -> list[Result]:
    """Run the selected notebooks of ``profile`` in order (see :func:`run_runs`).

    Args:
        profile: the profile name or YAML path.
        only: name or notebook prefixes to select (None: all).
        out_dir: the reports folder.
        extra: parameter overrides (``-p``) for every run that takes them.
        echo: prints progress (default: ``print``).
        force: rerun even runs whose inputs are unchanged.

    Returns:
        One Result per selected run, in order.

    Raises:
        ProfileError: see :func:`select` and :func:`run_runs`.
    """
    return run_runs(select(profile, only), out_dir, str(profile), extra, echo, force)


def run_runs(runs: list[Run], out_dir: str | Path, label: str, extra: dict | None = None,
             echo=None, force: bool = False) -> list[Result]:
    """Run ``runs`` in order and write the index after each. A user mistake (parameter, output
    folder) is refused before anything runs or is written; a run whose inputs are unchanged since
    its last success is reused (row ``cached``) unless ``force``; Ctrl-C leaves an index with the
    interrupted notebook as a row, then raises KeyboardInterrupt.

    Args:
        runs: the runs, in order.
        out_dir: the reports folder.
        label: the name shown in the index (the profile, or a sweep combination).
        extra: parameter overrides for every run that takes them.
        echo: prints progress (default: ``print``).
        force: rerun even runs whose inputs are unchanged.

    Returns:
        One Result per run, in order.

    Raises:
        ProfileError: a parameter in ``extra`` no run takes, or a value it cannot.
        OutputError: an output would overwrite a notebook, or the index cannot be written.
        NotADirectoryError, PermissionError: ``out_dir`` is a file or cannot be written to.
        KeyboardInterrupt: a notebook was interrupted (after the index was written); by SIGTERM
            (see :func:`sigterm_as_interrupt`): :class:`Terminated`.
    """
    echo = echo or (lambda *a, **k: print(*a, **k))
    extra = extra or {}
    check_overrides(runs, extra)
    refuse_overwriting_inputs(run_outputs(runs, out_dir), [notebook_path(r) for r in runs], "--out")
    out = prepare_output(out_dir)
    cache, source = run_cache.RunCache(out), run_cache.source_digest()
    results = []
    for k, run in enumerate(runs, 1):
        echo(f"[{k}/{len(runs)}] {run.name} ...", end=" ", flush=True)
        params = {**notebook_parameters(run), **run.parameters, **extra}   # defaults name files too
        key = run_cache.key(notebook_path(run), params, source)
        html_out = out / f"{run.name}.html"
        hit = None if force else cache.get(run.name, key, [html_out, html_out.with_suffix(".report.html")])
        if hit:
            r = Result(run, "cached", hit["seconds"], html_out, "", hit["figures"], hit["finished"])
            echo(f"cached ({run_cache.age(time.time() - r.finished)} old)")
        else:
            cache.drop(run.name)
            started = time.time()
            r = run_one(run, out, extra)
            echo(f"{r.status} in {r.seconds:.0f} s" + (f"  ({r.error})" if r.error else ""))
            if r.status == "ok":
                cache.put(run.name, key, r.seconds, r.figures,
                          run_cache.outputs_written(params, started))
        results.append(r)
        write_index(results, out, label)
        if r.status == "interrupted":
            raise Terminated if r.error == Terminated.MESSAGE else KeyboardInterrupt
    idx = write_index(results, out, label)
    echo(f"index: {idx}")
    return results
