"""The manifest: one row per file found, each either used (``ok``) or skipped with a reason.

Columns: path, relpath, label, split, status, reason, note, width, height, mode, format, bytes,
sha256, phash, phash_mirror, native, dup_group, dup_kind (+ FracAtlas metadata when present; + the DICOM
acquisition fields and ``patient_group`` when a file is DICOM, :data:`fracturelib.data.dicom.META_COLUMNS`:
never a name, an ID, a date or a UID).
Invariant (:mod:`fracturelib.data.layout`): every entry under the root that is not a folder is a
row (used, or skipped with its reason: hidden, broken link, pipe, link loop, or the layout rule that
leaves it out) or, when it is a visible regular file outside the image folders, one of
``df.attrs["other_files"]``; nothing is dropped silently.
"""
from __future__ import annotations

import hashlib
import math
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from fracturelib import config, files
from fracturelib import progress as progress_bars
from fracturelib.data import dicom, duplicates, fracatlas
from fracturelib.data.imageio import check_image
from fracturelib.data.layout import discover
from fracturelib.data.schema import COLUMNS, usable  # noqa: F401 - usable is part of this module's API


def _row(entry, root: Path, modalities=config.RADIOGRAPH_MODALITIES) -> tuple:
    """(thumbnail or None, manifest row) for one file; never raises."""
    row = {"path": str(entry.path), "relpath": entry.path.relative_to(root).as_posix(),
           "label": entry.label, "split": entry.split, "status": "skipped", "reason": entry.skip,
           "note": _join(entry.note, "" if _utf8(str(entry.path)) else "file name is not valid UTF-8"),
           "width": 0, "height": 0, "mode": "", "format": "", "bytes": 0, "sha256": "",
           "phash": "", "phash_mirror": "", "native": False}
    if entry.skip:
        return None, row
    try:
        chk = check_image(entry.path, modalities=modalities)
        sha = files.sha256_file(entry.path, default="") if chk.bytes else ""
        ph, phm = duplicates.phash_pair(chk.image) if chk.ok else ("", "")
        thumb = duplicates.thumbnail(chk.image) if chk.ok else None
    except MemoryError:
        row["reason"] = "out of memory while reading this file; downscale it or scan with fewer workers"
        return None, row
    row.update(status=chk.status, reason=chk.reason, note=_join(row["note"], chk.note), width=chk.width,
               height=chk.height, mode=chk.mode, format=chk.format, bytes=chk.bytes, sha256=sha,
               phash=ph, phash_mirror=phm, native=chk.native, **chk.meta)
    return thumb, row


def _join(*notes: str) -> str:
    return "; ".join(x for x in notes if x)


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


#: characters that force a CSV field into quotes: the separator, the quote, and every control or
#: line-breaking character (a file name may hold ``\r``, ``\n``, ``\x0b`` ...)
_NEEDS_QUOTES = re.compile('[,"\x00-\x1f\x7f-\x9f\u2028\u2029]')


def _csv_field(value) -> str:
    """One value as pandas writes it ("" for missing), quoted when it holds a special character."""
    if value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return ""
    s = repr(float(value)) if isinstance(value, (float, np.floating)) else str(value)
    return f'"{s.replace(chr(34), chr(34) * 2)}"' if _NEEDS_QUOTES.search(s) else s


def manifest_csv(df: pd.DataFrame) -> str:
    """The manifest as CSV text that reads back with the same rows whatever the file names.

    Fields holding a separator, a quote or any control character (``\r`` or ``\n`` in a file
    name) are quoted; the others are written as pandas writes them.

    Args:
        df: the manifest (or any table).

    Returns:
        The CSV text, header first, ``\n`` after every line.
    """
    lines = [",".join(_csv_field(c) for c in df.columns)]
    lines += [",".join(map(_csv_field, row)) for row in df.itertuples(index=False, name=None)]
    return "\n".join(lines) + "\n"


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the manifest as CSV, atomically (:func:`fracturelib.files.atomic_output`: a full or
    read-only disk is one ``OutputError`` line and leaves the old file as it was; a symlinked
    ``path`` is written through). File names that are not valid UTF-8 are written back byte for
    byte (``surrogateescape``), so the paths still open the files; read it with
    ``pd.read_csv(path, encoding_errors="surrogateescape")``.

    Args:
        df: the manifest (:func:`build_manifest`).
        path: the CSV file; it may not be one of the files the manifest lists.

    Returns:
        ``path`` as a Path.
    """
    from fracturelib.files import atomic_output, refuse_overwriting_inputs, resolve_target
    path = Path(path)
    if "path" in df and resolve_target(path).exists():     # a new file cannot be one of the inputs
        refuse_overwriting_inputs([path], df["path"], "--out")
    with atomic_output(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
        f.write(manifest_csv(df))
    return path


def build_manifest(root: str | Path, min_correlation: float = config.NEAR_DUP_MIN_CORRELATION,
                   workers: int = 4, progress: bool | None = None,
                   modalities=config.RADIOGRAPH_MODALITIES) -> pd.DataFrame:
    """Scan ``root``: discover the layout, check every file, hash it, group duplicates.

    Every entry under ``root`` becomes a row or one of ``df.attrs["other_files"]`` (the
    accounting rule of :func:`fracturelib.data.layout.discover`).

    Args:
        root: the dataset folder.
        min_correlation: thumbnail correlation that confirms a near copy.
        workers: threads reading the files.
        progress: a bar (None: in an interactive notebook only, see :mod:`fracturelib.progress`).
        modalities: DICOM Modality codes used (default: radiographs); None uses every modality.

    Returns:
        The manifest; ``attrs`` holds layout, root, other_files and near_pairs.
    """
    layout = discover(root)
    it = layout.entries
    with ThreadPoolExecutor(max_workers=workers) as pool:
        rows = pool.map(lambda e: _row(e, layout.root, modalities), it)  # in order, each row never raises
        if progress or progress is None and progress_bars.enabled():
            from tqdm.auto import tqdm
            rows = tqdm(rows, total=len(it), desc=f"scan {layout.root.name}", unit="file", leave=False)
        results = list(rows)
    has_dicom = any("patient_group" in r for _, r in results)
    df = pd.DataFrame([r for _, r in results], columns=COLUMNS + (dicom.META_COLUMNS if has_dicom else []))
    if has_dicom:
        text = [c for c in dicom.META_COLUMNS if not c.endswith("_mm")]
        df[text] = df[text].fillna("")
    thumbs = {i: t for i, (t, _) in enumerate(results) if t is not None}
    if layout.name == "fracatlas":
        df = _add_fracatlas(df, layout.root)
    problems = df.attrs.get("metadata_problems", [])
    df, pairs = duplicates.assign_groups(df, thumbs, min_correlation)
    df.attrs.update(metadata_problems=problems, layout=layout.name, root=str(layout.root),
                    other_files=[p.relative_to(layout.root).as_posix() for p in layout.other_files],
                    near_pairs=len(pairs))
    return df


def _extra(load, root: Path, empty, problems: list[str]):
    """A FracAtlas metadata file's content, or ``empty`` with the reason in ``problems`` when it is damaged:
    the images are still used by their folders' labels (the scan says what was not used)."""
    try:
        return load(root)
    except fracatlas.FracAtlasFileError as e:
        problems.append(str(e))
        return empty


def _add_fracatlas(df: pd.DataFrame, root: Path) -> pd.DataFrame:
    problems: list[str] = []
    meta = _extra(fracatlas.load_metadata, root, None, problems)
    names = df["relpath"].map(fracatlas.file_name)
    if meta is not None:
        m = meta.reindex(names)
        for c in fracatlas.METADATA_COLUMNS:
            if c in m:
                df[c] = m[c].to_numpy()
        csv_label = m["fractured"].map({1: "fractured", 0: "non-fractured"}).to_numpy()
        conflict = pd.notna(m["fractured"].to_numpy()) & (csv_label != df["label"].to_numpy())
        for i in df.index[conflict]:
            msg = f"label conflict: folder says {df.at[i, 'label']}, dataset.csv says {csv_label[i]}"
            df.at[i, "note"] = "; ".join(x for x in (df.at[i, "note"], msg) if x)
    split = _extra(fracatlas.load_author_split, root, {}, problems)
    df["author_split"] = names.map(split).fillna("")
    boxes = _extra(fracatlas.load_boxes, root, {}, problems)
    df["n_boxes"] = [len(rec["boxes"]) for rec in fracatlas.records_for(df["relpath"], boxes)]
    df.attrs["metadata_problems"] = problems
    return df


def manifest_hash(df: pd.DataFrame) -> str:
    """Content hash of what a model was trained from, stable across machines and paths.

    Args:
        df: the manifest; its relpath, label, split, status and sha256 columns are hashed, in relpath order.

    Returns:
        16 hex digits (the start of a SHA-256).
    """
    cols = ["relpath", "label", "split", "status", "sha256"]
    text = df[cols].sort_values("relpath").to_csv(index=False)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def summary(df: pd.DataFrame) -> dict:
    """Numbers a human checks first: files, used, skipped by reason, classes, groups.

    Args:
        df: a manifest with the duplicate columns (dup_group, dup_kind).

    Returns:
        A dict: layout, files, used, skipped, skipped_by_reason (reason before its first ":" -> count),
        classes (sorted labels), duplicate_groups and exact_groups.
    """
    ok = df["status"] == "ok"
    reasons = df.loc[~ok, "reason"].str.split(":").str[0].value_counts().to_dict()
    return {"layout": df.attrs.get("layout", "?"), "files": len(df), "used": int(ok.sum()),
            "skipped": int((~ok).sum()), "skipped_by_reason": reasons,
            "classes": sorted(c for c in df["label"].unique() if c),
            "duplicate_groups": int(df.loc[df["dup_group"] >= 0, "dup_group"].nunique()),
            "exact_groups": int(df.loc[df["dup_kind"] == "exact", "dup_group"].nunique())}
