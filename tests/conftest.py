"""Shared fixtures: small generated image trees and the bad-input corpus."""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("FRACTURELIB_OFFLINE", "1")   # tests never download
# the patient-group key: a fixed one, so tests never create ~/.config/fracturelib/patient_salt
os.environ.setdefault("FRACTURELIB_PATIENT_SALT", "fracturelib-tests")

from fracturelib import config  # noqa: E402

SHARED = config.SHARED_DATA_DIR




@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path_factory.getbasetemp() / "cache")
    from fracturelib.models import feature_cache
    feature_cache.clear()           # frozen features of one test never serve another


def xray_like(seed: int, size=(96, 80), mode="L") -> Image.Image:
    """A distinct, structured grayscale image (random blobs), so pHashes differ between seeds."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.zeros((h, w))
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 25)
        a += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    a = (255 * a / a.max()).astype(np.uint8)
    im = Image.fromarray(a, "L")
    return im if mode == "L" else im.convert(mode)


def write_tree(root: Path, spec: dict[str, int], start_seed: int = 0) -> int:
    """Create ``{relative_folder: n_images}`` JPEGs under root; returns the number written."""
    seed = start_seed
    for folder, n in spec.items():
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            xray_like(seed).save(d / f"img{seed:04d}.jpg", quality=92)
            seed += 1
    return seed - start_seed


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with a tiny (wrong) IDAT: a decompression bomb probe."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


#: file name -> expected status ("ok" or the start of the skip reason)
BAD_CORPUS = {
    "zero.jpg": "empty file",
    "text.jpg": "not an image",
    "truncated.jpg": "truncated JPEG, decodable",
    "eoi_missing.jpg": "truncated JPEG, decodable",
    "header_only.jpg": "truncated JPEG, not decodable",
    "gray16.png": "ok",
    "cmyk.jpg": "ok",
    "rgba.png": "ok",
    "palette.png": "ok",
    "gray.png": "ok",
    "tiny.png": "too small",
    "bomb.png": "too large",
    "png_named.jpg": "ok",
    "float.tif": "unsupported mode",
}


def make_bad_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not a JPEG, it is a note someone saved with .jpg\n")
    good = xray_like(1, (120, 100), "RGB")
    good.save(folder / "_full.jpg", quality=90)
    full = (folder / "_full.jpg").read_bytes()
    (folder / "_full.jpg").unlink()
    (folder / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (folder / "eoi_missing.jpg").write_bytes(full[:-2])
    (folder / "header_only.jpg").write_bytes(full[: full.index(b"\xff\xda")])
    a16 = (np.linspace(0, 4095, 100 * 80).reshape(80, 100)).astype(np.uint16)
    Image.fromarray(a16).save(folder / "gray16.png")
    good.convert("CMYK").save(folder / "cmyk.jpg")
    rgba = good.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(folder / "rgba.png")
    good.convert("P").save(folder / "palette.png")
    good.convert("L").save(folder / "gray.png")
    Image.new("L", (1, 1), 128).save(folder / "tiny.png")
    (folder / "bomb.png").write_bytes(_png_header_only(30000, 30000))
    good.save(folder / "png_named.jpg", format="PNG")
    Image.fromarray(np.ones((64, 64), np.float32)).save(folder / "float.tif")
    return folder


@pytest.fixture
def bad_corpus(tmp_path) -> Path:
    return make_bad_corpus(tmp_path / "broken")


def need_shared(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not present (only on machines with ../shared/data)")
    return p


@pytest.fixture
def full_disk(monkeypatch):
    """Fault injection: every write to a temporary output file (``*.tmp``) fails with ENOSPC, as on a
    full disk; other writes (the terminal, logs) go through. Call ``full_disk()`` to switch it on."""
    import errno
    real = os.write

    def full(fd, data):
        if fd > 2 and os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)
    return lambda: monkeypatch.setattr(os, "write", full)
