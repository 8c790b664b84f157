"""Hostile but realistic folders and files: every file is used or listed with a reason, nothing
blows up, memory stays bounded (issue 10)."""
import io
import os
import tracemalloc

import numpy as np
import pandas as pd
from PIL import Image

from fracturelib.app.cli import main
from fracturelib.data import build_manifest, discover, imageio
from fracturelib.data.duplicates import VIEWS, candidate_pairs, near_pairs, phash_pair, thumbnail
from tests.conftest import write_tree, xray_like


def test_class_folder_with_sub_folders_keeps_the_class_layout(tmp_path):
    ds = tmp_path / "ds"
    write_tree(ds, {"fractured": 2, "fractured/augmented": 2, "normal": 3})
    write_tree(tmp_path / "more_normal", {"": 2}, start_seed=60)       # a folder outside the dataset
    (ds / "normal" / "looks_like.jpg").mkdir()                          # a folder named like an image
    xray_like(50).save(ds / "normal" / "looks_like.jpg" / "inner.jpg")
    os.symlink(tmp_path / "more_normal", ds / "normal" / "linked")
    os.symlink(ds / "fractured" / "augmented", ds / "normal" / "also_fractured")
    lay = discover(ds)
    assert lay.name == "class-folders" and lay.classes == ["fractured", "normal"]
    labels = pd.Series({e.path.relative_to(ds).as_posix(): e.label for e in lay.entries})
    skips = {e.path.relative_to(ds).as_posix(): e.skip for e in lay.entries}
    assert (labels.filter(like="fractured/augmented/") == "fractured").all()
    assert labels["normal/looks_like.jpg/inner.jpg"] == "normal"
    assert len(labels.filter(like="normal/linked/")) == 2            # a folder link is followed
    # a link to a folder the dataset already lists is one skipped row, not a copy under another class
    assert skips["normal/also_fractured"].startswith("symbolic link loop")
    assert not labels.filter(like="normal/also_fractured/").any()


def test_hidden_broken_links_and_pipes_are_rows_not_omissions(tmp_path):
    write_tree(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "a" / ".hidden.jpg").write_bytes(b"x")
    (tmp_path / "a" / ".cache").mkdir()
    (tmp_path / "a" / ".cache" / "thumb.jpg").write_bytes(b"x")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "b" / "broken.jpg")
    os.mkfifo(tmp_path / "b" / "pipe.jpg")
    os.symlink(tmp_path / "b", tmp_path / "b" / "loop")              # a folder link loop
    df = build_manifest(tmp_path)
    reasons = dict(zip(df["relpath"], df["reason"]))
    assert reasons["a/.hidden.jpg"].startswith("hidden file")
    assert reasons["a/.cache/thumb.jpg"] == "in hidden folder .cache"
    assert reasons["b/broken.jpg"].startswith("broken symbolic link")
    assert reasons["b/pipe.jpg"] == "not a regular file: a named pipe (FIFO)"
    assert reasons["b/loop"].startswith("symbolic link loop")
    assert (df["status"] == "ok").sum() == 4
    assert len(df) == 4 + 5                 # every entry on disk is a row: used + skipped


def test_a_very_deep_tree_is_walked_without_recursion_limits(tmp_path):
    d = str(tmp_path / "a")
    os.mkdir(d)
    for _ in range(1500):                  # one level at a time (makedirs itself recurses)
        d += "/d"
        os.mkdir(d)
    xray_like(1).save(d + "/deep.jpg")
    write_tree(tmp_path, {"b": 1})
    try:
        df = build_manifest(tmp_path)
        assert (df["status"] == "ok").sum() == 2 and df["relpath"].str.count("/").max() == 1501
    finally:                               # pytest's own clean-up (shutil.rmtree) recurses
        os.remove(d + "/deep.jpg")
        while d != str(tmp_path):
            os.rmdir(d)
            d = os.path.dirname(d)


def test_non_utf8_file_names_are_scanned_and_written(tmp_path, capsys):
    write_tree(tmp_path / "ds", {"a": 2, "b": 2})
    buf = io.BytesIO()
    xray_like(77).save(buf, "JPEG")
    name = os.path.join(os.fsencode(tmp_path / "ds" / "a"), b"caf\xe9.jpg")   # Latin-1 on disk
    with open(name, "wb") as f:
        f.write(buf.getvalue())
    out = tmp_path / "m.csv"
    assert main(["scan", str(tmp_path / "ds"), "--quiet", "--out", str(out)]) == 0
    m = pd.read_csv(out, encoding_errors="surrogateescape")
    assert len(m) == 5 and (m["status"] == "ok").all()
    row = m[m["note"].fillna("").str.contains("not valid UTF-8")]
    assert len(row) == 1 and os.path.exists(row["path"].iloc[0])      # the path still opens the file
    assert "caf\\xe9.jpg" in capsys.readouterr().out


def _jpeg(seed=3) -> bytes:
    buf = io.BytesIO()
    xray_like(seed, size=(120, 100)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_stray_bytes_between_segments_are_not_truncation(tmp_path):
    data = _jpeg()
    seg2 = 2 + 2 + int.from_bytes(data[4:6], "big")                  # after SOI + APP0
    p = tmp_path / "stray.jpg"
    p.write_bytes(data[:seg2] + b"\x00junk\x00" + data[seg2:])
    assert np.asarray(Image.open(p)).shape == (100, 120)               # PIL decodes it
    chk = imageio.check_image(p)
    assert chk.ok and "6 stray bytes between segments" in chk.note
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(data[:len(data) // 2])
    assert imageio.check_image(truncated).reason.startswith("truncated JPEG")


def test_exif_orientation_is_applied_and_forces_the_converting_path(tmp_path):
    im = xray_like(4, size=(120, 60))                                  # wide as stored
    exif = Image.Exif()
    exif[0x0112] = 6                                                   # "rotate 90 CW to view"
    p = tmp_path / "phone.jpg"
    im.save(p, "JPEG", exif=exif, quality=95)
    chk = imageio.check_image(p)
    assert chk.image.size == (60, 120) and (chk.width, chk.height) == (60, 120)
    assert not chk.native and "EXIF orientation 6 applied" in chk.note
    upright = np.asarray(im.transpose(Image.Transpose.ROTATE_270), np.float32)
    assert np.abs(np.asarray(chk.image, np.float32) - upright).mean() < 3
    assert imageio.read_image(p, channels=1).shape == (120, 60, 1)    # predict sees the same


def test_16_bit_scan_converts_without_float64_copies(tmp_path):
    a = (np.arange(6000 * 6000, dtype=np.uint32) % 65536).astype(np.uint16).reshape(6000, 6000)
    p = tmp_path / "big16.png"
    Image.fromarray(a).save(p)
    tracemalloc.start()
    chk = imageio.check_image(p)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert chk.ok and chk.image.mode == "L"
    assert peak < 200 << 20, f"{peak >> 20} MB for a 72 MB image (float64 would need > 500 MB)"
    ref = np.rint(a[:4].astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert np.array_equal(np.asarray(chk.image)[:4], ref)


def test_decoding_budget_and_memory_errors_become_skipped_rows(tmp_path, monkeypatch):
    write_tree(tmp_path, {"a": 3})
    monkeypatch.setattr(imageio.DECODE_BUDGET, "limit", 20_000)       # bytes; 96x80 L needs 23,040
    df = build_manifest(tmp_path)
    assert (df["reason"].str.startswith("too large to decode")).all()
    monkeypatch.undo()
    real = imageio.to_8bit
    calls = iter(range(100))

    def flaky(im):
        if next(calls) == 1:
            raise MemoryError
        return real(im)

    monkeypatch.setattr(imageio, "to_8bit", flaky)
    df = build_manifest(tmp_path, workers=1)
    assert sorted(df["status"]) == ["ok", "ok", "skipped"]
    assert df.loc[df["status"] == "skipped", "reason"].iloc[0].startswith("out of memory")


def test_a_large_non_image_is_not_read_into_memory(tmp_path):
    big = tmp_path / "a" / "video.jpg"
    big.parent.mkdir()
    with open(big, "wb") as f:
        f.write(b"\x00\x01not an image")
        f.truncate(64 << 20)                                           # 64 MB, sparse
    write_tree(tmp_path, {"b": 1})
    tracemalloc.start()
    df = build_manifest(tmp_path, workers=1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    row = df[df["relpath"] == "a/video.jpg"].iloc[0]
    assert row["reason"].startswith("not an image") and len(row["sha256"]) == 64
    assert peak < 16 << 20, f"{peak >> 20} MB traced while scanning a 64 MB non-image"


def test_near_copy_candidates_grow_linearly_and_find_planted_copies(tmp_path):
    rng = np.random.default_rng(0)
    base = np.asarray(xray_like(9, size=(64, 64)), np.float32)
    ims = [Image.fromarray(np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8))
           for _ in range(600)]                                        # look-alikes, not copies
    ims += [ims[5].resize((50, 50)), ims[7].transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    t = np.stack([thumbnail(im) for im in ims]) / 32
    pairs = candidate_pairs(t, neighbours=8)
    assert len(pairs) <= len(VIEWS) * 8 * len(ims)          # linear: 8 neighbours per view
    df = pd.DataFrame({"path": "", "status": "ok",
                       "phash": [phash_pair(im)[0] for im in ims],
                       "phash_mirror": [phash_pair(im)[1] for im in ims]})
    found = near_pairs(df, {i: thumbnail(im) for i, im in enumerate(ims)})
    assert sorted(zip(found["i"], found["j"])) == [(5, 600), (7, 601)]
    assert found.set_index("j").loc[601, "mirrored"]


def test_file_names_with_control_characters_read_back_from_the_manifest(tmp_path):
    write_tree(tmp_path / "ds", {"a": 1, "b": 1})
    for k, name in enumerate(["cr\r.jpg", "new\nline.jpg", "tab\t,comma.jpg", "vt\x0b\x1f.jpg"]):
        xray_like(60 + k).save(tmp_path / "ds" / "a" / name, "JPEG")
    out = tmp_path / "m.csv"
    assert main(["scan", str(tmp_path / "ds"), "--quiet", "--out", str(out)]) == 0
    m = pd.read_csv(out, keep_default_na=False)
    assert len(m) == 6 and (m["status"] == "ok").all()
    assert "a/cr\r.jpg" in set(m["relpath"]) and "a/new\nline.jpg" in set(m["relpath"])
    assert all(os.path.exists(p) for p in m["path"])
