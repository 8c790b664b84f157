"""Exact and near-duplicate images, grouped, and the copies that cross splits or labels.

Exact copies share a SHA-256 of their bytes. Near copies (resized, re-encoded, mirrored, turned by
90, 180 or 270 degrees, e.g. the same pixels shown through another EXIF orientation) are found
in two steps: candidates are each image's nearest neighbours among the 32x32 grayscale thumbnails
(and their mirrored and turned views), found with a ball tree so that a folder of look-alikes costs n log n, not n^2;
a candidate is confirmed when the thumbnails correlate at ``min_correlation`` or more. pHash
(`imagehash.phash`) is kept in the manifest and reported per pair. Looser rules were measured and
rejected because they are not radiograph-safe: on FracAtlas, correlation 0.94 with pHash distance
<= 12 joins 930 pairs of distinct exposures, and ORB keypoints agreeing on one similarity transform
join thousands (the detector's fixed pattern matches across patients). Crops of one figure (common
in Bone Break) therefore stay apart. Groups are connected components (union-find) of the confirmed
pairs and the exact copies.
"""
from __future__ import annotations

import imagehash
import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from fracturelib.data.schema import usable


def phash_pair(im: Image.Image) -> tuple[str, str]:
    """pHash of the image and of its left-right mirror, as 16-hex-digit strings.

    Args:
        im: a PIL image (hashed in grayscale).

    Returns:
        (pHash of the image, pHash of its mirror).
    """
    g = im.convert("L")
    return str(imagehash.phash(g)), str(imagehash.phash(ImageOps.mirror(g)))


THUMB = 32


def thumbnail(im: Image.Image) -> np.ndarray:
    """Zero-mean, unit-variance 32x32 grayscale vector used to confirm near copies.

    Args:
        im: a PIL image.

    Returns:
        A float32 vector of 1024 values (row-major 32 x 32); its norm is about 32 (``THUMB``), so
        the dot product of two divided by 32 each is their correlation.
    """
    a = np.asarray(im.convert("L").resize((THUMB, THUMB), Image.BILINEAR), np.float32).ravel()
    return (a - a.mean()) / (a.std() + 1e-6)


def _bits(hexes: pd.Series) -> np.ndarray:
    ints = np.array([int(h, 16) for h in hexes], dtype=np.uint64)
    return ((ints[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).astype(bool)


def _mirror(t: np.ndarray) -> np.ndarray:
    """Thumbnails (n x 1024) of the left-right mirrored images."""
    return t.reshape(-1, THUMB, THUMB)[:, :, ::-1].reshape(len(t), -1)


#: how each view of :func:`views` is turned from the stored image (mirror, or degrees anticlockwise)
VIEWS = ("", "mirrored", "rotated 90", "rotated 180", "rotated 270")


def views(t: np.ndarray) -> list[np.ndarray]:
    """The thumbnails (n x 1024) as stored, mirrored, and turned by 90, 180 and 270 degrees.

    A copy shown through EXIF orientation 3, 6 or 8 is the stored image turned, and thumbnails
    are square, so a turned copy's thumbnail is the turned thumbnail.

    Args:
        t: thumbnails, one per row (:func:`thumbnail`).

    Returns:
        One array like ``t`` per entry of :data:`VIEWS`, in that order.
    """
    sq = t.reshape(-1, THUMB, THUMB)
    turned = [np.rot90(sq, k, axes=(1, 2)).reshape(len(t), -1) for k in (1, 2, 3)]
    return [t, _mirror(t), *turned]


def candidate_pairs(vectors: np.ndarray, neighbours: int = 8, dims: int = 32) -> np.ndarray:
    """Pairs (i < j, positions) of thumbnails among each other's nearest neighbours, mirrored and
    turned thumbnails (:func:`views`) included: a ball tree on a 32-dimensional PCA projection, so the work grows with
    n log n and the candidates with n, however alike the images are (a group of copies larger than
    ``neighbours`` is still joined, through its members' neighbours).

    Args:
        vectors: unit-norm thumbnails, one per row.
        neighbours: nearest neighbours asked for each view of each thumbnail.
        dims: PCA dimensions of the search space.

    Returns:
        An (m x 2) int array of positions, each pair once.
    """
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    n = len(vectors)
    if n < 2:
        return np.zeros((0, 2), int)
    pca = PCA(n_components=min(dims, n, vectors.shape[1]), random_state=0).fit(vectors)
    z = pca.transform(vectors)
    nn = NearestNeighbors(n_neighbors=min(neighbours + 1, n), algorithm="ball_tree").fit(z)
    found = []
    for q in map(pca.transform, views(vectors)):
        nb = nn.kneighbors(q, return_distance=False)
        found.append(np.stack([np.repeat(np.arange(n), nb.shape[1]), nb.ravel()], axis=1))
    p = np.concatenate(found)
    p = np.sort(p[p[:, 0] != p[:, 1]], axis=1)
    return np.unique(p, axis=0)


def near_pairs(df: pd.DataFrame, thumbs: dict | None = None, min_correlation: float = 0.98,
               neighbours: int = 8) -> pd.DataFrame:
    """Pairs (i < j, manifest index labels) of near copies among usable rows: nearest-neighbour
    candidates (:func:`candidate_pairs`) whose thumbnails, one of them mirrored or turned by 90,
    180 or 270 degrees (:func:`views`) or not, correlate at ``min_correlation`` or more.
    ``thumbs`` (index label -> :func:`thumbnail`) are computed when not given. ``view`` says how
    ``j`` is turned to match ``i`` (:data:`VIEWS`); ``distance`` is the pHash Hamming distance,
    for the record (-1 for turned copies: no pHash of a turned image is kept).

    Args:
        df: the manifest.
        thumbs: index label -> thumbnail, for the usable rows.
        min_correlation: the correlation that confirms a candidate.
        neighbours: nearest neighbours per view in the candidate search.

    Returns:
        The confirmed pairs, columns i, j, distance, mirrored, view, correlation.
    """
    cols = ["i", "j", "distance", "mirrored", "view", "correlation"]
    ok = usable(df)[lambda d: d["phash"].astype(bool)]
    if thumbs is None:
        from fracturelib.data.imageio import check_image
        thumbs = {i: thumbnail(check_image(p, modalities=None).image) for i, p in zip(ok.index, ok["path"])}
    ok = ok[ok.index.isin(list(thumbs))]
    if len(ok) < 2:
        return pd.DataFrame(columns=cols)
    idx = ok.index.to_numpy()
    t = np.stack([thumbs[k] for k in idx]) / THUMB      # unit vectors: dot product = correlation
    pairs = candidate_pairs(t, neighbours)
    i, j = pairs[:, 0], pairs[:, 1]
    corrs = np.stack([np.einsum("nd,nd->n", t[i], v) for v in views(t[j])])
    best = corrs.argmax(axis=0)
    corr, mirrored = corrs.max(axis=0), best == 1
    bits, mbits = _bits(ok["phash"]), _bits(ok["phash_mirror"])
    dist = np.where(mirrored, (bits[i] != mbits[j]).sum(1), (bits[i] != bits[j]).sum(1))
    dist = np.where(best >= 2, -1, dist)
    keep = corr >= min_correlation
    return pd.DataFrame({"i": idx[i[keep]], "j": idx[j[keep]], "distance": dist[keep],
                         "mirrored": mirrored[keep], "view": np.array(VIEWS)[best[keep]],
                         "correlation": corr[keep]}, columns=cols)


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


def assign_groups(df: pd.DataFrame, thumbs: dict | None = None,
                  min_correlation: float = 0.98) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add ``dup_group`` (-1 = unique) and ``dup_kind`` ("exact"/"near"/"") columns.

    Returns the manifest and the table of near pairs. Exact copies are grouped by hash whatever
    their status; near copies only among decodable files.

    Args:
        df: the manifest (path, status, sha256, phash, phash_mirror).
        thumbs: index label -> :func:`thumbnail` of the usable rows; computed from the files when None.
        min_correlation: the thumbnail correlation that confirms a near copy (:func:`near_pairs`).

    Returns:
        (a copy of ``df`` with ``dup_group`` (groups numbered from 0) and ``dup_kind``, the near pairs
        of :func:`near_pairs`).
    """
    df = df.copy()
    pairs = near_pairs(df, thumbs, min_correlation)
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
    """Rows of duplicate groups that have members in more than one split (leakage).

    Args:
        df: a manifest with ``dup_group`` (:func:`assign_groups`); rows without a split are ignored.

    Returns:
        The usable rows of those groups, sorted by dup_group and split.
    """
    return _groups_spanning(df[df["split"] != ""], "split")


def cross_label_groups(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of duplicate groups whose members carry different labels (label noise).

    Args:
        df: a manifest with ``dup_group`` (:func:`assign_groups`).

    Returns:
        The usable rows of those groups, sorted by dup_group and label.
    """
    return _groups_spanning(df, "label")


def leaked_test_images(df: pd.DataFrame, test: str = "test", train: str = "train") -> pd.Index:
    """Index of usable ``test`` rows that have an exact or near copy in ``train``.

    Args:
        df: a manifest with ``split`` and ``dup_group`` (:func:`assign_groups`).
        test, train: the names of the two splits compared.

    Returns:
        The manifest index labels of those test rows.
    """
    ok = usable(df)[lambda d: d["dup_group"] >= 0]
    train_groups = set(ok.loc[ok["split"] == train, "dup_group"])
    t = ok[(ok["split"] == test) & ok["dup_group"].isin(train_groups)]
    return t.index
