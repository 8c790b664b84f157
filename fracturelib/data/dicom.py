"""DICOM radiographs: what a hospital archive stores, read into the 8-bit image every other format becomes.

Two steps, so that :mod:`fracturelib.data.imageio` can apply the same policy (geometry, decoding
budget) to DICOM as to every other format:

* :func:`read_header` parses the file without its pixel data (large values stay on disk) and says,
  from the header alone, whether it holds a radiograph frame and what decoding it would cost
  (rows x columns x samples x bytes, for frame 1; the whole pixel data's claimed size is checked
  against the bytes actually present). Objects without pixels (DICOMDIR, structured reports,
  presentation states), non-radiograph modalities and 1-bit data are refused here.
* :func:`decode` decodes frame 1 (pydicom 3 with the pylibjpeg plugins: JPEG baseline / extended /
  lossless, JPEG-LS, JPEG 2000, RLE; deflated, implicit VR and big endian data sets), applies the
  Modality LUT (rescale or LUT sequence), then the VOI LUT (LUT sequence, or the first window with
  VOILUTFunction LINEAR, LINEAR_EXACT or SIGMOID, PS3.3 C.11.2.1.2) into 8 bits; with no VOI, a
  0.5-99.5 percentile window of the non-padding pixels. MONOCHROME1 is inverted (bone bright),
  PixelPaddingValue pixels are left out of the window and shown black, colour becomes RGB.

Privacy: nothing read here leaves the module but the image, sizes, a few acquisition fields
(modality, body part, view, laterality, pixel spacing) and :func:`patient_group`, a keyed hash of
PatientID (else StudyInstanceUID). Names, IDs, dates, accession numbers, institutions and UIDs are
never put in a note, a reason or a column; messages from pydicom are scrubbed of every identifying
value of the file before they are used.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import logging
import os
import re
import secrets
import tempfile
import threading
import warnings
import zlib
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fracturelib import config

#: PS3.10 file: 128-byte preamble then "DICM"
_MAGIC_AT = 128
#: explicit VRs, to recognise a raw data set written without preamble or file meta
_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD",
        b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI",
        b"UL", b"UN", b"UR", b"US", b"UT", b"UV"}
_DEFLATED = "1.2.840.10008.1.2.1.99"
#: starts of the image formats PIL reads (TIFF is left out: a DICOM preamble may hold a TIFF header)
_IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")
_DICOMDIR = "1.2.840.10008.1.3.10"
#: values that identify a person or a study: never written anywhere (messages are scrubbed of them)
IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
               "InstitutionAddress", "ReferringPhysicianName", "OtherPatientIDs", "OtherPatientNames",
               "PatientAddress", "OperatorsName", "PerformingPhysicianName", "StationName", "StudyID",
               "DeviceSerialNumber", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_PALETTE = tuple(f"{pre}{c}PaletteColorLookupTable{part}" for c in ("Red", "Green", "Blue")
                 for pre, part in (("", "Descriptor"), ("", "Data"), ("Segmented", "Data")))


#: the only elements parsed (a header of millions of private elements costs neither memory nor minutes):
#: what the reader uses, and the identifying values a message must be scrubbed of
HEADER_TAGS = ("SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
               "FrameOfReferenceUID", "Modality", "BodyPartExamined", "ViewPosition", "Laterality",
               "ImageLaterality", "PixelSpacing", "ImagerPixelSpacing", "BurnedInAnnotation", "NumberOfFrames",
               "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored",
               "HighBit", "PixelRepresentation", "PlanarConfiguration", "RescaleSlope", "RescaleIntercept",
               "ModalityLUTSequence", "VOILUTSequence", "WindowCenter", "WindowWidth", "VOILUTFunction",
               "PixelPaddingValue", "PixelPaddingRangeLimit", "DirectoryRecordSequence", *_PALETTE,
               *_PIXEL_TAGS, *IDENTIFYING)


class _Redact(logging.Filter):
    """pydicom's log lines may quote a header value (an invalid UID, a name): quoted values and
    UID-like numbers are replaced by ``...`` before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        text = re.sub(r"'[^']*'|\"[^\"]*\"", "'...'", text)
        record.msg, record.args = re.sub(r"\d+(\.\d+){2,}", "...", text), ()
        return True


_QUIET = threading.Lock()
_quieted = False


def _quiet_pydicom() -> None:
    """Before the first DICOM is read: pydicom stops validating values while reading (its complaints
    quote them: an invalid UID, a malformed date), its other warnings are ignored (per-call
    ``warnings.catch_warnings`` is not thread-safe) and its log lines are redacted. Process-wide, for
    pydicom as used by anyone in this process: privacy first."""
    global _quieted
    import pydicom.config
    with _QUIET:
        if _quieted:
            return
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
        warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
        logging.getLogger("pydicom").addFilter(_Redact())
        _quieted = True


class DicomSkip(Exception):
    """The file is DICOM but cannot be used; ``str(e)`` is the manifest's reason (no identifying value).

    Attributes:
        meta: the acquisition fields read before the file was refused (empty when none were).
    """

    def __init__(self, reason: str, meta: dict | None = None):
        super().__init__(" ".join(reason.split()))          # one line, whatever a decoder said
        self.meta = meta or {}


def is_dicom(head: bytes) -> bool:
    """Whether the first bytes of a file are DICOM: the PS3.10 preamble and ``DICM``, or a raw data set
    written without them (its first element a group 0002 or 0008 tag, little or big endian).

    Args:
        head: at least the first 132 bytes of the file (fewer when the file is shorter).

    Returns:
        True for DICOM content, whatever the file's name; False for a file that starts as a PNG, JPEG,
        GIF, BMP or WebP, whatever its bytes 128..132 spell (a PNG's text chunk can hold ``DICM``).
    """
    if head.startswith(_IMAGE_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return False
    if head[_MAGIC_AT:_MAGIC_AT + 4] == b"DICM":
        return True
    if len(head) < 8:
        return False
    group_le, group_be = int.from_bytes(head[:2], "little"), int.from_bytes(head[:2], "big")
    if group_le in (0x0002, 0x0008):
        element = int.from_bytes(head[2:4], "little")
        if head[4:6] in _VRS:                          # explicit VR little endian
            return element < 0x0200
        length = int.from_bytes(head[4:8], "little")  # implicit VR: a plausible first value length
        return element < 0x0200 and 0 < length < 1024
    return group_be == 0x0008 and head[4:6] in _VRS   # explicit VR big endian


@dataclass
class Header:
    """What :func:`read_header` learnt: enough to apply the budget and geometry before decoding.

    Attributes:
        dataset: the pydicom data set (pixel data deferred: still on disk).
        rows, columns, frames, samples, bits_allocated, bits_stored: from the header.
        photometric: PhotometricInterpretation (``MONOCHROME2`` ...).
        encapsulated: compressed pixel data (a compressed transfer syntax).
        cost: bytes that decoding frame 1 and windowing it holds at its peak.
        frame_bytes: bytes of one uncompressed frame as stored.
        path: the file, where frame 1 is read from (None: the data set is in memory, a deflated file).
        notes: what the reader did that a user should know (multi-frame, no window, burnt-in text).
        meta: the fields that may leave the file (see :data:`META_COLUMNS`).
    """
    dataset: object
    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    photometric: str
    encapsulated: bool
    cost: int
    frame_bytes: int = 0
    path: Path | None = None
    notes: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    #: compressed data: (offset, length) of frame 1's fragments in the file (or the in-memory value)
    fragments: list = field(default_factory=list)

    @property
    def mode(self) -> str:
        """The manifest's ``mode`` of a DICOM file: photometric interpretation and stored bits."""
        return f"{self.photometric} {self.bits_stored}-bit"


#: manifest columns a DICOM file fills (empty for other files)
META_COLUMNS = ["modality", "body_part", "view_position", "laterality", "spacing_row_mm", "spacing_col_mm",
                "patient_group"]


def read_header(path: str | Path, modalities=config.RADIOGRAPH_MODALITIES, budget: int | None = None) -> Header:
    """Parse a DICOM file's header (pixel data left on disk) and refuse what cannot be a radiograph frame.

    Args:
        path: a file whose content :func:`is_dicom`.
        modalities: the Modality codes read (``config.RADIOGRAPH_MODALITIES``); None reads any modality.
        budget: bytes a deflated data set may inflate to (None: ``config.DECODE_BUDGET_MB``).

    Returns:
        The :class:`Header`.

    Raises:
        DicomSkip: the file is unreadable, holds no pixel data, is not a radiograph or lies about its size.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    path = Path(path)
    budget = budget if budget is not None else config.DECODE_BUDGET_MB << 20
    _quiet_pydicom()
    try:
        ds, size = _inflated(path, budget)
        inflated = size if ds is not None else 0
        if ds is None:
            ds = pydicom.dcmread(path, defer_size=1 << 16, force=True, specific_tags=list(HEADER_TAGS))
            size = path.stat().st_size
        ds.get("Modality")                   # values are parsed on access: a damaged element fails here
    except DicomSkip:
        raise
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError, NotImplementedError) as e:
        raise DicomSkip(f"corrupt DICOM: the header cannot be read ({type(e).__name__}); "
                        "re-export the file from the archive") from None
    _declare_syntax(ds)
    meta = _meta(ds)
    notes = []
    sop = _sop_name(ds)
    if not any(t in ds for t in _PIXEL_TAGS):
        if sop == "of unknown class":
            raise DicomSkip("no pixel data: not a readable DICOM object, no SOP class and no pixel data "
                            "found (damaged, or not DICOM after its DICM preamble)", meta)
        if "Image Storage" in sop:
            raise DicomSkip(f"no pixel data: a {sop} object without its pixel data (damaged, or written "
                            "in another transfer syntax than its file meta says)", meta)
        raise DicomSkip(f"no pixel data: a DICOM {sop} object, not an image", meta)
    if "PixelData" not in ds:
        raise DicomSkip("float pixel data (FloatPixelData) is not a radiograph this reader uses", meta)
    modality = meta["modality"]
    if modalities is not None and modality and modality not in modalities:
        raise DicomSkip(f"modality {modality} is not a radiograph (read it with --modalities {modality})", meta)
    if not modality:
        notes.append("no Modality in the header")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits_alloc, bits_stored = int(ds.BitsAllocated), int(ds.get("BitsStored", ds.BitsAllocated))
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()
    except (AttributeError, TypeError, ValueError):
        raise DicomSkip("corrupt DICOM: Rows, Columns or BitsAllocated missing or not a number; "
                        "re-export the file from the archive", meta) from None
    if bits_alloc == 1:
        raise DicomSkip("1-bit pixels (BitsAllocated 1): a mask or overlay, not a radiograph", meta)
    if bits_alloc not in (8, 16, 32) or not 1 <= bits_stored <= bits_alloc or samples not in (1, 3) \
            or rows < 1 or cols < 1 or frames < 1:
        raise DicomSkip(f"unsupported pixel format: BitsAllocated {bits_alloc}, BitsStored {bits_stored}, "
                        f"SamplesPerPixel {samples}, {rows}x{cols}, {frames} frame(s)", meta)
    known = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR")
    if photometric not in known:
        raise DicomSkip(f"unsupported PhotometricInterpretation {_code(photometric)}", meta)
    frame_bytes = rows * cols * samples * (bits_alloc // 8)
    if photometric == "YBR_FULL_422":      # uncompressed 4:2:2 stores two samples a pixel, not three
        frame_bytes = frame_bytes * 2 // 3
    ts = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "") if hasattr(ds, "file_meta") else ""
    encapsulated = bool(ts) and _is_compressed(ts)
    try:
        _check_pixel_bytes(ds, size, frame_bytes, frames, encapsulated)
        fragments = _frame_one_fragments(ds, path, frames) if encapsulated else []
    except DicomSkip as e:
        raise DicomSkip(str(e), meta) from None
    packed = sum(n for _, n in fragments)
    if packed > 2 * frame_bytes + (1 << 16):     # no codec doubles a frame: filler, or lying offsets
        raise DicomSkip(f"corrupt DICOM pixel data: compressed frame 1 ({packed:,} bytes) is larger than the "
                        f"frame it encodes ({frame_bytes:,} bytes); not decoded", meta)
    held = 3 * packed if encapsulated else frame_bytes   # read, joined, encapsulated again for the decoder
    if frames > 1:
        notes.append(f"multi-frame ({frames} frames): frame 1 used")
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        notes.append("BurnedInAnnotation YES: the pixels may show identifying text")
    if "SegmentedRedPaletteColorLookupTableData" in ds:
        raise DicomSkip("segmented palette colour tables are not read (they expand without bound)", meta)
    # frame 1 as read (compressed: its fragments, then joined), the inflated data set of a deflated file,
    # frame 1 decoded (decoders work in 32 bits), and the LUTs' float64 temporaries with the 8-bit
    # result: ~40 bytes a sample at the peak, measured on 64 Mpx files
    cost = held + inflated + frame_bytes + rows * cols * samples * 40
    return Header(ds, rows, cols, frames, samples, bits_alloc, bits_stored, photometric, encapsulated, cost,
                  frame_bytes, None if inflated else path, notes, meta, fragments)


def _declare_syntax(ds) -> None:
    """A data set read without file meta (no preamble, no group 0002) gets the transfer syntax it was
    found to be written in, which decoding needs (implicit or explicit VR, little or big endian)."""
    import pydicom
    from pydicom import uid
    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    if "TransferSyntaxUID" in ds.file_meta:
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        implicit, little = True, True
    ds.file_meta.TransferSyntaxUID = (uid.ImplicitVRLittleEndian if implicit else
                                      uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian)


def is_deflated(path: str | Path) -> bool:
    """Whether a DICOM file's transfer syntax is Deflated Explicit VR Little Endian (its data set is
    inflated as a whole while the header is read).

    Args:
        path: a file whose content :func:`is_dicom`.

    Returns:
        True for a deflated data set; False otherwise, or when the file meta cannot be read.
    """
    import pydicom
    from pydicom.filereader import read_preamble
    try:
        with open(path, "rb") as f:
            if f.read(_MAGIC_AT + 4)[_MAGIC_AT:] != b"DICM":
                return False
            f.seek(0)
            read_preamble(f, force=False)
            meta = pydicom.filereader._read_file_meta_info(f)
        return str(meta.get("TransferSyntaxUID", "")) == _DEFLATED
    except Exception:  # noqa: BLE001 - an unreadable file meta: read_header says why
        return False


def _inflated(path: Path, budget: int):
    """A deflated data set inflated here, a chunk at a time up to ``budget`` bytes (pydicom inflates the
    whole stream at once: a small file could claim gigabytes), and its inflated size; (None, 0) for every
    other transfer syntax. Parsing holds the stream and a copy of its values: it may inflate to a third of
    ``budget``."""
    import pydicom
    from pydicom.filereader import read_dataset, read_preamble
    with open(path, "rb") as f:
        head = f.read(_MAGIC_AT + 4)
        if head[_MAGIC_AT:] != b"DICM":
            return None, 0
        f.seek(0)
        read_preamble(f, force=False)
        meta = pydicom.filereader._read_file_meta_info(f)
        if str(meta.get("TransferSyntaxUID", "")) != _DEFLATED:
            return None, 0
        inflate, out, total = zlib.decompressobj(-zlib.MAX_WBITS), [], 0
        while chunk := f.read(1 << 20):
            while chunk:
                part = inflate.decompress(chunk, 1 << 22)
                total += len(part)
                if total > budget // 3:
                    raise DicomSkip(f"deflated data inflates past a third of the decoding budget of "
                                    f"{budget >> 20} MB (config.DECODE_BUDGET_MB); not decoded")
                out.append(part)
                chunk = inflate.unconsumed_tail
    data = b"".join(out)
    del out                                 # the chunks go before the values are parsed
    ds = read_dataset(io.BytesIO(data), is_implicit_VR=False, is_little_endian=True,
                      specific_tags=[pydicom.datadict.tag_for_keyword(k) for k in HEADER_TAGS])
    ds = pydicom.FileDataset(str(path), ds, file_meta=meta, preamble=head[:_MAGIC_AT])
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    return ds, total


def _is_compressed(ts: str) -> bool:
    from pydicom.uid import UID
    try:
        return UID(ts).is_compressed
    except Exception:  # noqa: BLE001 - an unknown UID: pydicom decides when decoding
        return False


def _check_pixel_bytes(ds, size: int, frame_bytes: int, frames: int, encapsulated: bool) -> int:
    """Refuse pixel data whose header claims more bytes than the data set holds (``size``: the file's, or
    the inflated stream's) — a lying or cut file — without reading it. Returns the bytes frame 1 will
    hold when read: one frame, or for compressed data at most what follows in the file."""
    elem = ds.get_item("PixelData", keep_deferred=True)
    length = getattr(elem, "length", None)
    where = getattr(elem, "value_tell", None)
    if length == 0 or (getattr(elem, "value", b"") is None and where is None):
        raise DicomSkip("no pixel data: the PixelData element is empty")
    if encapsulated or length in (None, 0xFFFFFFFF):       # frame 1 compressed: at most what follows
        rest = size if where is None else max(0, size - where)
        return rest if frames == 1 else min(rest, 2 * frame_bytes)
    have = length if where is None else max(0, min(length, size - where))
    if have < frame_bytes * frames:
        raise DicomSkip(f"truncated pixel data: the header claims {frames} frame(s) of {frame_bytes:,} bytes "
                        f"({int(ds.Rows)}x{int(ds.Columns)}, {int(ds.BitsAllocated)} bits), the file holds "
                        f"{have:,}; re-export the file")
    return frame_bytes


def decode(h: Header):
    """Frame 1 of a checked header, windowed into 8 bits (see the module's docstring for the rules).

    Args:
        h: from :func:`read_header`, after the caller reserved ``h.cost`` from its decoding budget.

    Returns:
        (PIL image, "L" or "RGB", the file's size; notes, a list of strings).

    Raises:
        DicomSkip: the pixel data cannot be decoded.
    """
    from PIL import Image
    ds, notes = h.dataset, []
    try:
        one = _frame_one(h)
        from pydicom.pixels import pixel_array
        arr = pixel_array(one)
    except DicomSkip:
        raise
    except MemoryError:
        raise DicomSkip(f"out of memory decoding {h.columns}x{h.rows} px; downscale the file") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is a skipped file
        raise DicomSkip(f"corrupt DICOM pixel data: decoding failed ({type(e).__name__}: "
                        f"{scrub(str(e), ds)[:200]})") from None
    if arr.ndim == 3 and h.samples == 1:        # a multi-frame array when only one frame was asked
        arr = arr[0]
    if arr.shape[:2] != (h.rows, h.columns):
        raise DicomSkip(f"corrupt DICOM pixel data: decoded {arr.shape[1]}x{arr.shape[0]} px, header says "
                        f"{h.columns}x{h.rows}")
    if h.samples == 3 or h.photometric == "PALETTE COLOR":
        out = _colour(arr, h)
        return Image.fromarray(out, "RGB"), notes
    pad = _padding_mask(arr, ds)
    values, how = _modality(arr, ds)
    if how:
        notes.append(how)
        out = _percentile(values, pad)
    else:
        out, how = _voi(values, ds, pad)
        if how:
            notes.append(how)
    if h.photometric == "MONOCHROME1":
        out = 255 - out
    if pad is not None:
        out[pad] = 0
    return Image.fromarray(out, "L"), notes


#: pixel-module attributes a one-frame copy of the data set needs to be decoded
_PIXEL_MODULE = ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored",
                 "HighBit", "PixelRepresentation", "PlanarConfiguration")


def _frame_one(h: Header):
    """A data set holding frame 1 alone (its pixel-module attributes and that frame's bytes), read from the
    file without loading the other frames; a compressed frame is checked against the DICOM header
    before any decoder sees it."""
    import pydicom
    from pydicom.encaps import encapsulate
    elem = h.dataset.get_item("PixelData", keep_deferred=True)
    value, where = getattr(elem, "value", None), getattr(elem, "value_tell", None)
    with open(h.path, "rb") if value is None and h.path is not None else nullcontext() as f:
        if value is None and f is None:
            raise DicomSkip("no pixel data: the PixelData element is empty")
        if f is not None:
            f.seek(where)
        if h.encapsulated:
            parts = []
            for at, n in h.fragments:
                if f is not None:
                    f.seek(at)
                    parts.append(f.read(n))
                else:
                    parts.append(bytes(value[at - (where or 0):at - (where or 0) + n]))
            frame = b"".join(parts)
            del parts
            _check_codestream(h, frame)
        else:
            frame = f.read(h.frame_bytes) if f is not None else bytes(value[:h.frame_bytes])
            if len(frame) < h.frame_bytes:
                raise DicomSkip("truncated pixel data: frame 1 is cut short; re-export the file")
    one = pydicom.Dataset()
    one.file_meta = pydicom.dataset.FileMetaDataset()
    one.file_meta.TransferSyntaxUID = h.dataset.file_meta.TransferSyntaxUID
    for name in _PIXEL_MODULE:
        if name in h.dataset:
            setattr(one, name, h.dataset[name].value)
    one.NumberOfFrames = 1
    one.PixelData = encapsulate([frame]) if h.encapsulated else frame
    one["PixelData"].VR = "OB" if h.encapsulated or h.bits_allocated == 8 else "OW"
    return one


_MAX_FRAGMENTS = 1_000_000


def _frame_one_fragments(ds, path: Path, frames: int) -> list[tuple[int, int]]:
    """(offset, length) of frame 1's fragments of encapsulated pixel data, from the item headers alone
    (8 bytes each; no fragment is read): the Basic Offset Table when it is consistent, else one fragment
    a frame when their counts match, else the fragments up to the first that ends an image (EOI/EOC), else
    all of them. Offsets are in the file (or, for an in-memory value, from ``value_tell``)."""
    elem = ds.get_item("PixelData", keep_deferred=True)
    value, where = getattr(elem, "value", None), getattr(elem, "value_tell", None) or 0
    with (open(path, "rb") if value is None else nullcontext(io.BytesIO(bytes(value)))) as f:
        base = where if value is None else 0
        f.seek(base)
        items, bot = [], []
        while len(items) <= _MAX_FRAGMENTS:
            head = f.read(8)
            if len(head) < 8:
                break
            group, elem_no = int.from_bytes(head[:2], "little"), int.from_bytes(head[2:4], "little")
            n = int.from_bytes(head[4:8], "little")
            if (group, elem_no) == (0xFFFE, 0xE0DD):
                break
            if (group, elem_no) != (0xFFFE, 0xE000):
                raise DicomSkip("corrupt DICOM pixel data: an encapsulated item header is damaged")
            at = f.tell()
            if at - 8 == base and n <= 4 * frames + 4:          # the Basic Offset Table
                raw = f.read(n)
                bot = [int.from_bytes(raw[i:i + 4], "little") for i in range(0, len(raw) - 3, 4)]
                continue
            items.append((at - 8 - base, at + (where if value is not None else 0), n))
            f.seek(at + n)
        if len(items) > _MAX_FRAGMENTS:
            raise DicomSkip(f"corrupt DICOM pixel data: more than {_MAX_FRAGMENTS:,} fragments")
        if not items:
            raise DicomSkip("no pixel data: the encapsulated pixel data holds no fragment")
        first = items[0][0]
        if frames == 1:
            chosen = items
        elif len(bot) == frames and bot[0] == 0 and all(a < b for a, b in zip(bot, bot[1:])):
            chosen = [it for it in items if it[0] - first < bot[1]]
        elif len(items) == frames:
            chosen = items[:1]
        else:
            chosen = []
            for it in items:
                chosen.append(it)
                f.seek(it[1] - (where if value is not None else 0) + max(0, it[2] - 2))
                if f.read(2) == b"\xff\xd9":
                    break
    return [(at, n) for _, at, n in chosen]


def _check_codestream(h: Header, frame: bytes) -> None:
    """A compressed frame whose own header claims another size or another number of components than the
    DICOM header is refused before the decoder allocates for it (JPEG SOF, JPEG-LS SOF55, JPEG 2000 SIZ,
    also inside JP2 boxes); a JPEG-family frame whose size cannot be found is refused too. RLE decodes
    into the DICOM header's size."""
    from pydicom.uid import UID
    declared = codestream_size(frame)
    if declared is None:
        if "JPEG" in UID(str(h.dataset.file_meta.TransferSyntaxUID)).name:
            raise DicomSkip("corrupt DICOM pixel data: the compressed frame declares no size; not decoded")
        return
    w, hh, comps, bits = declared
    if (w, hh) != (h.columns, h.rows) or comps != h.samples:
        raise DicomSkip(f"corrupt DICOM pixel data: the compressed frame is {w}x{hh} px with {comps} "
                        f"component(s), the header says {h.columns}x{h.rows} with {h.samples}; not decoded")
    if bits > h.bits_allocated:
        raise DicomSkip(f"corrupt DICOM pixel data: the compressed frame has {bits}-bit samples, the header "
                        f"allocates {h.bits_allocated} bits; not decoded")
    scans = scan_count(frame)
    if scans > config.MAX_JPEG_SCANS:
        raise DicomSkip(f"too many scans: the compressed frame has {scans} (limit {config.MAX_JPEG_SCANS}, "
                        "config.MAX_JPEG_SCANS); decoding would take minutes; not decoded")


def codestream_size(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, components, bits of precision) that a JPEG / JPEG-LS or JPEG 2000 codestream
    declares (a JP2 file's codestream box included), read from its frame header wherever it lies before
    the scan data.

    Args:
        data: the codestream (frame 1's bytes).

    Returns:
        (width, height, components, precision), or None when the format is not one of these or declares no
        size.
    """
    if data[:8] == b"\x00\x00\x00\x0cjP  ":           # JP2: the codestream is in the jp2c box
        i = 0
        while i + 8 <= len(data):
            n, kind = int.from_bytes(data[i:i + 4], "big"), data[i + 4:i + 8]
            head = 16 if n == 1 else 8
            if n == 1:
                n = int.from_bytes(data[i + 8:i + 16], "big")
            if kind == b"jp2c":
                return codestream_size(data[i + head:i + n] if n else data[i + head:])
            if n < head:
                return None
            i += n
        return None
    if data[:4] == b"\xff\x4f\xff\x51" and len(data) >= 42:  # JPEG 2000: SOC, then SIZ
        x, y = int.from_bytes(data[8:12], "big"), int.from_bytes(data[12:16], "big")
        xo, yo = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return x - xo, y - yo, int.from_bytes(data[40:42], "big"), (data[42] & 0x7F) + 1 if len(data) > 42 else 0
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 10 <= len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01, 0xFF) or 0xD0 <= marker <= 0xD7:
            i += 1 if marker == 0xFF else 2
            continue
        if marker == 0xDA:                                   # scan data before any frame header
            return None
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7):
            return (int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big"),
                    data[i + 9], data[i + 4])
        i += 2 + length
    return None


def scan_count(data) -> int:
    """How many scans (SOS markers) a JPEG codestream holds: each progressive scan is a full pass of the
    decoder, so a few hundred kilobytes of repeated tiny scans take minutes. Entropy-coded data never
    holds FF DA (an FF there is followed by 00 or a restart marker), so every occurrence is a scan.

    Args:
        data: the codestream (bytes or an mmap).

    Returns:
        The number of SOS markers.
    """
    n, pos = 0, data.find(b"\xff\xda")
    while pos >= 0:
        n += 1
        pos = data.find(b"\xff\xda", pos + 2)
    return n


def _colour(arr: np.ndarray, h: Header) -> np.ndarray:
    """RGB uint8 from RGB / YBR (pydicom converts YBR) or palette colour data."""
    if h.photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut
        arr = apply_color_lut(arr, h.dataset)
        bits = 16 if arr.dtype.itemsize > 1 else 8
    else:
        bits = h.bits_stored
    if bits > 8:
        arr = np.rint(arr.astype(np.float32) * (255.0 / (2 ** bits - 1)))
    return np.clip(arr, 0, 255).astype(np.uint8)


def _padding_mask(arr: np.ndarray, ds) -> np.ndarray | None:
    """Pixels at PixelPaddingValue (through PixelPaddingRangeLimit): outside the patient, not windowed."""
    if "PixelPaddingValue" not in ds:
        return None
    try:
        a, b = int(ds.PixelPaddingValue), int(ds.get("PixelPaddingRangeLimit", ds.PixelPaddingValue))
    except (TypeError, ValueError):
        return None
    mask = (arr >= min(a, b)) & (arr <= max(a, b))
    return mask if mask.any() and not mask.all() else None


def _modality(arr: np.ndarray, ds) -> tuple[np.ndarray, str]:
    """Stored values -> modality values (the LUT sequence, else slope and intercept), float64, and "" —
    or the stored values and a note when the rescale is unusable (not a number, infinite, a zero slope,
    a broken LUT, or values that overflow): the caller then windows by percentiles."""
    try:
        if "ModalityLUTSequence" in ds:
            from pydicom.pixels import apply_modality_lut
            out = apply_modality_lut(arr, ds).astype(np.float64)
        else:
            slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
            slope = 1.0 if slope in (None, "") else float(slope)
            intercept = 0.0 if intercept in (None, "") else float(intercept)
            if not (np.isfinite(slope) and np.isfinite(intercept) and slope != 0):
                raise ValueError("rescale")
            out = arr.astype(np.float64)
            with np.errstate(over="ignore", invalid="ignore"):   # overflow is caught just below
                if slope != 1:
                    out *= slope
                if intercept:
                    out += intercept
        if np.isfinite(out).all():
            return out, ""
    except Exception:  # noqa: BLE001 - any broken modality LUT or rescale
        pass
    return arr.astype(np.float64), "rescale or modality LUT unusable: 0.5-99.5 percentile window of the stored values"


def _first(value) -> float:
    """The first of a multi-valued window attribute."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def _voi(x: np.ndarray, ds, pad: np.ndarray | None) -> tuple[np.ndarray, str]:
    """Modality values -> 8 bits by the VOI LUT sequence (its output stretched from its smallest to its
    largest entry: LUTs often declare 16 bits but use 12), the first window, or a percentile window.

    Returns:
        (uint8 image, a note when the window was not the file's own or was one of several).
    """
    if "VOILUTSequence" in ds:
        try:
            from pydicom.pixels import apply_voi
            item = ds.VOILUTSequence[0]
            lut = np.asarray(item.LUTData, dtype=np.float64)
            lo, hi = float(lut.min()), float(lut.max())
            y = apply_voi(np.rint(x).astype(np.int64), ds, index=0).astype(np.float64)
            if hi > lo and np.isfinite(y).all():
                return _scale(y, lo, hi), ""
        except Exception:  # noqa: BLE001 - a broken LUT: fall back to the data's own range
            pass
        return _percentile(x, pad), "VOI LUT unusable: 0.5-99.5 percentile window of the pixels"
    if "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)
            function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
            note = "first of several windows used" if _count(ds.WindowCenter) > 1 else ""
        except Exception:  # noqa: BLE001 - unreadable window values
            c, w, function, note = 0.0, 0.0, "LINEAR", ""
        if np.isfinite(c) and np.isfinite(w) and (w >= 1 or (function != "LINEAR" and w > 0)):
            return window(x, c, w, function), note
        return _percentile(x, pad), "window not usable: 0.5-99.5 percentile window of the pixels"
    return _percentile(x, pad), "no window in the file: 0.5-99.5 percentile window of the pixels"


def _count(value) -> int:
    try:
        return len(value) if not isinstance(value, (str, bytes, int, float)) else 1
    except TypeError:
        return 1


def window(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """A VOI window into 8 bits (DICOM PS3.3 C.11.2.1.2 with an output range of 0..255).

    Args:
        x: modality values.
        center, width: WindowCenter and WindowWidth (width >= 1 for LINEAR, > 0 otherwise).
        function: VOILUTFunction: ``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID`` (others are read as LINEAR).

    Returns:
        uint8 array of ``x``'s shape.
    """
    if function == "SIGMOID":
        y = 255.0 / (1.0 + np.exp(np.clip(-4.0 * (x - center) / width, -700, 700)))
    elif function == "LINEAR_EXACT":
        y = (x - center) / width * 255.0 + 127.5
    elif width <= 1:                          # LINEAR with width 1: a threshold at center - 0.5
        y = np.where(x > center - 0.5, 255.0, 0.0)
    else:
        y = ((x - (center - 0.5)) / (width - 1.0) + 0.5) * 255.0
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def _percentile(x: np.ndarray, pad: np.ndarray | None) -> np.ndarray:
    """A robust window: the 0.5 and 99.5 percentiles of the non-padding pixels (a subsample of them)."""
    step = max(1, int(np.sqrt(x.size / 1_000_000)))
    sample = x[::step, ::step] if pad is None else x[::step, ::step][~pad[::step, ::step]]
    if sample.size == 0:
        sample = x.ravel()
    lo, hi = np.percentile(sample, [0.5, 99.5])
    return _scale(x, float(lo), float(hi))


def _scale(y: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(y.shape, np.uint8)
    return np.clip(np.rint((y - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- what may leave the file

def _code(value) -> str:
    """A coded header value made safe for a note: letters, digits, space, ``_`` and ``-``, 32 characters."""
    return re.sub(r"[^A-Za-z0-9 _-]", "", str(value or "")).strip().upper()[:32]


def _spacing(ds) -> tuple[float | None, float | None]:
    """(row, column) spacing in mm: PixelSpacing (calibrated) when present, else ImagerPixelSpacing."""
    for name in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(name)
        try:
            r, c = float(value[0]), float(value[1])
        except (TypeError, ValueError, IndexError, KeyError):
            continue
        if 0 < r < 100 and 0 < c < 100:
            return round(r, 6), round(c, 6)
    return None, None


def _meta(ds) -> dict:
    """The acquisition fields that may be written (see :data:`META_COLUMNS`)."""
    secret = {_code(v) for v in _identifying_values(ds)}

    def get(name):
        try:
            code = _code(ds.get(name, ""))
        except Exception:  # noqa: BLE001 - a damaged value is an empty one
            return ""
        return "" if code in secret else code         # a coded field holding an ID or a name is dropped
    row, col = _spacing(ds)
    laterality = get("Laterality") or get("ImageLaterality")
    return {"modality": get("Modality"), "body_part": get("BodyPartExamined"),
            "view_position": get("ViewPosition"), "laterality": laterality,
            "spacing_row_mm": row, "spacing_col_mm": col, "patient_group": patient_group(_identity(ds))}


def _identity(ds) -> str:
    for name in ("PatientID", "StudyInstanceUID"):
        try:
            value = str(ds.get(name, "") or "").strip()
        except Exception:  # noqa: BLE001
            value = ""
        if value:
            return f"{name}:{value}"
    return ""


def _sop_name(ds) -> str:
    """The SOP class's name (DICOMDIR, Basic Text SR ...), never its UID."""
    from pydicom.uid import UID
    uid = str(ds.get("SOPClassUID", "") or getattr(getattr(ds, "file_meta", None) or {}, "get",
                                                         lambda *_: "")("MediaStorageSOPClassUID", "") or "")
    if uid == _DICOMDIR or "DirectoryRecordSequence" in ds:
        return "DICOMDIR (media directory)"
    try:
        name = UID(uid).name if uid else ""
    except Exception:  # noqa: BLE001
        name = ""
    return name if name and name != uid else "of unknown class"


def _identifying_values(ds) -> set[str]:
    """The identifying values of ``ds`` and its file meta (names, IDs, dates, every UID), read without
    loading large or deferred values."""
    values: set[str] = set()
    for group in (getattr(ds, "file_meta", None), ds):
        if group is None:
            continue
        for tag in list(group.keys()):
            try:
                raw = group.get_item(tag, keep_deferred=True)
                if raw is None or (getattr(raw, "length", 0) or 0) > 4096 or getattr(raw, "value", b"") is None:
                    continue
                elem = group[tag]
                if elem.VR != "UI" and elem.keyword not in IDENTIFYING:
                    continue
                v = elem.value
                for item in (v if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue" else [v]):
                    text = str(item or "").strip()
                    if len(text) >= 3:
                        values.add(text)
            except Exception:  # noqa: BLE001 - a damaged element: the UID pattern still applies
                continue
    return values


def scrub(text: str, ds) -> str:
    """``text`` with every identifying value of ``ds`` (names, IDs, dates, UIDs, file meta included) and
    anything shaped like a UID replaced by ``...``.

    Args:
        text: a message that may quote header values (a pydicom exception, a warning).
        ds: the data set the message is about.

    Returns:
        The message safe to write.
    """
    try:
        values = _identifying_values(ds)
    except Exception:  # noqa: BLE001
        values = set()
    for v in sorted(values, key=len, reverse=True):
        text = text.replace(v, "...")
    return re.sub(r"\d+(\.\d+){3,}", "...", text)


_KEY_LOCK = threading.Lock()
_KEY: dict[str, bytes] = {}


def _salt() -> bytes:
    """The key of :func:`patient_group`: ``FRACTURELIB_PATIENT_SALT``, else a random key kept in
    ``config.PATIENT_SALT_FILE``, created on first use, readable by its owner only. It is written whole
    to a temporary file and linked into place, so that scan threads or two processes creating it at once
    all read the same complete key; read once per process and path."""
    env = os.environ.get("FRACTURELIB_PATIENT_SALT")
    if env:
        return env.encode("utf-8")
    path = Path(config.PATIENT_SALT_FILE).expanduser()
    with _KEY_LOCK:
        if str(path) not in _KEY:
            _KEY[str(path)] = _read_or_create_key(path)
        return _KEY[str(path)]


def _read_or_create_key(path: Path) -> bytes:
    try:
        key = path.read_bytes().strip()
        if len(key) >= 32:
            return key
        raise OSError(f"{path}: the patient-group key is shorter than 32 bytes; delete it to make a new one")
    except FileNotFoundError:
        pass
    key = secrets.token_hex(32).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".patient_salt.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(key)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)                # fails when another writer was first: theirs is used
        except FileExistsError:
            return path.read_bytes().strip()
        finally:
            os.unlink(tmp)
    except OSError:                         # a read-only home: a key for this process only
        pass
    return key


def patient_group(identity: str) -> str:
    """A keyed hash (HMAC-SHA256) of a patient's identity: equal for one patient's images, and not
    reversible by hashing candidate IDs without the key.

    Args:
        identity: ``"PatientID:<id>"`` or ``"StudyInstanceUID:<uid>"``; "" for none.

    Returns:
        "p" and 16 hex digits, or "" when ``identity`` is empty.
    """
    if not identity:
        return ""
    digest = hmac.new(_salt(), identity.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()
    return "p" + digest[:16]                # the letter keeps CSV readers from taking it for a number
