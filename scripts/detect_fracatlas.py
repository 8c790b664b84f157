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


def train(args) -> None:
    """Cache features, train the heads (validation picks the epoch), store val/test detections.

    Args:
        args: the command line (data_dir, out, size, epochs, seed).

    Returns:
        None; writes ``centernet.keras`` and ``predictions.pkl`` under ``args.out``.
    """
    from fracturelib.data.fracatlas import load_boxes
    from fracturelib.data.pipeline import load_images
    from fracturelib.models import centernet, recipe
    from fracturelib.models.localiser import boxes_of
    t0 = time.perf_counter()
    d = split_like_notebook_02(args.data_dir, args.seed)
    boxes = load_boxes(args.data_dir)
    det, head = centernet.build(args.size, 1)
    parts = {s: d[d["split"] == s] for s in ("train", "val", "test")}
    feats, sizes = {}, {}
    for s, r in parts.items():
        imgs = load_images(r, args.size, 1)
        feats[s] = centernet.features(det, imgs, 16)
        sizes[s] = list(zip(r["width"], r["height"]))
        if s == "train":
            bx_tr = boxes_of(r, boxes)
            mirror = [i for i, b in enumerate(bx_tr) if b]
            feats["mirror"] = centernet.features(det, imgs[mirror][:, :, ::-1], 16)
        print(f"{s}: {len(r)} images ({(r.label == 'fractured').sum()} fractured), features "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        del imgs
    bx_va = boxes_of(parts["val"], boxes)                      # validation boxes: epoch selection only
    m_boxes = [[[sizes["train"][i][0] - x - bw, y, bw, bh] for x, y, bw, bh in bx_tr[i]] for i in mirror]
    x_tr = [np.concatenate([a, b]) for a, b in zip(feats["train"], feats["mirror"])]
    res = centernet.train_on_features(head, x_tr, bx_tr + m_boxes, sizes["train"] + [sizes["train"][i] for i in mirror],
                                      feats["val"], bx_va, sizes["val"], args.size, epochs=args.epochs,
                                      batch_size=32, patience=args.patience, seed=args.seed, verbose=True, t0=t0,
                                      n_images=len(parts["train"]), negatives=args.negatives)
    print(res, flush=True)
    out = Path(args.out)
    det.save(out / "centernet.keras")
    y_tr = (parts["train"]["label"] == "fractured").to_numpy(int)
    probe = recipe.linear_probe(feats["train"][2].astype(np.float32).mean(axis=(1, 2)), y_tr)
    pred = {"result": res.__dict__, "size": args.size}
    for s in ("val", "test"):
        heat, size, off = centernet.head_outputs(head, feats[s])
        pred[s] = {"rows": parts[s][["relpath", "label", "width", "height"]].reset_index(drop=True),
                   "dets": [centernet.decode(heat[i], size[i], off[i], 100, 0.0, wh, args.size)
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
    from fracturelib.metrics import detection
    from fracturelib.models import centernet
    from fracturelib.models.localiser import boxes_of
    out = Path(args.out)
    pred = pickle.loads((out / "predictions.pkl").read_bytes())
    boxes = load_boxes(args.data_dir)
    figs = {"train": {k: v for k, v in pred["result"].items() if k != "history"}}
    for s in ("val", "test"):
        p = pred[s]
        gt = boxes_of(p["rows"], boxes)
        y = (p["rows"]["label"] == "fractured").to_numpy(int)
        p.update(gt=gt, y=y, box=centernet.image_scores(p["dets"]))
    fuse = detection.fit_fusion(pred["val"]["y"], {"box": pred["val"]["box"], "probe": pred["val"]["probe"]})
    for s in ("val", "test"):
        p = pred[s]
        p["fused"] = fuse({"box": p["box"], "probe": p["probe"]})
        tab = detection.detection_report(p["gt"], p["dets"], n_boot=args.n_boot if s == "test" else 0, seed=args.seed)
        iou = detection.froc(p["gt"], p["dets"], hit="iou")
        img = detection.image_level_table(p["y"], {k: p[k] for k in ("probe", "box", "fused")}, "probe")
        print(f"== {s}: {len(p['y'])} images, {p['y'].sum()} fractured, {sum(map(len, p['gt']))} boxes")
        print(tab.round(3).to_string())
        print("FROC with IoU>=0.3 hits:", {k: round(v, 3) for k, v in iou.items()})
        print(img.round(4).to_string())
        figs[s] = {"detection": tab.round(4).to_dict("index"), "froc_iou03": iou,
                   "image_level": img.round(4).to_dict("index")}
    figs["fusion_coef"] = {k: float(v) for k, v in fuse.coef.items()}
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
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--negatives", type=float, default=0.5, help="share of non-fractured images per epoch")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (train if args.stage == "train" else evaluate)(args)


if __name__ == "__main__":
    main()
