"""Open any image file safely: validate it, decode it, and turn every mode into 8-bit L or RGB.

One place decides what "a usable image" is, so that the manifest, the predictor and the EDA agree.
The decompression-bomb guard runs on the header, before a single pixel is decoded.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .. import config

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


def jpeg_end(data: bytes) -> int:
    """Walk the JPEG markers: the offset just past the image's end-of-image (EOI) marker, or -1.

    A search for the last FF D9 is not enough: EXIF thumbnails carry their own EOI early in the
    file, and some exporters append bytes after the real EOI.
    """
    pos, n = 2, len(data)
    while pos + 2 <= n:                       # header segments up to the first scan
        if data[pos] != 0xFF:
            return -1
        marker = data[pos + 1]
        if marker == 0xFF:                    # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return pos + 2
        seg_len = int.from_bytes(data[pos + 2:pos + 4], "big")
        pos += 2 + seg_len
        if marker == 0xDA:                    # start of scan: entropy-coded data follows
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= n:
                    return -1
                nxt = data[pos + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
                    pos += 1 if nxt == 0xFF else 2
                    continue
                break                         # a real marker: EOI, or the next segment
    return -1


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
        data = path.read_bytes()
    except OSError as e:
        return chk.skip(f"unreadable: {e.strerror or e}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(path)
    except UnidentifiedImageError:
        return chk.skip("not an image: content is not a recognised image format")
    except Image.DecompressionBombError:
        w, h = _header_size(path)
        return chk.skip(f"too large: header claims {w}x{h} px (limit {config.MAX_SIDE} px a side, "
                        f"{config.MAX_PIXELS // 1_000_000} Mpx); not decoded")
    except Exception as e:  # noqa: BLE001 - any parser failure means "not an image"
        return chk.skip(f"not an image: header unreadable ({type(e).__name__}: {e})")
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
    end = jpeg_end(data) if chk.format == "JPEG" else len(data)
    truncated = end < 0
    if end > 0 and data[end:].strip(b"\x00"):
        extra = f"{len(data) - end} bytes after the end-of-image marker (ignored)"
        chk.note = "; ".join(x for x in (chk.note, extra) if x)
    if truncated:
        return chk.skip(_truncation_reason(data))
    try:
        im.load()
    except Exception as e:  # noqa: BLE001
        return chk.skip(f"corrupt: decoding failed ({type(e).__name__}: {e})")
    chk.native = (chk.format, chk.mode) in TF_NATIVE
    if keep_image:
        chk.image = to_8bit(im)
    return chk


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
        with Image.open(io.BytesIO(data + b"\xff\xd9")) as im:
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
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(np.round(scaled).astype(np.uint8), "L")
    if mode in ("P", "PA"):
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("LA", "RGBA"):
        base = Image.new(mode[:-1] if mode == "LA" else "RGB", im.size, 0)
        base.paste(im.convert("LA" if mode == "LA" else "RGBA"), mask=im.getchannel("A"))
        return base
    return im.convert("RGB")  # CMYK, YCbCr, RGBX


def read_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """Decoded uint8 array HxWxC (C = 1 or 3). Raises ImageError naming the file and the fix."""
    chk = check_image(path)
    if not chk.ok:
        raise ImageError(f"{path}: cannot use this file: {chk.reason}. "
                         "Re-export it as an 8-bit PNG or a complete JPEG.")
    im = chk.image.convert("L" if channels == 1 else "RGB")
    arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr
