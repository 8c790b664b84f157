"""Keras vs LiteRT (issue 22): warm ms/img of classifier + localiser + OOD features, `fracturelib predict`
start-up (process start to JSON), size and parity, for the Keras model and each LiteRT variant, with
ratios to Keras measured in the same run.

By default (a few minutes on 2 cores) it builds, in a temporary folder, the full-profile shapes: an
EfficientNet-Lite0 (ImageNet) binary transfer model at 224 px whose head is fitted for a few epochs on
120 embedded FracAtlas radiographs, a localiser at 224 px (ImageNet backbone, untrained head: the same
cost) and the radiograph (OOD) detector; the parity figures are on that split's validation images.

    .venv/bin/python bench/export.py [--model models/binary_transfer.keras [--data DIR]] [--variants none,float16,int8]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("FRACTURELIB_OFFLINE", "1")
SPLIT = {"seed": 0, "val_fraction": 0.35, "test_fraction": 0.15, "subset_fraction": 1.0, "respect_existing": False}


def build_default(folder: Path, per_class: int = 60) -> tuple[Path, Path]:
    """A transfer model (+ localiser + OOD detector) trained briefly on ``per_class`` images of each class.

    Args:
        folder: where the data folder and the models go.
        per_class: images of each class copied from the embedded FracAtlas.

    Returns:
        (the .keras classifier, the data folder).
    """
    import keras

    from fracturelib import config
    from fracturelib.data import build_manifest, usable
    from fracturelib.data.pipeline import labels_for, load_images
    from fracturelib.data.splits import split_from_card
    from fracturelib.models import cards, localiser, ood, transfer
    data = folder / "bench_fracatlas"
    for src, dst in (("Fractured", "fractured"), ("Non_fractured", "non-fractured")):
        (data / dst).mkdir(parents=True)
        for p in sorted((config.DEFAULT_FRACATLAS / "images" / src).glob("*.jpg"))[:per_class]:
            shutil.copy(p, data / dst / p.name)
    classes = list(config.BINARY_CLASSES)
    manifest = usable(build_manifest(data, progress=False), classes)
    from fracturelib.data import manifest_hash
    rows = split_from_card(manifest, cards.ModelCard(classes, 224, 1, data={"split": SPLIT,
                                                                          "manifest_hash": manifest_hash(manifest)}))
    keras.utils.set_random_seed(0)
    m, _ = transfer.build_transfer_model(1, image_size=224, channels=1, weights="imagenet")
    m.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    tr = rows[rows.split == "train"]
    x_tr = load_images(tr, 224, 1)
    m.fit(x_tr, labels_for(tr, classes), epochs=3, batch_size=16, verbose=0)
    models = folder / "models"
    card = cards.make_card("binary", classes, 224, 1, "efficientnet_lite0", data, manifest, SPLIT,
                           {s: rows[rows.split == s] for s in ("train", "val", "test")}, threshold=0.5,
                           companions=dict(config.COMPANIONS))
    path = cards.save_model(m, models / config.BINARY_TRANSFER_FILE, card)
    loc, _ = localiser.build(224, 1, weights="imagenet")
    cards.save_model(loc, models / config.LOCALISER_FILE, {"task": "localisation", "classes": ["fracture"],
                                                           "image_size": 224, "channels": 1,
                                                           "preprocessing": "efficientnet_lite0"})
    feats = ood.feature_model(1).predict(load_images(rows, ood.SIZE, 1), verbose=0)
    ood.fit(feats[::2], feats[1::2]).save(models / config.OOD_FILE)
    return path, data


def warm_ms(models: list, x: list, runs: int) -> float:
    """Median ms for one image through each of ``models`` (their ``predict_on_batch``), after a warm-up.

    Args:
        models: the classifier, localiser and OOD feature models (Keras or LiteRT).
        x: one input (1 x S x S x C) per model.
        runs: timed runs.

    Returns:
        The median, in ms.
    """
    for m, xi in zip(models, x):
        m.predict_on_batch(xi)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        for m, xi in zip(models, x):
            m.predict_on_batch(xi)
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def startup_s(model: Path, image: Path, out: Path, repeats: int = 2) -> float:
    """Seconds from process start to the JSON of ``fracturelib predict IMAGE --model MODEL --json`` (best of).

    Args:
        model: the model file.
        image: one image.
        out: overlay folder.
        repeats: runs (the best counts: the file cache is warm for every variant alike).

    Returns:
        Seconds.
    """
    best = float("inf")
    exe = Path(sys.executable).with_name("fracturelib")
    for _ in range(repeats):
        t = time.perf_counter()
        r = subprocess.run([str(exe), "predict", str(image), "--model", str(model), "--json", "--overlay-dir",
                            str(out)], capture_output=True, text=True)
        best = min(best, time.perf_counter() - t)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-1000:])
        json.loads(r.stdout)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="a .keras classifier with its card (default: built, see above)")
    ap.add_argument("--data", default=None, help="its data folder (default: the card's)")
    ap.add_argument("--variants", default="none,float16,int8")
    ap.add_argument("--calibration", type=int, default=200)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import numpy as np

    from fracturelib import config
    from fracturelib.models import export
    from fracturelib.models.cards import load_model, read_card
    from fracturelib.models.litert import LiteModel
    from fracturelib.models.ood import Detector, feature_model
    tmp = Path(tempfile.mkdtemp(prefix="fracturelib-bench-export-"))
    t = time.perf_counter()
    path, data = (Path(a.model), a.data) if a.model else build_default(tmp)
    print(f"model: {path} ({time.perf_counter() - t:.0f} s to build)" if not a.model else f"model: {path}")
    card = read_card(path)
    image = sorted((config.DEFAULT_FRACATLAS / "images" / "Fractured").glob("*.jpg"))[-1]

    def sizes(files):
        return sum(f.stat().st_size for f in files if f and f.exists()) / 1e6

    rng = np.random.default_rng(0)
    keras_models = [load_model(path)[0]]
    loc_path, ood_path = card.companion_path("localiser"), card.companion_path("ood")
    have_loc = loc_path is not None and loc_path.exists()
    have_ood = ood_path is not None and ood_path.exists()
    if have_loc:
        keras_models.append(load_model(loc_path)[0])
    if have_ood:
        det = Detector.load(ood_path)
        keras_models.append(feature_model(1, det.image_size, det.backbone))
    x = [(rng.random((1, *m.input_shape[1:])) * 255).astype(np.float32) for m in keras_models]
    rows = [{"variant": "keras", "MB": sizes([path, loc_path if have_loc else None]),
             "ms_img": warm_ms(keras_models, x, a.runs), "startup_s": startup_s(path, image, tmp / "ov"),
             "agreement": 1.0, "auc_diff": 0.0, "max_dp": 0.0}]
    for q in a.variants.split(","):
        out = tmp / f"lite_{q}" / path.with_suffix(".tflite").name
        t = time.perf_counter()
        try:
            res = export.export_litert(path, q, calibration=a.calibration, data_dir=data, out=out,
                                       num_threads=a.threads, force=True, log=None)
        except Exception as e:  # noqa: BLE001 - a variant that cannot convert is a row saying so
            print(f"{q}: export failed ({type(e).__name__}: {str(e)[:200]})")
            continue
        secs = time.perf_counter() - t
        lite = [LiteModel(out, a.threads)] + [LiteModel(p, a.threads) for p in res.companions.values()]
        f = res.figures or {}
        rows.append({"variant": f"litert {q}", "MB": sizes([out, *res.companions.values()]),
                     "ms_img": warm_ms(lite, x, a.runs), "startup_s": startup_s(out, image, tmp / "ov"),
                     "agreement": f.get("agreement"), "auc_diff": f.get("roc_auc_diff"),
                     "max_dp": f.get("max_abs_diff"), "passed": res.passed, "export_s": secs})
    k = rows[0]
    print(f"\n{len(keras_models)} models per image (classifier{' + localiser' if have_loc else ''}"
          f"{' + OOD features' if have_ood else ''}); parity on {f.get('n', '?')} validation images; "
          f"{a.threads} LiteRT threads")
    print(f"{'variant':16s} {'MB':>6s} {'ms/img':>7s} {'x Keras':>8s} {'start s':>8s} {'x Keras':>8s} "
          f"{'agree':>7s} {'|dAUC|':>7s} {'max|dp|':>8s} gate")
    for r in rows:
        def fmt(v, spec):
            return format(v, spec) if isinstance(v, (int, float)) else "-"
        print(f"{r['variant']:16s} {r['MB']:6.1f} {r['ms_img']:7.1f} {k['ms_img'] / r['ms_img']:7.1f}x "
              f"{r['startup_s']:8.2f} {k['startup_s'] / r['startup_s']:7.1f}x {fmt(r['agreement'], '7.3f')} "
              f"{fmt(r['auc_diff'], '7.4f')} {fmt(r['max_dp'], '8.4f')} "
              f"{'' if r is k else ('pass' if r.get('passed') else 'FAIL')}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
