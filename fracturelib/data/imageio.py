"""Open any image file safely: validate it, decode it, and turn every mode into 8-bit L or RGB.

One place decides what "a usable image" is, so that the manifest, the predictor and the EDA agree.
The decompression-bomb guard runs on the header, before a single pixel is decoded.

Two rules hold for every decoder, by construction:

* Memory: decoding reserves its estimated cost (width x height x bytes per pixel, at the size it
  will actually decode) from one budget (``config.DECODE_BUDGET_MB``) before a pixel is decoded.
  JPEGs are decoded reduced (libjpeg's DCT scaling, 1/2 .. 1/8) to what the caller needs
  (``need``: the longer side it will use); other formats whose 8-bit image exceeds
  ``config.KEEP_IMAGE_MB`` are reduced inside the budget. Metadata (PNG ancillary chunks, JPEG
  APPn/COM segments) beyond ``config.MAX_METADATA_MB`` is left out of the stream, never read.
* Geometry: :func:`geometry_problem` says which sizes every supported model input can take; an
  image outside them is skipped by ``scan`` and refused by ``predict`` and the pipeline with the
  same reason.
"""
from __future__ import annotations

import bisect
import io
import mmap
import os
import stat
import threading
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, JpegImagePlugin, UnidentifiedImageError

from fracturelib import config
from fracturelib.data import dicom

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
    #: DICOM only: the acquisition fields that may be written (``dicom.META_COLUMNS``), else empty
    meta: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def skip(self, reason: str) -> "ImageCheck":
        """Mark this check skipped with ``reason`` and drop any decoded image.

        Args:
            reason: why the file cannot be used (the row's reason).

        Returns:
            This check, for chaining.
        """
        self.status, self.reason, self.image = "skipped", reason, None
        return self


def jpeg_end(data) -> int:
    """Walk the JPEG markers: the offset just past the image's end-of-image (EOI) marker, or -1.

    A search for the last FF D9 is not enough: EXIF thumbnails carry their own EOI early in the
    file, and some exporters append bytes after the real EOI.

    Args:
        data: the file's bytes (or an mmap of it).

    Returns:
        The offset just past EOI, or -1 when the file ends before it (truncated).
    """
    return jpeg_walk(data)[0]


def jpeg_walk(data) -> tuple[int, int]:
    """(end as in :func:`jpeg_end`, count of stray bytes between segments). Stray bytes before a
    marker are skipped the way libjpeg does ("extraneous bytes before marker"), so a complete file
    with junk between segments is not mistaken for a truncated one.

    Args:
        data: the file's bytes or an mmap of it.

    Returns:
        (offset past EOI or -1, number of stray bytes skipped).
    """
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


def geometry_problem(width: int, height: int) -> str:
    """The one geometry rule: "" when a width x height image fits every supported model input.

    Every model input from ``config.MIN_MODEL_SIZE`` px up keeps at least one pixel of the short
    side after an aspect-keeping resize, because the aspect ratio is at most ``config.MAX_ASPECT``.

    Args:
        width: width in pixels (as stored or as displayed: the rule is symmetric).
        height: height in pixels.

    Returns:
        "" when usable, else the skip reason ("too large: ...", "too small: ...",
        "aspect ratio 475:1 exceeds 20:1 ...").
    """
    if width * height > config.MAX_PIXELS or max(width, height) > config.MAX_SIDE:
        return (f"too large: header claims {width}x{height} px (limit {config.MAX_SIDE} px a side, "
                f"{config.MAX_PIXELS // 1_000_000} Mpx); not decoded")
    if min(width, height) < config.MIN_SIDE:
        return f"too small: {width}x{height} px (minimum {config.MIN_SIDE} px a side)"
    short, long = sorted((width, height))
    if long > short * config.MAX_ASPECT:
        ratio = f"{long / short:.2f}".rstrip("0").rstrip(".")
        return (f"aspect ratio {ratio}:1 exceeds {config.MAX_ASPECT}:1 ({width}x{height} px): the "
                f"short side would vanish in a {config.MIN_MODEL_SIZE} px model input; crop the image")
    return ""


def jpeg_scale(width: int, height: int, need: int | None) -> int:
    """libjpeg's DCT scale denominator (1, 2, 4 or 8) for decoding a JPEG to what is needed.

    Args:
        width: stored width in pixels.
        height: stored height in pixels.
        need: the longer side the caller needs (None or 0: full resolution).

    Returns:
        The largest denominator whose output (``ceil(side / s)``) keeps the longer side >= ``need``
        (so a reduced decode is then resized down, never up). tf.io.decode_jpeg's ``ratio`` and
        PIL's ``draft`` give the same pixels for it.
    """
    if not need:
        return 1
    long, short = max(width, height), min(width, height)
    for s in (8, 4, 2):
        if -(-long // s) >= need and short >= s:
            return s
    return 1


def _reduce_factor(width: int, height: int, need: int) -> int:
    """Integer box-reduction factor keeping the longer side >= ``need`` (1 = keep)."""
    return max(1, max(width, height) // max(1, need))


class _Spliced(io.RawIOBase):
    """A read-only view of a file with byte ranges left out and bytes appended: metadata too large
    to read is never read, and a truncated JPEG gets its end-of-image marker without a copy."""

    def __init__(self, path: Path, drop=(), tail: bytes = b""):
        super().__init__()
        self._f = open(path, "rb")
        size = os.fstat(self._f.fileno()).st_size
        self._pieces, pos, v = [], 0, 0            # (virtual start, file offset, length)
        for a, b in sorted(drop):
            if a > pos:
                self._pieces.append((v, pos, a - pos))
                v += a - pos
            pos = max(pos, b)
        if size > pos:
            self._pieces.append((v, pos, size - pos))
            v += size - pos
        self._starts = [p[0] for p in self._pieces]
        self._tail, self._tail_at, self._len, self._pos = tail, v, v + len(tail), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._pos, self._len)[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, b) -> int:
        mv, got = memoryview(b).cast("B"), 0
        while got < len(mv) and self._pos < self._len:
            if self._pos >= self._tail_at:
                k = self._pos - self._tail_at
                chunk = self._tail[k:k + len(mv) - got]
            else:
                start, off, length = self._pieces[bisect.bisect_right(self._starts, self._pos) - 1]
                k = self._pos - start
                self._f.seek(off + k)
                chunk = self._f.read(min(length - k, len(mv) - got))
                if not chunk:
                    break
            mv[got:got + len(chunk)] = chunk
            got += len(chunk)
            self._pos += len(chunk)
        return got

    def close(self) -> None:
        self._f.close()
        super().close()


def _png_oversized(f, limit: int) -> list[tuple[int, int, bytes]]:
    """Walk a PNG's chunks by their length fields (seeking, reading 8 bytes a chunk): the ancillary
    chunks (start, end, type) that would take the file's metadata past ``limit`` bytes."""
    f.seek(0, os.SEEK_END)
    size, pos, kept, out = f.tell(), 8, 0, []
    while pos + 8 <= size:
        f.seek(pos)
        head = f.read(8)
        length, cid = int.from_bytes(head[:4], "big"), head[4:8]
        end = pos + 12 + length
        if cid == b"IEND" or length > 0x7FFFFFFF:
            break
        if cid[:1].islower() and cid not in (b"fcTL",):         # ancillary (bit 5 of the first byte)
            if kept + length > limit:
                out.append((pos, min(end, size), cid))
            else:
                kept += length
        pos = end
    return out


def _jpeg_oversized(data, limit: int) -> list[tuple[int, int, bytes]]:
    """Walk a JPEG's header segments up to the first scan: the APPn/COM segments (start, end,
    marker) that would take the file's metadata past ``limit`` bytes. ``data``: bytes or an mmap."""
    pos, n, kept, out = 2, len(data), 0, []
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            nxt = data.find(b"\xff", pos)
            if nxt < 0:
                break
            pos = nxt
            continue
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xD9, 0xDA) or 0xD0 <= marker <= 0xD8:
            break
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if 0xE0 <= marker <= 0xEF or marker == 0xFE:
            if kept + end - pos > limit:
                out.append((pos, min(end, n), bytes([marker])))
            else:
                kept += end - pos
        pos = end
    return out


def _metadata_drops(path: Path) -> tuple[list[tuple[int, int]], str]:
    """Byte ranges of metadata to leave unread (over ``config.MAX_METADATA_MB``) and the note."""
    limit = config.MAX_METADATA_MB << 20
    with open(path, "rb") as f:
        magic = f.read(8)
        if magic == b"\x89PNG\r\n\x1a\n":
            found, what = _png_oversized(f, limit), "PNG ancillary chunks"
        elif magic[:2] == b"\xff\xd8":
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                found, what = _jpeg_oversized(data, limit), "JPEG metadata segments"
        else:
            return [], ""
    if not found:
        return [], ""
    total = sum(b - a for a, b, _ in found)
    kinds = sorted({k.decode("latin-1") if len(k) == 4 else f"0x{k[0]:02X}" for _, _, k in found})
    return ([(a, b) for a, b, _ in found],
            f"{len(found)} {what} ({', '.join(kinds[:4])}; {total / (1 << 20):.1f} MB) left unread: "
            f"over the {config.MAX_METADATA_MB} MB metadata limit (config.MAX_METADATA_MB)")


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
    pixels, a working copy and the 8-bit result (RGB at most).

    Args:
        width, height: the size that will be decoded (after any DCT reduction).
        mode: the PIL mode as stored (``L``, ``I;16``, ``RGB``, ``CMYK`` ...).

    Returns:
        Bytes to reserve from the decoding budget.
    """
    return width * height * (2 * _BYTES_PER_PIXEL.get(mode, 4) + 3)


def check_image(path: str | Path, keep_image: bool = True,
                need: int | None = config.CHECK_SIDE,
                modalities=config.RADIOGRAPH_MODALITIES) -> ImageCheck:
    """Validate one file and, when usable, return it decoded (``check.image``, converted to L/RGB).

    DICOM is recognised by content (:func:`fracturelib.data.dicom.is_dicom`), whatever the file's
    name, and read by :mod:`fracturelib.data.dicom` under the same geometry and budget rules.

    Args:
        path: the file.
        keep_image: keep the decoded image in ``check.image`` (False: decode only to verify, at
            the smallest scale).
        need: the longer side the caller will use from ``check.image``. Larger JPEGs are decoded
            reduced (DCT scaling, the smallest scale still >= ``need``); other formats are reduced
            after decoding when their 8-bit image exceeds ``config.KEEP_IMAGE_MB``. None: full
            resolution. The default, ``config.CHECK_SIDE``, is what scan's checks use.
        modalities: DICOM Modality codes read (default: radiographs); None reads any modality.

    Returns:
        An :class:`ImageCheck`: ``ok`` with the image, or ``skipped`` with the reason. ``width`` and
        ``height`` are always the file's own (as displayed), whatever the decoded size. DICOM files
        fill ``meta``.
    """
    path = Path(path)
    chk = ImageCheck(path=path)
    try:
        st = path.stat()
    except OSError as e:
        return chk.skip(f"unreadable: {e.strerror or e}")
    if not stat.S_ISREG(st.st_mode):          # a pipe, a device, a socket, a folder: never opened
        return chk.skip("not a regular file (a folder, pipe, device or socket)")
    chk.bytes = st.st_size
    if chk.bytes == 0:
        return chk.skip("empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError as e:
        return chk.skip(f"unreadable: {e.strerror or e}")
    if dicom.is_dicom(head):
        return _check_dicom(chk, keep_image, need, modalities)
    src, drops = None, []
    try:
        drops, meta_note = _metadata_drops(path)
        if drops:
            chk.native = False                # decoders must not read it whole either
            chk.note = meta_note
            src = _Spliced(path, drops)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(src or path)      # reads the header only
    except UnidentifiedImageError:
        return chk.skip(_unidentified_reason(path))
    except Image.DecompressionBombError:
        w, h = _header_size(path, drops)
        return chk.skip(f"too large: header claims {w}x{h} px (limit {config.MAX_SIDE} px a side, "
                        f"{config.MAX_PIXELS // 1_000_000} Mpx); not decoded")
    except OSError as e:
        return chk.skip(f"unreadable: {e.strerror or e}")
    except Exception as e:  # noqa: BLE001 - any parser failure means "not an image"
        return chk.skip(f"not an image: header unreadable ({type(e).__name__}: {e})")
    finally:
        if src is not None and chk.status != "ok":
            src.close()
    try:
        with im:
            return _check_opened(chk, im, keep_image, need)
    finally:
        if src is not None:
            src.close()


def _check_opened(chk: ImageCheck, im: Image.Image, keep_image: bool, need: int | None) -> ImageCheck:
    path = chk.path
    chk.width, chk.height = im.size
    chk.mode, chk.format = im.mode, (im.format or "")
    ext_fmt = EXT_FORMATS.get(path.suffix.lower())
    if ext_fmt and ext_fmt != chk.format:
        chk.note = "; ".join(x for x in (chk.note, f"content is {chk.format}, extension is {path.suffix}") if x)
    reason = geometry_problem(chk.width, chk.height)
    if reason:
        return chk.skip(reason)
    if chk.mode not in CONVERTIBLE_MODES:
        return chk.skip(f"unsupported mode {chk.mode!r}")
    if chk.format == "JPEG":
        reason = _jpeg_problems(chk)
        if reason:
            return chk.skip(reason)
    orientation = _orientation(im)
    want = need if keep_image else 1          # verify only: the smallest scale
    if isinstance(im, JpegImagePlugin.JpegImageFile):
        s = jpeg_scale(chk.width, chk.height, want)
        if s > 1:
            im.draft(im.mode, (max(1, chk.width // s), max(1, chk.height // s)))
    w, h = im.size                            # the size that will be decoded
    cost = decode_cost(w, h, chk.mode)
    if cost > DECODE_BUDGET.limit:
        return chk.skip(f"too large to decode: {chk.width}x{chk.height} px {chk.mode} needs about "
                        f"{cost >> 20} MB, over the decoding budget of {DECODE_BUDGET.limit >> 20} MB "
                        "(config.DECODE_BUDGET_MB); downscale the file")
    try:
        with DECODE_BUDGET.hold(cost):
            im.load()
            if keep_image:
                out = to_8bit(im)
                if need and w * h * len(out.getbands()) > config.KEEP_IMAGE_MB << 20:
                    out = out.reduce(_reduce_factor(w, h, need))
                chk.image = out.transpose(ORIENTATION[orientation]) if orientation in ORIENTATION else out
    except MemoryError:
        return chk.skip(f"out of memory decoding {chk.width}x{chk.height} px; downscale the file")
    except Exception as e:  # noqa: BLE001
        return chk.skip(f"corrupt: decoding failed ({type(e).__name__}: {e})")
    chk.native = chk.native and (chk.format, chk.mode) in TF_NATIVE and orientation not in ORIENTATION
    if orientation in ORIENTATION:
        if orientation >= 5:                  # stored sideways: report the size as displayed
            chk.width, chk.height = chk.height, chk.width
        chk.note = "; ".join(x for x in (chk.note, f"EXIF orientation {orientation} applied") if x)
    return chk


def _check_dicom(chk: ImageCheck, keep_image: bool, need: int | None, modalities) -> ImageCheck:
    """A DICOM file under the rules every format follows: geometry and budget from the header, then
    frame 1 decoded and windowed inside the budget (see :mod:`fracturelib.data.dicom`)."""
    chk.format, chk.native = "DICOM", False
    # a deflated data set is inflated while its header is read: it takes the whole budget from the start
    whole = DECODE_BUDGET.hold(DECODE_BUDGET.limit) if dicom.is_deflated(chk.path) else nullcontext()
    with whole:
        return _read_dicom(chk, keep_image, need, modalities, inner=isinstance(whole, nullcontext))


def _read_dicom(chk: ImageCheck, keep_image: bool, need: int | None, modalities, inner: bool) -> ImageCheck:
    """:func:`_check_dicom`'s work; ``inner``: reserve the decoding cost here (False: already held)."""
    ext_fmt = EXT_FORMATS.get(chk.path.suffix.lower())
    try:
        h = dicom.read_header(chk.path, modalities, DECODE_BUDGET.limit)
    except dicom.DicomSkip as e:
        chk.meta = e.meta                     # a skipped CT still says it is a CT
        return chk.skip(str(e))
    except MemoryError:
        return chk.skip("out of memory reading the DICOM header; re-export the file")
    except Exception as e:  # noqa: BLE001 - a parser failure we did not foresee is still one skipped file
        return chk.skip(f"corrupt DICOM: the header cannot be read ({type(e).__name__})")
    chk.meta, chk.mode = h.meta, h.mode
    chk.width, chk.height = h.columns, h.rows
    notes = [f"content is DICOM, extension is {chk.path.suffix}"] if ext_fmt else []
    notes += h.notes
    reason = geometry_problem(h.columns, h.rows)
    if reason:
        return chk.skip(reason)
    if h.cost > DECODE_BUDGET.limit:
        return chk.skip(f"too large to decode: {h.columns}x{h.rows} px, {h.bits_allocated}-bit, needs about "
                        f"{h.cost >> 20} MB, over the decoding budget of {DECODE_BUDGET.limit >> 20} MB "
                        "(config.DECODE_BUDGET_MB); downscale the file")
    try:
        with DECODE_BUDGET.hold(h.cost) if inner else nullcontext():
            im, more = dicom.decode(h)
    except dicom.DicomSkip as e:
        return chk.skip(str(e))
    except MemoryError:
        return chk.skip(f"out of memory decoding {h.columns}x{h.rows} px; downscale the file")
    except Exception as e:  # noqa: BLE001
        return chk.skip(f"corrupt DICOM pixel data: decoding failed ({type(e).__name__})")
    chk.note = "; ".join(x for x in (chk.note, *notes, *more) if x)
    if keep_image:
        if need and h.rows * h.columns * len(im.getbands()) > config.KEEP_IMAGE_MB << 20:
            im = im.reduce(_reduce_factor(h.columns, h.rows, need))
        chk.image = im
    return chk


#: EXIF orientation tag -> the transpose that shows the image upright (as ImageOps.exif_transpose).
ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
               6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_90}


def _unidentified_reason(path: Path) -> str:
    """Why a file no decoder identifies is skipped. A JPEG cut before its first scan has a valid start
    but no image data: some Pillow versions open its header, others do not; either way it is a
    truncated JPEG, not "not an image"."""
    try:
        with open(path, "rb") as f:
            head = f.read(3)
            if head == b"\xff\xd8\xff":
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                    if jpeg_end(data) < 0:
                        return ("truncated JPEG, not decodable: the file ends before its image data "
                                "(no scan and no end-of-image marker)")
                return "not an image: a JPEG start with headers no decoder reads"
    except (OSError, ValueError):
        pass
    return "not an image: content is not a recognised image format"


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
            return _truncation_reason(chk.path, chk.width, chk.height)
        scans = dicom.scan_count(data)
        if scans > config.MAX_JPEG_SCANS:
            return (f"too many scans: {scans} (limit {config.MAX_JPEG_SCANS}, config.MAX_JPEG_SCANS); decoding "
                    "would take minutes; re-encode the file")
        extra = []
        if stray:
            extra.append(f"{stray} stray bytes between segments (skipped, as decoders do)")
        if data[end:].strip(b"\x00"):
            extra.append(f"{len(data) - end} bytes after the end-of-image marker (ignored)")
    chk.note = "; ".join(x for x in (chk.note, *extra) if x)
    return ""


def _header_size(path: Path, drops=()) -> tuple[int, int]:
    """Width and height from the header alone, by the format plugin PIL would use, without PIL's
    process-wide decompression-bomb check (which refuses to say the size). ``drops``: metadata
    byte ranges left unread (see :func:`_metadata_drops`)."""
    Image.init()
    with _Spliced(path, drops) as fp:
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


def _truncation_reason(path: Path, width: int, height: int) -> str:
    """Say whether the pixels can still be recovered the way tolerant decoders do (libjpeg
    inserts an end-of-image marker and fills the missing rows with gray). We append that marker
    ourselves (a view of the file, not a copy) rather than flip PIL's process-wide
    LOAD_TRUNCATED_IMAGES, which is unsafe in threads; the trial decode is at 1/8 scale, in the
    decoding budget."""
    try:
        drops, _ = _metadata_drops(path)
        with _Spliced(path, drops, tail=b"\xff\xd9") as src, Image.open(src) as im:
            s = jpeg_scale(width, height, 1)
            im.draft(im.mode, (max(1, width // s), max(1, height // s)))
            w, h = im.size
            with DECODE_BUDGET.hold(min(decode_cost(w, h, im.mode), DECODE_BUDGET.limit)):
                im.load()
        how = "decodable: the file ends before its end-of-image marker; a tolerant decoder " \
              "fills the missing rows with gray"
    except Exception:  # noqa: BLE001
        how = "not decodable: the file ends before its end-of-image marker and no pixels " \
              "can be recovered"
    return f"truncated JPEG, {how}"


def to_8bit(im: Image.Image) -> Image.Image:
    """Any supported mode -> 8-bit "L" or "RGB". Alpha is composited on black (X-ray background).

    Args:
        im: an opened image of a supported mode (16-bit is stretched to its own range).

    Returns:
        The 8-bit image (``im`` itself when it is already L or RGB).
    """
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


def read_image(path: str | Path, channels: int = 3, need: int | None = None,
               modalities=config.RADIOGRAPH_MODALITIES) -> np.ndarray:
    """Decoded uint8 array HxWxC (C = 1 or 3). Raises ImageError naming the file and the fix.

    Args:
        path: the file.
        channels: 1 (grayscale) or 3 (RGB).
        need: the longer side the caller will use (see :func:`check_image`); None: full resolution.
        modalities: DICOM Modality codes read; None reads any.

    Returns:
        The image as displayed (EXIF orientation applied), reduced when ``need`` allows.

    Raises:
        ImageError: the file is not usable; the message names it, the reason and the fix.
    """
    return read_image_checked(path, channels, need, modalities)[0]


def read_image_checked(path: str | Path, channels: int = 3, need: int | None = None,
                       modalities=config.RADIOGRAPH_MODALITIES) -> tuple[np.ndarray, ImageCheck]:
    """:func:`read_image` and its :class:`ImageCheck`: the file's own (width, height) as displayed (a large
    JPEG decoded reduced is smaller than the file, and answers about it, a point or a box, are given in
    the file's pixels), its notes, and DICOM ``meta`` such as the pixel spacing; the image itself is
    dropped from the check.

    Args:
        path: the file.
        channels: 1 (grayscale) or 3 (RGB).
        need: the longer side the caller will use; None: full resolution.
        modalities: DICOM Modality codes read; None reads any.

    Returns:
        (the decoded image HxWxC uint8, the check).

    Raises:
        ImageError: the file is not usable; the message names it, the reason and the fix.
    """
    chk = check_image(path, need=need, modalities=modalities)
    if not chk.ok:
        raise ImageError(f"{path}: cannot use this file: {chk.reason}. {_advice(chk.reason)}")
    im = chk.image.convert("L" if channels == 1 else "RGB")
    chk.image = None
    arr = np.asarray(im, dtype=np.uint8)
    return (arr[..., None] if channels == 1 else arr), chk


def _advice(reason: str) -> str:
    """The fix for a skip reason (geometry reasons carry their own)."""
    if reason.startswith("modality "):
        return ""
    if "DICOM" in reason or reason.startswith(("no pixel data", "1-bit", "truncated pixel data")):
        return "Export the radiograph from the archive again (any transfer syntax), or as a PNG."
    if any(w in reason for w in ("aspect ratio", "too small", "too large", "crop")):
        return "Crop or resize it." if "crop" not in reason else ""
    return "Re-export it as an 8-bit PNG or a complete JPEG."
