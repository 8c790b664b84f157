"""The manifest's columns, and which rows a model may use: the one place both are written."""
from __future__ import annotations

import pandas as pd

#: Columns every manifest has (FracAtlas adds its metadata; duplicates add dup_group, dup_kind).
COLUMNS = ["path", "relpath", "label", "split", "status", "reason", "note", "width", "height",
           "mode", "format", "bytes", "sha256", "phash", "phash_mirror", "native"]
OK = "ok"


def usable(df: pd.DataFrame, classes=None) -> pd.DataFrame:
    """Rows that can be fed to a model (status ok), optionally only those labelled with ``classes``.

    Args:
        df: a manifest.
        classes: labels to keep; None keeps every label.

    Returns:
        The matching rows of ``df``, index labels kept.
    """
    keep = df["status"] == OK
    if classes is not None:
        keep &= df["label"].isin(list(classes))
    return df[keep]
