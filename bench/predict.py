"""Warm latency of `predict` + Grad-CAM (+ the box-trained localiser's "where") for one image
(median over many runs), of `Predictor.analyse` with the fracture detector's boxes too, and Grad-CAM
images/s in batch. Target: < 250 ms per image on 2 cores.

    .venv/bin/python bench/predict.py [--model models/binary_transfer.keras] [--localiser models/localiser.keras]
        [--detector models/detector.keras]

Nothing is downloaded: the default models are built here (the detector: CenterNet on the offline ImageNet
EfficientNet-Lite0 at 384 px, untrained heads, box threshold 0 so that every image has boxes to draw).
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
    ap.add_argument("--detector", default=None, help="a saved fracture detector (default: a fresh CenterNet at "
                    "384 px, ImageNet backbone, untrained heads: the same cost as a trained one)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()

    import numpy as np

    from fracturelib import config
    from fracturelib.app.predict import Predictor
    from fracturelib.data import build_manifest, usable
    from fracturelib.explain.batch import heatmaps
    from fracturelib.models import cards, centernet, cnn, localiser

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
    det_path = a.detector
    if det_path is None:
        det, _ = centernet.build(384, 1, weights="imagenet")
        det_path = cards.save_model(det, os.path.join(tmp, "det.keras"), cards.make_card(
            "detection", ["fracture"], 384, 1, "bench", data={}, box_threshold=0.0))
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
    boxed = Predictor(path, localiser_path=loc_path, detector_path=det_path)
    for img in images[:3]:
        boxed.analyse(img).overlay()
    analyse_t, overlay_t, n_boxes = [], [], []
    for img in images[3:]:
        t = time.perf_counter()
        pred = boxed.analyse(img)
        analyse_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        pred.overlay()
        overlay_t.append(time.perf_counter() - t)
        n_boxes.append(len(pred.fields.get("boxes") or []))            # None: not a radiograph
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
    print(f"detector: {det_path} ({boxed.box_card.image_size} px, box threshold {boxed.box_threshold:g})")
    p90 = 1000 * float(np.quantile(analyse_t, 0.9))
    print("Predictor.analyse with boxes (classifier + Grad-CAM + detector; a box answers 'where', so the "
          "localiser runs only on images without one), one image (warm): "
          f"median {1000 * statistics.median(analyse_t):.0f} ms/img, p90 {p90:.0f} ms over {len(analyse_t)} "
          f"images, {statistics.mean(n_boxes):.1f} boxes each (goal < 250 ms); "
          f"+ overlay with boxes {1000 * statistics.median(overlay_t):.0f} ms")
    print(f"Grad-CAM in batch (decode, predict, heatmaps, resize to image): {batch_rate:.1f} images/s")


if __name__ == "__main__":
    main()
