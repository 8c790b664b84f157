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
    def boom(self):
        raise AssertionError("decoded a 30000x30000 header")
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
