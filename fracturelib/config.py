"""Paths, defaults and class names in one place, so notebooks, CLI and tests agree."""
from __future__ import annotations

import os
import re
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
#: Where the project lives (the Colab badges and the Colab setup cell clone it from here).
REPO_URL = "https://github.com/fracturelib/fracturelib"
DATASET_DIR = PROJECT_DIR / "dataset"
NOTEBOOKS_DIR = PROJECT_DIR / "notebooks"
REPORTS_DIR = PROJECT_DIR / "reports"
PARAMS_DIR = PROJECT_DIR / "params"
MODELS_DIR = PROJECT_DIR / "models"

#: The embedded defaults (real, reduced copies of the two public datasets).
DEFAULT_FRACATLAS = DATASET_DIR / "fracatlas"
DEFAULT_BONE_BREAK = DATASET_DIR / "bone-break-classification"

#: Where the full datasets live next to a checkout in this project's CI and dev machines.
SHARED_DATA_DIR = PROJECT_DIR.parent / "shared" / "data"

#: Cache for converted images (CMYK, 16-bit, palette ... re-saved as 8-bit PNG for tf.data).
CACHE_DIR = Path(os.environ.get("FRACTURELIB_CACHE", Path.home() / ".cache" / "fracturelib"))

#: The ten fracture types of the Bone Break Classification set, normalised.
FRACTURE_TYPES = (
    "avulsion", "comminuted", "fracture-dislocation", "greenstick", "hairline",
    "impacted", "longitudinal", "oblique", "pathological", "spiral",
)
#: Binary task: index 1 is the positive class.
BINARY_CLASSES = ("non-fractured", "fractured")


# File validation limits.
MIN_SIDE = 32                 # smaller than this carries no usable detail
MAX_SIDE = 20_000             # guard against decompression bombs, checked on the header
MAX_PIXELS = 100_000_000      # ditto, before any pixel is decoded
DECODE_BUDGET_MB = 1024       # pixels that decoding may hold at once, all scan threads together

# Near-duplicate detection (see data/duplicates.py): nearest-neighbour candidates among 32x32
# thumbnails, confirmed when they correlate at least this much. Calibrated on both real datasets:
# 0.95 lets in hundreds of distinct FracAtlas radiographs of the same anatomy.
NEAR_DUP_MIN_CORRELATION = 0.98

SEED = 42


def normalise_class_name(name: str) -> str:
    """`Fracture Dislocation`, `fracture_dislocation` and `Fracture-Dislocation` are one class.

    Lower-case, runs of spaces/underscores/hyphens become one hyphen, and a trailing
    "fracture" word is dropped when something remains (`Avulsion fracture` -> `avulsion`).
    `Non_fractured` becomes `non-fractured`.
    """
    s = re.sub(r"[\s_\-]+", "-", name.strip().lower()).strip("-")
    s = re.sub(r"-fractures?$", "", s) or s
    return s
