"""Exploratory numbers for notebook 01: what is in a dataset and what a modeller must watch for."""
from __future__ import annotations

import numpy as np
import pandas as pd

from fracturelib.data.duplicates import cross_label_groups, cross_split_copies, leaked_test_images
from fracturelib.data.fracatlas import REGIONS, VIEWS
from fracturelib.data.imageio import read_image
from fracturelib.data.schema import usable


def counts(df: pd.DataFrame) -> pd.DataFrame:
    """Usable files per class and split, with totals and each class's share.

    Args:
        df: the scan manifest (``status``, ``label``, ``split`` columns).

    Returns:
        DataFrame indexed by label: one count column per split (``all`` where the dataset has no
        split), ``total``, and ``share`` of all usable files (rounded to 3 decimals).
    """
    ok = usable(df).assign(split=lambda d: d["split"].replace("", "all"))
    t = ok.groupby(["label", "split"]).size().unstack(fill_value=0)
    t["total"] = t.sum(axis=1)
    t["share"] = (t["total"] / t["total"].sum()).round(3)
    return t


def size_table(df: pd.DataFrame) -> pd.DataFrame:
    """Width, height, aspect ratio and megapixels per class: how much resizing pads and shrinks.

    Args:
        df: the scan manifest (``width``, ``height`` in pixels, ``label``).

    Returns:
        ``describe()`` table per label (count, mean, std, min, median, max of each), rounded to 2 decimals.
    """
    ok = usable(df).copy()
    ok["aspect"] = ok["width"] / ok["height"]
    ok["megapixels"] = ok["width"] * ok["height"] / 1e6
    return ok.groupby("label")[["width", "height", "aspect", "megapixels"]].describe(
        percentiles=[0.5]).round(2)


def intensity_stats(df: pd.DataFrame, per_class: int = 150, size: int = 128,
                    seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-image mean/std/dark-share on a sample of each class, and mean 64-bin histograms.

    Args:
        df: the scan manifest (``path``, ``label``).
        per_class: images sampled per class (all when fewer).
        size: side the grayscale images are resized to before measuring.
        seed: sampling seed.

    Returns:
        ``(per_image, histograms)``: one row per sampled image with ``label``, ``mean``, ``std``
        (pixel values 0-255), ``dark_share`` (< 20) and ``bright_share`` (> 235); and one column
        per label of mean density histograms, indexed by the 64 bins' lower edges.
    """
    import cv2
    ok = usable(df)
    rows, hists = [], {}
    for label, g in ok.groupby("label"):
        g = g.sample(min(per_class, len(g)), random_state=seed)
        hs = []
        for p in g["path"]:
            a = read_image(p, channels=1, modalities=None)[..., 0]
            a = cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA)
            rows.append({"label": label, "mean": a.mean(), "std": a.std(),
                         "dark_share": (a < 20).mean(), "bright_share": (a > 235).mean()})
            hs.append(np.histogram(a, bins=64, range=(0, 256), density=True)[0])
        hists[label] = np.mean(hs, axis=0)
    edges = np.linspace(0, 256, 65)[:-1]
    return pd.DataFrame(rows), pd.DataFrame(hists, index=edges)


def metadata_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """FracAtlas: body region, view and hardware against the label; DICOM: modality, body part, view,
    laterality and images per patient against the label (empty dict without either).

    Args:
        df: the scan manifest, with FracAtlas metadata or DICOM columns when present.

    Returns:
        Dict table name (``body region``, ``view``, ``hardware``, ``multiscan``; ``DICOM modality`` ...,
        ``images per patient``) -> counts per label.
    """
    out = _dicom_tables(usable(df)) if "patient_group" in df else {}
    if "hand" not in df:
        return out
    ok = usable(df)
    for name, cols in (("body region", REGIONS), ("view", VIEWS)):
        out[name] = pd.DataFrame({c: ok[ok[c] == 1].groupby("label").size() for c in cols}).T.fillna(0).astype(int)
    out["hardware"] = pd.crosstab(ok["hardware"].map({0: "no", 1: "yes"}), ok["label"])
    out["multiscan"] = pd.crosstab(ok["multiscan"].map({0: "no", 1: "yes"}), ok["label"])
    for t in out.values():
        t.index.name = None
    return out


def _dicom_tables(ok: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The DICOM fields per label (files that are not DICOM count as "not DICOM"), and how many images
    each patient has (a patient is one group of the splits: many images a patient means fewer
    independent cases than images)."""
    dicom = ok["format"] == "DICOM"
    out = {}
    for col in ("modality", "body_part", "view_position", "laterality"):
        values = ok[col].where(ok[col] != "", "(not stated)").where(dicom, "not DICOM")
        out[f"DICOM {col.replace('_', ' ')}"] = pd.crosstab(values, ok["label"])
    patients = ok.loc[dicom & (ok["patient_group"] != "")]
    if len(patients):
        per = patients.groupby("patient_group").size()
        out["images per patient"] = per.value_counts().sort_index().rename("patients").to_frame()
    for t in out.values():
        t.index.name = None
    return out


def skipped(df: pd.DataFrame) -> pd.DataFrame:
    """The files the scan could not use, and why (so none is dropped silently).

    Args:
        df: the scan manifest.

    Returns:
        DataFrame of the rows whose ``status`` is not ``ok``: ``relpath``, ``label``, ``bytes``, ``reason``.
    """
    return df.loc[df["status"] != "ok", ["relpath", "label", "bytes", "reason"]].reset_index(drop=True)


def duplicate_pairs(df: pd.DataFrame, kind: str | None = None, limit: int = 8) -> list[tuple[pd.Series, pd.Series]]:
    """Up to ``limit`` (first, other) member pairs of duplicate groups, optionally of one kind.

    Args:
        df: the scan manifest with ``dup_group`` (-1 for none) and ``dup_kind``.
        kind: only groups of this ``dup_kind`` (e.g. exact or near); None for all.
        limit: maximum number of pairs.

    Returns:
        List of ``(first, second)`` manifest rows (``pd.Series``), one pair per group.
    """
    g = usable(df)[lambda d: d["dup_group"] >= 0]
    if kind:
        g = g[g["dup_kind"] == kind]
    pairs = []
    for _, grp in g.groupby("dup_group"):
        if len(grp) >= 2:
            pairs.append((grp.iloc[0], grp.iloc[1]))
        if len(pairs) >= limit:
            break
    return pairs


def leakage(df: pd.DataFrame) -> dict:
    """Duplicates that cross the given split or the labels: what leaks and what is label noise.

    Args:
        df: the scan manifest with duplicate groups and the dataset's own split.

    Returns:
        Dict: ``cross_split_groups``, ``test_with_copy_in_train`` and ``cross_label_groups`` (ints),
        and the rows behind them, ``cross_split_rows`` and ``cross_label_rows`` (DataFrames).
    """
    xs, xl = cross_split_copies(df), cross_label_groups(df)
    return {"cross_split_groups": int(xs["dup_group"].nunique()), "cross_split_rows": xs,
            "test_with_copy_in_train": int(len(leaked_test_images(df))),
            "cross_label_groups": int(xl["dup_group"].nunique()), "cross_label_rows": xl}


def verdict(df: pd.DataFrame) -> str:
    """One paragraph, computed from the numbers, of what a modeller must watch out for.

    Args:
        df: the scan manifest.

    Returns:
        The paragraph as one string (usable share, imbalance, duplicates, leakage, label conflicts, sizes).
    """
    ok = usable(df)
    n, n_skip = len(df), int((df["status"] != "ok").sum())
    share = ok["label"].value_counts(normalize=True)
    lk = leakage(df)
    in_groups = int((ok["dup_group"] >= 0).sum())
    w, h = ok["width"], ok["height"]
    parts = [f"{len(ok)} of {n} files are usable ({n_skip} skipped, each listed with its reason)."]
    if len(share) > 1:
        ratio = share.max() / share.min()
        parts.append(f"Classes are {'strongly ' if ratio > 3 else ''}imbalanced: '{share.idxmax()}' is "
                     f"{share.max():.0%}, '{share.idxmin()}' {share.min():.0%} (ratio {ratio:.1f}:1); use "
                     "class weights and report PR-AUC, sensitivity and specificity, not accuracy alone.")
    parts.append(f"{in_groups} usable files sit in {ok.loc[ok['dup_group'] >= 0, 'dup_group'].nunique()} "
                 "exact or near-duplicate groups: split by group, never by file, or copies leak "
                 "between train and test.")
    if lk["test_with_copy_in_train"]:
        n_test = int((ok["split"] == "test").sum())
        parts.append(f"The given split already leaks: {lk['test_with_copy_in_train']} of {n_test} "
                     "test images have a copy in train; report test metrics with and without them.")
    if lk["cross_label_groups"]:
        parts.append(f"{lk['cross_label_groups']} duplicate groups carry conflicting labels (label "
                     "noise that caps achievable accuracy).")
    conflicts = ok["note"].str.contains("label conflict").sum()
    if conflicts:
        parts.append(f"{conflicts} file(s) disagree with the metadata table about their label.")
    parts.append(f"Sizes range from {w.min()}x{h.min()} to {w.max()}x{h.max()} px with aspect "
                 f"{(w / h).min():.2f}-{(w / h).max():.2f}: resize with padding, not stretching. "
                 "Side markers, logos and burnt-in text are common: check Grad-CAM for shortcuts.")
    return " ".join(parts)
