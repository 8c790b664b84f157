"""Wall time of `make reports` (the quick profile on the embedded data), per notebook and in total.
Target: all notebooks together <= 10 min on 2 cores. Run with the venv present:

    .venv/bin/python bench/reports.py [--profile quick] [--out /tmp/fracturelib-bench]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    from fracturelib.workflow.runner import run_all

    out = a.out or tempfile.mkdtemp(prefix="fracturelib-bench-")
    t0 = time.perf_counter()
    results = run_all(a.profile, None, out, echo=lambda *x, **k: None)
    total = time.perf_counter() - t0
    for r in results:
        print(f"{r.run.name:24s} {r.status:7s} {r.seconds:7.1f} s")
    print(f"{'total':24s} {'':7s} {total:7.1f} s  (target <= 600 s on 2 cores; reports in {out})")


if __name__ == "__main__":
    main()
