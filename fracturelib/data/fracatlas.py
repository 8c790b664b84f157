"""FracAtlas extras: per-image metadata (`dataset.csv`) and expert fracture boxes/polygons (COCO)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

#: body regions flagged in dataset.csv (one or more per image)
REGIONS = ["hand", "leg", "hip", "shoulder", "mixed"]
#: views and acquisition flags in dataset.csv
VIEWS = ["frontal", "lateral", "oblique"]
METADATA_COLUMNS = [*REGIONS[:4], "mixed", "hardware", "multiscan", "fractured", "fracture_count", *VIEWS]
COCO_RELPATH = Path("Annotations") / "COCO JSON" / "COCO_fracture_masks.json"


class FracAtlasFileError(ValueError):
    """A FracAtlas metadata file exists but cannot be read as FracAtlas writes it; the message is one
    line naming the file, what is wrong and that it was not used."""


def _damaged(p: Path, why: str) -> FracAtlasFileError:
    return FracAtlasFileError(f"{p}: not used ({why}); restore it from the FracAtlas archive")


def _read_csv(p: Path, need: tuple[str, ...]) -> pd.DataFrame:
    """A CSV that must have the columns ``need``; any failure to read it is a FracAtlasFileError."""
    try:
        df = pd.read_csv(p, dtype={"image_id": str}, nrows=1_000_000)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise _damaged(p, f"unreadable CSV: {str(e).splitlines()[0][:120]}") from None
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise _damaged(p, f"no {', '.join(missing)} column")
    return df


def load_metadata(root: str | Path) -> pd.DataFrame | None:
    """`dataset.csv` indexed by file name, or None when the folder has none.

    Args:
        root: the FracAtlas folder.

    Returns:
        DataFrame indexed by ``image_id`` (file name) with the CSV's columns (regions, views, flags), or None.

    Raises:
        FracAtlasFileError: the file exists but is not FracAtlas' dataset.csv (no image_id/fractured).
    """
    p = Path(root) / "dataset.csv"
    if not p.exists():
        return None
    df = _read_csv(p, ("image_id", "fractured"))
    return df.drop_duplicates("image_id").set_index("image_id")


def load_author_split(root: str | Path) -> dict[str, str]:
    """The authors' train/valid/test split of the fractured images: file name -> split.

    Args:
        root: the FracAtlas folder (its ``Utilities/Fracture Split/*.csv`` are read).

    Returns:
        Dict file name -> ``"train"``, ``"val"`` or ``"test"``; empty when the CSVs are absent.

    Raises:
        FracAtlasFileError: a split CSV exists but has no image_id column or cannot be read.
    """
    out = {}
    folder = Path(root) / "Utilities" / "Fracture Split"
    for name, split in (("train", "train"), ("valid", "val"), ("test", "test")):
        p = folder / f"{name}.csv"
        if p.exists():
            for fn in _read_csv(p, ("image_id",))["image_id"]:
                out[str(fn)] = split
    return out


def load_boxes(root: str | Path) -> dict[str, dict]:
    """File name -> {"width", "height", "boxes": [[x, y, w, h], ...], "polygons": [[x0, y0, ...]]}.

    Coordinates are pixels of the image as stored (COCO convention, origin top-left).

    Args:
        root: the FracAtlas folder (its COCO JSON under ``Annotations/COCO JSON`` is read).

    Returns:
        Dict file name -> record (also with ``file_name``); floats for coordinates; polygons with
        fewer than three points dropped. Empty when the COCO file is absent.

    Raises:
        FracAtlasFileError: the COCO file exists but cannot be read as FracAtlas writes it.
    """
    p = Path(root) / COCO_RELPATH
    if not p.exists():
        return {}
    try:
        coco = json.loads(p.read_bytes())
        by_id = {im["id"]: {"file_name": str(im["file_name"]), "width": im["width"],
                            "height": im["height"], "boxes": [], "polygons": []}
                 for im in coco["images"]}
        for a in coco["annotations"]:
            rec = by_id.get(a["image_id"])
            if rec is None:
                continue
            box = [float(v) for v in a["bbox"]]
            if len(box) != 4:
                raise ValueError(f"annotation {a.get('id')}: a bbox of {len(box)} numbers")
            rec["boxes"].append(box)
            seg = a.get("segmentation") or []
            if isinstance(seg, list):
                rec["polygons"] += [[float(v) for v in poly] for poly in seg if len(poly) >= 6]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise _damaged(p, f"not COCO JSON as FracAtlas writes it: {type(e).__name__} {str(e)[:100]}") from None
    return {r["file_name"]: r for r in by_id.values()}


EMPTY = {"boxes": [], "polygons": []}


def file_name(relpath: str) -> str:
    """The key FracAtlas' annotations use for a manifest row: the file name without its folders.

    Args:
        relpath: the row's path relative to the dataset root.

    Returns:
        The file name.
    """
    return str(relpath).rsplit("/", 1)[-1]


def records_for(relpaths, boxes: dict) -> list[dict]:
    """The annotation record (``boxes`` and ``polygons``) of each row's file; an empty one where none.

    The one place a manifest row is matched to FracAtlas' expert annotations (the localiser's targets,
    the CAM masks and the manifest's ``n_boxes`` all go through it).

    Args:
        relpaths: the rows' ``relpath`` values.
        boxes: :func:`load_boxes`' mapping (file name -> record).

    Returns:
        One ``{"boxes": [[x, y, w, h], ...], "polygons": [...]}`` per row, in order.
    """
    return [{**EMPTY, **boxes.get(file_name(r), {})} for r in relpaths]
