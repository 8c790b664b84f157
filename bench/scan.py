"""`fracturelib scan` on a folder of look-alike images: wall time and peak memory of the whole
command (a child process), as the count grows. Target: 4,000 images in < 30 s and < 1 GB.

Every image is the same synthetic forearm (two bright bars on a dark field) with its own small
shift, bar width, exposure and noise, so that their perceptual hashes sit close together (the case
where an all-pairs search builds millions of pairs).

    .venv/bin/python bench/scan.py [--counts 1000,4000]
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def lookalikes(folder: Path, n: int, size: int = 160, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for k in range(n):
        a = np.full((size, size), 30.0)
        for centre in (0.38, 0.62):
            c = size * (centre + rng.uniform(-0.03, 0.03))
            a += 150 * (np.abs(xx - c) < size * rng.uniform(0.05, 0.08))
        a += 60 * np.sin(yy / size * np.pi * rng.uniform(0.8, 1.2))
        a = a * rng.uniform(0.8, 1.1) + rng.normal(0, 12, a.shape)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(folder / f"img{k:05d}.png")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="1000,4000")
    a = ap.parse_args()
    base = None
    for n in [int(x) for x in a.counts.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            lookalikes(Path(tmp), n)
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "fracturelib.app.cli", "scan", tmp, "--quiet"],
                                 capture_output=True, text=True, check=True).stdout
            secs = time.perf_counter() - t0
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            groups = next(line for line in out.splitlines() if line.startswith("duplicate groups"))
            base = base or secs / n
            print(f"{n:6d} look-alike images: {secs:6.1f} s, peak {peak:6.0f} MB "
                  f"(largest child so far{'' if peak * 1024 > before else ', earlier run'}), "
                  f"time per image {secs / n / base:.2f}x the first count; {groups}")


if __name__ == "__main__":
    main()
