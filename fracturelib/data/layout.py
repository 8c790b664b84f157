"""Recognise how a dataset folder is organised and list its image files with label and split.

Understood layouts (names compared case-insensitively):

* ``fracatlas``        ``root/images/{Fractured,Non_fractured}/*`` (+ ``dataset.csv``, COCO boxes)
* ``split-folders``    ``root/{train,val|valid,test}/<class>/*``
* ``class-split``      ``root/<class>/{Train,Test}/*`` (the Bone Break Classification layout)
* ``class-folders``    ``root/<class>/**`` (sub-folders of a class folder belong to that class)
* ``flat``             ``root/*`` (images without labels, e.g. to predict)
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from fracturelib.config import normalise_class_name

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "dev": "val", "test": "test", "testing": "test"}
LAYOUTS_HELP = (
    "fracatlas: root/images/{Fractured,Non_fractured}/*.jpg (+ dataset.csv); "
    "split-folders: root/{train,val,test}/<class>/* (any case; 'valid' accepted); "
    "class-split: root/<class>/{Train,Test}/* (Bone Break Classification); "
    "class-folders: root/<class>/** (sub-folders belong to the class); "
    "flat: root/* (unlabelled images)"
)


class LayoutError(ValueError):
    """The folder is missing or not organised in a way we understand."""


@dataclass
class FileEntry:
    path: Path          # absolute
    label: str          # normalised class name ("" when unlabelled)
    split: str          # train / val / test, or "" when the layout has none
    skip: str = ""      # why it cannot be an image (hidden, broken link, pipe ...), "" to check it


@dataclass
class Layout:
    name: str
    root: Path
    entries: list[FileEntry]
    #: files that belong to the dataset but are not image candidates (README, csv, annotations)
    other_files: list[Path] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return sorted({e.label for e in self.entries if e.label})


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _visible(p: Path) -> bool:
    return not _hidden(p.name)


def _dirs(p: Path) -> list[Path]:
    return sorted(c for c in p.iterdir() if c.is_dir() and _visible(c))


_SPECIAL = [(stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
            (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]


def walk(folder: Path, recursive: bool = True) -> list[tuple[Path, str]]:
    """Every entry under ``folder`` that is not a folder, with "" (a file to check) or the reason it
    is skipped: hidden files and folders, broken symbolic links, pipes, sockets and devices are
    listed, never dropped. Iterative (no recursion limit on deep trees); folder links are followed
    once (a link loop is listed, not walked forever)."""
    out: list[tuple[Path, str]] = []
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[Path, str]] = [(folder, "")]
    while stack:
        d, inherited = stack.pop()
        try:
            st = d.stat()
            with os.scandir(d) as it:
                entries = list(it)
        except OSError as e:
            out.append((d, f"unreadable folder: {e.strerror or e}"))
            continue
        if (st.st_dev, st.st_ino) in seen:
            out.append((d, "symbolic link loop: this folder is already listed"))
            continue
        seen.add((st.st_dev, st.st_ino))
        for e in entries:
            p = Path(e.path)
            hidden = _hidden(e.name)
            try:
                if e.is_dir():
                    if recursive:
                        stack.append((p, inherited or (f"in hidden folder {e.name}" if hidden else "")))
                    continue
                if e.is_file():
                    out.append((p, inherited or ("hidden file: its name starts with '.'"
                                                 if hidden else "")))
                    continue
                if e.is_symlink() and not os.path.exists(e.path):
                    out.append((p, "broken symbolic link: its target does not exist"))
                    continue
                mode = e.stat().st_mode
                kind = next((k for test, k in _SPECIAL if test(mode)), "not a regular file")
                out.append((p, f"not a regular file: {kind}"))
            except OSError as err:
                out.append((p, f"unreadable: {err.strerror or err}"))
    return sorted(out, key=lambda t: str(t[0]))


def _files(p: Path, recursive: bool = True) -> list[Path]:
    """Regular, visible files under ``p`` (metadata next to the image folders)."""
    return [f for f, why in walk(p, recursive) if not why]


def _entries(folder: Path, label: str, split: str) -> list[FileEntry]:
    return [FileEntry(f, label, split, why) for f, why in walk(folder)]


def _split_name(p: Path) -> str | None:
    return SPLIT_ALIASES.get(p.name.strip().lower())


def _find_ci(parent: Path, name: str) -> Path | None:
    for c in parent.iterdir():
        if c.name.lower() == name.lower():
            return c
    return None


def discover(root: str | Path) -> Layout:
    """Detect the layout of ``root`` and list every file in its image folders."""
    root = Path(root).expanduser()
    if not root.exists():
        raise LayoutError(f"{root}: no such folder. Check the path (or run `fracturelib fetch`).")
    if not root.is_dir():
        raise LayoutError(f"{root}: is a file, not a dataset folder.")
    root = root.resolve()
    images = _find_ci(root, "images")
    if images and images.is_dir():
        sub = {normalise_class_name(d.name): d for d in _dirs(images)}
        if "fractured" in sub and "non-fractured" in sub:
            entries = [e for d in sub.values() for e in _entries(d, normalise_class_name(d.name), "")]
            other = [f for f in _files(root) if images not in f.parents]
            return Layout("fracatlas", root, entries, other)
    dirs = _dirs(root)
    top = walk(root, recursive=False)
    top_files = [f for f, why in top if not why]
    if not dirs:
        if top:
            return Layout("flat", root, [FileEntry(f, "", "", why) for f, why in top])
        raise LayoutError(f"{root}: the folder is empty. Understood layouts: {LAYOUTS_HELP}")
    if all(_split_name(d) for d in dirs):
        entries, other = [], list(top_files)
        for d in dirs:
            for c in _dirs(d):
                entries += _entries(c, normalise_class_name(c.name), _split_name(d))
            other += _files(d, recursive=False)
        return Layout("split-folders", root, entries, other)
    subdirs = {d: _dirs(d) for d in dirs}
    if all(subdirs[d] and all(_split_name(s) for s in subdirs[d]) for d in dirs):
        entries, other = [], list(top_files)
        for d in dirs:
            for s in subdirs[d]:
                entries += _entries(s, normalise_class_name(d.name), _split_name(s))
            other += _files(d, recursive=False)
        return Layout("class-split", root, entries, other)
    if any(_split_name(d) for d in dirs):
        raise LayoutError(
            f"{root}: mixes split folders ({', '.join(d.name for d in dirs if _split_name(d))}) with "
            f"other folders ({', '.join(d.name for d in dirs if not _split_name(d))[:200]}). "
            f"Understood layouts: {LAYOUTS_HELP}")
    # class folders; folders inside a class folder (a stray "augmented/", a folder link, a folder
    # named like an image) belong to that class
    entries = [e for d in dirs for e in _entries(d, normalise_class_name(d.name), "")]
    return Layout("class-folders", root, entries, list(top_files))
