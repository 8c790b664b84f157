"""DICOM reading through ``imageio.check_image`` / ``read_image``, against files built by
:mod:`tests.dicom_factory` with a known forward transform (rescale, VOI window or LUT, MONOCHROME1,
bit depth, sign, transfer syntax), so each result is compared with what the standard says it is.

* Factory: every variant reads back through pydicom as intended (these tests need no fracturelib
  DICOM code), and its expected display values agree with pydicom's own VOI implementation.
* Reader: exact round trips (max abs diff <= 1), frame 1 of multi-frame, the percentile window
  without VOI, colour, modality filter, objects without pixels, hostile files (skipped with a reason,
  never an exception, memory bounded: the codestream and deflate bombs run in a child process
  with an address-space limit), privacy (no identifier in anything reported), pydicom's own files.

Hypothesis examples: ``FRACTURELIB_FUZZ_EXAMPLES`` (default 25).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from tests import dicom_factory as F

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("FRACTURELIB_FUZZ_EXAMPLES", 25))
HAS_READER = importlib.util.find_spec("fracturelib.data.dicom") is not None
reader = pytest.mark.skipif(not HAS_READER, reason="fracturelib.data.dicom is not written yet")
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.fixture(scope="module")
def src() -> np.ndarray:
    return F.source_image(0, 128)


def _check(path, **kw):
    from fracturelib.data.imageio import check_image
    kw.setdefault("need", None)
    return check_image(path, **kw)


def _pixels(chk) -> np.ndarray:
    return np.asarray(chk.image).astype(np.int64)


def _traced_check(path, **kw):
    """(:func:`_check`'s result, the peak of Python allocations while it ran, in bytes)."""
    tracemalloc.start()
    try:
        chk = _check(path, **kw)
        return chk, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _warm_up(folder: Path) -> None:
    """Read one small DICOM of each codec first: lazy imports are not the cost of the file measured next."""
    for ts in ("explicit", "rle"):
        _check(F.write_dicom(folder / f"warm_{ts}.dcm", F.source_image(0, 48), transfer_syntax=ts).path)


def _max_diff(a, b) -> int:
    return int(np.abs(np.asarray(a, np.int64) - np.asarray(b, np.int64)).max())


# --- the variants with an exactly known result ------------------------------------------------
EXACT = {
    "explicit_8": {},
    "implicit_8": dict(transfer_syntax="implicit"),
    "big_8": dict(transfer_syntax="big"),
    "big_12": dict(transfer_syntax="big", bits_stored=12, intercept=-1024),
    "big_16_signed_mono1": dict(transfer_syntax="big", bits_stored=16, signed=True, slope=2, intercept=-3,
                                photometric="MONOCHROME1"),
    "deflated_12": dict(transfer_syntax="deflated", bits_stored=12),
    "rle_8": dict(transfer_syntax="rle"),
    "rle_16_signed": dict(transfer_syntax="rle", bits_stored=16, signed=True, intercept=1000),
    "jpegls_8": dict(transfer_syntax="jpegls"),
    "jpegls_12_mono1": dict(transfer_syntax="jpegls", bits_stored=12, photometric="MONOCHROME1"),
    "j2k_8": dict(transfer_syntax="j2k"),
    "j2k_16": dict(transfer_syntax="j2k", bits_stored=16, slope=0.5, intercept=100),
    "j2k_12_signed": dict(transfer_syntax="j2k", bits_stored=12, signed=True),
    "jpeg_baseline_lossy": dict(transfer_syntax="jpeg"),
    "mono1_8": dict(photometric="MONOCHROME1"),
    "mono1_without_presentation_lut": dict(photometric="MONOCHROME1", bits_stored=12, presentation_lut=False),
    "mono1_12_signed": dict(photometric="MONOCHROME1", bits_stored=12, signed=True, intercept=2048),
    "bits10": dict(bits_stored=10, intercept=-7),
    "bits12": dict(bits_stored=12, intercept=-1024),
    "bits14": dict(bits_stored=14, slope=3, intercept=-20000),
    "bits16": dict(bits_stored=16),
    "bits16_slope_half": dict(bits_stored=16, slope=0.5, intercept=100),
    "signed_8": dict(signed=True, intercept=128),
    "signed_12": dict(bits_stored=12, signed=True, intercept=-1024),
    "signed_16": dict(bits_stored=16, signed=True, slope=2, intercept=-3),
    "linear_exact_12": dict(bits_stored=12, voi="LINEAR_EXACT"),
    "linear_exact_16_mono1": dict(bits_stored=16, voi="LINEAR_EXACT", photometric="MONOCHROME1"),
    "sigmoid_12": dict(bits_stored=12, voi="SIGMOID"),
    "sigmoid_16_signed_mono1": dict(bits_stored=16, signed=True, voi="SIGMOID", photometric="MONOCHROME1"),
    "voi_lut_12": dict(bits_stored=12, voi="LUT"),
    "voi_lut_8_mono1": dict(voi="LUT", photometric="MONOCHROME1"),
    "two_windows_first_wins": dict(bits_stored=12, intercept=-500, extra_windows=True),
    "dirty_high_bits_unsigned": dict(bits_stored=12, high_bits="dirty"),
    "unextended_sign_12": dict(bits_stored=12, signed=True, high_bits="dirty"),
    "no_preamble_explicit": dict(container="no_preamble", bits_stored=12),
    "no_preamble_implicit": dict(container="no_preamble", transfer_syntax="implicit"),
    "raw_explicit": dict(container="raw", bits_stored=12),
    "raw_implicit": dict(container="raw", transfer_syntax="implicit", bits_stored=16, signed=True),
    "raw_big": dict(container="raw", transfer_syntax="big", bits_stored=12),
    "cr": dict(modality="CR", bits_stored=12),
}


# ================================ the factory (pydicom only) ==================================
@pytest.mark.parametrize("name", sorted(EXACT))
def test_factory_stores_what_it_says(tmp_path, src, name):
    case = F.write_dicom(tmp_path / "x.dcm", src, **EXACT[name])
    F.verify(case)
    if case.params["voi"] != "SIGMOID":        # the exact designs give the source back
        assert _max_diff(case.expected, src) <= (0 if name != "jpeg_baseline_lossy" else 20)
    assert case.exact


@pytest.mark.parametrize("kw", [
    dict(frames=3), dict(frames=3, bits_stored=12, transfer_syntax="rle"), dict(frames=3, transfer_syntax="j2k"),
    dict(voi=None, bits_stored=12), dict(padding=(10, 4095), bits_stored=12, k=8, voi=None),
    dict(modality="CT", bits_stored=16, signed=True, intercept=-1024), dict(modality="MR", bits_stored=12),
], ids=["mf", "mf_rle", "mf_j2k", "no_voi", "padding", "ct", "mr"])
def test_factory_other_variants(tmp_path, src, kw):
    case = F.write_dicom(tmp_path / "x.dcm", src, **kw)
    F.verify(case)
    if kw.get("frames"):
        frames = F.stored_pixels(case.path)
        assert frames.shape[0] == 3 and not np.array_equal(frames[0], frames[1])


@pytest.mark.parametrize("kw", [dict(), dict(photometric="YBR_FULL"), dict(planar=1), dict(transfer_syntax="rle"),
                                dict(transfer_syntax="big"), dict(transfer_syntax="jpegls"),
                                dict(photometric="YBR_FULL", transfer_syntax="rle")],
                         ids=["rgb", "ybr_full", "planar1", "rle", "big", "jpegls", "ybr_rle"])
def test_factory_colour(tmp_path, src, kw):
    F.verify(F.write_colour(tmp_path / "c.dcm", src, **kw))


_DEPTHS = [(8, False, 1, 0), (12, False, 1, 0), (16, False, 0.5, 100), (12, True, 1, 1024), (16, True, 2, -3)]
_VOI_GRID = [(voi, *d) for voi in ("LINEAR", "LINEAR_EXACT", "SIGMOID", "LUT") for d in _DEPTHS
             if voi != "LUT" or (not d[1] and d[2] == 1)]       # the LUT variant: unsigned, slope 1


@pytest.mark.parametrize("voi,bits,signed,slope,intercept", _VOI_GRID)
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_factory_expected_agrees_with_pydicom_voi(tmp_path, src, voi, bits, signed, slope, intercept, photometric):
    """The factory's ``expected`` (its own reading of PS3.3 C.11.2.1.2) equals pydicom's
    apply_modality_lut + apply_voi_lut, scaled from pydicom's output range to 0..255."""
    case = F.write_dicom(tmp_path / "x.dcm", src, bits_stored=bits, signed=signed, slope=slope, intercept=intercept,
                         voi=voi, photometric=photometric)
    ds = pydicom.dcmread(case.path)
    m = apply_modality_lut(ds.pixel_array, ds)
    if voi == "LUT":                          # integer input: pydicom warns on a float array for a LUT
        m = m.astype(np.int64)
    y = apply_voi_lut(m, ds)
    if voi == "LUT":
        y = y / 65535 * 255
    else:                                     # pydicom's window output range: the stored range, rescaled
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
        ymin, ymax = lo * slope + intercept, hi * slope + intercept
        y = (y - ymin) / (ymax - ymin) * 255
    shown = 255 - y if photometric == "MONOCHROME1" else y
    assert _max_diff(np.rint(shown), case.expected) == 0


def test_pydicom_does_not_byteswap_pixel_data_for_big_endian(tmp_path, src):
    """Why the factory swaps 16-bit pixels itself: pydicom writes Pixel Data bytes as they are."""
    a = src.astype(np.uint16) * 16
    ds = F.base_dataset()
    ds.set_pixel_data(a, "MONOCHROME2", 12, generate_instance_uid=False)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
    ds.save_as(tmp_path / "naive.dcm", enforce_file_format=True)
    assert not np.array_equal(pydicom.dcmread(tmp_path / "naive.dcm").pixel_array, a)
    case = F.write_dicom(tmp_path / "be.dcm", src, bits_stored=12, transfer_syntax="big")
    ds = pydicom.dcmread(case.path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRBigEndian
    first = int(case.stored[0, 0, 0])
    assert bytes(ds.PixelData[:2]) == first.to_bytes(2, "big")


def test_factory_objects_and_hostile_files_are_what_they_claim(tmp_path, src):
    import openjpeg
    for kind in ("DX", "SR", "PR", "DICOMDIR"):
        ds = pydicom.dcmread(F.write_no_pixels(tmp_path / f"{kind}.dcm", kind).path)
        assert "PixelData" not in ds
    assert pydicom.dcmread(tmp_path / "DICOMDIR.dcm").file_meta.MediaStorageSOPClassUID == F.MEDIA_STORAGE_DIRECTORY
    ds = pydicom.dcmread(F.write_huge_claim(tmp_path / "huge.dcm").path)
    assert (ds.Rows, ds.Columns, len(ds.PixelData)) == (60000, 60000, 64)
    bomb = F.write_codestream_bomb(tmp_path / "j2k.dcm", "j2k")
    ds = pydicom.dcmread(bomb.path)
    frag = next(pydicom.encaps.generate_fragmented_frames(ds.PixelData))[0]
    assert (ds.Rows, ds.Columns) == (64, 64)
    assert openjpeg.get_parameters(frag)["rows"] == 60000
    for codec, marker in (("jls", b"\xff\xf7"), ("jpeg", b"\xff\xc0")):
        ds = pydicom.dcmread(F.write_codestream_bomb(tmp_path / f"{codec}.dcm", codec).path)
        frag = next(pydicom.encaps.generate_fragmented_frames(ds.PixelData))[0]
        i = frag.index(marker)
        assert int.from_bytes(frag[i + 5:i + 7], "big") == 60000
    deflate = F.write_deflate_bomb(tmp_path / "deflate.dcm", 64)
    assert deflate.path.stat().st_size < 200_000
    d = pydicom.dcmread(deflate.path)
    assert np.array_equal(d.pixel_array, deflate.source) and len(d[0x7FE11001].value) == 64 << 20
    assert pydicom.dcmread(F.write_truncated_pixels(tmp_path / "t.dcm", src).path).Rows == src.shape[0]
    big = F.write_rle_large(tmp_path / "rle.dcm", 600, 500)
    F.verify(big)
    cut = F.write_header_cut(tmp_path / "cut.dcm", src).path.read_bytes()
    assert cut.endswith(F.FAKE_PATIENT_ID[:6].encode()) and len(cut) < 1000
    assert b"ZZPID12345" in F.write_dicom(tmp_path / "ids.dcm", src).path.read_bytes()   # the ids are there


# ===================================== the reader ==============================================
@reader
@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_round_trip(tmp_path, src, name):
    case = F.write_dicom(tmp_path / "x.dcm", src, **EXACT[name])
    chk = _check(case.path)
    assert chk.ok, chk.reason
    assert chk.format == "DICOM" and chk.native is False
    assert (chk.width, chk.height) == (src.shape[1], src.shape[0])
    assert chk.image.mode == "L"
    assert _max_diff(_pixels(chk), case.expected) <= case.tolerance, name


@reader
def test_read_image_gives_display_ready_uint8(tmp_path, src):
    from fracturelib.data.imageio import read_image
    case = F.write_dicom(tmp_path / "x.dcm", src, bits_stored=12, photometric="MONOCHROME1", intercept=-1024)
    a = read_image(case.path, channels=1)
    assert a.dtype == np.uint8 and a.shape == (*src.shape, 1)
    assert _max_diff(a[..., 0], src) <= 1
    b = read_image(case.path, channels=3)
    assert b.shape == (*src.shape, 3) and _max_diff(b[..., 1], src) <= 1


@reader
@pytest.mark.parametrize("container", ["file", "raw"])
@pytest.mark.parametrize("name", ["x.png", "x.jpg", "noextension", "IMG0001"])
def test_recognised_by_content_not_name(tmp_path, src, container, name):
    case = F.write_dicom(tmp_path / "a.dcm", src, bits_stored=12, container=container)
    target = tmp_path / name
    shutil.copyfile(case.path, target)
    chk = _check(target)
    assert chk.ok, chk.reason
    assert chk.format == "DICOM"
    assert _max_diff(_pixels(chk), src) <= 1


@reader
@pytest.mark.parametrize("ts", ["explicit", "rle", "j2k"])
def test_multiframe_reads_frame_one(tmp_path, src, ts):
    case = F.write_dicom(tmp_path / "mf.dcm", src, frames=3, bits_stored=12, transfer_syntax=ts)
    chk = _check(case.path)
    assert chk.ok, chk.reason
    assert "frame" in chk.note.lower()
    assert _max_diff(_pixels(chk), src) <= 1


@reader
@pytest.mark.parametrize("kw", [dict(bits_stored=12), dict(bits_stored=16, signed=True, intercept=-1024),
                                dict(bits_stored=12, photometric="MONOCHROME1"), dict(bits_stored=8)],
                         ids=["u12", "s16", "mono1", "u8"])
def test_no_voi_uses_a_percentile_window_keeping_order(tmp_path, src, kw):
    case = F.write_dicom(tmp_path / "x.dcm", src, voi=None, **kw)
    chk = _check(case.path)
    assert chk.ok, chk.reason
    assert "percentile" in chk.note.lower()
    got = _pixels(chk).ravel()
    assert np.corrcoef(got, src.ravel())[0, 1] > 0.98            # bone bright, MONOCHROME1 included
    assert got.max() - got.min() >= 200                          # the window spreads the values


@reader
def test_padding_value_does_not_squash_the_window(tmp_path, src):
    """A 10 px border of PixelPaddingValue 4095 (data 0..2047): a percentile window over all pixels
    would squash the anatomy into the lower half; the padding must be left out of the statistics."""
    case = F.write_dicom(tmp_path / "pad.dcm", src, bits_stored=12, k=8, voi=None, padding=(10, 4095))
    chk = _check(case.path)
    assert chk.ok, chk.reason
    inside = ~case.params["padding_mask"]
    got = _pixels(chk)[inside]
    assert np.corrcoef(got, src[inside].astype(np.int64))[0, 1] > 0.98
    assert np.percentile(got, 99) - np.percentile(got, 1) >= 180


@reader
@pytest.mark.parametrize("kw", [dict(), dict(photometric="YBR_FULL"), dict(planar=1), dict(transfer_syntax="rle"),
                                dict(transfer_syntax="big"), dict(transfer_syntax="jpegls")],
                         ids=["rgb", "ybr_full", "planar1", "rle", "big", "jpegls"])
def test_colour(tmp_path, src, kw):
    case = F.write_colour(tmp_path / "c.dcm", src, **kw)
    chk = _check(case.path)
    assert chk.ok, chk.reason
    assert chk.image.mode == "RGB" and chk.format == "DICOM"
    assert _max_diff(_pixels(chk), case.expected) <= max(1, case.tolerance)


@reader
@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_non_radiograph_modalities(tmp_path, src, modality):
    case = F.write_dicom(tmp_path / "x.dcm", src, bits_stored=16, signed=True, intercept=-1024, modality=modality)
    chk = _check(case.path)
    assert not chk.ok and f"modality {modality} is not a radiograph" in chk.reason
    assert chk.image is None
    anyway = _check(case.path, modalities=None)
    assert anyway.ok, anyway.reason
    assert _max_diff(_pixels(anyway), src) <= 1


@reader
@pytest.mark.parametrize("kind", ["DX", "SR", "PR", "DICOMDIR"])
def test_objects_without_pixels(tmp_path, kind):
    case = F.write_no_pixels(tmp_path / f"{kind.lower()}.dcm", kind)
    chk = _check(case.path)
    assert chk.status == "skipped" and "no pixel data" in chk.reason
    assert _check(case.path, modalities=None).status == "skipped"


HOSTILE_IN_PROCESS = {
    "truncated_short": lambda p, s: F.write_truncated_pixels(p, s, "short"),
    "truncated_cut": lambda p, s: F.write_truncated_pixels(p, s, "cut"),
    "header_cut": lambda p, s: F.write_header_cut(p, s),
    "dicm_garbage": lambda p, s: F.write_dicm_garbage(p),
    "rle_segments_short": lambda p, s: F.write_rle_large(p, 2048, 2048, truncate_to=200),
    "no_pixel_data": lambda p, s: F.write_no_pixels(p, "DX"),
}


@reader
@pytest.mark.parametrize("name", sorted(HOSTILE_IN_PROCESS))
def test_hostile_files_skipped_with_a_reason(tmp_path, src, name):
    from fracturelib.data.imageio import ImageError, read_image
    case = HOSTILE_IN_PROCESS[name](tmp_path / f"{name}.dcm", src)
    chk = _check(case.path)
    assert chk.status == "skipped" and chk.reason and chk.image is None, (chk.status, chk.reason)
    with pytest.raises(ImageError):
        read_image(case.path)


@reader
def test_bits_allocated_1_is_skipped_as_a_mask(tmp_path):
    chk = _check(F.write_bits_allocated_1(tmp_path / "b1.dcm").path)
    assert chk.status == "skipped" and chk.reason.startswith("1-bit pixels") and chk.meta["modality"] == "DX"


@reader
def test_huge_header_claim_is_refused_on_the_header(tmp_path):
    path = F.write_huge_claim(tmp_path / "huge.dcm").path
    _warm_up(tmp_path)
    chk, peak = _traced_check(path)
    assert chk.status == "skipped" and "60000" in chk.reason, chk.reason
    assert peak < 16 << 20, f"{peak >> 20} MB traced"


@reader
def test_large_rle_frame_respects_the_decoding_budget(tmp_path, monkeypatch):
    """4000 x 4000 x 16 bits (32 MB decoded) from a 500 KB file, under a 16 MB decoding budget:
    refused before decoding (the budget rule of imageio holds for DICOM too)."""
    from fracturelib import config
    from fracturelib.data import imageio
    path = F.write_rle_large(tmp_path / "big.dcm", 4000, 4000).path
    monkeypatch.setattr(imageio.DECODE_BUDGET, "limit", 16 << 20)
    monkeypatch.setattr(config, "DECODE_BUDGET_MB", 16)
    _warm_up(tmp_path)
    chk, peak = _traced_check(path)
    assert chk.status == "skipped" and ("budget" in chk.reason or "too large" in chk.reason), chk.reason
    assert peak < 16 << 20, f"{peak >> 20} MB traced"


@reader
def test_large_rle_frame_decodes_within_budget(tmp_path):
    case = F.write_rle_large(tmp_path / "big.dcm", 1000, 900)
    chk = _check(case.path)
    assert chk.ok, chk.reason
    a = _pixels(chk)
    bands = [a[:500, 300:].mean(), a[:500, :300].mean(), a[500:, 300:].mean(), a[500:, :300].mean()]
    assert bands == sorted(bands) and bands[-1] - bands[0] > 100
    assert (chk.width, chk.height) == (900, 1000)


_BOUNDED = r"""
import json, os, resource, sys, time, tracemalloc
limit, budget_mb = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from fracturelib import config
from fracturelib.data import imageio
config.DECODE_BUDGET_MB, imageio.DECODE_BUDGET.limit = budget_mb, budget_mb << 20
imageio.check_image(sys.argv[3], need=None)         # warm up: lazy imports are not the file's cost

def hwm():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) // 1024

out = {}
for p in sys.argv[4:]:
    print("START", p, file=sys.stderr, flush=True)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                      # reset the peak RSS (VmHWM) to the current RSS
    except OSError:
        pass
    before, t = hwm(), time.time()
    tracemalloc.start()
    try:
        chk = imageio.check_image(p, need=None)
        r = dict(status=chk.status, reason=chk.reason, note=chk.note, text=str(chk))
    except BaseException as e:
        r = dict(status="exception", reason=f"{type(e).__name__}: {e}", note="", text="")
    r["traced_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    r["rss_mb"], r["seconds"] = hwm() - before, time.time() - t
    out[os.path.basename(p)] = r
print(json.dumps(out))
"""

#: the decoding budget the bombs meet (config.DECODE_BUDGET_MB in the child process)
BOMB_BUDGET_MB = 128
BOMBS = {
    "huge_claim.dcm": lambda p: F.write_huge_claim(p),
    "j2k_bomb.dcm": lambda p: F.write_codestream_bomb(p, "j2k"),
    "jls_bomb.dcm": lambda p: F.write_codestream_bomb(p, "jls"),
    "jpeg_bomb.dcm": lambda p: F.write_codestream_bomb(p, "jpeg"),
    "deflate_bomb.dcm": lambda p: F.write_deflate_bomb(p, 400),            # past the budget
    "deflate_under_budget.dcm": lambda p: F.write_deflate_bomb(p, 100),    # inflates to 100 of 128 MB
}


@pytest.fixture(scope="module")
def bomb_results(tmp_path_factory):
    """check_image on every bomb in one child process (3 GB address space, 120 s, a 128 MB decoding
    budget), with the traced peak, the growth of the resident set and the time of each."""
    folder = tmp_path_factory.mktemp("bombs")
    paths = [str(folder / n) for n in BOMBS]
    for name, make in BOMBS.items():
        make(folder / name)
    warm = F.write_dicom(folder / "warm.dcm", F.source_image(0, 64), bits_stored=12, transfer_syntax="rle").path
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               TF_CPP_MIN_LOG_LEVEL="2")
    try:
        run = subprocess.run([sys.executable, "-c", _BOUNDED, str(3 << 30), str(BOMB_BUDGET_MB), str(warm), *paths],
                             capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the bombs took over 120 s; last started: {(e.stderr or b'')[-300:]!r}")
    if run.returncode:
        pytest.fail(f"child process died ({run.returncode}): {run.stderr[-1500:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


@reader
@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bombs_are_refused_without_a_big_allocation(bomb_results, name):
    """Each bomb is refused by looking at it (not by failing to allocate), quickly; memory stays far
    below what it claims: under 64 MB for the size lies, within the decoding budget for the deflated
    ones (the budget is what decoding may hold at once, copies of the inflated data included)."""
    r = bomb_results[name]
    assert not any(x in r["text"] + r["reason"] + r["note"] for x in F.FAKE_IDENTIFIERS)
    assert r["seconds"] < 10, r
    bound = 64 if "deflate" not in name else BOMB_BUDGET_MB * 1.1 + 16
    assert r["traced_mb"] < bound, f"{r['traced_mb']:.0f} MB traced (bound {bound:.0f} MB): {r['status']} {r['reason']}"
    assert r["rss_mb"] < bound + 64, f"resident set grew {r['rss_mb']} MB (bound {bound + 64:.0f} MB)"
    if name == "deflate_under_budget.dcm":
        return                                # may be read (ok) or refused; only the memory is asserted
    assert r["status"] == "skipped" and r["reason"], r
    assert "memory" not in r["reason"].lower(), f"refused by failing to allocate, not by looking: {r['reason']}"


# --- privacy and metadata ----------------------------------------------------------------------
def _leaks(*texts) -> list[str]:
    blob = "\n".join(str(t) for t in texts)
    return [x for x in F.FAKE_IDENTIFIERS if x.lower() in blob.lower()]


@reader
def test_nothing_reported_carries_an_identifier(tmp_path, src, caplog):
    makers = {
        "ok.dcm": lambda p: F.write_dicom(p, src, bits_stored=12),
        "mf.dcm": lambda p: F.write_dicom(p, src, frames=3),
        "novoi.dcm": lambda p: F.write_dicom(p, src, voi=None),
        "ct.dcm": lambda p: F.write_dicom(p, src, modality="CT", bits_stored=16, signed=True),
        "sr.dcm": lambda p: F.write_no_pixels(p, "SR"),
        "dicomdir.dcm": lambda p: F.write_no_pixels(p, "DICOMDIR"),
        "cut.dcm": lambda p: F.write_header_cut(p, src),
        "short.dcm": lambda p: F.write_truncated_pixels(p, src),
        "rgb.dcm": lambda p: F.write_colour(p, src),
        "raw": lambda p: F.write_dicom(p, src, container="raw"),
    }
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        for name, make in makers.items():
            make(tmp_path / name)
            chk = _check(tmp_path / name)
            meta = getattr(chk, "meta", None)
            assert not _leaks(str(chk), repr(chk), chk.reason, chk.note, repr(meta)), (name, str(chk))
    assert not _leaks(*(str(w.message) for w in warned)), [str(w.message) for w in warned]
    assert not _leaks(caplog.text)


@reader
def test_metadata(tmp_path, src):
    chk = _check(F.write_dicom(tmp_path / "x.dcm", src, spacing=(0.2, 0.1)).path)
    assert chk.ok
    m = chk.meta
    assert (m["modality"], m["body_part"], m["view_position"], m["laterality"]) == ("DX", "HAND", "PA", "L")
    assert m["spacing_row_mm"] == pytest.approx(0.2) and m["spacing_col_mm"] == pytest.approx(0.1)
    default = _check(F.write_dicom(tmp_path / "y.dcm", src).path).meta
    assert default["spacing_row_mm"] == pytest.approx(0.143) and default["spacing_col_mm"] == pytest.approx(0.143)


@reader
def test_patient_group_is_a_keyed_pseudonym(tmp_path, src):
    a1 = _check(F.write_dicom(tmp_path / "a1.dcm", src).path).meta["patient_group"]
    a2 = _check(F.write_dicom(tmp_path / "a2.dcm", src, bits_stored=12, transfer_syntax="rle").path)
    a2 = a2.meta["patient_group"]
    b = _check(F.write_dicom(tmp_path / "b.dcm", src, patient_id=F.OTHER_PATIENT_ID).path).meta["patient_group"]
    skipped = _check(F.write_dicom(tmp_path / "ct.dcm", src, modality="CT", bits_stored=12).path)
    assert isinstance(a1, str) and a1
    assert a1 == a2 and a1 != b
    pid = F.FAKE_PATIENT_ID
    plain = {hashlib.new(h, pid.encode()).hexdigest() for h in ("sha256", "sha1", "md5")}
    plain |= {hashlib.sha256(pid.encode()).hexdigest().upper()}
    assert a1 != pid and pid not in a1
    assert not any(a1 == h or (len(a1) >= 6 and a1.lower() in h.lower()) for h in plain), a1
    assert skipped.status == "skipped" and skipped.meta["patient_group"] == _check(
        F.write_dicom(tmp_path / "ct2.dcm", src, modality="CT").path, modalities=None).meta["patient_group"]
    assert not _leaks(str(skipped))


@reader
def test_another_key_gives_other_groups(tmp_path, src, monkeypatch):
    path = F.write_dicom(tmp_path / "a.dcm", src).path
    first = _check(path).meta["patient_group"]
    monkeypatch.setenv("FRACTURELIB_PATIENT_SALT", "another key")
    assert _check(path).meta["patient_group"] not in ("", first)


def test_the_key_file_is_created_once_whatever_the_threads(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from fracturelib import config
    from fracturelib.data import dicom
    monkeypatch.delenv("FRACTURELIB_PATIENT_SALT", raising=False)
    for attempt in range(5):
        key_file = tmp_path / f"k{attempt}" / "patient_salt"
        monkeypatch.setattr(config, "PATIENT_SALT_FILE", str(key_file))
        with ThreadPoolExecutor(8) as pool:
            groups = set(pool.map(lambda _: dicom.patient_group("PatientID:ZZPID1"), range(64)))
        assert len(groups) == 1 and key_file.stat().st_mode & 0o077 == 0
        assert len(key_file.read_bytes()) >= 32 and list(key_file.parent.iterdir()) == [key_file]
        dicom._KEY.clear()                       # a new process: the same key, read from the file
        assert dicom.patient_group("PatientID:ZZPID1") in groups


@reader
def test_invalid_values_in_a_threaded_scan_leave_no_identifier(tmp_path, src, caplog):
    """pydicom warns and logs about invalid values, quoting them: none of that may reach an output."""
    from fracturelib.data import build_manifest
    from fracturelib.data.manifest import manifest_csv
    caplog.set_level(logging.DEBUG)
    (tmp_path / "fractured").mkdir()
    for i in range(12):
        case = F.write_dicom(tmp_path / "fractured" / f"{i}.dcm", src, patient_id="")
        ds = pydicom.dcmread(case.path)
        ds.StudyInstanceUID = f"{F.UID_ROOT}{i}.ZZPIDx"         # not a valid UID: pydicom complains
        ds.PatientBirthDate = F.FAKE_BIRTH_DATE + "ZZ"            # not a valid date either
        ds.save_as(case.path)
    caplog.clear()                                   # writing them complained too: only reading counts
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        df = build_manifest(tmp_path, workers=4, progress=False)
    assert (df["status"] == "ok").all() and df["patient_group"].nunique() == 12
    assert not _leaks(manifest_csv(df), caplog.text, *(str(w.message) for w in warned))


# --- pydicom's own files through the manifest --------------------------------------------------
SHIPPED = ["CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "JPEG-lossy.dcm"]


@reader
def test_pydicom_files_through_the_manifest(tmp_path, src):
    from fracturelib.data import build_manifest
    if not all((PYDICOM_FILES / n).exists() for n in SHIPPED):
        pytest.skip("pydicom's test files are not installed")
    root = tmp_path / "ds"
    (root / "fractured").mkdir(parents=True)
    (root / "non_fractured").mkdir()
    for n in SHIPPED:
        shutil.copyfile(PYDICOM_FILES / n, root / "fractured" / n)
    for i in range(3):
        F.write_dicom(root / "non_fractured" / f"dx{i}.dcm", F.source_image(i, 96), bits_stored=12)
    df = build_manifest(root, workers=2, progress=False)
    assert len(df) == len(SHIPPED) + 3
    rows = {Path(p).name: r for p, r in zip(df["path"], df.to_dict("records"))}
    ct, mr = rows["CT_small.dcm"], rows["MR_small_RLE.dcm"]
    assert ct["status"] == "skipped" and "modality CT is not a radiograph" in ct["reason"], ct
    assert mr["status"] == "skipped" and "modality MR is not a radiograph" in mr["reason"], mr
    for n in ("JPEG2000.dcm", "JPEG-lossy.dcm"):
        assert rows[n]["status"] == "ok" or rows[n]["reason"], rows[n]
    for i in range(3):
        r = rows[f"dx{i}.dcm"]
        assert r["status"] == "ok" and r["format"] == "DICOM", r
    from fracturelib.data.manifest import manifest_csv
    assert not _leaks(manifest_csv(df))


@reader
@pytest.mark.parametrize("name", SHIPPED)
def test_pydicom_files_any_modality(name):
    path = PYDICOM_FILES / name
    if not path.exists():
        pytest.skip("pydicom's test files are not installed")
    chk = _check(path, modalities=None)
    assert chk.ok or (chk.reason and "\n" not in chk.reason and "Traceback" not in chk.reason)
    if name in ("CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm"):
        assert chk.ok, chk.reason
        ds = pydicom.dcmread(path)
        assert (chk.width, chk.height) == (ds.Columns, ds.Rows)
        a = _pixels(chk).ravel()
        assert a.max() - a.min() > 100                   # a real picture, not a flat frame
        assert np.corrcoef(a, ds.pixel_array.astype(np.float64).ravel())[0, 1] > 0.8


# --- property: random depth / sign / rescale / window / syntax -> exact round trip ---------------
@st.composite
def exact_params(draw):
    bits = draw(st.sampled_from([8, 10, 12, 14, 16]))
    signed = draw(st.booleans())
    k = draw(st.integers(1, max(1, 2 ** bits // 256)))
    lo = -(2 ** (bits - 1)) if signed else 0
    hi = lo + 2 ** bits - 1
    offset = draw(st.integers(lo, hi - 255 * k))
    return dict(bits_stored=bits, signed=signed, k=k, offset=offset,
                slope=draw(st.sampled_from([0.25, 0.5, 1.0, 2.0, 3.0])),
                intercept=float(draw(st.integers(-5000, 5000))),
                voi=draw(st.sampled_from(["LINEAR", "LINEAR_EXACT", "SIGMOID"])),
                photometric=draw(st.sampled_from(["MONOCHROME2", "MONOCHROME1"])),
                high_bits=draw(st.sampled_from(["clean", "dirty"])), extra_windows=draw(st.booleans()),
                transfer_syntax=draw(st.sampled_from(["explicit", "implicit", "big", "deflated", "rle", "jpegls",
                                                      "j2k"])))


SMALL = F.source_image(3, 64)


@reader
@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(exact_params())
def test_property_exact_round_trip(params):
    with tempfile.TemporaryDirectory() as d:
        case = F.write_dicom(Path(d) / "p.dcm", SMALL, **params)
        chk = _check(case.path)
        assert chk.ok, (params, chk.reason)
        assert _max_diff(_pixels(chk), case.expected) <= 1, params


@reader
def test_pydicom_ybr_full_422_native():
    """Uncompressed YBR_FULL_422 holds 2 bytes a pixel (Y Y Cb Cr per pair), not 3: the file is
    complete, pydicom decodes it, so must the reader."""
    path = PYDICOM_FILES / "SC_ybr_full_422_uncompressed.dcm"
    if not path.exists():
        pytest.skip("pydicom's test files are not installed")
    want = pydicom.dcmread(path).pixel_array                 # converted to RGB by pydicom
    chk = _check(path, modalities=None)
    assert chk.ok, chk.reason
    assert chk.image.mode == "RGB" and _max_diff(_pixels(chk), want) <= 2


# --- hostile variants found by a hostile user: each class, not only the example ------------------
def _rewrap(path: Path, wrap) -> Path:
    """The file with its (single) compressed frame passed through ``wrap``."""
    from pydicom.encaps import encapsulate, generate_fragmented_frames
    ds = pydicom.dcmread(path)
    frame = b"".join(next(generate_fragmented_frames(ds.PixelData)))
    ds.PixelData = encapsulate([wrap(frame)])
    ds.save_as(path)
    return path


def _jp2(codestream: bytes) -> bytes:
    box = lambda kind, body: (8 + len(body)).to_bytes(4, "big") + kind + body  # noqa: E731
    return (box(b"jP  ", b"\r\n\x87\n") + box(b"ftyp", b"jp2 \x00\x00\x00\x00jp2 ") + box(b"jp2h", b"")
            + box(b"jp2c", codestream))


def _app_segments(jpeg: bytes, n: int = 2) -> bytes:
    return jpeg[:2] + b"".join(b"\xff\xef\xff\xff" + bytes(65533) for _ in range(n)) + jpeg[2:]


@reader
@pytest.mark.parametrize("codec,wrap", [("jpeg", _app_segments), ("j2k", _jp2), ("jls", _app_segments),
                                        ("jpeg", lambda f: f[:2] + f[f.index(b"\xff\xda"):])])
def test_a_frame_whose_size_is_hidden_or_lies_is_refused_before_decoding(tmp_path, codec, wrap):
    path = _rewrap(F.write_codestream_bomb(tmp_path / "x.dcm", codec, claim=(40000, 40000)).path, wrap)
    chk, peak = _traced_check(path)
    assert chk.status == "skipped" and "compressed frame" in chk.reason and peak < 32 << 20, (chk.reason, peak)


@reader
def test_only_frame_one_is_read_from_a_long_multiframe_file(tmp_path, src):
    case = F.write_dicom(tmp_path / "mf.dcm", src, bits_stored=12, frames=3)
    ds = pydicom.dcmread(case.path)
    ds.NumberOfFrames = 1500                                     # 1500 frames of 16-bit pixels: ~50 MB
    ds.PixelData = ds.PixelData[:len(ds.PixelData) // 3] * 1500
    ds.save_as(case.path)
    chk, peak = _traced_check(case.path)
    assert chk.ok and "1500 frames" in chk.note and peak < 8 << 20, peak
    assert np.abs(_pixels(chk) - case.expected).max() <= 1


@reader
def test_a_png_whose_bytes_128_spell_dicm_is_a_png(tmp_path):
    from PIL import Image, PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x" * 79 + "DICM" * 8)
    im = Image.fromarray(np.arange(96 * 96, dtype=np.uint8).reshape(96, 96))
    im.save(tmp_path / "a.png", pnginfo=info)
    assert b"DICM" in (tmp_path / "a.png").read_bytes()[100:180]
    chk = _check(tmp_path / "a.png")
    assert chk.ok and chk.format == "PNG"


@reader
def test_a_uid_only_in_the_file_meta_never_reaches_a_reason(tmp_path, src):
    case = F.write_dicom(tmp_path / "x.dcm", src)
    ds = pydicom.dcmread(case.path)
    ds.file_meta.TransferSyntaxUID = F.UID_ROOT + "9.9.777"       # a private transfer syntax
    ds.save_as(case.path, enforce_file_format=True)
    chk = _check(case.path)
    assert chk.status == "skipped" and not _leaks(chk.reason, chk.note)


@reader
@pytest.mark.parametrize("attrs", [{"WindowCenter": "NaN"}, {"WindowWidth": "inf"}, {"RescaleSlope": "NaN"},
                                   {"RescaleSlope": "0"}, {"RescaleSlope": "1e308"}, {"RescaleIntercept": "-inf"},
                                   {"WindowCenter": "-inf", "WindowWidth": "1e-300"}])
def test_unusable_window_or_rescale_values_fall_back_to_a_picture_with_a_note(tmp_path, src, attrs):
    case = F.write_dicom(tmp_path / "x.dcm", src, bits_stored=12)
    ds = pydicom.dcmread(case.path)
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.save_as(case.path)
    chk = _check(case.path)
    a = _pixels(chk).ravel().astype(float)
    assert chk.ok and "percentile window" in chk.note and a.std() > 20
    assert np.corrcoef(a, case.expected.ravel())[0, 1] > 0.99


@reader
def test_a_segmented_palette_is_refused_not_expanded(tmp_path, src):
    case = F.write_dicom(tmp_path / "x.dcm", src)
    ds = pydicom.dcmread(case.path)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    for c in ("Red", "Green", "Blue"):
        setattr(ds, f"{c}PaletteColorLookupTableDescriptor", [0, 0, 16])
        ds[f"{c}PaletteColorLookupTableDescriptor"].VR = "US"
        setattr(ds, f"Segmented{c}PaletteColorLookupTableData", b"\x01\x00\xff\xff\x00\x00" * 300)
    ds.save_as(case.path)
    chk, peak = _traced_check(case.path)
    assert chk.status == "skipped" and "segmented palette" in chk.reason and peak < 8 << 20


def _many_scans(n: int) -> bytes:
    """A 64x64 progressive JPEG whose last scan is repeated ``n`` times (each a full decoder pass)."""
    import io as _io

    from PIL import Image
    buf = _io.BytesIO()
    Image.fromarray(F.source_image(1, 64)).resize((64, 64)).save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    last = data.rindex(b"\xff\xda")
    return data[:last] + data[last:-2] * n + data[-2:]


@reader
def test_a_jpeg_of_many_scans_is_refused_before_decoding(tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit
    (tmp_path / "a.jpg").write_bytes(_many_scans(150))
    case = F.write_codestream_bomb(tmp_path / "x.dcm", "jpeg", claim=(64, 64))
    ds = pydicom.dcmread(case.path)
    ds.PixelData = encapsulate([_many_scans(150)])
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(case.path)
    for path in (tmp_path / "a.jpg", case.path):
        chk = _check(path)
        assert chk.status == "skipped" and chk.reason.startswith("too many scans"), chk.reason
    (tmp_path / "b.jpg").write_bytes(_many_scans(3))
    assert _check(tmp_path / "b.jpg").ok


@reader
def test_a_header_of_many_private_elements_is_parsed_for_its_few_used_ones(tmp_path, src):
    case = F.write_dicom(tmp_path / "x.dcm", src, bits_stored=12)
    ds = pydicom.dcmread(case.path)
    for i in range(100_000):
        ds.add_new((0x0009, 0x1000 + i % 0xEFFF) if i < 0xEFFF else (0x0011 + 2 * (i // 0xEFFF), 0x1000 + i % 0xEFFF),
                   "SS", 1)
    ds.save_as(case.path)
    chk, peak = _traced_check(case.path)
    assert chk.ok and np.abs(_pixels(chk) - case.expected).max() <= 1
    assert peak < 16 << 20, peak                      # the elements are walked, never kept


@reader
def test_frame_one_of_lying_offset_tables_is_bounded_before_it_is_read(tmp_path):
    from pydicom.encaps import encapsulate
    case = F.write_codestream_bomb(tmp_path / "x.dcm", "jpeg", claim=(64, 64))
    ds = pydicom.dcmread(case.path)
    frame = next(pydicom.encaps.generate_fragmented_frames(ds.PixelData))[0]
    filler = bytes(4 << 20)                         # 4 MB after frame 1, no end-of-image marker
    ds.NumberOfFrames = 2
    ds.PixelData = encapsulate([frame[:-2], filler, frame], has_bot=False)
    ds.save_as(case.path)
    chk, peak = _traced_check(case.path)
    assert chk.status == "skipped" and "larger than the frame it encodes" in chk.reason and peak < 2 << 20


@reader
def test_a_codestream_of_more_bits_than_allocated_is_refused(tmp_path, src):
    case = F.write_dicom(tmp_path / "x.dcm", src, bits_stored=12, transfer_syntax="jpegls")
    ds = pydicom.dcmread(case.path)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.save_as(case.path)
    chk = _check(case.path)
    assert chk.status == "skipped" and "12-bit samples" in chk.reason
