"""Is the input pipeline the bottleneck? Binary CNN training images/s fed by the real pipeline
from JPEG files on disk with augmentation on, divided by images/s on the same batches held in
memory. Two pipelines: "every epoch from disk" (no cache: decode + resize + augment each epoch, the
strict case) and "as trained" (the default: decoded once, cached, augmented each epoch).
Target: ratio >= 0.90. Ratios only; absolute numbers swing 2x between runs.

    .venv/bin/python bench/pipeline.py [--size 128] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()

    import numpy as np

    from fracturelib import config
    from fracturelib.data import build_manifest, usable
    from fracturelib.data.pipeline import make_dataset
    from fracturelib.models.cnn import build_binary_cnn
    from fracturelib.models.train import set_seed

    set_seed(0, deterministic=False)
    df = usable(build_manifest(a.data or config.DEFAULT_FRACATLAS))
    classes = list(config.BINARY_CLASSES)
    disk = make_dataset(df, classes, a.size, 1, a.batch, training=True, cache=False)
    cached = make_dataset(df, classes, a.size, 1, a.batch, training=True, cache=True)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in disk])
    X, Y = np.concatenate(xs), np.concatenate(ys)
    n = len(X)
    model = build_binary_cnn(a.size, 1)

    def epoch_on(ds):
        t = time.perf_counter()
        model.fit(ds, epochs=1, verbose=0)
        return n / (time.perf_counter() - t)

    def epoch_mem():
        t = time.perf_counter()
        model.fit(X, Y, batch_size=a.batch, epochs=1, verbose=0, shuffle=True)
        return n / (time.perf_counter() - t)

    epoch_on(disk), epoch_on(cached), epoch_mem()   # warm-up: tracing, fills the cache
    d, c, m = [], [], []
    for _ in range(a.repeats):                      # interleaved, so drift hits all alike
        d.append(epoch_on(disk))
        c.append(epoch_on(cached))
        m.append(epoch_mem())
    # best run of each: this machine's runs swing 2x (other load), and slow-downs only add time
    rd, rc, rm = (max(v) for v in (d, c, m))
    runs = lambda v: ", ".join(f"{x:.1f}" for x in v)  # noqa: E731
    print(f"images: {n} at {a.size}px, batch {a.batch}, {a.repeats} interleaved epochs each; "
          "best run shown, all runs in brackets")
    print(f"every epoch from disk (decode+resize+augment): {rd:7.1f} img/s  ({runs(d)})")
    print(f"as trained (decoded once, cached, augmented):  {rc:7.1f} img/s  ({runs(c)})")
    print(f"same batches held in memory:                   {rm:7.1f} img/s  ({runs(m)})")
    print(f"ratio as-trained/memory: {rc / rm:.2f}   ratio every-epoch-from-disk/memory: "
          f"{rd / rm:.2f}   (target >= 0.90)")


if __name__ == "__main__":
    main()
