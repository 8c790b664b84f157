"""Warm latency of `predict` + Grad-CAM (+ the box-trained localiser's "where") for one image
(median over many runs) and Grad-CAM images/s in batch. Target: <= 250 ms per image on 2 cores.

    .venv/bin/python bench/predict.py [--model models/binary_transfer.keras] [--localiser models/localiser.keras]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="a saved model with its card (default: a fresh "
                    "binary CNN at 128 px saved to a temporary folder)")
    ap.add_argument("--localiser", default=None, help="a saved localiser (default: a fresh one at 320 px "
                    "with random head weights: same cost as a trained one)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()

    import numpy as np

    from fracturelib import config
    from fracturelib.app.predict import Predictor
    from fracturelib.data import build_manifest, usable
    from fracturelib.explain.batch import heatmaps
    from fracturelib.models import cards, cnn, localiser

    tmp = tempfile.mkdtemp()
    path = a.model
    if path is None:
        m = cnn.build_binary_cnn(128, 1)
        path = cards.save_model(m, os.path.join(tmp, "bench.keras"),
                                 {"classes": list(config.BINARY_CLASSES), "image_size": 128,
                                  "channels": 1, "preprocessing": "bench"})
    loc_path = a.localiser
    if loc_path is None:
        loc, _ = localiser.build(320, 1, weights="imagenet")
        loc_path = cards.save_model(loc, os.path.join(tmp, "loc.keras"), {"classes": ["fracture"], "image_size": 320,
                                                                          "channels": 1, "preprocessing": "bench"})
    df = usable(build_manifest(config.DEFAULT_FRACATLAS))
    images = list(df["path"][: a.runs + 3])
    p = Predictor(path, localiser_path=loc_path)
    for img in images[:3]:                       # warm-up: graph tracing
        p.predict(img, overlay_dir=tmp)
    times = []
    for img in images[3:]:
        t = time.perf_counter()
        p.predict(img, overlay_dir=tmp)
        times.append(time.perf_counter() - t)
    rows = df.head(256)
    heatmaps(p.model, p.card, rows.head(a.batch))  # warm-up
    t = time.perf_counter()
    heatmaps(p.model, p.card, rows)
    batch_rate = len(rows) / (time.perf_counter() - t)
    print(f"model: {path} ({p.card.image_size} px, {p.card.channels} ch)")
    print(f"localiser: {loc_path} ({p.localiser_card.image_size} px)")
    print("predict + Grad-CAM + localiser + overlay, one image (warm): "
          f"median {1000 * statistics.median(times):.0f} ms, "
          f"p90 {1000 * float(np.quantile(times, 0.9)):.0f} ms over {len(times)} images (target <= 250 ms)")
    print(f"Grad-CAM in batch (decode, predict, heatmaps, resize to image): {batch_rate:.1f} images/s")


if __name__ == "__main__":
    main()
