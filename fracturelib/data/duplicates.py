"""Exact and near-duplicate images, grouped, and the copies that cross splits or labels.

Exact copies share a SHA-256 of their bytes. Near copies (resized, re-encoded, mirrored) are found
in two steps: candidates share a perceptual hash (`imagehash.phash`, a maintained 64-bit DCT hash,
on the image and on its mirror, Hamming distance at most ``max_distance``), then a candidate is
confirmed when the 32x32 grayscale thumbnails correlate at ``min_correlation`` or more. pHash alone
is too loose for radiographs: different X-rays of the same anatomy share most low frequencies
(on FracAtlas, distance <= 6 pairs 1,146 images, most of them distinct exposures). Groups are the
connected components of the confirmed pairs and the exact copies.
"""
from __future__ import annotations

import hashlib

import imagehash
import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from .schema import usable


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def phash_pair(im: Image.Image) -> tuple[str, str]:
    """pHash of the image and of its left-right mirror, as 16-hex-digit strings."""
    g = im.convert("L")
    return str(imagehash.phash(g)), str(imagehash.phash(ImageOps.mirror(g)))


THUMB = 32


def thumbnail(im: Image.Image) -> np.ndarray:
    """Zero-mean, unit-variance 32x32 grayscale vector used to confirm near copies."""
    a = np.asarray(im.convert("L").resize((THUMB, THUMB), Image.BILINEAR), np.float32).ravel()
    return (a - a.mean()) / (a.std() + 1e-6)


def _bits(hexes: pd.Series) -> np.ndarray:
    ints = np.array([int(h, 16) for h in hexes], dtype=np.uint64)
    return ((ints[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).astype(np.float32)


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a @ (1 - b).T + (1 - a) @ b.T


def near_pairs(df: pd.DataFrame, max_distance: int, thumbs: dict | None = None,
               min_correlation: float = 0.98, chunk: int = 2048) -> pd.DataFrame:
    """Pairs (i < j, manifest index labels) of near copies: pHash candidates, confirmed by
    thumbnail correlation when ``thumbs`` (index label -> :func:`thumbnail`) are given."""
    ok = usable(df)[lambda d: d["phash"].astype(bool)]
    if len(ok) < 2:
        return pd.DataFrame(columns=["i", "j", "distance", "mirrored", "correlation"])
    a, m = _bits(ok["phash"]), _bits(ok["phash_mirror"])
    idx = ok.index.to_numpy()
    rows = []
    for s in range(0, len(ok), chunk):
        d_plain = _hamming(a[s:s + chunk], a)
        d_mirror = _hamming(a[s:s + chunk], m)
        d = np.minimum(d_plain, d_mirror)
        ii, jj = np.nonzero(d <= max_distance)
        keep = (ii + s) < jj
        for i, j in zip(ii[keep], jj[keep]):
            a_id, b_id = idx[i + s], idx[j]
            mirrored = bool(d_mirror[i, j] < d_plain[i, j])
            corr = np.nan
            if thumbs is not None and a_id in thumbs and b_id in thumbs:
                tb = thumbs[b_id].reshape(THUMB, THUMB)
                tb = (tb[:, ::-1] if mirrored else tb).ravel()
                corr = float(np.mean(thumbs[a_id] * tb))
                if corr < min_correlation:
                    continue
            rows.append((a_id, b_id, int(d[i, j]), mirrored, corr))
    return pd.DataFrame(rows, columns=["i", "j", "distance", "mirrored", "correlation"])


def _components(n_items: list, pairs) -> dict:
    parent = {k: k for k in n_items}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return {k: find(k) for k in n_items}


def assign_groups(df: pd.DataFrame, max_distance: int, thumbs: dict | None = None,
                  min_correlation: float = 0.98) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add ``dup_group`` (-1 = unique) and ``dup_kind`` ("exact"/"near"/"") columns.

    Returns the manifest and the table of near pairs. Exact copies are grouped by hash whatever
    their status; near copies only among decodable files.
    """
    df = df.copy()
    pairs = near_pairs(df, max_distance, thumbs, min_correlation)
    exact_pairs = []
    has_hash = df[df["sha256"].astype(bool)]
    for _, g in has_hash.groupby("sha256"):
        ids = list(g.index)
        exact_pairs += [(ids[0], k) for k in ids[1:]]
    comp = _components(list(df.index), exact_pairs + list(zip(pairs["i"], pairs["j"])))
    roots = pd.Series(comp)
    sizes = roots.map(roots.value_counts())
    grouped = roots[sizes > 1]
    numbering = {r: n for n, r in enumerate(sorted(grouped.unique()))}
    df["dup_group"] = roots.map(lambda r: numbering.get(r, -1)).astype(int)
    exact_members = {k for p in exact_pairs for k in p}
    df["dup_kind"] = ""
    df.loc[df["dup_group"] >= 0, "dup_kind"] = "near"
    df.loc[list(exact_members), "dup_kind"] = "exact"
    return df, pairs


def _groups_spanning(df: pd.DataFrame, column: str) -> pd.DataFrame:
    g = usable(df)[lambda d: d["dup_group"] >= 0]
    n = g.groupby("dup_group")[column].nunique()
    return g[g["dup_group"].isin(n[n > 1].index)].sort_values(["dup_group", column])


def cross_split_copies(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of duplicate groups that have members in more than one split (leakage)."""
    return _groups_spanning(df[df["split"] != ""], "split")


def cross_label_groups(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of duplicate groups whose members carry different labels (label noise)."""
    return _groups_spanning(df, "label")


def leaked_test_images(df: pd.DataFrame, test: str = "test", train: str = "train") -> pd.Index:
    """Index of usable ``test`` rows that have an exact or near copy in ``train``."""
    ok = usable(df)[lambda d: d["dup_group"] >= 0]
    train_groups = set(ok.loc[ok["split"] == train, "dup_group"])
    t = ok[(ok["split"] == test) & ok["dup_group"].isin(train_groups)]
    return t.index
