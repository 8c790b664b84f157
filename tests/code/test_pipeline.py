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
