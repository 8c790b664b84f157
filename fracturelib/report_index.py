"""``reports/index.html``: one row per notebook run with its status, duration and key figures."""
from __future__ import annotations

import html
import time
from pathlib import Path


def write_index(results: list, out_dir: Path, profile: str) -> Path:
    """Write the index of ``results`` (runner.Result) into ``out_dir``."""
    rows = []
    for r in results:
        figs = "<br>".join(f"{html.escape(k)}: {html.escape(str(v))}" for k, v in r.figures.items())
        colour = {"ok": "#e6f4ea", "interrupted": "#fff4e5"}.get(r.status, "#fce8e6")
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
    tmp = p.with_name(".index.html.tmp")
    tmp.write_text(page)
    tmp.replace(p)                 # readers never see half a page
    return p
