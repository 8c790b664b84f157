"""What every notebook does first: quiet TensorFlow, display style, the ci profile, an output folder.

Why a module: the same setup block stood in all four notebooks; here it is written once and
styles are applied when a notebook asks, not when fracturelib is imported.
"""
from __future__ import annotations

import os
from pathlib import Path


def setup(namespace: dict, notebook: str, output_dir: str | Path) -> Path:
    """Apply the profile named in $FRACTURELIB_PROFILE to the notebook's parameters (CI), set the
    display style, and create ``output_dir``. Returns it as a Path."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging

    import pandas as pd
    import seaborn as sns

    from .reports import apply_profile
    overrides = apply_profile(namespace, notebook)
    print("profile overrides:", overrides or "none")
    pd.set_option("display.max_colwidth", 90)
    sns.set_theme(style="whitegrid", context="notebook")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)   # retracing notices are not findings
    out = Path(namespace.get("output_dir", output_dir))
    out.mkdir(parents=True, exist_ok=True)
    return out
