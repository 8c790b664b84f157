"""Open any image file safely: validate it, decode it, and turn every mode into 8-bit L or RGB.

One place decides what "a usable image" is, so that the manifest, the predictor and the EDA agree.
The decompression-bomb guard runs on the header, before a single pixel is decoded.
"""
from __future__ import annotations

import mmap
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fracturelib import config

# Our own pixel limit (config.MAX_PIXELS) is checked on the header; PIL's process-wide
# decompression-bomb guard is left as the user has it (never switched off at import).

#: (format, mode) pairs that tf.io.decode_image reads exactly as we would; the rest are converted.
TF_NATIVE = {("JPEG", "L"), ("JPEG", "RGB"), ("PNG", "L"), ("PNG", "RGB")}
#: Modes we know how to turn into 8-bit L/RGB.
CONVERTIBLE_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr",
                     "I;16", "I;16B", "I;16L", "I;16N", "I"}
EXT_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF",
               ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}


class ImageError(ValueError):
    """A file that cannot be used as an image; the message names the file and the fix."""


@dataclass
class ImageCheck:
    """Outcome of checking one file. ``status`` is "ok" or "skipped"; ``reason`` says why skipped."""

    path: Path
    status: str = "ok"
    reason: str = ""
    note: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""
    format: str = ""
    bytes: int = 0
    native: bool = True
    image: Image.Image | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def skip(self, reason: str) -> "ImageCheck":
        self.status, self.reason, self.image = "skipped", reason, None
        return self


def jpeg_end(data) -> int:
    """Walk the JPEG markers: the offset just past the image's end-of-image (EOI) marker, or -1.

    A search for the last FF D9 is not enough: EXIF thumbnails carry their own EOI early in the
    file, and some exporters append bytes after the real EOI.
    """
    return jpeg_walk(data)[0]


def jpeg_walk(data) -> tuple[int, int]:
    """(end as in :func:`jpeg_end`, count of stray bytes between segments). Stray bytes before a
    marker are skipped the way libjpeg does ("extraneous bytes before marker"), so a complete file
    with junk between segments is not mistaken for a truncated one. ``data``: bytes or an mmap."""
    pos, n, stray = 2, len(data), 0
    while pos + 2 <= n:                       # header segments up to the first scan
        if data[pos] != 0xFF:
            nxt = data.find(b"\xff", pos)
            if nxt < 0:
                return -1, stray
            stray += nxt - pos
            pos = nxt
            continue
        marker = data[pos + 1]
        if marker == 0xFF:                    # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return pos + 2, stray
        seg_len = int.from_bytes(data[pos + 2:pos + 4], "big")
        pos += 2 + seg_len
        if marker == 0xDA:                    # start of scan: entropy-coded data follows
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= n:
                    return -1, stray
                nxt = data[pos + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
                    pos += 1 if nxt == 0xFF else 2
                    continue
                break                         # a real marker: EOI, or the next segment
    return -1, stray


class _DecodeBudget:
    """Bytes that decoding may hold at once, shared by the scan's threads: a large image waits for
    room instead of pushing the process past its memory; one larger than the whole budget is
    skipped with a reason instead of being decoded."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self.cond = threading.Condition()

    @contextmanager
    def hold(self, need: int):
        with self.cond:
            self.cond.wait_for(lambda: self.used + need <= self.limit or self.used == 0)
            self.used += need
        try:
            yield
        finally:
            with self.cond:
                self.used -= need
                self.cond.notify_all()


DECODE_BUDGET = _DecodeBudget(config.DECODE_BUDGET_MB << 20)
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "RGB": 3, "YCbCr": 3, "RGBA": 4,
                    "RGBX": 4, "CMYK": 4, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4}


def decode_cost(width: int, height: int, mode: str) -> int:
    """Bytes that decoding and converting one image to 8-bit holds at its peak: the decoded
    pixels, a working copy and the 8-bit result (RGB at most)."""
    return width * height * (2 * _BYTES_PER_PIXEL.get(mode, 4) + 3)


def check_image(path: str | Path, keep_image: bool = True) -> ImageCheck:
    """Validate one file and, when usable, return it decoded (``check.image``, converted to L/RGB)."""
    path = Path(path)
    chk = ImageCheck(path=path)
    try:
        chk.bytes = path.stat().st_size
    except OSError as e:
        return chk.skip(f"unreadable: {e.strerror or e}")
    if chk.bytes == 0:
        return chk.skip("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(path)             # reads the header only
    except UnidentifiedImageError:
        return chk.skip("not an image: content is not a recognised image format")
    except Image.DecompressionBombError:
        w, h = _header_size(path)
        return chk.skip(f"too large: header claims {w}x{h} px (limit {config.MAX_SIDE} px a side, "
                        f"{config.MAX_PIXELS // 1_000_000} Mpx); not decoded")
    except OSError as e:
        return chk.skip(f"unreadable: {e.strerror or e}")
    except Exception as e:  # noqa: BLE001 - any parser failure means "not an image"
        return chk.skip(f"not an image: header unreadable ({type(e).__name__}: {e})")
    with im:
        return _check_opened(chk, im, keep_image)


def _check_opened(chk: ImageCheck, im: Image.Image, keep_image: bool) -> ImageCheck:
    path = chk.path
    chk.width, chk.height = im.size
    chk.mode, chk.format = im.mode, (im.format or "")
    ext_fmt = EXT_FORMATS.get(path.suffix.lower())
    if ext_fmt and ext_fmt != chk.format:
        chk.note = f"content is {chk.format}, extension is {path.suffix}"
    if chk.width * chk.height > config.MAX_PIXELS or max(chk.width, chk.height) > config.MAX_SIDE:
        return chk.skip(f"too large: header claims {chk.width}x{chk.height} px (limit "
                        f"{config.MAX_SIDE} px a side, {config.MAX_PIXELS // 1_000_000} Mpx); not decoded")
    if min(chk.width, chk.height) < config.MIN_SIDE:
        return chk.skip(f"too small: {chk.width}x{chk.height} px (minimum {config.MIN_SIDE} px a side)")
    if chk.mode not in CONVERTIBLE_MODES:
        return chk.skip(f"unsupported mode {chk.mode!r}")
    if chk.format == "JPEG":
        reason = _jpeg_problems(chk)
        if reason:
            return chk.skip(reason)
    need = decode_cost(chk.width, chk.height, chk.mode)
    if need > DECODE_BUDGET.limit:
        return chk.skip(f"too large to decode: {chk.width}x{chk.height} px {chk.mode} needs about "
                        f"{need >> 20} MB, over the decoding budget of {DECODE_BUDGET.limit >> 20} MB "
                        "(config.DECODE_BUDGET_MB); downscale the file")
    orientation = _orientation(im)
    try:
        with DECODE_BUDGET.hold(need):
            im.load()
            if keep_image:
                out = to_8bit(im)
                chk.image = out.transpose(ORIENTATION[orientation]) if orientation in ORIENTATION else out
    except MemoryError:
        return chk.skip(f"out of memory decoding {chk.width}x{chk.height} px; downscale the file")
    except Exception as e:  # noqa: BLE001
        return chk.skip(f"corrupt: decoding failed ({type(e).__name__}: {e})")
    chk.native = (chk.format, chk.mode) in TF_NATIVE and orientation not in ORIENTATION
    if orientation in ORIENTATION:
        if orientation >= 5:                  # stored sideways: report the size as displayed
            chk.width, chk.height = chk.height, chk.width
        chk.note = "; ".join(x for x in (chk.note, f"EXIF orientation {orientation} applied") if x)
    return chk


#: EXIF orientation tag -> the transpose that shows the image upright (as ImageOps.exif_transpose).
ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
               6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_90}


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright) of phone photos of films; 1 when absent or unreadable."""
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block does not make the pixels unusable
        return 1


def _jpeg_problems(chk: ImageCheck) -> str:
    """Walk the JPEG's markers through a memory map (no copy of the file in memory): notes for
    stray or trailing bytes; the skip reason when it is truncated ("" when complete)."""
    with open(chk.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        end, stray = jpeg_walk(data)
        if end < 0:
            return _truncation_reason(data)
        extra = []
        if stray:
            extra.append(f"{stray} stray bytes between segments (skipped, as decoders do)")
        if data[end:].strip(b"\x00"):
            extra.append(f"{len(data) - end} bytes after the end-of-image marker (ignored)")
    chk.note = "; ".join(x for x in (chk.note, *extra) if x)
    return ""


def _header_size(path: Path) -> tuple[int, int]:
    """Width and height from the header alone, by the format plugin PIL would use, without PIL's
    process-wide decompression-bomb check (which refuses to say the size)."""
    Image.init()
    with open(path, "rb") as fp:
        prefix = fp.read(16)
        for fmt in Image.ID:
            factory, accept = Image.OPEN[fmt]
            if accept is None or accept(prefix):
                fp.seek(0)
                try:
                    return factory(fp, str(path)).size
                except Exception:  # noqa: BLE001 - try the next plugin, as Image.open does
                    continue
    return 0, 0


def _truncation_reason(data: bytes) -> str:
    """Say whether the pixels can still be recovered the way tolerant decoders do (libjpeg
    inserts an end-of-image marker and fills the missing rows with gray). We append that marker
    ourselves rather than flip PIL's process-wide LOAD_TRUNCATED_IMAGES, which is unsafe in threads."""
    import io

    try:
        with Image.open(io.BytesIO(data[:] + b"\xff\xd9")) as im:
            im.load()
        how = "decodable: the file ends before its end-of-image marker; a tolerant decoder " \
              "fills the missing rows with gray"
    except Exception:  # noqa: BLE001
        how = "not decodable: the file ends before its end-of-image marker and no pixels " \
              "can be recovered"
    return f"truncated JPEG, {how}"


def to_8bit(im: Image.Image) -> Image.Image:
    """Any supported mode -> 8-bit "L" or "RGB". Alpha is composited on black (X-ray background)."""
    mode = im.mode
    if mode in ("L", "RGB"):
        return im
    if mode in ("1",):
        return im.convert("L")
    if mode.startswith("I"):
        return _stretch_to_8bit(np.asarray(im))
    if mode in ("P", "PA"):
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("LA", "RGBA"):
        base = Image.new(mode[:-1] if mode == "LA" else "RGB", im.size, 0)
        base.paste(im.convert("LA" if mode == "LA" else "RGBA"), mask=im.getchannel("A"))
        return base
    return im.convert("RGB")  # CMYK, YCbCr, RGBX


def _stretch_to_8bit(a: np.ndarray, rows: int = 512) -> Image.Image:
    """16/32-bit gray -> 8-bit, min..max stretched, a block of rows at a time in float32 (a
    10,000 x 10,000 16-bit scan needs ~100 MB for the result, not gigabytes of float64)."""
    lo, hi = float(a.min()), float(a.max())
    out = np.zeros(a.shape, np.uint8)
    if hi > lo:
        k = np.float32(255.0 / (hi - lo))
        for r in range(0, a.shape[0], rows):
            block = (a[r:r + rows].astype(np.float32) - np.float32(lo)) * k
            out[r:r + rows] = np.rint(block)
    return Image.fromarray(out, "L")


def read_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """Decoded uint8 array HxWxC (C = 1 or 3). Raises ImageError naming the file and the fix."""
    chk = check_image(path)
    if not chk.ok:
        raise ImageError(f"{path}: cannot use this file: {chk.reason}. "
                         "Re-export it as an 8-bit PNG or a complete JPEG.")
    im = chk.image.convert("L" if channels == 1 else "RGB")
    arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr
