"""``reports/index.html``: one row per notebook run with its status, duration, key figures, a
thumbnail of its key figure and links to the report with and without code."""
from __future__ import annotations

import html
import os
import time
from pathlib import Path

from fracturelib.files import atomic_write

COLOURS = {"ok": "#e6f4ea", "cached": "#eef3fb", "interrupted": "#fff4e5"}
#: The one style of every index page (reports and sweeps); thumbnails in table cells are shrunk.
STYLE = ("body{font-family:sans-serif;margin:2em}td,th{padding:6px 10px;border-bottom:1px solid #ddd;"
         "vertical-align:top;text-align:left}table{border-collapse:collapse}td img{max-width:240px}")


def write_html_index(out_dir: Path, title: str, heading: str, intro: str, columns: list[str],
                     rows: list[str], name: str = "index.html") -> Path:
    """Write an index page (the reports' and the sweeps') atomically: readers never see half a page,
    a full or read-only disk is one ``OutputError`` line and the previous page stays.

    Args:
        out_dir: the folder of the page.
        title: the page title (plain text, escaped here).
        heading: the ``<h1>`` text (plain text, escaped here).
        intro: HTML between the heading and the table (already escaped by the caller).
        columns: the table's column names (plain text, escaped here).
        rows: the table rows, each a ``<tr>...</tr>`` HTML string (already escaped).
        name: the page's file name.

    Returns:
        The path of the page.
    """
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(heading)}</h1>{intro}
<table><tr>{head}</tr>
{''.join(rows)}</table></body></html>"""
    return atomic_write(Path(out_dir) / name, page)


def _status(r) -> str:
    if r.status != "cached":
        return r.status
    from fracturelib.workflow.run_cache import age
    return f"cached<br><small>{age(time.time() - r.finished)} old</small>"


def _thumb(r, out_dir: Path) -> str:
    if not r.thumb.exists():
        return ""
    rel = os.path.relpath(r.thumb, out_dir)
    return f"<a href='{html.escape(os.path.relpath(r.report, out_dir))}'><img src='{html.escape(rel)}' alt=''></a>"


def write_index(results: list, out_dir: Path, profile: str) -> Path:
    """Write the index of ``results`` (runner.Result) into ``out_dir``, atomically.

    Args:
        results: one runner.Result per notebook run, in display order.
        out_dir: the reports folder; links are relative to it.
        profile: the profile's name, shown in the intro.

    Returns:
        The path of ``index.html``.

    Raises:
        OutputError: the page could not be written.
    """
    out_dir = Path(out_dir)
    rows = []
    for r in results:
        figs = "<br>".join(f"{html.escape(k)}: <b>{html.escape(str(v))}</b>" for k, v in r.figures.items())
        report = (f" · <a href='{html.escape(os.path.relpath(r.report, out_dir))}'>report</a>"
                  if r.report.exists() else "")
        rows.append(
            f"<tr style='background:{COLOURS.get(r.status, '#fce8e6')}'><td>"
            f"<a href='{html.escape(os.path.relpath(r.html, out_dir))}'>{html.escape(r.run.name)}</a>"
            f"{report}</td><td>{_status(r)}</td><td>{r.seconds:.0f} s</td><td>{_thumb(r, out_dir)}</td>"
            f"<td>{figs}</td><td>{html.escape(r.error)}</td></tr>")
    good = sum(r.status in ("ok", "cached") for r in results)
    intro = f"""<p>profile: <b>{html.escape(profile)}</b>; generated
{time.strftime('%Y-%m-%d %H:%M:%S')}; {good} of {len(results)} ok
({sum(r.status == 'cached' for r in results)} reused from an earlier run: inputs unchanged).
Each notebook links to its full report (with code) and, after the dot, the code-free report.</p>"""
    return write_html_index(out_dir, "fracturelib reports", "fracturelib reports", intro,
                            ["notebook", "status", "duration", "key figure", "key figures", "error"], rows)
