"""DICOM test files built with pydicom, each with a KNOWN forward transform so a test can undo it.

Independent of fracturelib (it imports nothing from it): the files are written with pydicom's own
APIs, and :func:`verify` reads every decodable one back with pydicom to check the stored values.

The exact grayscale design
--------------------------
The display value ``v`` (0..255, the uint8 source) becomes a display *level* ``L = v`` (MONOCHROME2)
or ``L = 255 - v`` (MONOCHROME1, where the smallest value is shown white), then the stored value::

    s = L * k + offset                        (k, offset integers; s fits BitsStored, signed or not)
    m = s * RescaleSlope + RescaleIntercept   = L * K + B,  K = k * slope,  B = offset * slope + intercept

and a VOI window chosen so that PS3.3 C.11.2.1.2 maps ``m`` back to ``L`` exactly, with output
range ymin = 0, ymax = 255:

* LINEAR (the default function): ``y = ((m - (c - 0.5)) / (w - 1) + 0.5) * 255``; with
  ``w = 255 K + 1`` and ``c = B + 127.5 K + 0.5`` this is ``y = L`` for every level.
* LINEAR_EXACT: ``y = ((m - c) / w + 0.5) * 255``; with ``w = 255 K``, ``c = B + 127.5 K``: ``y = L``.
* SIGMOID: ``y = 255 / (1 + exp(-4 (m - c) / w))`` with the LINEAR_EXACT c, w; not the identity, so
  :attr:`DicomCase.expected` holds the rounded sigmoid output.
* VOI LUT Sequence: a 16-bit LUT whose entry for ``m = L K + B`` is ``L * 257``; scaled from its
  16-bit output range to 8 bits that is ``L`` again.

A reader that follows the standard (and inverts MONOCHROME1 so bone is bright) returns ``v`` exactly
(float rounding aside: allow 1). (A window spanning ``[B, B + 256 K)`` would *not* be exact: it gives
``v * 255 / 256``.) Without any VOI the reader picks its own window: only the order of the values is
known (:attr:`DicomCase.exact` is False).
"""
from __future__ import annotations

import io
import itertools
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_fragmented_frames
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.pixels import convert_color_space, pack_bits
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

# --- the known fake identifiers: none of them may appear in anything the reader reports ----------
FAKE_PATIENT_NAME = "ZZFAKE^PATIENTNAME"
FAKE_PATIENT_ID = "ZZPID12345"
OTHER_PATIENT_ID = "ZZPID67890"
FAKE_BIRTH_DATE = "19010203"
FAKE_ACCESSION = "ZZACC998877"
FAKE_INSTITUTION = "ZZ Fake Hospital"
FAKE_REFERRING = "ZZREF^DOCTORNAME"
FAKE_STUDY_DESCRIPTION = "ZZSTUDYDESC hand left"
UID_ROOT = "1.2.826.0.1.3680043.99999.1."
#: substrings to search for in reader output (the UID root covers every Study/Series/SOP UID)
FAKE_IDENTIFIERS = ("ZZFAKE", "PATIENTNAME", "ZZPID", FAKE_BIRTH_DATE, FAKE_ACCESSION, FAKE_INSTITUTION,
                    "ZZREF", "DOCTORNAME", "ZZSTUDYDESC", "1.2.826.0.1.3680043.99999")

SOP_CLASS = {
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",      # Digital X-Ray Image Storage - For Presentation
    "CR": "1.2.840.10008.5.1.4.1.1.1",        # Computed Radiography Image Storage
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "SC": "1.2.840.10008.5.1.4.1.1.7",        # Secondary Capture
}
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
GRAYSCALE_SOFTCOPY_PS = "1.2.840.10008.5.1.4.1.1.11.1"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"

#: short names accepted wherever a transfer syntax is asked for
TRANSFER_SYNTAXES = {
    "explicit": ExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "big": ExplicitVRBigEndian,
    "deflated": DeflatedExplicitVRLittleEndian,
    "rle": RLELossless,
    "jpegls": JPEGLSLossless,
    "j2k": JPEG2000Lossless,
    "jpeg": JPEGBaseline8Bit,
}
UNCOMPRESSED = {"explicit", "implicit", "big", "deflated"}
_counter = itertools.count(1)
_DATASET_DIR = Path(__file__).resolve().parents[1] / "dataset" / "fracatlas" / "images"


@dataclass
class DicomCase:
    """One written file and what a correct reader returns for it.

    Attributes:
        path: the file written.
        source: the uint8 source image (HxW, or HxWx3 for colour).
        expected: what an exact reader returns for frame 1, display-ready (bone bright): uint8 HxW
            (monochrome) or HxWx3 (colour). For SIGMOID it is the sigmoid's output, not ``source``.
        tolerance: the largest abs difference a correct reader may show against ``expected``.
        exact: False when the file has no VOI (the reader's own window: only the order is known).
        stored: the stored values intended (frames x H x W [x 3]) as pydicom's ``pixel_array`` returns
            them (None for files that are not meant to decode).
        params: the transform's parameters (bits_stored, k, offset, slope, intercept, K, B, center,
            width, voi, photometric, transfer_syntax, frames ...).
    """

    path: Path
    source: np.ndarray | None = None
    expected: np.ndarray | None = None
    tolerance: int = 1
    exact: bool = True
    stored: np.ndarray | None = field(default=None, repr=False)
    params: dict = field(default_factory=dict)


# --- source images ---------------------------------------------------------------------------------
def source_image(index: int = 0, long_side: int = 128) -> np.ndarray:
    """A real FracAtlas radiograph (the ``index``-th, sorted), grayscale uint8, resized so its longer
    side is ``long_side``; a synthetic one (smooth blobs and an edge) when the dataset is absent."""
    files = sorted(_DATASET_DIR.glob("*/*.jpg"))
    if files:
        with Image.open(files[index % len(files)]) as im:
            im = im.convert("L")
            s = long_side / max(im.size)
            im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.LANCZOS)
            return np.asarray(im, np.uint8).copy()
    rng = np.random.default_rng(index)
    h, w = long_side, round(long_side * 0.8)
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.zeros((h, w))
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 25)
        a += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    a[:, w // 2:] += 0.3
    return np.rint(255 * (a - a.min()) / (a.max() - a.min())).astype(np.uint8)


def colourise(v: np.ndarray) -> np.ndarray:
    """A colour image from a grayscale one whose three channels all differ (HxWx3 uint8)."""
    v = v.astype(np.int32)
    return np.stack([v, (v * 3) // 4 + 20, 255 - v], axis=-1).clip(0, 255).astype(np.uint8)


def other_frames(level: np.ndarray, n: int) -> list[np.ndarray]:
    """``n`` frames: frame 1 is ``level`` itself, the others clearly different (inverted, rolled)."""
    out = [level]
    for i in range(1, n):
        out.append(np.roll(255 - level, 7 * i, axis=1) if i % 2 else np.roll(level, level.shape[0] // 2, axis=0))
    return out


# --- datasets --------------------------------------------------------------------------------------
def _ds(x: float) -> str:
    """A DS string that parses back to exactly ``x`` (asserted)."""
    for fmt in (".10g", ".14g", ".15g"):
        s = format(float(x), fmt)
        if len(s) <= 16 and float(s) == float(x):
            return s
    raise ValueError(f"{x!r} has no exact DS form of <= 16 characters")


def base_dataset(modality: str = "DX", patient_id: str = FAKE_PATIENT_ID, sop_class: str | None = None,
                 spacing: tuple[float, float] | None = (0.143, 0.143), transfer_syntax=ExplicitVRLittleEndian,
                 patient_index: int | None = None) -> Dataset:
    """A dataset with file meta, the fake identifiers and the radiograph attributes (no pixels).

    Args:
        modality: DX (default), CR, CT, MR, SC, SR, PR ...
        patient_id: PatientID (the fake default, :data:`OTHER_PATIENT_ID`, or any other).
        sop_class: SOP Class UID (default: from the modality).
        spacing: ImagerPixelSpacing (row spacing, column spacing) in mm, or None for none.
        transfer_syntax: the file meta's Transfer Syntax UID.
        patient_index: number used in the Study/Series UIDs (default: derived from ``patient_id``).
    """
    n = next(_counter)
    pidx = patient_index if patient_index is not None else sum(patient_id.encode()) % 1000
    ds = Dataset()
    ds.SOPClassUID = sop_class or SOP_CLASS.get(modality, SOP_CLASS["SC"])
    ds.SOPInstanceUID = f"{UID_ROOT}3.{pidx}.{n}"
    ds.StudyInstanceUID = f"{UID_ROOT}1.{pidx}"
    ds.SeriesInstanceUID = f"{UID_ROOT}2.{pidx}.{modality.encode()[0]}"
    ds.FrameOfReferenceUID = f"{UID_ROOT}4.{pidx}"
    ds.StudyDate, ds.StudyTime, ds.ContentDate = "20200102", "101112", "20200102"
    ds.AccessionNumber = FAKE_ACCESSION
    ds.Modality = modality
    ds.InstitutionName = FAKE_INSTITUTION
    ds.ReferringPhysicianName = FAKE_REFERRING
    ds.StudyDescription = FAKE_STUDY_DESCRIPTION
    ds.PatientName = FAKE_PATIENT_NAME
    ds.PatientID = patient_id
    ds.PatientBirthDate = FAKE_BIRTH_DATE
    ds.PatientSex = "O"
    ds.StudyID = "ZZSTUDY1"
    ds.SeriesNumber, ds.InstanceNumber = 1, n
    if modality in ("DX", "CR"):
        ds.BodyPartExamined = "HAND"
        ds.ViewPosition = "PA"
        ds.Laterality = "L"
        ds.ImageLaterality = "L"
        ds.PresentationIntentType = "FOR PRESENTATION"
    if spacing is not None and modality in ("DX", "CR"):
        ds.ImagerPixelSpacing = [_ds(spacing[0]), _ds(spacing[1])]
    elif spacing is not None and modality in ("CT", "MR"):
        ds.PixelSpacing = [_ds(spacing[0]), _ds(spacing[1])]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta = meta
    return ds


def _voi(voi: str | None, K: float, B: float, extra_windows: bool) -> tuple[dict, callable]:
    """(attributes to set, y(m) as float) for the exact design (see the module docstring)."""
    if voi is None:
        return {}, None
    if voi == "LINEAR":
        c, w = B + 127.5 * K + 0.5, 255 * K + 1
        f = lambda m: np.clip(((m - (c - 0.5)) / (w - 1) + 0.5) * 255, 0, 255)  # noqa: E731
    elif voi in ("LINEAR_EXACT", "SIGMOID"):
        c, w = B + 127.5 * K, 255 * K
        if voi == "LINEAR_EXACT":
            f = lambda m: np.clip(((m - c) / w + 0.5) * 255, 0, 255)  # noqa: E731
        else:
            f = lambda m: 255 / (1 + np.exp(-4 * (m - c) / w))  # noqa: E731
    elif voi == "LUT":
        if K != int(K) or B != int(B):
            raise ValueError("the VOI LUT variant needs an integer K and B")
        n = 255 * int(K) + 1
        table = (np.rint(np.arange(n) / K) * 257).astype(np.uint16)
        f = lambda m: table[np.clip(np.asarray(m) - B, 0, n - 1).astype(np.int64)] / 257  # noqa: E731
        return {"lut": (n, int(B), table)}, f
    else:
        raise ValueError(f"unknown VOI {voi!r}")
    attrs = {"WindowCenter": [_ds(c)], "WindowWidth": [_ds(w)]}
    if voi != "LINEAR":
        attrs["VOILUTFunction"] = voi
    if extra_windows:                         # a second, different window: the reader must use the first
        attrs["WindowCenter"].append(_ds(c + 37 * K))
        attrs["WindowWidth"].append(_ds(max(2.0, float(round(w / 3)))))
        attrs["WindowCenterWidthExplanation"] = ["ZZEXACT", "OTHER"]
    assert float(attrs["WindowCenter"][0]) == c and float(attrs["WindowWidth"][0]) == w
    return attrs, f


def _set_pixels(ds: Dataset, arr: np.ndarray, photometric: str, bits_stored: int) -> None:
    """pydicom's set_pixel_data, keeping our fixed SOP Instance UID (pydicom makes a new one by default)."""
    uid = ds.SOPInstanceUID
    ds.set_pixel_data(arr, photometric, bits_stored, generate_instance_uid=False)
    assert ds.SOPInstanceUID == uid


def _write(ds: Dataset, path: Path, ts: str, container: str) -> None:
    """Encode ``ds`` (uncompressed pixels in native little-endian order) to ``path`` in ``ts``.

    container: "file" (preamble, DICM, file meta), "no_preamble" (file meta without the 128-byte
    preamble and DICM), or "raw" (the dataset alone: no preamble, no file meta).
    """
    uid = TRANSFER_SYNTAXES.get(ts, ts)
    if ts in ("rle", "jpegls", "j2k"):
        ds.compress(uid, generate_instance_uid=False)
    if ts == "big" and "PixelData" in ds and ds.get("BitsAllocated", 8) > 8:
        # pydicom writes Pixel Data bytes as they are: it does NOT byte-swap OW values for big endian
        dtype = np.dtype(f"<u{ds.BitsAllocated // 8}")
        ds.PixelData = np.frombuffer(ds.PixelData, dtype).astype(dtype.newbyteorder(">")).tobytes()
    ds.file_meta.TransferSyntaxUID = uid
    if container == "file":
        ds.save_as(path, enforce_file_format=True)
        return
    if ts not in ("explicit", "implicit", "big"):
        raise ValueError("a file without preamble is written in an uncompressed, non-deflated syntax")
    implicit, little = ts == "implicit", ts != "big"
    if container == "raw":
        del ds.file_meta
    # no_preamble: with enforce_file_format=False pydicom writes the meta group (as it is) but
    # neither the 128-byte preamble nor DICM
    dcmwrite(path, ds, enforce_file_format=False, implicit_vr=implicit, little_endian=little)


def write_dicom(path: str | Path, source: np.ndarray | None = None, *, photometric: str = "MONOCHROME2",
                bits_stored: int = 8, signed: bool = False, k: int | None = None, offset: int | None = None,
                slope: float = 1.0, intercept: float = 0.0, voi: str | None = "LINEAR", extra_windows: bool = False,
                transfer_syntax: str = "explicit", frames: int = 1, container: str = "file",
                patient_id: str = FAKE_PATIENT_ID, modality: str = "DX",
                spacing: tuple[float, float] | None = (0.143, 0.143), padding: tuple[int, int] | None = None,
                high_bits: str = "clean", jpeg_quality: int = 95, presentation_lut: bool = True) -> DicomCase:
    """A grayscale DICOM file whose reading is known exactly (see the module docstring).

    Args:
        path: where to write.
        source: uint8 HxW display values v (default :func:`source_image`).
        photometric: MONOCHROME2 or MONOCHROME1 (stored as the level 255 - v).
        bits_stored: 1..16 (BitsAllocated 8 up to 8, else 16).
        signed: PixelRepresentation 1 (default offset then makes most stored values negative).
        k: stored units per display level (default ``2**bits_stored // 256``: 1, 16, 256 ...).
        offset: stored value of level 0 (default ``k - 1`` unsigned, ``-2**(bits-1) + k - 1`` signed).
        slope, intercept: RescaleSlope / RescaleIntercept (written when not 1 / 0).
        voi: "LINEAR" (default), "LINEAR_EXACT", "SIGMOID", "LUT" (VOI LUT Sequence) or None.
        extra_windows: a second window after the exact one (the reader must use the first).
        transfer_syntax: a key of :data:`TRANSFER_SYNTAXES` ("jpeg" is lossy: tolerance 2 against
            the values the JPEG decodes to, 8-bit unsigned only).
        frames: NumberOfFrames (frame 1 is the source; the others differ, see :func:`other_frames`).
        container: "file", "no_preamble" or "raw" (see :func:`_write`).
        patient_id, modality, spacing: see :func:`base_dataset`.
        padding: (border width px, PixelPaddingValue): a border of that stored value.
        high_bits: "clean", or "dirty": bits above BitsStored hold garbage (unsigned) or are not
            sign-extended (signed); a reader must use BitsStored bits only.
        jpeg_quality: for transfer_syntax="jpeg".
        presentation_lut: write PresentationLUTShape for DX/CR (IDENTITY, or INVERSE for MONOCHROME1,
            as the DX IOD requires: the inversion happens once, not twice).

    Returns:
        The :class:`DicomCase` (``expected`` = ``source`` for the exact LINEAR/LINEAR_EXACT/LUT).
    """
    path = Path(path)
    v = source_image() if source is None else np.asarray(source, np.uint8)
    if v.ndim != 2:
        raise ValueError("write_dicom takes a 2-D grayscale source; see write_colour")
    lo_bits = 2 ** (bits_stored - 1) if signed else 0
    lo, hi = -lo_bits, (2 ** bits_stored - 1) - lo_bits
    k = max(1, 2 ** bits_stored // 256) if k is None else int(k)
    offset = (lo + k - 1 if signed else k - 1) if offset is None else int(offset)
    if offset < lo or 255 * k + offset > hi:
        raise ValueError(f"levels 0..255 * {k} + {offset} do not fit {bits_stored} bits ({lo}..{hi})")
    invert = photometric == "MONOCHROME1"
    level = (255 - v) if invert else v
    levels = other_frames(level.astype(np.int64), frames)
    stored = np.stack([lv * k + offset for lv in levels])
    if padding:
        b, pv = padding
        if not lo <= pv <= hi:
            raise ValueError("the padding value must fit BitsStored")
        stored[:, :b, :] = stored[:, -b:, :] = stored[:, :, :b] = stored[:, :, -b:] = pv
    bits_alloc = 8 if bits_stored <= 8 else 16
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits_alloc // 8}")
    if transfer_syntax == "jpeg":
        if bits_stored != 8 or signed:
            raise ValueError("the JPEG baseline variant is 8-bit unsigned")
        codestreams, decoded = [], []
        for f in stored:
            buf = io.BytesIO()
            Image.fromarray(f.astype(np.uint8), "L").save(buf, "JPEG", quality=jpeg_quality)
            codestreams.append(buf.getvalue())
            with Image.open(io.BytesIO(buf.getvalue())) as im:
                decoded.append(np.asarray(im, np.int64))
        stored = np.stack(decoded)

    K, B = k * slope, offset * slope + intercept
    ds = base_dataset(modality, patient_id, spacing=spacing)
    arr = stored.astype(dtype)
    _set_pixels(ds, arr if frames > 1 else arr[0], photometric, bits_stored)
    if transfer_syntax == "jpeg":
        ds.PixelData = encapsulate(codestreams)
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    if high_bits == "dirty" and bits_stored < bits_alloc:
        raw = np.frombuffer(ds.PixelData, f"<u{bits_alloc // 8}").copy()
        mask = (1 << bits_stored) - 1
        raw = (raw & mask) if signed else (raw | (((1 << bits_alloc) - 1) ^ mask) & 0xA5A5)
        ds.PixelData = raw.tobytes()
    if (slope, intercept) != (1.0, 0.0) or bits_stored > 8:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = _ds(slope), _ds(intercept), "US"
    if modality == "CT":
        ds.RescaleType = "HU"
    attrs, f = _voi(voi, K, B, extra_windows)
    if "lut" in attrs:
        n, first, table = attrs.pop("lut")
        item = Dataset()
        item.add_new(0x00283002, "US", [n if n < 65536 else 0, first, 16])     # LUTDescriptor
        item.add_new(0x00283006, "US", table.tolist())                          # LUTData
        item.LUTExplanation = "ZZ exact LUT"
        ds.VOILUTSequence = Sequence([item])
    for key, value in attrs.items():
        setattr(ds, key, value)
    if padding:
        ds.add_new(0x00280120, "SS" if signed else "US", int(padding[1]))      # PixelPaddingValue
    if modality in ("DX", "CR") and presentation_lut:
        ds.PresentationLUTShape = "INVERSE" if invert else "IDENTITY"
    _write(ds, path, transfer_syntax, container)

    m = stored[0].astype(np.float64) * slope + intercept
    if f is None:
        expected, exact = v.copy(), False
    else:
        y = f(m)
        expected = np.rint(255 - y if invert else y).clip(0, 255).astype(np.uint8)
        exact = True
    tol = 2 if transfer_syntax == "jpeg" else 1
    params = dict(bits_stored=bits_stored, bits_allocated=bits_alloc, signed=signed, k=k, offset=offset,
                  slope=slope, intercept=intercept, K=K, B=B, voi=voi, photometric=photometric,
                  transfer_syntax=transfer_syntax, frames=frames, container=container, modality=modality,
                  spacing=spacing, padding=padding, patient_id=patient_id)
    if "WindowCenter" in attrs:
        params.update(center=float(attrs["WindowCenter"][0]), width=float(attrs["WindowWidth"][0]))
    if padding:
        mask = np.zeros(v.shape, bool)
        b = padding[0]
        mask[:b, :] = mask[-b:, :] = mask[:, :b] = mask[:, -b:] = True
        params["padding_mask"] = mask
    return DicomCase(path, v, expected, tol, exact, stored if frames > 1 else stored[:1], params)


def write_colour(path: str | Path, source: np.ndarray | None = None, *, photometric: str = "RGB",
                 planar: int = 0, transfer_syntax: str = "explicit", patient_id: str = FAKE_PATIENT_ID,
                 modality: str = "DX") -> DicomCase:
    """A colour file: PhotometricInterpretation RGB (or YBR_FULL, stored converted with pydicom's
    ``convert_color_space``; a reader converts back to RGB within 2 levels).

    Args:
        source: uint8 HxWx3 (default :func:`colourise` of :func:`source_image`), or HxW (colourised).
        photometric: "RGB" or "YBR_FULL".
        planar: PlanarConfiguration 0 (RGBRGB..) or 1 (RR..GG..BB..; uncompressed syntaxes only).
        transfer_syntax: a key of :data:`TRANSFER_SYNTAXES` ("explicit", "rle", "jpegls" ...).

    Returns:
        The case; ``expected`` is the RGB source (HxWx3).
    """
    path = Path(path)
    rgb = colourise(source_image()) if source is None else np.asarray(source, np.uint8)
    if rgb.ndim == 2:
        rgb = colourise(rgb)
    stored = rgb if photometric == "RGB" else convert_color_space(rgb, "RGB", photometric)
    ds = base_dataset(modality, patient_id)
    _set_pixels(ds, stored, photometric, 8)
    if planar:
        if transfer_syntax not in UNCOMPRESSED:
            raise ValueError("planar configuration 1 is written for uncompressed syntaxes only")
        ds.PlanarConfiguration = 1
        ds.PixelData = np.ascontiguousarray(stored.transpose(2, 0, 1)).tobytes()
    _write(ds, path, transfer_syntax, "file")
    tol = 0 if photometric == "RGB" else 2
    return DicomCase(path, rgb, rgb.copy(), tol, True, stored[None],
                     dict(photometric=photometric, planar=planar, transfer_syntax=transfer_syntax))


# --- objects without pixels -----------------------------------------------------------------------
def write_no_pixels(path: str | Path, kind: str = "DX", patient_id: str = FAKE_PATIENT_ID) -> DicomCase:
    """A valid DICOM object without Pixel Data.

    Args:
        kind: "DX" (an image header without its PixelData element), "SR" (Basic Text SR), "PR"
            (Grayscale Softcopy Presentation State) or "DICOMDIR" (a Media Storage Directory).
    """
    path = Path(path)
    if kind == "DX":
        ds = base_dataset("DX", patient_id)
        ds.Rows, ds.Columns, ds.SamplesPerPixel = 128, 100, 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PhotometricInterpretation = "MONOCHROME2"
    elif kind == "SR":
        ds = base_dataset("SR", patient_id, sop_class=BASIC_TEXT_SR, spacing=None)
        ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
        ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
        name = Dataset()
        name.CodeValue, name.CodingSchemeDesignator, name.CodeMeaning = "18748-4", "LN", "Diagnostic Imaging Report"
        ds.ConceptNameCodeSequence = Sequence([name])
        text = Dataset()
        text.RelationshipType, text.ValueType = "CONTAINS", "TEXT"
        finding = Dataset()
        finding.CodeValue, finding.CodingSchemeDesignator, finding.CodeMeaning = "121071", "DCM", "Finding"
        text.ConceptNameCodeSequence = Sequence([finding])
        text.TextValue = f"ZZ fake report for {FAKE_PATIENT_NAME}: no fracture"
        ds.ContentSequence = Sequence([text])
    elif kind == "PR":
        ds = base_dataset("PR", patient_id, sop_class=GRAYSCALE_SOFTCOPY_PS, spacing=None)
        ds.ContentLabel, ds.ContentDescription = "ZZLABEL", "ZZ fake presentation state"
        ds.PresentationCreationDate, ds.PresentationCreationTime = "20200102", "101112"
        ref = Dataset()
        ref.SeriesInstanceUID = f"{UID_ROOT}2.999"
        img = Dataset()
        img.ReferencedSOPClassUID, img.ReferencedSOPInstanceUID = SOP_CLASS["DX"], f"{UID_ROOT}3.999.1"
        ref.ReferencedImageSequence = Sequence([img])
        ds.ReferencedSeriesSequence = Sequence([ref])
        ds.PresentationLUTShape = "IDENTITY"
    elif kind == "DICOMDIR":
        ds = Dataset()
        ds.FileSetID = "ZZFILESET"
        ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
        ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
        ds.FileSetConsistencyFlag = 0
        ds.DirectoryRecordSequence = Sequence()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MEDIA_STORAGE_DIRECTORY
        meta.MediaStorageSOPInstanceUID = f"{UID_ROOT}5.{next(_counter)}"
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
    else:
        raise ValueError(f"unknown kind {kind!r}")
    ds.save_as(path, enforce_file_format=True)
    return DicomCase(path, params=dict(kind=kind))


# --- hostile files --------------------------------------------------------------------------------
def _header_only(modality: str, rows: int, cols: int, bits: int = 8, samples: int = 1,
                 photometric: str = "MONOCHROME2", frames: int | None = None) -> Dataset:
    ds = base_dataset(modality)
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, samples
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (8 if bits <= 8 else 16), bits, bits - 1, 0
    ds.PhotometricInterpretation = photometric
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.WindowCenter, ds.WindowWidth = "128", "256"
    return ds


def write_truncated_pixels(path: str | Path, source: np.ndarray | None = None, how: str = "short") -> DicomCase:
    """Pixel data shorter than Rows x Columns says.

    how: "short": a well-formed PixelData element holding half the bytes; "cut": the file itself
    ends half way through the PixelData value (its length field says the full size).
    """
    path = Path(path)
    v = source_image() if source is None else source
    ds = base_dataset("DX")
    _set_pixels(ds, v, "MONOCHROME2", 8)
    ds.WindowCenter, ds.WindowWidth = "128", "256"
    if how == "short":
        n = (v.size // 2) & ~1
        ds.PixelData = v.tobytes()[:n]
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.save_as(path, enforce_file_format=True)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - v.size // 2])
    return DicomCase(path, source=v, params=dict(how=how))


def write_huge_claim(path: str | Path, rows: int = 60000, cols: int = 60000, bits: int = 16,
                     nbytes: int = 64) -> DicomCase:
    """An uncompressed file whose header claims rows x cols but holds ``nbytes`` of pixel data."""
    path = Path(path)
    ds = _header_only("DX", rows, cols, bits)
    ds.PixelData = bytes(range(nbytes % 256)) + bytes(max(0, nbytes - nbytes % 256))
    ds["PixelData"].VR = "OW" if bits > 8 else "OB"
    ds.save_as(path, enforce_file_format=True)
    return DicomCase(path, params=dict(rows=rows, cols=cols, bits=bits))


def write_bits_allocated_1(path: str | Path, rows: int = 64, cols: int = 64) -> DicomCase:
    """BitsAllocated 1 (packed bits, as in segmentations and overlays), a 0/1 checkerboard."""
    path = Path(path)
    a = ((np.add.outer(np.arange(rows) // 8, np.arange(cols) // 8)) % 2).astype(np.uint8)
    ds = _header_only("DX", rows, cols, 1)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    del ds.WindowCenter, ds.WindowWidth
    ds.PixelData = pack_bits(a)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return DicomCase(path, source=a, stored=a[None], params=dict(rows=rows, cols=cols))


def _patch_codestream(frag: bytes, codec: str, rows: int, cols: int) -> bytes:
    cs = bytearray(frag)
    if codec == "j2k":                                   # SIZ: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz
        i = cs.find(b"\xff\x51")
        struct.pack_into(">IIIIII", cs, i + 6, cols, rows, 0, 0, cols, rows)
    else:                                                # SOF (JPEG FFC0, JPEG-LS FFF7): Lf P Y X
        i = cs.find(b"\xff\xc0" if codec == "jpeg" else b"\xff\xf7")
        struct.pack_into(">HH", cs, i + 5, rows, cols)
    assert i >= 0
    return bytes(cs)


def write_codestream_bomb(path: str | Path, codec: str = "j2k", claim: tuple[int, int] = (60000, 60000),
                          size: tuple[int, int] = (64, 64)) -> DicomCase:
    """A compressed file whose DICOM header says ``size`` (rows, cols) but whose codestream header
    claims ``claim``: a decoder that trusts the codestream allocates claim[0] x claim[1] samples
    (pyjpegls takes ~50 s and ~3 GB on the JPEG-LS one).

    Args:
        codec: "j2k" (JPEG 2000 Lossless, SIZ patched), "jls" (JPEG-LS Lossless, SOF55 patched) or
            "jpeg" (JPEG Baseline, SOF0 patched).
    """
    path = Path(path)
    v = source_image(0, max(size))[: size[0], : size[1]]
    v = np.pad(v, ((0, size[0] - v.shape[0]), (0, size[1] - v.shape[1])))
    ds = base_dataset("DX")
    _set_pixels(ds, v, "MONOCHROME2", 8)
    ds.WindowCenter, ds.WindowWidth = "128", "256"
    if codec == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(v, "L").save(buf, "JPEG", quality=90)
        frag, uid = buf.getvalue(), JPEGBaseline8Bit
    else:
        uid = JPEG2000Lossless if codec == "j2k" else JPEGLSLossless
        ds.compress(uid, generate_instance_uid=False)
        frag = next(generate_fragmented_frames(ds.PixelData))[0]
    ds.PixelData = encapsulate([_patch_codestream(frag, codec, *claim)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = uid
    ds.save_as(path, enforce_file_format=True)
    return DicomCase(path, source=v, params=dict(codec=codec, claim=claim, size=size))


def _rle_segment(plane: np.ndarray) -> bytes:
    """PackBits-encode one byte plane (rows x cols uint8), row by row, as DICOM RLE requires."""
    out = bytearray()
    for row in plane:
        change = np.flatnonzero(np.diff(row.astype(np.int16))) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [len(row)]])
        for a, b in zip(starts, ends):
            n, val = int(b - a), int(row[a])
            while n > 0:
                r = min(n, 128)
                out += bytes([0, val]) if r == 1 else bytes([257 - r, val])
                n -= r
    if len(out) % 2:
        out += b"\x00"
    return bytes(out)


def rle_frame(a: np.ndarray) -> bytes:
    """One DICOM RLE frame (64-byte header + segments, most significant byte first) for a 2-D
    uint8/uint16 array with few distinct runs (fast for large, simple images)."""
    nbytes = a.dtype.itemsize
    planes = [((a.astype(np.uint32) >> (8 * (nbytes - 1 - i))) & 0xFF).astype(np.uint8) for i in range(nbytes)]
    segs = [_rle_segment(p) for p in planes]
    header, pos = [len(segs)], 64
    for s in segs:
        header.append(pos)
        pos += len(s)
    header += [0] * (16 - len(header))
    return struct.pack("<16I", *header) + b"".join(segs)


def write_rle_large(path: str | Path, rows: int = 4000, cols: int = 4000, bits: int = 16,
                    truncate_to: int | None = None) -> DicomCase:
    """A valid RLE Lossless file of a large, simple image (two bands, stored 0 and 1000 at 16
    bits), a few hundred KB on disk but rows x cols x 2 bytes decoded: for decoding-budget tests.

    truncate_to: keep only that many bytes of the RLE frame (a frame whose segments stop early).
    """
    path = Path(path)
    a = np.zeros((rows, cols), np.uint16 if bits > 8 else np.uint8)
    a[rows // 2:, :] = 1000 if bits > 8 else 200
    a[:, : cols // 3] += 7
    frame = rle_frame(a)
    if truncate_to is not None:
        frame = frame[:truncate_to] + b"\x00" * (truncate_to % 2)
    ds = _header_only("DX", rows, cols, bits)
    ds.WindowCenter, ds.WindowWidth = ("600", "1400") if bits > 8 else ("128", "256")
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.save_as(path, enforce_file_format=True)
    return DicomCase(path, stored=a[None], params=dict(rows=rows, cols=cols, bits=bits, truncate_to=truncate_to))


def _element(tag: int, vr: str, value_len: int) -> bytes:
    """An explicit VR little endian element header."""
    group, elem = tag >> 16, tag & 0xFFFF
    if vr in ("OB", "OW", "SQ", "UN", "UT", "UC", "UR", "OD", "OF", "OL", "OV"):
        return struct.pack("<HH2sHI", group, elem, vr.encode(), 0, value_len)
    return struct.pack("<HH2sH", group, elem, vr.encode(), value_len)


def write_deflate_bomb(path: str | Path, inflated_mb: int = 400, source: np.ndarray | None = None) -> DicomCase:
    """Deflated Explicit VR Little Endian whose deflate stream inflates to ``inflated_mb`` MB (a private
    OB element of zeros after a small valid image), in a file of ~``inflated_mb`` KB."""
    path = Path(path)
    v = source_image(0, 64) if source is None else source
    ds = base_dataset("DX", transfer_syntax=ExplicitVRLittleEndian)
    _set_pixels(ds, v, "MONOCHROME2", 8)
    ds.WindowCenter, ds.WindowWidth = "128", "256"
    body = io.BytesIO()
    del ds.file_meta
    dcmwrite(body, ds, enforce_file_format=False, implicit_vr=False, little_endian=True)
    big = inflated_mb << 20
    tail = _element(0x7FE10010, "LO", 8) + b"ZZ BOMB " + _element(0x7FE11001, "OB", big)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(body.getvalue() + tail) + comp.flush(zlib.Z_FULL_FLUSH)
    chunk = comp.compress(bytes(1 << 20)) + comp.flush(zlib.Z_FULL_FLUSH)   # the same bytes every MB
    stream = head + chunk * (big >> 20) + comp.flush()
    meta = base_dataset("DX", transfer_syntax=DeflatedExplicitVRLittleEndian).file_meta
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = DicomBytesIO()
    out.write(bytes(128) + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    path.write_bytes(out.getvalue() + stream)
    return DicomCase(path, source=v, params=dict(inflated_mb=inflated_mb))


def write_header_cut(path: str | Path, source: np.ndarray | None = None, inside: bytes = b"ZZPID") -> DicomCase:
    """A valid file cut in the middle of its header: inside the value that starts with ``inside``
    (default: the PatientID value, so the file ends with a fragment of it)."""
    path = Path(path)
    write_dicom(path, source)
    data = path.read_bytes()
    i = data.index(inside)
    path.write_bytes(data[: i + len(inside) + 1])
    return DicomCase(path, params=dict(cut_at=i + len(inside) + 1))


def write_dicm_garbage(path: str | Path, n: int = 2000, seed: int = 0) -> DicomCase:
    """A 128-byte preamble and DICM followed by random bytes."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    path.write_bytes(bytes(128) + b"DICM" + rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    return DicomCase(path)


# --- checks ---------------------------------------------------------------------------------------
def stored_pixels(path: str | Path) -> np.ndarray:
    """pydicom's ``pixel_array`` (all frames, frames x H x W [x 3]) of a file, read with force=True.
    YBR_FULL comes back converted to RGB (pydicom's default)."""
    ds = pydicom.dcmread(path, force=True)
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):   # a raw dataset: say how it was read
        implicit, little = ds.original_encoding
        ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                          ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    a = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return a if frames > 1 else a[None]


def verify(case: DicomCase) -> None:
    """Assert that pydicom reads back exactly the stored values intended (YBR_FULL: within 2 of RGB)."""
    got = stored_pixels(case.path)
    want = case.stored
    if case.params.get("photometric") == "YBR_FULL":
        assert np.abs(got.astype(int) - case.expected[None].astype(int)).max() <= 2
        return
    assert got.shape == want.shape, (got.shape, want.shape)
    if case.params.get("transfer_syntax") == "jpeg":       # lossy: decoders' IDCTs may differ by 1-2
        assert np.abs(got.astype(np.int64) - want.astype(np.int64)).max() <= 2, case.path
        return
    assert np.array_equal(got.astype(np.int64), want.astype(np.int64)), case.path
