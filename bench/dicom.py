"""DICOM decoding throughput against PNG and JPEG on the same images, measured in one run.

FracAtlas radiographs (``../shared/data/fracatlas`` when present, else the embedded, downscaled
``dataset/fracatlas``; ``--data DIR`` for another folder of JPEGs) are written once as PNG, kept as their own
JPEG, and wrapped as DICOM: 16-bit (12 stored, rescale + window) native, deflated, RLE, JPEG-LS lossless
and JPEG 2000 lossless. Each is then read the way ``scan`` reads it (``check_image`` at full
resolution, the 8-bit image kept); the table gives ms per image and the ratio to PNG.

    .venv/bin/python bench/dicom.py [--images 40] [--repeat 3] [--data DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("FRACTURELIB_PATIENT_SALT", "bench")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fracturelib.data.imageio import check_image  # noqa: E402


def dicom_bytes(gray: np.ndarray, syntax: str) -> bytes:
    """A DX radiograph storing ``gray`` x 16 (12 bits) with a window that maps it back, in ``syntax``."""
    import io

    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = uid.DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "DX", "BENCH"
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 2048, 4096, "LINEAR_EXACT"
    ds.set_pixel_data(gray.astype(np.uint16) * 16, "MONOCHROME2", 12)
    compressed = {"rle": uid.RLELossless, "jpegls": uid.JPEGLSLossless, "j2k": uid.JPEG2000Lossless}
    if syntax in compressed:
        ds.compress(compressed[syntax])
    elif syntax == "deflated":
        ds.file_meta.TransferSyntaxUID = uid.DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_formats(sources: list[Path], out: Path) -> dict[str, list[Path]]:
    """Every source in every format; returns format -> files."""
    files: dict[str, list[Path]] = {}
    for i, src in enumerate(sources):
        gray = np.asarray(Image.open(src).convert("L"))
        files.setdefault("jpeg (source)", []).append(src)
        png = out / f"{i}.png"
        Image.fromarray(gray).save(png)
        files.setdefault("png", []).append(png)
        for syntax in ("native", "deflated", "rle", "jpegls", "j2k"):
            p = out / f"{i}-{syntax}.dcm"
            p.write_bytes(dicom_bytes(gray, syntax))
            files.setdefault(f"dicom {syntax}", []).append(p)
    return files


def timed(paths: list[Path], repeat: int) -> float:
    """Best-of-``repeat`` ms per image of reading every path as scan does."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for p in paths:
            chk = check_image(p, need=None)
            assert chk.ok, (p, chk.reason)
        best = min(best, (time.perf_counter() - t) / len(paths) * 1000)
    return best


def main() -> None:
    """Write the formats, time them, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", type=Path, default=None)
    a = ap.parse_args()
    shared = ROOT.parent / "shared" / "data" / "fracatlas"
    data = a.data or (shared if shared.is_dir() else ROOT / "dataset" / "fracatlas")
    sources = sorted(data.rglob("*.jpg"))[:a.images]
    with tempfile.TemporaryDirectory() as tmp:
        files = write_formats(sources, Path(tmp))
        sizes = {k: np.mean([p.stat().st_size for p in v]) / 1024 for k, v in files.items()}
        times = {k: timed(v, a.repeat) for k, v in files.items()}
    mpx = np.mean([np.prod(Image.open(p).size) for p in sources]) / 1e6
    print(f"{len(sources)} radiographs of {data}, mean {mpx:.2f} Mpx; best of {a.repeat}; check_image(need=None)")
    print(f"{'format':<16}{'ms/img':>9}{'x PNG':>8}{'KiB':>9}")
    for k in times:
        print(f"{k:<16}{times[k]:9.1f}{times[k] / times['png']:8.2f}{sizes[k]:9.0f}")


if __name__ == "__main__":
    main()
