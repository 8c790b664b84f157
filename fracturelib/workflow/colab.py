"""Google Colab: the setup each notebook runs first when, and only when, it is opened there.

The notebook's setup cell clones the repository into ``/content/fracturelib`` and installs it;
:func:`prepare` then moves into its ``notebooks/`` folder (so the notebooks' relative paths hold)
and, for the FracAtlas notebooks, points ``data_dir`` at the full dataset fetched with
``fracturelib fetch`` (the embedded subset is kept for Bone Break, which has no public download
that needs no account).
"""
from __future__ import annotations

import os
from pathlib import Path

from fracturelib import config

REPO_DIR = Path("/content/fracturelib")
DATA_DIR = Path("/content/data")


def badge_url(notebook: str) -> str:
    """The "Open in Colab" link of ``notebooks/<notebook>.ipynb`` on the main branch.

    Args:
        notebook: the notebook's file name without ``.ipynb``.

    Returns:
        The colab.research.google.com URL, as a string.
    """
    repo = config.REPO_URL.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{repo}/blob/main/notebooks/{notebook}.ipynb"


def prepare(data_dir: str, dataset: str, repo_dir: Path = REPO_DIR, data_root: Path = DATA_DIR) -> str:
    """Work from the clone's notebooks/ folder; return the ``data_dir`` to use: the one given, else
    the full FracAtlas (fetched once into ``data_root``) for ``dataset == "fracatlas"``, else ""
    (the notebook's embedded default).

    Args:
        data_dir: the notebook's ``data_dir`` parameter ("" for the default).
        dataset: the notebook's dataset, e.g. ``"fracatlas"``.
        repo_dir: the clone (the working directory becomes its ``notebooks/``).
        data_root: where the full FracAtlas is fetched.

    Returns:
        The data folder to use, as a string ("" for the embedded default).
    """
    os.chdir(Path(repo_dir) / "notebooks")
    if data_dir or dataset != "fracatlas":
        return data_dir
    from fracturelib.data.fetch import fetch_fracatlas
    return str(fetch_fracatlas(data_root))
