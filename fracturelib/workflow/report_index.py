"""``reports/index.html``: one row per notebook run with its status, duration, key figures, a
thumbnail of its key figure and links to the report with and without code."""
from __future__ import annotations

import html
import os
import time
from pathlib import Path

COLOURS = {"ok": "#e6f4ea", "cached": "#eef3fb", "interrupted": "#fff4e5"}
STYLE = ("body{font-family:sans-serif;margin:2em}td,th{padding:6px 10px;border-bottom:1px solid #ddd;"
         "vertical-align:top;text-align:left}table{border-collapse:collapse}img{max-width:240px}")


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
    """Write the index of ``results`` (runner.Result) into ``out_dir``, atomically."""
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
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fracturelib reports</title>
<style>{STYLE}</style></head><body>
<h1>fracturelib reports</h1><p>profile: <b>{html.escape(profile)}</b>; generated
{time.strftime('%Y-%m-%d %H:%M:%S')}; {good} of {len(results)} ok
({sum(r.status == 'cached' for r in results)} reused from an earlier run: inputs unchanged).
Each notebook links to its full report (with code) and, after the dot, the code-free report.</p>
<table><tr><th>notebook</th><th>status</th><th>duration</th><th>key figure</th><th>key figures</th>
<th>error</th></tr>
{''.join(rows)}</table></body></html>"""
    p = out_dir / "index.html"
    tmp = p.with_name(".index.html.tmp")
    tmp.write_text(page)
    tmp.replace(p)                 # readers never see half a page
    return p
