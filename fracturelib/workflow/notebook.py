"""What every notebook does first: quiet TensorFlow, display style, the ci profile, an output folder.

Why a module: the same setup block stood in all four notebooks; here it is written once and
styles are applied when a notebook asks, not when fracturelib is imported.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from fracturelib.files import atomic_write
from fracturelib.workflow.profiles import PROFILE_ENV, load_profile


def setup(namespace: dict, notebook: str, output_dir: str | Path) -> Path:
    """Apply the profile named in $FRACTURELIB_PROFILE to the notebook's parameters (CI), set the
    display style, and create ``output_dir``. Returns it as a Path.

    Args:
        namespace: the notebook's globals (its parameters are overridden in place).
        notebook: the notebook's name, as the profile's runs name it.
        output_dir: the default output folder; a profile's ``output_dir`` takes precedence.

    Returns:
        The output folder as a Path (created).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging

    import pandas as pd
    import seaborn as sns

    overrides = apply_profile(namespace, notebook)
    print("profile overrides:", overrides or "none")
    pd.set_option("display.max_colwidth", 90)
    sns.set_theme(style="whitegrid", context="notebook")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)   # retracing notices are not findings
    out = Path(namespace.get("output_dir", output_dir))
    out.mkdir(parents=True, exist_ok=True)
    return out


def record(output_dir: str | Path, **figures) -> dict:
    """Merge key figures (shown in the index) into ``output_dir/figures.json``.

    Args:
        output_dir: the notebook's output folder.
        figures: name -> value (values JSON-encoded, with ``str`` for others).

    Returns:
        The merged figures dict, as written.
    """
    p = Path(output_dir) / "figures.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    cur = json.loads(p.read_text()) if p.exists() else {}
    cur.update(figures)
    atomic_write(p, json.dumps(cur, indent=2, default=str))
    return cur


def apply_profile(namespace: dict, notebook: str) -> dict:
    """Override a notebook's parameters from the profile named in $FRACTURELIB_PROFILE (e.g. the
    tiny ``ci`` profile nbval uses). Without the variable nothing changes. Returns the overrides.

    Args:
        namespace: the notebook's globals (updated in place).
        notebook: the notebook's name, as the profile's runs name it.

    Returns:
        Dict of the overridden parameters (empty without a profile or a run for this notebook).
    """
    name = os.environ.get(PROFILE_ENV)
    if not name:
        return {}
    over = {}
    for run in load_profile(name):
        if run.notebook == notebook:
            over = dict(run.parameters)
            break
    namespace.update(over)
    return over
