"""Run the numbered notebooks with papermill, export HTML, and write ``reports/index.html``.

A failing notebook still gets its (partial) HTML with the error visible and a failed row in the
index; the others still run; the exit code is non-zero. Key figures come from
``<output_dir>/figures.json``, which notebooks write with :func:`record`.
"""
from __future__ import annotations

import html
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import config

PROFILE_ENV = "FRACTURELIB_PROFILE"


# ---- inside notebooks ---------------------------------------------------------------------------
def record(output_dir: str | Path, **figures) -> dict:
    """Merge key figures (shown in the index) into ``output_dir/figures.json``."""
    p = Path(output_dir) / "figures.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    cur = json.loads(p.read_text()) if p.exists() else {}
    cur.update(figures)
    p.write_text(json.dumps(cur, indent=2, default=str))
    return cur


def apply_profile(namespace: dict, notebook: str) -> dict:
    """Override a notebook's parameters from the profile named in $FRACTURELIB_PROFILE (e.g. the
    tiny ``ci`` profile nbval uses). Without the variable nothing changes. Returns the overrides."""
    name = os.environ.get(PROFILE_ENV)
    if not name:
        return {}
    over = {}
    for run in load_profile(name):
        if run.notebook == notebook:
            over = dict(run.parameters)
            break
    namespace.update(over)
    return over


# ---- profiles -----------------------------------------------------------------------------------
@dataclass
class Run:
    name: str
    notebook: str
    parameters: dict = field(default_factory=dict)


def load_profile(profile: str) -> list[Run]:
    """``params/<profile>.yaml`` (or a path to a YAML file) -> runs in order."""
    p = Path(profile)
    if not p.suffix:
        p = config.PARAMS_DIR / f"{profile}.yaml"
    if not p.exists():
        names = sorted(x.stem for x in config.PARAMS_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"profile {profile!r} not found ({p}); available: {', '.join(names)}")
    spec = yaml.safe_load(p.read_text()) or {}
    defaults = spec.get("defaults", {})
    return [Run(r.get("name", r["notebook"]), r["notebook"], {**defaults, **r.get("parameters", {})})
            for r in spec["runs"]]


# ---- running ------------------------------------------------------------------------------------
@dataclass
class Result:
    run: Run
    status: str
    seconds: float
    html: Path
    error: str = ""
    figures: dict = field(default_factory=dict)


def _to_html(ipynb: Path, out: Path) -> None:
    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(ipynb, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    out.write_text(body)


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


def run_one(run: Run, out_dir: Path, extra: dict | None = None) -> Result:
    import papermill as pm

    out_dir = Path(out_dir).resolve()
    nb_in = (Path(run.notebook) if run.notebook.endswith(".ipynb")
             else config.NOTEBOOKS_DIR / f"{run.notebook}.ipynb")
    nb_out, html_out = out_dir / f"{run.name}.ipynb", out_dir / f"{run.name}.html"
    artifacts = out_dir / "artifacts" / run.name
    (artifacts / "figures.json").unlink(missing_ok=True)   # no stale figures from a past run
    params = {**run.parameters, **(extra or {}), "output_dir": str(artifacts)}
    t0 = time.perf_counter()
    status, error = "ok", ""
    env_before = os.environ.get(PROFILE_ENV)
    os.environ.pop(PROFILE_ENV, None)        # the runner's own parameters win over any profile
    log = out_dir / f"{run.name}.log"
    saved_fd = _redirect_stderr(log)   # the kernel's own stderr (TF/absl start-up lines) -> log
    try:
        pm.execute_notebook(str(nb_in), str(nb_out), parameters=params, kernel_name="python3",
                            cwd=str(config.NOTEBOOKS_DIR), log_output=False, progress_bar=False,
                            report_mode=False)
    except Exception as e:  # noqa: BLE001 - papermill raises several kinds; all mean "failed"
        status = "failed"
        error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"[:300]
    finally:
        _restore_stderr(saved_fd)
        if env_before is not None:
            os.environ[PROFILE_ENV] = env_before
    seconds = time.perf_counter() - t0
    if nb_out.exists():
        _to_html(nb_out, html_out)
    else:
        html_out.write_text(f"<h1>{html.escape(run.name)} failed before running</h1><pre>"
                            f"{html.escape(error)}</pre>")
    figures = {}
    fj = artifacts / "figures.json"
    if fj.exists():
        figures = json.loads(fj.read_text())
    return Result(run, status, seconds, html_out, error, figures)


def write_index(results: list[Result], out_dir: Path, profile: str) -> Path:
    rows = []
    for r in results:
        figs = "<br>".join(f"{html.escape(k)}: {html.escape(str(v))}" for k, v in r.figures.items())
        colour = "#e6f4ea" if r.status == "ok" else "#fce8e6"
        rows.append(
            f"<tr style='background:{colour}'><td><a href='{html.escape(r.html.name)}'>"
            f"{html.escape(r.run.name)}</a></td><td>{r.status}</td><td>{r.seconds:.0f} s</td>"
            f"<td>{figs}</td><td>{html.escape(r.error)}</td></tr>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fracturelib reports</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:6px 10px;border-bottom:1px solid #ddd;
vertical-align:top;text-align:left}}table{{border-collapse:collapse}}</style></head><body>
<h1>fracturelib reports</h1><p>profile: <b>{html.escape(profile)}</b>; generated
{time.strftime('%Y-%m-%d %H:%M:%S')}; {sum(r.status == 'ok' for r in results)} of {len(results)} ok.</p>
<table><tr><th>notebook</th><th>status</th><th>duration</th><th>key figures</th><th>error</th></tr>
{''.join(rows)}</table></body></html>"""
    p = Path(out_dir) / "index.html"
    p.write_text(page)
    return p


def run_all(profile: str = "quick", only: list[str] | None = None, out_dir: str | Path = "reports",
            extra: dict | None = None, echo=None) -> list[Result]:
    echo = echo or (lambda *a, **k: print(*a, **k))
    runs = load_profile(profile)
    if only:
        runs = [r for r in runs if any(r.name.startswith(o) or r.notebook.startswith(o) for o in only)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for k, run in enumerate(runs, 1):
        echo(f"[{k}/{len(runs)}] {run.name} ...", end=" ", flush=True)
        r = run_one(run, out, extra)
        results.append(r)
        echo(f"{r.status} in {r.seconds:.0f} s" + (f"  ({r.error})" if r.error else ""))
        write_index(results, out, profile)
    idx = write_index(results, out, profile)
    echo(f"index: {idx}")
    return results


def add_cli(sub) -> None:
    p = sub.add_parser("run", help="execute the notebooks with papermill and write HTML reports")
    p.add_argument("--profile", default="quick", help="quick (embedded data), full, ci, or a YAML path")
    p.add_argument("--only", default="", help="comma-separated notebook prefixes, e.g. 01,02")
    p.add_argument("--out", default=str(config.REPORTS_DIR))
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter in every notebook (YAML value)")
    p.set_defaults(func=_cmd_run)


def _cmd_run(a) -> int:
    extra = {}
    for kv in a.param:
        k, _, v = kv.partition("=")
        extra[k] = yaml.safe_load(v)
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    results = run_all(a.profile, only, a.out, extra)
    if not results:
        print("no notebook matched --only")
        return 2
    return 0 if all(r.status == "ok" for r in results) else 1
