"""`fracturelib predict file.dcm --json` gives the answer the same image gives as a PNG, whatever the
DICOM encoding (bit depth, polarity, rescale and window, compression, byte order, container)."""
import json

import pytest
from PIL import Image

from fracturelib import config
from fracturelib.app.cli import main
from fracturelib.models import cards, cnn
from tests import dicom_factory as dcm

VARIANTS = {
    "8-bit": {},
    "MONOCHROME1 12-bit rescaled": dict(photometric="MONOCHROME1", bits_stored=12, slope=2.0, intercept=-100.0),
    "16-bit signed LINEAR_EXACT": dict(bits_stored=16, signed=True, voi="LINEAR_EXACT"),
    "RLE 12-bit": dict(bits_stored=12, transfer_syntax="rle"),
    "JPEG-LS lossless": dict(bits_stored=12, transfer_syntax="jpegls"),
    "JPEG 2000 lossless": dict(bits_stored=16, transfer_syntax="j2k"),
    "big endian, multi-frame": dict(bits_stored=12, transfer_syntax="big", frames=3),
    "implicit VR, no preamble": dict(transfer_syntax="implicit", container="no_preamble"),
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A CNN whose output moves with the pixels (random weights: any pixel difference shows)."""
    import keras
    keras.utils.set_random_seed(3)
    m = cnn.build_binary_cnn(64, 1)
    return cards.save_model(m, tmp_path_factory.mktemp("m") / "bin.keras",
                            {"classes": list(config.BINARY_CLASSES), "image_size": 64, "channels": 1,
                             "preprocessing": "test", "threshold": 0.5})


@pytest.fixture(scope="module")
def predictor(model):
    from fracturelib.app.predict import Predictor
    return Predictor(model)


def _answer(capsys, image, model, out) -> dict:
    assert main(["predict", str(image), "--model", str(model), "--json", "--overlay-dir", str(out)]) == 0
    return json.loads(capsys.readouterr().out)


def test_predict_json_on_a_dicom_is_the_png_s_answer(model, tmp_path, capsys):
    source = dcm.source_image(index=5, long_side=160)
    Image.fromarray(source).save(tmp_path / "source.png")
    case = dcm.write_dicom(tmp_path / "image.dcm", source, **VARIANTS["MONOCHROME1 12-bit rescaled"])
    want = _answer(capsys, tmp_path / "source.png", model, tmp_path / "o1")
    got = _answer(capsys, case.path, model, tmp_path / "o2")
    assert (got["class"], got["confidence"]) == (want["class"], pytest.approx(want["confidence"], abs=0.01))
    assert got["pixel_spacing_mm"] == [0.143, 0.143] and "pixel_spacing_mm" not in want


@pytest.mark.parametrize("name", list(VARIANTS))
def test_dicom_answers_as_the_png_of_the_same_image(predictor, tmp_path, name):
    source = dcm.source_image(index=5, long_side=160)
    png = tmp_path / "source.png"
    Image.fromarray(source).save(png)
    case = dcm.write_dicom(tmp_path / "image.dcm", source, **VARIANTS[name])
    want, got = predictor.analyse(png).fields, predictor.analyse(case.path).fields
    assert got["class"] == want["class"]
    assert got["confidence"] == pytest.approx(want["confidence"], abs=0.01)
    assert got["fracture_point"] == pytest.approx(want["fracture_point"], abs=2)
    assert got["pixel_spacing_mm"] == [0.143, 0.143] and "pixel_spacing_mm" not in want
    assert got["fracture_point_mm"] == pytest.approx([0.143 * v for v in got["fracture_point"]], abs=0.01)


def test_a_ct_is_refused_with_the_way_to_read_it(model, tmp_path, capsys):
    case = dcm.write_dicom(tmp_path / "ct.dcm", dcm.source_image(long_side=96), modality="CT")
    assert main(["predict", str(case.path), "--model", str(model), "--json"]) == 1
    err = capsys.readouterr().err
    assert "modality CT is not a radiograph" in err and "--modalities CT" in err and "Traceback" not in err
    assert main(["predict", str(case.path), "--model", str(model), "--json", "--modalities", "CT",
                 "--overlay-dir", str(tmp_path)]) == 0
