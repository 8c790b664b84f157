"""Build the embedded default datasets in this folder from the full public copies.

    python dataset/make_default.py --src ../shared/data

Both outputs keep their dataset's original layout (so the same loaders read the full sets) and
their messiness: byte-identical copies, near copies across splits, the FracAtlas label conflict,
truncated JPEGs (re-truncated after re-encoding), text burnt into images. Images are re-encoded as
JPEG (quality 85, longest side at most MAX_SIDE px); COCO boxes and polygons are scaled with them.
Deterministic: the same source gives byte-identical output.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import shutil
from pathlib import Path

import pandas as pd
from PIL import Image, ImageFile

HERE = Path(__file__).resolve().parent
BB_MAX_SIDE = 224
FA_MAX_SIDE = 256
FA_FRACTURED = 330       # of 630 (all authors' valid + test fractures, the rest from train)
FA_NON_FRACTURED = 560   # of 2,885, plus the deliberately broken/duplicated ones below
FA_TRUNCATED = 10
QUALITY = 85
SEED = 7


def reencode(src: Path, max_side: int) -> tuple[bytes, float]:
    """JPEG bytes of ``src`` with its longest side <= max_side, and the scale factor applied."""
    im = Image.open(src)
    ImageFile.LOAD_TRUNCATED_IMAGES = True   # only to re-encode the truncated files kept on purpose
    try:
        im.load()
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")
    scale = min(1.0, max_side / max(im.size))
    if scale < 1.0:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                       Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=QUALITY, optimize=True)
    return buf.getvalue(), scale


def jpeg_complete(path: Path) -> bool:
    from fracturelib.data.imageio import jpeg_end
    return jpeg_end(path.read_bytes()) > 0


def make_bone_break(src: Path, dst: Path) -> int:
    """Every one of the 1,129 images, layout and file names kept, downscaled."""
    if dst.exists():
        shutil.rmtree(dst)
    n = 0
    for f in sorted(src.rglob("*.jpg")):
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(reencode(f, BB_MAX_SIDE)[0])
        n += 1
    shutil.copy(src / "README.dataset.txt", dst / "README.dataset.txt")
    return n


def _pick_fracatlas(src: Path) -> list[str]:
    rng = random.Random(SEED)
    meta = pd.read_csv(src / "dataset.csv")
    split_dir = src / "Utilities" / "Fracture Split"
    authors = {s: list(pd.read_csv(split_dir / f"{s}.csv")["image_id"]) for s in ("train", "valid", "test")}
    fractured = sorted(p.name for p in (src / "images" / "Fractured").glob("*.jpg"))
    non = sorted(p.name for p in (src / "images" / "Non_fractured").glob("*.jpg"))
    keep_f = set(authors["valid"]) | set(authors["test"]) | {"IMG0003298.jpg"}
    rest = sorted(set(fractured) - keep_f)
    keep_f |= set(rng.sample(rest, FA_FRACTURED - len(keep_f)))
    broken = sorted(n for n in non if not jpeg_complete(src / "images" / "Non_fractured" / n))
    keep_n = set(rng.sample(broken, FA_TRUNCATED))
    # every byte-identical group, both sides
    import hashlib
    by_hash: dict[str, list[str]] = {}
    for folder in ("Fractured", "Non_fractured"):
        for p in sorted((src / "images" / folder).glob("*.jpg")):
            by_hash.setdefault(hashlib.sha256(p.read_bytes()).hexdigest(), []).append(p.name)
    for names in by_hash.values():
        if len(names) > 1:
            (keep_f if names[0] in fractured else keep_n).update(
                n for n in names if n in non or n in fractured)
    keep_n |= set(rng.sample(sorted(set(non) - set(broken) - keep_n), FA_NON_FRACTURED))
    assert set(meta["image_id"]) >= keep_f | keep_n
    return sorted(keep_f | keep_n)


def make_fracatlas(src: Path, dst: Path) -> int:
    if dst.exists():
        shutil.rmtree(dst)
    names = _pick_fracatlas(src)
    scales = {}
    for name in names:
        folder = "Fractured" if (src / "images" / "Fractured" / name).exists() else "Non_fractured"
        f = src / "images" / folder / name
        data, scale = reencode(f, FA_MAX_SIDE)
        if not jpeg_complete(f):            # keep it broken the way the original is broken
            data = data[: int(len(data) * 0.8)]
        out = dst / "images" / folder / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        scales[name] = scale
    keep = set(names)
    meta = pd.read_csv(src / "dataset.csv")
    meta[meta["image_id"].isin(keep)].to_csv(dst / "dataset.csv", index=False)
    (dst / "Utilities" / "Fracture Split").mkdir(parents=True)
    for s in ("train", "valid", "test"):
        t = pd.read_csv(src / "Utilities" / "Fracture Split" / f"{s}.csv")
        t[t["image_id"].isin(keep)].to_csv(dst / "Utilities" / "Fracture Split" / f"{s}.csv", index=False)
    coco = json.loads((src / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json").read_text())
    images = [im for im in coco["images"] if im["file_name"] in keep]
    ids = {im["id"]: scales[im["file_name"]] for im in images}
    for im in images:
        s = scales[im["file_name"]]
        im["width"], im["height"] = round(im["width"] * s), round(im["height"] * s)
    anns = []
    for a in coco["annotations"]:
        if a["image_id"] in ids:
            s = ids[a["image_id"]]
            a = dict(a, bbox=[round(v * s, 2) for v in a["bbox"]], area=round(a["area"] * s * s, 2))
            if isinstance(a.get("segmentation"), list):
                a["segmentation"] = [[round(v * s, 2) for v in poly] for poly in a["segmentation"]]
            anns.append(a)
    out = dst / "Annotations" / "COCO JSON"
    out.mkdir(parents=True)
    (out / "COCO_fracture_masks.json").write_text(json.dumps(
        {"info": coco.get("info", {}), "images": images, "annotations": anns,
         "categories": coco["categories"]}, separators=(",", ":")))
    yolo = dst / "Annotations" / "YOLO"
    yolo.mkdir(parents=True)
    for name in names:      # YOLO boxes are normalised: unchanged by the resize
        f = src / "Annotations" / "YOLO" / (Path(name).stem + ".txt")
        if f.exists():
            shutil.copy(f, yolo / f.name)
    return len(names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--dst", type=Path, default=HERE)
    a = ap.parse_args()
    n_bb = make_bone_break(a.src / "bone-break-classification", a.dst / "bone-break-classification")
    n_fa = make_fracatlas(a.src / "fracatlas", a.dst / "fracatlas")
    print(f"bone-break-classification: {n_bb} images; fracatlas: {n_fa} images")


if __name__ == "__main__":
    main()
