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
#: File name endings of images: a file with one of them outside a layout's image folders is a row saying
#: which layout rule left it out (an image is never only "metadata"); other files there are metadata.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp",
                  ".dcm", ".dicom", ".pgm", ".ppm", ".j2k", ".jp2")
#: The temperatures a model card may hold, and the range temperature scaling searches (one source for both).
TEMPERATURE_RANGE = (0.05, 20.0)
#: Where `predict` writes overlays when no --overlay-dir is given: a folder of their own in the current one.
OVERLAY_DIR = "overlays"

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

# Model files, named here only: the notebooks' defaults, the profiles, `fracturelib predict` and
# the model cards (which name their companions by these names, resolved next to the card).
BINARY_CNN_FILE = "binary_cnn.keras"            # notebook 02, the design CNN
BINARY_TRANSFER_FILE = "binary_transfer.keras"  # notebook 02, the ImageNet transfer model
FRACTURE_TYPES_FILE = "fracture_types.keras"    # notebook 03
LOCALISER_FILE = "localiser.keras"              # notebook 04, the box-trained localiser
DETECTOR_FILE = "detector.keras"                # notebook 04, the fracture detector (boxes, CenterNet)
OOD_FILE = "ood.npz"                            # notebook 02, the "is this a radiograph?" detector
#: The binary models `fracturelib predict` looks for, in order, when no --model is given.
BINARY_MODELS = (BINARY_TRANSFER_FILE, BINARY_CNN_FILE)
MODEL_FILES = (BINARY_CNN_FILE, BINARY_TRANSFER_FILE, FRACTURE_TYPES_FILE, LOCALISER_FILE, DETECTOR_FILE, OOD_FILE)
#: What a classifier's card names as its companions (kind -> file name beside the card).
COMPANIONS = {"localiser": LOCALISER_FILE, "detector": DETECTOR_FILE, "ood": OOD_FILE}


# File validation limits.
MIN_SIDE = 32                 # smaller than this carries no usable detail
MAX_SIDE = 20_000             # guard against decompression bombs, checked on the header
MAX_PIXELS = 100_000_000      # ditto, before any pixel is decoded
DECODE_BUDGET_MB = 1024       # pixels that decoding may hold at once, all scan threads together
# Geometry: what `scan` calls ok must fit every supported model input. The short side keeps at
# least one pixel in a MIN_MODEL_SIZE input (resize_with_pad fails on a zero-width image).
MIN_MODEL_SIZE = 32           # the smallest model input (px a side) that must take every ok image
MAX_ASPECT = 20               # longer side / shorter side; <= MIN_MODEL_SIZE by construction
# Reduced decoding (see data/imageio.py): JPEGs are decoded with libjpeg's DCT scaling (1/2, 1/4,
# 1/8) to the smallest scale whose longer side still covers what the caller needs.
DECODE_OVERSAMPLE = 2         # a model of S px a side is fed from a decode of >= 2*S px
CHECK_SIDE = 512              # what scan's checks keep (pHash and near-copy thumbnails are 32 px)
PREDICT_DISPLAY_SIDE = 2048   # `predict` overlays: images under twice this are shown at full size
KEEP_IMAGE_MB = 64            # formats without reduced decoding: larger 8-bit images are reduced
MAX_METADATA_MB = 4           # PNG ancillary chunks / JPEG APPn+COM beyond this are left unread
MAX_JPEG_SCANS = 100          # progressive scans a JPEG may hold (each is a full decoder pass; encoders use ~10)

# DICOM (see data/dicom.py). Modalities read by default: projection radiography (computed, digital,
# radiographic, fluoroscopy, angiography, mammography, panoramic, intra-oral) and "other" (secondary
# capture); CT, MR, US, NM, PT ... are skipped unless `--modalities` names them.
RADIOGRAPH_MODALITIES = ("CR", "DX", "DR", "RG", "RF", "XA", "MG", "PX", "IO", "OT")
# The key of the patient-group hash (a salted HMAC of PatientID): FRACTURELIB_PATIENT_SALT, else this
# file, created with a random key on first use. Keep it to compare groups across scans; never share it.
PATIENT_SALT_FILE = os.environ.get("FRACTURELIB_PATIENT_SALT_FILE", "~/.config/fracturelib/patient_salt")

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

    Args:
        name: a class or folder name as found in a dataset.

    Returns:
        The normalised, hyphenated lower-case name.
    """
    s = re.sub(r"[\s_\-]+", "-", name.strip().lower()).strip("-")
    s = re.sub(r"-fractures?$", "", s) or s
    return s
