"""Group-aware splits: every duplicate group and every patient lands on one side, so no copy and no
patient leaks across sides.

A patient is the manifest's ``patient_group`` (DICOM files: a keyed hash of PatientID, else
StudyInstanceUID); images linked by a patient or by a copy form one group.

A dataset's own train/test split is respected; its cross-split copies are flagged (``leak``), never
silently moved, so that a report can give both the "all Test" and the honest "no copy in Train"
numbers.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from fracturelib import config
from fracturelib.data.schema import usable


def group_ids(df: pd.DataFrame) -> pd.Series:
    """The group each row must share a side with: its duplicate group, joined with every row of the same
    patient (``patient_group``, when the manifest has one); a unique id for the rest.

    Args:
        df: manifest rows with ``dup_group`` (-1 for no group) and, optionally, ``patient_group`` ("" none).

    Returns:
        Series of strings on ``df``'s index: ``"g<group>"`` or ``"r<row index>"``, the id of the first row
        (in ``df``'s order) of its joined group: the same whatever the key that hashed the patients.
    """
    ids = pd.Series(np.where(df["dup_group"] >= 0, "g" + df["dup_group"].astype(str),
                             "r" + df.index.astype(str)), index=df.index)
    if "patient_group" not in df:
        return ids
    patients = df["patient_group"].fillna("").astype(str)
    if not (patients != "").any():
        return ids
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    order = {g: i for i, g in enumerate(dict.fromkeys(ids))}      # first appearance in df's order
    for _, members in ids[patients != ""].groupby(patients[patients != ""]):
        roots = sorted({find(g) for g in members}, key=order.__getitem__)
        for r in roots[1:]:
            parent[r] = roots[0]
    return ids.map(find)


def _carve(df: pd.DataFrame, fraction: float, seed: int) -> pd.Index:
    """Index of a stratified, group-aware ~``fraction`` of ``df`` (StratifiedGroupKFold fold 0)."""
    n_splits = max(2, round(1 / fraction))
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, take = next(sgkf.split(df, df["label"], group_ids(df)))
    return df.index[take]


def assign_splits(df: pd.DataFrame, val_fraction: float = 0.15, test_fraction: float = 0.15,
                  seed: int = config.SEED, respect_existing: bool = True) -> pd.DataFrame:
    """Return the usable rows with ``split`` in {train, val, test} and a boolean ``leak`` column.

    With ``respect_existing`` and a dataset that has train/test already, test stays test,
    validation is carved group-aware out of train, and test rows whose group (a copy, or the same
    patient) also has a member in train or validation (both come from the original Train) get
    ``leak=True``.
    Otherwise all three sides are carved group-aware.

    Args:
        df: the scan manifest.
        val_fraction, test_fraction: approximate shares of the usable rows for validation and test (with a
            kept split, validation is ``val_fraction`` of the dataset's Train and ``test_fraction`` is unused).
        seed: seed of the stratified group folds.
        respect_existing: keep the dataset's own train/test split when it has one.

    Returns:
        A copy of the usable rows with ``split``, ``leak`` and ``given_split`` (the dataset's own) columns.
    """
    d = usable(df).copy()
    d["given_split"] = d["split"]
    has_split = respect_existing and (d["split"] == "test").any() and (d["split"] == "train").any()
    if has_split:
        train = d[d["split"].isin(["train", "val"])]
        if not (d["split"] == "val").any():
            d.loc[_carve(train, val_fraction, seed), "split"] = "val"
        d.loc[d["split"] == "", "split"] = "train"
    else:
        d["split"] = "train"
        test = _carve(d, test_fraction, seed)
        d.loc[test, "split"] = "test"
        rest = d[d["split"] == "train"]
        d.loc[_carve(rest, val_fraction / (1 - test_fraction), seed + 1), "split"] = "val"
    groups = group_ids(d)
    fit_groups = set(groups[d["split"] == "train"])
    seen_groups = fit_groups | set(groups[d["split"] == "val"])
    d["leak"] = (((d["split"] == "val") & groups.isin(fit_groups))      # a copy, or the same patient
                 | ((d["split"] == "test") & groups.isin(seen_groups)))
    return d


def split_report(d: pd.DataFrame) -> pd.DataFrame:
    """Counts per split and class, plus the leaked rows per split.

    Args:
        d: rows from :func:`assign_splits`.

    Returns:
        DataFrame indexed by split: one column per class, ``total`` and ``copy in train``.
    """
    t = d.groupby(["split", "label"]).size().unstack(fill_value=0)
    t["total"] = t.sum(axis=1)
    t["copy in train"] = d.groupby("split")["leak"].sum()
    return t


def subset(df: pd.DataFrame, fraction: float, seed: int = config.SEED) -> pd.DataFrame:
    """A stratified random ``fraction`` of the rows (all rows when fraction >= 1).

    Args:
        df: manifest rows with ``label`` and ``split``.
        fraction: share to keep, in (0, 1]; each (label, split) cell keeps at least one row.
        seed: sampling seed.

    Returns:
        The kept rows in index order (``df`` itself when ``fraction`` >= 1).

    Raises:
        ValueError: if ``fraction`` <= 0.
    """
    if fraction >= 1:
        return df
    if not 0 < fraction:
        raise ValueError(f"subset_fraction must be in (0, 1], got {fraction}")
    keep = []
    for _, g in df.groupby(["label", "split"]):
        keep += list(g.sample(max(1, round(len(g) * fraction)), random_state=seed).index)
    return df.loc[sorted(keep)]


def split_from_card(manifest: pd.DataFrame, card) -> pd.DataFrame:
    """Re-create the exact split a model was trained on, from its card (a ``ModelCard``: same data,
    same seed).

    Raises ValueError when the manifest is not the one the card records.

    Args:
        manifest: the scan manifest of the data folder.
        card: the model's ``ModelCard`` (its ``data["split"]``, ``data["manifest_hash"]``, ``classes``).

    Returns:
        The rows with ``split`` and ``leak`` as :func:`assign_splits` made them for the model.

    Raises:
        ValueError: if the card records no split, or the manifest's hash differs from the card's.
    """
    from fracturelib.data.manifest import manifest_hash
    data = card.data or {}
    sp = data.get("split")
    if not sp:
        raise ValueError("the model card records no split parameters")
    have = manifest_hash(manifest)
    if have != data.get("manifest_hash"):
        raise ValueError(f"this dataset (manifest {have}) is not the one the model was trained on "
                         f"({data.get('manifest_hash')}, {data.get('root')}); pass that data_dir")
    rows = subset(usable(manifest, card.classes), sp["subset_fraction"], sp["seed"])
    return assign_splits(rows, sp["val_fraction"], sp["test_fraction"], seed=sp["seed"],
                         respect_existing=sp.get("respect_existing", False))
