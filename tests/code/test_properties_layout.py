"""Property tests (Hypothesis): whatever the tree, every entry on disk is accounted for, and the
manifest CSV reads back with the same rows whatever the file names.

The number of examples is ``FRACTURELIB_FUZZ_EXAMPLES`` (60 by default; raise it for a longer fuzz).

The independent count, with the walker's rules for links (:func:`fracturelib.data.layout.discover`):
one walk over the whole dataset, every real folder first (``os.walk`` without following links), then
every folder link met, top-level ones included, in turn; every folder is counted into once, and any
other arrival at a folder (a link loop, a link to the root or above it, a link to a folder of another
class or split, a second link to one folder) is one entry; every name ``os.walk`` puts among the
files (regular files, links to files, broken links, pipes) is one entry.
"""
from __future__ import annotations

import io
import os
import tempfile
from collections import deque
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fracturelib import config
from fracturelib.data.layout import SPLIT_ALIASES
from fracturelib.data.manifest import build_manifest, write_manifest
from fracturelib.data.schema import COLUMNS
from tests.conftest import xray_like

FUZZ = settings(max_examples=int(os.environ.get("FRACTURELIB_FUZZ_EXAMPLES", 60)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_buf = io.BytesIO()
xray_like(5, size=(40, 36)).save(_buf, "PNG")
PNG = _buf.getvalue()

# --- names -----------------------------------------------------------------------------------
#: any character a POSIX file name may hold (no "/", no NUL; no lone surrogates: not UTF-8)
NAME_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00")
ODD = ["a b.jpg", "é.jpg", "x\ny.jpg", "cr\r.jpg", "tab\t.png", "quote\",.jpg", "日本.png",
       " lead.jpg", "\u2028.jpg", "nan", ".jpg", "-"]
names = st.one_of(st.sampled_from(ODD), st.text(NAME_CHARS, min_size=1, max_size=10)).filter(
    lambda s: s not in (".", "..") and len(s.encode("utf-8")) < 200)


def _variants(word: str) -> st.SearchStrategy[str]:
    """``word`` in another case or spacing: the same class after normalise_class_name."""
    return st.sampled_from([word, word.lower(), word.upper(), word.replace("_", " "),
                            word.replace(" ", "_"), word.replace("_", "-"), f" {word}"])


CLASSES = ["Fractured", "Non_fractured", "Spiral Fracture", "Avulsion"]
SPLITS = ["train", "Train", "TRAINING", "val", "Valid", "validation", "test", "Test"]

# --- leaf folder contents ----------------------------------------------------------------------
KINDS = ["image", "image", "text", "hidden", "broken", "filelink", "fifo", "hiddendir", "subdir",
         "dirlink"]
leaf = st.dictionaries(names, st.sampled_from(KINDS), max_size=4)
LINK_TARGETS = ["self", "root", "parent", "outside", "sibling"]


def _mk(folder: Path, name: str, kind: str, ctx: dict, rnd) -> None:
    if kind in ("subdir", "dirlink") and name.strip().lower() in SPLIT_ALIASES:
        name += "_"          # a folder named like a split would change the layout
    p = folder / name
    if os.path.lexists(p):
        return
    if kind == "image":
        p.write_bytes(PNG)
    elif kind == "text":
        p.write_text("notes\n")
    elif kind == "hidden":
        (folder / ("." + name)).write_bytes(PNG)
    elif kind == "broken":
        os.symlink(ctx["root"] / "does-not-exist", p)
    elif kind == "filelink":
        os.symlink(ctx["outside"] / "o0.png", p)
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind in ("hiddendir", "subdir"):
        d = folder / (("." if kind == "hiddendir" else "") + name)
        if not os.path.lexists(d):
            d.mkdir()
            (d / "in.png").write_bytes(PNG)
    elif kind == "dirlink" and ctx["deep_ok"]:
        target = rnd.draw(st.sampled_from(LINK_TARGETS))
        os.symlink({"self": folder, "root": ctx["root"], "parent": folder.parent,
                    "outside": ctx["outside"], "sibling": ctx["leaves"][0]}[target], p)


@st.composite
def trees(draw):
    """(layout name expected, builder) for a random tree of one of the five layouts."""
    layout = draw(st.sampled_from(["fracatlas", "split-folders", "class-split", "class-folders",
                                   "flat"]))
    if layout == "fracatlas":
        frac = draw(st.lists(_variants("Fractured"), min_size=1, max_size=2, unique=True))
        non = draw(st.lists(_variants("Non_fractured"), min_size=1, max_size=2, unique=True))
        leaves = [("images", c) for c in frac + non]
    else:
        classes = draw(st.lists(st.sampled_from(CLASSES[2:]).flatmap(_variants), min_size=1,
                                max_size=2, unique=True))
        splits = draw(st.lists(st.sampled_from(SPLITS), min_size=1, max_size=2, unique=True))
        leaves = {"split-folders": [(s, c) for s in splits for c in classes],
                  "class-split": [(c, s) for c in classes for s in splits],
                  "class-folders": [(c,) for c in classes], "flat": [()]}[layout]
    contents = [draw(leaf) for _ in leaves]
    between = draw(st.dictionaries(names, st.sampled_from(["text", "hidden", "hiddendir", "fifo",
                                                           "broken"]), max_size=3))
    at_root = draw(st.dictionaries(names, st.sampled_from(["text", "hidden", "hiddendir", "fifo",
                                                           "broken"]), max_size=3))
    root_loop = draw(st.booleans())
    return layout, leaves, contents, between, at_root, root_loop


def _build(base: Path, spec, rnd) -> Path:
    layout, leaves, contents, between, at_root, root_loop = spec
    root, outside = base / "ds", base / "outside"
    outside.mkdir()
    for k in range(2):
        (outside / f"o{k}.png").write_bytes(PNG)
    root.mkdir()
    folders = [root.joinpath(*parts) for parts in leaves]
    for f in folders:
        f.mkdir(parents=True, exist_ok=True)
    ctx = {"root": root, "outside": outside, "leaves": folders,
           "deep_ok": layout in ("fracatlas", "split-folders", "class-split", "class-folders")}
    for folder, items in zip(folders, contents):
        for name, kind in items.items():
            if layout == "flat" and kind in ("subdir", "dirlink"):
                kind = "text"        # a visible folder would make it a class folder
            _mk(folder, name, kind, ctx, rnd)
    for folder in {f.parent for f in folders if root not in (f, f.parent)}:
        for name, kind in between.items():
            _mk(folder, name, kind, ctx, rnd)
    for name, kind in at_root.items():
        _mk(root, name, kind, ctx, rnd)
    if layout == "flat":
        (root / "base.png").write_bytes(PNG)
    if root_loop:
        os.symlink(root, root / "loop")
    if layout == "fracatlas":
        (root / "Annotations").mkdir()
        (root / "Annotations" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    return root


def _dir_id(p) -> tuple[int, int]:
    st_ = os.stat(p)
    return st_.st_dev, st_.st_ino


def independent_count(root: Path) -> int:
    """Entries under ``root`` that are not folders, counted with os.walk (module docstring)."""
    seen = {_dir_id(p) for p in [root, *root.parents]}
    n, links = 0, deque()

    def count(start: str) -> int:
        if _dir_id(start) in seen:       # already counted into: this arrival is one entry
            return 1
        k = 0
        for dirpath, dirnames, filenames in os.walk(start):
            seen.add(_dir_id(dirpath))
            k += len(filenames)
            walk_into = []
            for d in dirnames:
                p = os.path.join(dirpath, d)
                if os.path.islink(p):
                    links.append(p)
                elif _dir_id(p) in seen:
                    k += 1
                else:
                    walk_into.append(d)
            dirnames[:] = walk_into
        return k

    for name in sorted(os.listdir(root)):
        p = os.path.join(root, name)
        if os.path.islink(p) and os.path.isdir(p):
            links.append(p)
        elif os.path.isdir(p):
            n += count(p)
        else:
            n += 1
    while links:
        n += count(links.popleft())
    return n


@FUZZ
@given(spec=trees(), rnd=st.data())
def test_every_entry_is_a_row_or_a_metadata_file(spec, rnd):
    with tempfile.TemporaryDirectory() as tmp:
        root = _build(Path(tmp), spec, rnd)
        df = build_manifest(root, workers=1, progress=False)
        other = df.attrs["other_files"]
        assert df.attrs["layout"] == spec[0]
        assert len(df) + len(other) == independent_count(root)
        assert len(set(df["relpath"]) | set(other)) == len(df) + len(other)     # nothing twice
        assert ((df["status"] == "ok") | (df["reason"].str.len() > 0)).all()
        for rel in other:      # metadata: visible regular files outside the image folders, never an image
            assert os.path.isfile(root / rel) and not any(p.startswith(".") for p in rel.split("/"))
            assert Path(rel).suffix.lower() not in config.IMAGE_SUFFIXES
        if spec[0] == "fracatlas":   # metadata beside images/, never in it
            assert "Annotations/a.txt" in other
            assert not [r for r in other if r.split("/")[0].strip().lower() == "images"]
        out = Path(tmp) / "m.csv"
        write_manifest(df, out)
        back = pd.read_csv(out, dtype=str, keep_default_na=False, encoding_errors="surrogateescape")
        assert list(back["relpath"]) == list(df["relpath"])
        assert list(back["reason"]) == list(df["reason"])


@FUZZ
@given(file_names=st.lists(names, min_size=1, max_size=20))
def test_manifest_csv_round_trips_any_file_name(tmp_path_factory, file_names):
    rows = [dict.fromkeys(COLUMNS, "") | {"path": f"/data/{n}", "relpath": n, "label": n,
                                          "width": k, "native": k % 2 == 0, "note": n[::-1]}
            for k, n in enumerate(file_names)]
    df = pd.DataFrame(rows, columns=COLUMNS)
    out = tmp_path_factory.mktemp("csv") / "m.csv"
    write_manifest(df, out)
    back = pd.read_csv(out, dtype=str, keep_default_na=False, encoding_errors="surrogateescape")
    assert len(back) == len(df)
    for col in ("path", "relpath", "label", "note"):
        assert list(back[col]) == list(df[col])
    assert list(back["width"]) == [str(k) for k in range(len(df))]
