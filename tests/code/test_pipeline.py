import numpy as np
import pytest

from fracturelib.data.manifest import build_manifest
from fracturelib.data.pipeline import make_dataset
from tests.conftest import write_tree


@pytest.fixture
def manifest(tmp_path, bad_corpus):
    write_tree(tmp_path / "ds", {"fractured": 5, "non-fractured": 5})
    # exotic modes inside a labelled tree: converted through the cache, not skipped
    for n in ("gray16.png", "cmyk.jpg", "rgba.png", "palette.png"):
        (tmp_path / "ds" / "fractured" / n).write_bytes((bad_corpus / n).read_bytes())
    (tmp_path / "ds" / "fractured" / "zero.jpg").write_bytes(b"")
    return build_manifest(tmp_path / "ds")


def test_dataset_shapes_labels_and_padding(manifest):
    ok = manifest[manifest["status"] == "ok"]
    assert len(ok) == 14 and len(manifest) == 15
    ds = make_dataset(ok, ["non-fractured", "fractured"], image_size=64, channels=1, batch_size=8)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert x.shape == (14, 64, 64, 1) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 255
    assert sorted(y.tolist()) == [0.0] * 5 + [1.0] * 9
    # a 96x80 (landscape) image keeps its aspect: padded rows top and bottom are exactly zero
    k = list(ok["relpath"]).index("fractured/img0000.jpg")
    img = x[k, :, :, 0]
    assert img[:4].max() == 0 and img[-4:].max() == 0 and img[20:44].max() > 0


def test_rgb_and_multiclass_labels(manifest):
    ok = manifest[manifest["status"] == "ok"]
    ds = make_dataset(ok, ["fractured", "non-fractured", "other"], image_size=32, channels=3, batch_size=4)
    x, y = next(iter(ds))
    assert x.shape == (4, 32, 32, 3) and y.dtype.name == "int32"


def test_augmentation_changes_training_batches_not_eval(manifest):
    ok = manifest[manifest["status"] == "ok"]
    cls = ["non-fractured", "fractured"]
    ev1 = np.concatenate([x.numpy() for x, _ in make_dataset(ok, cls, 48, 1, 16)])
    ev2 = np.concatenate([x.numpy() for x, _ in make_dataset(ok, cls, 48, 1, 16)])
    np.testing.assert_array_equal(ev1, ev2)
    tr = make_dataset(ok, cls, 48, 1, 16, training=True, seed=3)
    a = np.concatenate([x.numpy() for x, _ in tr])
    assert a.shape == ev1.shape
    assert not np.allclose(np.sort(a.ravel()), np.sort(ev1.ravel()))


def test_unknown_label_is_a_clear_error(manifest):
    ok = manifest[manifest["status"] == "ok"]
    with pytest.raises(ValueError, match="not among the model's classes"):
        make_dataset(ok, ["fractured", "other"], 32, 1)


# --- one geometry rule, one decoding budget (issue "reliability by construction") -------------

def _row(path, w, h, fmt="PNG", native=True):
    import pandas as pd
    return pd.DataFrame([{"path": str(path), "native": native, "sha256": f"x{w}x{h}", "format": fmt,
                          "width": w, "height": h, "label": "fractured"}])


def test_stale_manifest_row_outside_the_geometry_is_refused_with_scans_reason(tmp_path):
    from PIL import Image

    from fracturelib.data.imageio import ImageError
    from fracturelib.data.pipeline import load_images
    p = tmp_path / "strip.png"
    Image.new("L", (40, 19000), 100).save(p)
    with pytest.raises(ImageError, match="aspect ratio 475:1 exceeds 20:1"):
        load_images(_row(p, 40, 19000), 32, 1)          # a manifest from before the rule said ok


def test_large_jpeg_is_decoded_reduced_in_the_graph_like_predict(tmp_path):
    from PIL import Image

    from fracturelib.data.imageio import read_image
    from fracturelib.data.pipeline import jpeg_ratios, load_images, pad_resize
    yy, xx = np.mgrid[0:3000, 0:4000]
    p = tmp_path / "big.jpg"
    Image.fromarray(((xx // 40 + yy // 30) % 2 * 200 + 20).astype(np.uint8)).save(p, quality=90)
    df = _row(p, 4000, 3000, "JPEG")
    assert jpeg_ratios(df, 128) == [8] and jpeg_ratios(df, 1024) == [2] and jpeg_ratios(df, None) == [1]
    x = load_images(df, 64, 1)
    assert x.shape == (1, 64, 64, 1)
    ref = pad_resize(read_image(p, channels=1, need=128), 64).numpy()     # predict's path: PIL draft
    assert np.abs(x[0] - ref).mean() < 1.0


def test_predict_many_keeps_every_answer_when_one_image_fails(tmp_path):
    from fracturelib.app.predict import predict_many

    class Flaky:
        def predict(self, image, overlay_dir=None, overlay_name=None):
            if "bad" in str(image):
                raise RuntimeError("resize_with_pad: output dimensions must be positive")
            return {"image": str(image), "class": "fractured"}

    out = predict_many(Flaky(), ["a.jpg", "bad.jpg", "c.jpg"])
    assert [r.get("class") for r in out] == ["fractured", None, "fractured"]
    assert "RuntimeError" in out[1]["error"] and out[1]["image"] == "bad.jpg"


def test_prepare_refuses_the_strip_and_reduces_a_huge_jpeg(tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    from fracturelib import config
    from fracturelib.app.predict import prepare
    from fracturelib.data.imageio import ImageError
    card = SimpleNamespace(image_size=64, channels=1)
    Image.new("L", (40, 19000), 100).save(tmp_path / "strip.png")
    with pytest.raises(ImageError, match="aspect ratio 475:1 exceeds 20:1"):
        prepare(tmp_path / "strip.png", card)
    Image.new("L", (9000, 6000), 100).save(tmp_path / "huge.jpg")
    x, img = prepare(tmp_path / "huge.jpg", card)
    assert x.shape == (1, 64, 64, 1)
    assert img.shape == (1500, 2250, 1) and max(img.shape) >= config.PREDICT_DISPLAY_SIDE   # 1/4
