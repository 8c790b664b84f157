"""Modules the architecture review found untested: shortcut masks and scores, RandomAffine, the
manifest hash, batch heatmaps and the plots."""
import numpy as np
import pandas as pd
import pytest

from fracturelib.data.manifest import manifest_hash
from fracturelib.explain import shortcuts


def _radiograph_with_marker():
    g = np.full((200, 160), 60, np.uint8)
    g[60:140, 50:110] = 120                                       # "bone"
    g[20:34, 120:132] = 250                                       # a burnt-in "R"
    return g


def test_marker_mask_finds_the_burnt_in_letter_not_the_bone():
    m = shortcuts.marker_mask(_radiograph_with_marker())
    assert m[25, 125] and not m[100, 80] and m.mean() < 0.02
    assert not shortcuts.marker_mask(np.full((100, 100), 90, np.uint8)).any()


def test_shortcut_scores_put_a_heatmap_on_the_marker_and_the_border():
    g = _radiograph_with_marker()
    on_marker = np.zeros(g.shape, np.float32)
    on_marker[20:34, 120:132] = 1.0
    on_border = np.zeros(g.shape, np.float32)
    on_border[:5, :] = 1.0
    s = shortcuts.shortcut_scores([on_marker, on_border], [g, g], ["a", "b"])
    assert s.loc[0, "text/marker energy"] > 0.9 and s.loc[1, "border energy"] == pytest.approx(1.0)
    assert s.loc[0, "border area"] == pytest.approx(shortcuts.border_mask(200, 160).mean())


def test_random_affine_is_identity_at_inference_and_keeps_a_centred_mark_near_the_centre():
    from fracturelib.data.augment import RandomAffine
    x = np.zeros((8, 32, 32, 1), "float32")
    x[:, 14:18, 14:18] = 255
    layer = RandomAffine(seed=0)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    y = np.asarray(layer(x, training=True))
    assert y.shape == x.shape and not np.allclose(y, x)
    for img in y[..., 0]:                                        # shifts are at most 6%: 2 px
        cy, cx = np.unravel_index(np.argmax(img), img.shape)
        assert abs(cy - 15.5) <= 5 and abs(cx - 15.5) <= 5


def test_manifest_hash_ignores_row_order_and_paths_but_not_labels():
    df = pd.DataFrame({"relpath": ["a.jpg", "b.jpg"], "label": ["x", "y"], "split": ["", ""],
                       "status": ["ok", "ok"], "sha256": ["1", "2"], "path": ["/p/a.jpg", "/p/b.jpg"]})
    moved = df.iloc[::-1].assign(path=["/q/b.jpg", "/q/a.jpg"])
    assert manifest_hash(df) == manifest_hash(moved)
    assert manifest_hash(df) != manifest_hash(df.assign(label=["y", "y"]))


def test_overlay_gallery_and_reliability_plots(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from PIL import Image

    from fracturelib.workflow import plots
    Image.fromarray(_radiograph_with_marker()).save(tmp_path / "a.png")
    rows = pd.DataFrame({"path": [str(tmp_path / "a.png")], "relpath": ["x/a.png"], "p": [0.7]})
    fig = plots.overlay_gallery(rows, [np.ones((200, 160), np.float32)], "t", k=1)
    assert fig is not None and fig.axes[0].get_title().startswith("a.png p=0.70")
    assert plots.overlay_gallery(rows.head(0), [], "none") is None
    y = np.array([0, 1] * 20)
    p = np.clip(y * 0.6 + 0.2, 0, 1)
    f2 = plots.reliability({"m": (y, p, p)})
    assert len(f2.axes) == 1 and "ECE" in f2.axes[0].get_legend().get_texts()[1].get_text()
