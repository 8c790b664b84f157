"""Property-based tests (Hypothesis) of the two rules in data/imageio.py.

* Hostile bytes: mutated real JPEG/PNG files (truncated, bit-flipped, chunks and segments inserted
  or duplicated, huge sizes declared in headers) -> ``check_image`` returns a row (ok, or skipped
  with a reason) and ``read_image`` returns an image or raises ImageError, never anything else.
* Geometry: any (width, height) that ``check_image`` calls ok becomes a tensor of the model's size
  in ``pad_resize`` (predict) and in the tf.data pipeline, at every supported model size.

Examples per test: ``FRACTURELIB_FUZZ_EXAMPLES`` (default 100; ``make fuzz`` runs 2000).
"""
from __future__ import annotations

import io
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fracturelib import config
from fracturelib.data.imageio import ImageCheck, ImageError, check_image, read_image
from tests.conftest import xray_like

EXAMPLES = int(os.environ.get("FRACTURELIB_FUZZ_EXAMPLES", 100))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _seeds() -> dict[str, bytes]:
    """Small valid files of each kind the projects meets: a real radiograph when present."""
    g = xray_like(11, size=(72, 64))
    exif = Image.Exif()
    exif[0x0112] = 6
    seeds = {
        "gray.jpg": _encode(g, "JPEG", quality=90),
        "rgb_exif.jpg": _encode(g.convert("RGB"), "JPEG", quality=85, exif=exif),
        "progressive.jpg": _encode(g.convert("RGB"), "JPEG", progressive=True),
        "cmyk.jpg": _encode(g.convert("CMYK"), "JPEG"),
        "gray.png": _encode(g, "PNG"),
        "palette.png": _encode(g.convert("RGB").convert("P"), "PNG"),
        "gray16.png": _encode(Image.fromarray((np.asarray(g, np.uint16) * 257)), "PNG"),
    }
    real = next(iter(sorted((config.DEFAULT_FRACATLAS / "images").rglob("*.jpg"))), None)
    if real is not None and real.stat().st_size < 64_000:
        seeds["real.jpg"] = real.read_bytes()
    return seeds


SEEDS = _seeds()


def _png_chunks(data: bytes) -> list[tuple[int, int]]:
    out, pos = [], 8
    while pos + 12 <= len(data):
        end = pos + 12 + int.from_bytes(data[pos:pos + 4], "big")
        out.append((pos, min(end, len(data))))
        pos = end
    return out


def _jpeg_segments(data: bytes) -> list[tuple[int, int]]:
    out, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] not in (0xDA, 0xD9):
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        out.append((pos, min(end, len(data))))
        pos = end
    return out


def _png_chunk(kind: bytes, payload: bytes, length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    return struct.pack(">I", n) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


@st.composite
def mutated(draw) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    png = name.endswith(".png")
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "duplicate", "huge", "lie"]))
        n = len(data)
        if n < 16:
            break
        if op == "truncate":
            del data[draw(st.integers(1, n - 1)):]
        elif op == "flip":
            for _ in range(draw(st.integers(1, 8))):
                data[draw(st.integers(0, n - 1))] ^= 1 << draw(st.integers(0, 7))
        elif op in ("insert", "duplicate"):
            units = _png_chunks(bytes(data)) if png else _jpeg_segments(bytes(data))
            if not units:
                continue
            at = draw(st.sampled_from(units))[draw(st.integers(0, 1))]
            if op == "duplicate":
                a, b = draw(st.sampled_from(units))
                piece = bytes(data[a:b])
            elif png:
                kind = draw(st.sampled_from([b"prIv", b"tEXt", b"zTXt", b"iCCP", b"IDAT", b"IHDR",
                                             b"PLTE", b"tRNS", b"acTL", b"fdAT", b"eXIf"]))
                piece = _png_chunk(kind, draw(st.binary(max_size=64)))
            else:
                marker = draw(st.sampled_from([0xE0, 0xE1, 0xE2, 0xEE, 0xFE, 0xDB, 0xC4, 0xC0, 0xC2, 0xDD]))
                payload = draw(st.binary(max_size=64))
                piece = bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload
            data[at:at] = piece
        elif op == "huge":                    # sizes declared in the header, far past the pixels
            w, h = draw(st.integers(1, 2**31 - 1)), draw(st.integers(1, 2**31 - 1))
            if png and n > 24:
                data[16:24] = struct.pack(">II", w, h)
                if draw(st.booleans()):       # with a valid CRC, so the parser believes it
                    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
            else:
                sof = next((i for i in range(2, n - 9) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2)), None)
                if sof is not None:
                    data[sof + 5:sof + 9] = struct.pack(">HH", h & 0xFFFF, w & 0xFFFF)
        elif op == "lie":                     # a chunk/segment length field that lies
            units = _png_chunks(bytes(data)) if png else _jpeg_segments(bytes(data))
            if units:
                a, _ = draw(st.sampled_from(units))
                if png:
                    data[a:a + 4] = struct.pack(">I", draw(st.integers(0, 2**32 - 1)))
                else:
                    data[a + 2:a + 4] = struct.pack(">H", draw(st.integers(0, 0xFFFF)))
    return name, bytes(data)


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@FUZZ
@given(case=mutated())
def test_mutated_files_are_a_row_or_an_image_error(scratch, case):
    name, data = case
    p = scratch / name
    p.write_bytes(data)
    chk = check_image(p)
    assert isinstance(chk, ImageCheck) and chk.status in ("ok", "skipped")
    if chk.ok:
        assert chk.image is not None and chk.image.mode in ("L", "RGB") and min(chk.image.size) >= 1
    else:
        assert chk.reason and chk.image is None
    try:
        a = read_image(p, channels=1, need=2 * config.MIN_MODEL_SIZE)
    except ImageError as e:
        assert str(p) in str(e)
        assert not chk.ok or "decod" in str(e)        # ok rows only fail for a decoding reason
    else:
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[-1] == 1 and min(a.shape[:2]) >= 1


@st.composite
def geometry(draw):
    long = draw(st.integers(1, 2500))
    aspect = draw(st.one_of(st.floats(1, 40), st.sampled_from([config.MAX_ASPECT, config.MAX_ASPECT + 0.01])))
    short = max(1, round(long / aspect))
    w, h = (long, short) if draw(st.booleans()) else (short, long)
    fmt, mode = draw(st.sampled_from([("PNG", "L"), ("PNG", "P"), ("JPEG", "L"), ("JPEG", "RGB")]))
    return w, h, fmt, mode, draw(st.sampled_from([32, 48, 64, 128, 224]))


def _picture(w: int, h: int, mode: str) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w]
    return Image.fromarray(((xx * 7 + yy * 3) % 256).astype(np.uint8), "L").convert(mode)


@FUZZ
@given(case=geometry())
def test_what_scan_calls_ok_fits_predict_and_the_pipeline(scratch, case):
    from fracturelib.data.pipeline import make_dataset, pad_resize
    w, h, fmt, mode, size = case
    p = scratch / f"g.{fmt.lower()}"
    _picture(w, h, mode).save(p, fmt)
    chk = check_image(p)
    if not chk.ok:
        assert chk.reason.startswith(("too small", "aspect ratio")), chk.reason
        with pytest.raises(ImageError):
            read_image(p, channels=1, need=2 * size)
        return
    x = pad_resize(read_image(p, channels=1, need=2 * size), size)      # predict's path
    assert tuple(x.shape) == (size, size, 1)
    row = pd.DataFrame([{"path": str(p), "native": chk.native, "sha256": f"g{w}x{h}{fmt}{mode}",
                         "format": chk.format, "width": chk.width, "height": chk.height}])
    assert chk.native == (mode != "P")                  # palette files go through the converted copy
    ds = make_dataset(row, None, image_size=size, channels=1, batch_size=1, cache=False, with_labels=False)
    (batch,) = list(ds)
    assert tuple(batch.shape) == (1, size, size, 1)
