"""A sweep's index: one row per combination with its parameters, status and key figures, and a plot
of the main metric (with its confidence interval) against the first swept parameter."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

from fracturelib.files import atomic_write
from fracturelib.workflow.report_index import write_html_index

#: "0.742 (95% CI 0.692-0.792)" as notebooks record a figure (evaluate.format_ci).
CI_FIGURE = re.compile(r"^\s*(-?[\d.]+)\s*\((?:95% CI)?\s*(-?[\d.]+)\s*[-\u2013]\s*(-?[\d.]+)\s*\)")


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
