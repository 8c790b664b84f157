"""What the ImageNet backbone costs on this machine: EfficientNet-Lite0 forward pass (frozen
features) and fine-tuning (blocks >= 13 trainable) in images/s at 224 px, batch 32, each as a ratio
to the design CNN's training throughput at 128 px, all measured in one run on the same in-memory
batches (interleaved, best of --repeats; absolute numbers swing 2x between runs).

    .venv/bin/python bench/transfer.py [--size 224] [--batch 32] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--cnn-size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    import keras
    import numpy as np

    from fracturelib.models import cnn, transfer
    from fracturelib.models.train import set_seed

    set_seed(0, deterministic=False)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, a.images).astype("float32")
    x_big = rng.uniform(0, 255, (a.images, a.size, a.size, 1)).astype("float32")
    x_cnn = rng.uniform(0, 255, (a.images, a.cnn_size, a.cnn_size, 1)).astype("float32")

    cnn = cnn.build_binary_cnn(a.cnn_size, 1)
    lite, desc = transfer.build_transfer_model(1, "efficientnet_lite0", a.size, 1, "imagenet")
    feats = transfer.features_model(lite)
    tuned, _ = transfer.build_transfer_model(1, "efficientnet_lite0", a.size, 1, "imagenet")
    transfer.unfreeze_top(tuned, "block13")
    tuned.compile(keras.optimizers.Adam(1e-4), "binary_crossentropy")

    def rate(fn):
        t = time.perf_counter()
        fn()
        return a.images / (time.perf_counter() - t)

    jobs = {
        "design CNN training (128 px)": lambda: cnn.fit(x_cnn, y, batch_size=a.batch, epochs=1, verbose=0),
        f"Lite0 forward, frozen features ({a.size} px)": lambda: feats.predict(x_big, batch_size=a.batch, verbose=0),
        f"Lite0 fine-tuning, blocks >= 13 ({a.size} px)":
            lambda: tuned.fit(x_big, y, batch_size=a.batch, epochs=1, verbose=0)}
    for fn in jobs.values():                        # warm-up: tracing
        fn()
    best = {k: 0.0 for k in jobs}
    for _ in range(a.repeats):                      # interleaved, so drift hits all alike
        for k, fn in jobs.items():
            best[k] = max(best[k], rate(fn))
    base = best["design CNN training (128 px)"]
    print(f"weights: {desc}; {a.images} images, batch {a.batch}, best of {a.repeats}; {os.cpu_count()} CPUs")
    for k, v in best.items():
        print(f"{k:48s} {v:7.1f} img/s   ratio to CNN training {v / base:5.2f}")


if __name__ == "__main__":
    main()
