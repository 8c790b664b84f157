"""Train the CenterNet fracture detector on notebook 02's split of a FracAtlas folder and score it the
way the detection literature does (COCO mAP on the fractured test images, FROC over all test images),
plus the image-level score (best box) against a frozen-feature classifier and their fusion.

    python scripts/detect_fracatlas.py --data-dir ../shared/data/fracatlas --out /tmp/det_full train
    python scripts/detect_fracatlas.py --out /tmp/det_full evaluate

``train`` never reads test boxes: it caches the test images' detections and classifier scores;
``evaluate`` reads them with the test boxes.
"""
from __future__ import annotations

import argparse
import json
import pickle
import time
from pathlib import Path

import numpy as np


def split_like_notebook_02(data_dir: str, seed: int = 42):
    """The manifest rows of ``data_dir`` with notebook 02's split (its default parameters).

    Args:
        data_dir: a FracAtlas folder.
        seed: notebook 02's seed.

    Returns:
        The usable rows with a ``split`` column.
    """
    from fracturelib import config
    from fracturelib.data import build_manifest, usable
    from fracturelib.data.splits import assign_splits, subset
    rows = subset(usable(build_manifest(data_dir), list(config.BINARY_CLASSES)), 1.0, seed)
    return assign_splits(rows, 0.15, 0.20, seed=seed, respect_existing=False)


def _cache_path(args, parts: dict | None = None) -> Path:
    """Where the frozen backbone's features of this split and size are cached: the file name carries the
    size, the backbone and a hash of the split's file lists, so another seed or data folder never reads them.

    Args:
        args: the command line (out, size; data_dir and seed when ``parts`` is None).
        parts: split name -> manifest rows (default: notebook 02's split of ``args.data_dir``).

    Returns:
        The ``.npz`` path under ``args.out``.
    """
    import hashlib
    if parts is None:
        d = split_like_notebook_02(args.data_dir, args.seed)
        parts = {s: d[d["split"] == s] for s in ("train", "val", "test")}
    key = hashlib.sha256("\n".join(f"{s}:{p}" for s, r in parts.items() for p in r["relpath"]).encode()).hexdigest()
    return Path(args.out) / f"features_efficientnet_lite0_{args.size}_{key[:12]}.npz"


def train(args) -> None:
    """Cache features, train the heads (validation picks the epoch), store val/test detections.

    Args:
        args: the command line (data_dir, out, size, epochs, seed).

    Returns:
        None; writes ``centernet.keras`` and ``predictions.pkl`` under ``args.out``.
    """
    from fracturelib.data.fracatlas import load_boxes
    from fracturelib.data.pipeline import load_images
    from fracturelib.models import box_decode, centernet, recipe
    from fracturelib.models.localiser import boxes_of
    t0 = time.perf_counter()
    d = split_like_notebook_02(args.data_dir, args.seed)
    boxes = load_boxes(args.data_dir)
    det, head = centernet.build(args.size, 1, width=args.width)
    parts = {s: d[d["split"] == s] for s in ("train", "val", "test")}
    sizes = {s: list(zip(r["width"], r["height"])) for s, r in parts.items()}
    bx_tr = boxes_of(parts["train"], boxes)
    mirror = [i for i, b in enumerate(bx_tr) if b]
    cache = _cache_path(args, parts)                          # the frozen backbone's maps: computed once per split
    if cache.exists():
        with np.load(cache) as z:
            feats = {s: [z[f"{s}{j}"] for j in range(3)] for s in ("train", "mirror", "val", "test")}
    else:
        feats = {}
        for s, r in parts.items():
            imgs = load_images(r, args.size, 1)
            feats[s] = centernet.features(det, imgs, 16)
            if s == "train":
                feats["mirror"] = centernet.features(det, imgs[mirror][:, :, ::-1], 16)
            print(f"{s}: {len(r)} images ({(r.label == 'fractured').sum()} fractured), features "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            del imgs
        np.savez(cache, **{f"{s}{j}": a for s, v in feats.items() for j, a in enumerate(v)})
    bx_va = boxes_of(parts["val"], boxes)                      # validation boxes: epoch selection only
    m_boxes = [centernet.mirror_boxes(bx_tr[i], sizes["train"][i][0]) for i in mirror]
    x_tr = [np.concatenate([a, b]) for a, b in zip(feats["train"], feats["mirror"])]
    res = centernet.train_on_features(head, x_tr, bx_tr + m_boxes, sizes["train"] + [sizes["train"][i] for i in mirror],
                                      feats["val"], bx_va, sizes["val"], args.size, epochs=args.epochs,
                                      batch_size=32, learning_rate=args.lr, patience=args.patience, seed=args.seed,
                                      verbose=True, t0=t0, n_images=len(parts["train"]), negatives=args.negatives)
    print(res, flush=True)
    out = Path(args.out)
    det.save(out / "centernet.keras")
    y_tr = (parts["train"]["label"] == "fractured").to_numpy(int)
    probe = recipe.linear_probe(feats["train"][2].astype(np.float32).mean(axis=(1, 2)), y_tr)
    pred = {"result": {k: v for k, v in res.__dict__.items() if k != "val_detections"}, "size": args.size}
    for s in ("val", "test"):
        heat, size, off = centernet.head_outputs(head, feats[s])
        pred[s] = {"rows": parts[s][["relpath", "label", "width", "height"]].reset_index(drop=True),
                   "dets": [box_decode.decode(heat[i], size[i], off[i], 100, 0.0, wh, args.size)
                            for i, wh in enumerate(sizes[s])],
                   "probe": probe.predict_proba(feats[s][2].astype(np.float32).mean(axis=(1, 2)))[:, 1]}
    (out / "predictions.pkl").write_bytes(pickle.dumps(pred))
    print(f"done in {time.perf_counter() - t0:.0f} s", flush=True)


def evaluate(args) -> None:
    """The detection table, FROC and the image-level scores from ``predictions.pkl`` (test boxes read here).

    Args:
        args: the command line (data_dir, out, n_boot, seed).

    Returns:
        None; prints the tables and writes ``figures.json`` under ``args.out``.
    """
    from fracturelib.data.fracatlas import load_boxes
    from fracturelib.models.detector_scoring import score_detections
    from fracturelib.models.localiser import boxes_of
    out = Path(args.out)
    pred = pickle.loads((out / "predictions.pkl").read_bytes())
    boxes = load_boxes(args.data_dir)
    if args.redecode:                      # the saved heads on the cached features, decoded by today's code
        import keras

        from fracturelib.models import backbones, box_decode, centernet
        head = keras.models.load_model(out / "centernet.keras", compile=False,
                                       custom_objects=backbones.custom_objects()).get_layer("centernet_head")
        with np.load(_cache_path(args)) as z:
            for s in ("val", "test"):
                heat, size, off = centernet.head_outputs(head, [z[f"{s}{j}"] for j in range(3)])
                rows = pred[s]["rows"]
                pred[s]["dets"] = [box_decode.decode(heat[i], size[i], off[i], 100, 0.0, wh, pred["size"])
                                   for i, wh in enumerate(zip(rows["width"], rows["height"]))]
    splits = ("val", "test")
    r = score_detections({s: pred[s]["dets"] for s in splits}, {s: boxes_of(pred[s]["rows"], boxes) for s in splits},
                         {s: (pred[s]["rows"]["label"] == "fractured").to_numpy(int) for s in splits},
                         {s: pred[s]["probe"] for s in splits}, n_boot=args.n_boot, seed=args.seed,
                         box_fp_rate=args.box_fp_rate)
    gt = r.expert["test"]
    print(f"== test: {len(gt)} images, {sum(map(bool, gt))} with boxes, {sum(map(len, gt))} boxes")
    print(r.table.round(3).to_string())
    print("FROC with IoU>=0.3 hits:", {k: round(v, 3) for k, v in r.froc_iou.items()})
    print("image level, test (classifier = a logistic probe on the frozen features):")
    print(r.image_level.round(4).to_string())
    print(f"validation: fused {'beats' if r.fusion_preferred else 'does not beat'} the classifier; "
          f"weights {r.fusion_coef}; box threshold {r.box_threshold:.3f} ({args.box_fp_rate} FP/image on validation)")
    figs = {"train": {k: v for k, v in pred["result"].items() if k != "history"}, "history": pred["result"]["history"],
            "test": {"detection": r.card_metrics(), "froc_iou03": r.froc_iou,
                     "image_level": r.image_level.round(4).to_dict("index")},
            "val_image_level": r.image_level_val.round(4).to_dict("index"), "fusion_preferred": r.fusion_preferred,
            "fusion_coef": r.fusion_coef, "box_threshold": r.box_threshold, **r.key_figures()}
    (out / "figures.json").write_text(json.dumps(figs, indent=1, default=float))


def main() -> None:
    """Command line: ``train`` or ``evaluate``.

    Returns:
        None.
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["train", "evaluate"])
    ap.add_argument("--data-dir", default="../shared/data/fracatlas")
    ap.add_argument("--out", default="/tmp/det_full")
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--patience", type=int, default=6)
    ap.add_argument("--width", type=int, default=32, help="channels of the pyramid and heads")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--negatives", type=float, default=0.5, help="share of non-fractured images per epoch")
    ap.add_argument("--box-fp-rate", type=float, default=0.5, help="FP/image on validation at the box threshold")
    ap.add_argument("--redecode", action="store_true", help="evaluate: decode the saved heads' outputs again")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (train if args.stage == "train" else evaluate)(args)


if __name__ == "__main__":
    main()
