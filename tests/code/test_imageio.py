import numpy as np
import pytest
from PIL import Image

from fracturelib.data.imageio import ImageError, check_image, read_image
from fracturelib.data.manifest import build_manifest
from tests.conftest import BAD_CORPUS


@pytest.mark.parametrize("name,expected", sorted(BAD_CORPUS.items()))
def test_bad_corpus_each_file(bad_corpus, name, expected):
    chk = check_image(bad_corpus / name)
    if expected == "ok":
        assert chk.ok, chk.reason
        assert chk.image.mode in ("L", "RGB")
    else:
        assert chk.status == "skipped"
        assert chk.reason.startswith(expected), chk.reason


def test_bomb_is_not_decoded(bad_corpus, monkeypatch):
    real_load = Image.Image.load

    def boom(self):     # only the bomb: PIL loads small images of its own when it first imports its plugins
        if self.size == (30000, 30000):
            raise AssertionError("decoded a 30000x30000 header")
        return real_load(self)
    monkeypatch.setattr(Image.Image, "load", boom)
    chk = check_image(bad_corpus / "bomb.png")
    assert chk.reason.startswith("too large") and "30000x30000" in chk.reason


def test_sixteen_bit_png_is_stretched_to_full_range(bad_corpus):
    a = read_image(bad_corpus / "gray16.png", channels=1)
    assert a.dtype == np.uint8 and a.shape == (80, 100, 1)
    assert a.min() == 0 and a.max() == 255


def test_rgba_composited_on_black_and_cmyk_converted(bad_corpus):
    rgba = read_image(bad_corpus / "rgba.png")
    plain = read_image(bad_corpus / "gray.png")
    assert rgba.shape == (100, 120, 3)
    # alpha 200/255 on black darkens every pixel by about that factor
    assert abs(rgba.mean() / plain.mean() - 200 / 255) < 0.03
    cmyk = read_image(bad_corpus / "cmyk.jpg")
    assert cmyk.shape == (100, 120, 3) and abs(float(cmyk.mean()) - float(plain.mean())) < 8


def test_extension_mismatch_is_noted(bad_corpus):
    chk = check_image(bad_corpus / "png_named.jpg")
    assert chk.ok and "content is PNG" in chk.note


def test_read_image_error_names_file_and_fix(bad_corpus):
    with pytest.raises(ImageError) as e:
        read_image(bad_corpus / "truncated.jpg")
    assert "truncated.jpg" in str(e.value) and "Re-export" in str(e.value)


def test_manifest_accounts_for_every_file(bad_corpus):
    df = build_manifest(bad_corpus)
    assert df.attrs["layout"] == "flat"
    assert len(df) == len(list(bad_corpus.iterdir())) == len(BAD_CORPUS)
    ok = df["status"] == "ok"
    assert ok.sum() == sum(v == "ok" for v in BAD_CORPUS.values())
    assert (df.loc[~ok, "reason"] != "").all()
    assert set(df.loc[~df["native"] & ok, "relpath"]) >= {"gray16.png", "cmyk.jpg", "rgba.png", "palette.png"}


# --- one decoding budget for every decoder (issue "reliability by construction") ---------------

def _flat_jpeg(path, w, h, mode="RGB"):
    a = np.full((h, w, 3) if mode == "RGB" else (h, w), 90, np.uint8)
    a[:, : w // 2] = 160
    Image.fromarray(a).save(path, "JPEG", quality=90)
    return path


def test_large_jpeg_is_decoded_reduced_and_the_reduced_cost_is_reserved(tmp_path, monkeypatch):
    from fracturelib.data import imageio
    p = _flat_jpeg(tmp_path / "big.jpg", 4000, 3000)
    held = []
    real_hold = imageio.DECODE_BUDGET.hold
    monkeypatch.setattr(imageio.DECODE_BUDGET, "hold", lambda need: held.append(need) or real_hold(need))
    chk = check_image(p)                                       # scan: config.CHECK_SIDE (512) is enough
    assert chk.ok and (chk.width, chk.height) == (4000, 3000)  # the file's own size is reported
    assert chk.image.size == (1000, 750)                       # 1/4: the smallest DCT scale >= 512
    assert held == [imageio.decode_cost(1000, 750, "RGB")]
    assert read_image(p, channels=1, need=256).shape == (375, 500, 1)   # 1/8
    assert read_image(p, channels=1).shape == (3000, 4000, 1)           # need=None: full size


def test_budget_decides_on_the_reduced_size(tmp_path, monkeypatch):
    from fracturelib.data import imageio
    p = _flat_jpeg(tmp_path / "big.jpg", 4000, 3000)
    monkeypatch.setattr(imageio.DECODE_BUDGET, "limit", imageio.decode_cost(1000, 750, "RGB"))
    assert check_image(p).ok
    with pytest.raises(ImageError, match="too large to decode"):
        read_image(p)                                          # full size would not fit


def test_jpeg_scale_matches_libjpeg_and_keeps_the_need():
    from fracturelib.data.imageio import jpeg_scale
    assert jpeg_scale(10000, 10000, 256) == 8 and jpeg_scale(10000, 10000, 2048) == 4
    assert jpeg_scale(1000, 800, 256) == 2 and jpeg_scale(500, 400, 256) == 1
    assert jpeg_scale(4000, 3000, None) == 1
    for w, h, need in [(1001, 37, 100), (4095, 4097, 512), (257, 33, 32)]:
        s = jpeg_scale(w, h, need)
        assert -(-max(w, h) // s) >= need


def test_truncated_large_jpeg_is_tried_at_one_eighth(tmp_path, monkeypatch):
    from fracturelib.data import imageio
    full = _flat_jpeg(tmp_path / "full.jpg", 4000, 3000).read_bytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(full[: len(full) * 2 // 3])
    held = []
    real_hold = imageio.DECODE_BUDGET.hold
    monkeypatch.setattr(imageio.DECODE_BUDGET, "hold", lambda need: held.append(need) or real_hold(need))
    assert check_image(p).reason.startswith("truncated JPEG, decodable")
    assert held == [imageio.decode_cost(500, 375, "RGB")]


def _png_with_chunk(kind: bytes, payload_len: int) -> bytes:
    import io
    import struct
    import zlib
    buf = io.BytesIO()
    Image.new("L", (64, 64), 7).save(buf, "PNG")
    b = buf.getvalue()
    payload = b"\0" * payload_len
    chunk = struct.pack(">I", payload_len) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    i = b.index(b"IDAT") - 4
    return b[:i] + chunk + b[i:]


def test_oversized_png_ancillary_chunk_is_never_read(tmp_path, monkeypatch):
    from PIL import ImageFile
    p = tmp_path / "priv.png"
    p.write_bytes(_png_with_chunk(b"prIv", 40 << 20))         # 40 MB private chunk, 64x64 pixels
    reads = []
    real = ImageFile._safe_read
    monkeypatch.setattr(ImageFile, "_safe_read", lambda fp, size: reads.append(size) or real(fp, size))
    chk = check_image(p)
    assert chk.ok and chk.image.size == (64, 64) and not chk.native   # the pipeline uses a clean copy
    assert "prIv" in chk.note and "left unread" in chk.note
    assert max(reads, default=0) < 1 << 20
    small = tmp_path / "small.png"
    small.write_bytes(_png_with_chunk(b"prIv", 1000))         # within config.MAX_METADATA_MB: as before
    chk = check_image(small)
    assert chk.ok and chk.native and chk.note == ""


def test_jpeg_metadata_past_the_limit_is_left_unread(tmp_path):
    import io
    import struct

    from fracturelib import config
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 50), 120, np.uint8)).save(buf, "JPEG")
    b = buf.getvalue()
    com = b"\xff\xfe" + struct.pack(">H", 65535) + b"x" * 65533
    n = (config.MAX_METADATA_MB << 20) // len(com) + 5
    p = tmp_path / "comments.jpg"
    p.write_bytes(b[:2] + com * n + b[2:])
    chk = check_image(p)
    assert chk.ok and "JPEG metadata segments" in chk.note and not chk.native
    assert np.array_equal(np.asarray(chk.image), np.asarray(Image.open(io.BytesIO(b))))


# --- one geometry rule ------------------------------------------------------------------------

def test_extreme_aspect_ratio_is_skipped_with_the_reason(tmp_path):
    p = tmp_path / "strip.png"
    Image.new("L", (40, 19000), 100).save(p)
    chk = check_image(p)
    assert chk.status == "skipped" and chk.reason.startswith("aspect ratio 475:1 exceeds 20:1")
    with pytest.raises(ImageError, match="aspect ratio 475:1 exceeds 20:1"):
        read_image(p)
    Image.new("L", (40, 800), 100).save(tmp_path / "ok.png")       # exactly 20:1 is usable
    assert check_image(tmp_path / "ok.png").ok


def test_a_jpeg_cut_before_its_image_data_is_truncated_whatever_pillow_opens(bad_corpus, monkeypatch):
    """Pillow 12 refuses a header-only JPEG, Pillow 13 opens its header: the reason must not depend on it."""
    from PIL import Image, UnidentifiedImageError

    from fracturelib.data import imageio
    assert imageio.check_image(bad_corpus / "header_only.jpg").reason.startswith("truncated JPEG, not decodable")

    def refuse(*a, **k):
        raise UnidentifiedImageError("cannot identify image file")
    monkeypatch.setattr(Image, "open", refuse)
    assert imageio.check_image(bad_corpus / "header_only.jpg").reason.startswith("truncated JPEG, not decodable")
    assert imageio.check_image(bad_corpus / "text.jpg").reason.startswith("not an image")


def test_a_pipe_or_a_device_is_not_a_regular_file_and_is_never_opened(tmp_path):
    import os
    os.mkfifo(tmp_path / "fifo.jpg")                        # opening it for reading would block forever
    for p in (tmp_path / "fifo.jpg", "/dev/zero", tmp_path):
        assert check_image(p).reason.startswith("not a regular file"), p
    with pytest.raises(ImageError, match="not a regular file"):
        read_image(tmp_path / "fifo.jpg")
