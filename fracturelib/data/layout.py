"""Recognise how a dataset folder is organised and list its image files with label and split.

Understood layouts (names compared case-insensitively):

* ``fracatlas``        ``root/images/{Fractured,Non_fractured}/*`` (+ ``dataset.csv``, COCO boxes)
* ``split-folders``    ``root/{train,val|valid,test}/<class>/*``
* ``class-split``      ``root/<class>/{Train,Test}/*`` (the Bone Break Classification layout)
* ``class-folders``    ``root/<class>/*``
* ``flat``             ``root/*`` (images without labels, e.g. to predict)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import normalise_class_name

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "dev": "val", "test": "test", "testing": "test"}
LAYOUTS_HELP = (
    "fracatlas: root/images/{Fractured,Non_fractured}/*.jpg (+ dataset.csv)\n"
    "  split-folders: root/{train,val,test}/<class>/*  (any case; 'valid' accepted)\n"
    "  class-split: root/<class>/{Train,Test}/*  (Bone Break Classification)\n"
    "  class-folders: root/<class>/*\n"
    "  flat: root/* (unlabelled images)"
)


class LayoutError(ValueError):
    """The folder is missing or not organised in a way we understand."""


@dataclass
class FileEntry:
    path: Path          # absolute
    label: str          # normalised class name ("" when unlabelled)
    split: str          # train / val / test, or "" when the layout has none


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


def _visible(p: Path) -> bool:
    return not p.name.startswith(".") and p.name != "__MACOSX"


def _dirs(p: Path) -> list[Path]:
    return sorted(c for c in p.iterdir() if c.is_dir() and _visible(c))


def _files(p: Path, recursive: bool = True) -> list[Path]:
    it = p.rglob("*") if recursive else p.iterdir()
    return sorted(f for f in it if f.is_file() and not any(
        part.startswith(".") or part == "__MACOSX" for part in f.relative_to(p).parts))


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
            entries = [FileEntry(f, normalise_class_name(d.name), "")
                       for d in sub.values() for f in _files(d)]
            other = [f for f in _files(root) if images not in f.parents]
            return Layout("fracatlas", root, entries, other)
    dirs = _dirs(root)
    top_files = [f for f in _files(root, recursive=False)]
    if not dirs:
        if top_files:
            return Layout("flat", root, [FileEntry(f, "", "") for f in top_files])
        raise LayoutError(f"{root}: the folder is empty. Understood layouts:\n  {LAYOUTS_HELP}")
    if all(_split_name(d) for d in dirs):
        entries, other = [], list(top_files)
        for d in dirs:
            for c in _dirs(d):
                entries += [FileEntry(f, normalise_class_name(c.name), _split_name(d))
                            for f in _files(c)]
            other += _files(d, recursive=False)
        return Layout("split-folders", root, entries, other)
    subdirs = {d: _dirs(d) for d in dirs}
    if all(subdirs[d] and all(_split_name(s) for s in subdirs[d]) for d in dirs):
        entries, other = [], list(top_files)
        for d in dirs:
            for s in subdirs[d]:
                entries += [FileEntry(f, normalise_class_name(d.name), _split_name(s))
                            for f in _files(s)]
            other += _files(d, recursive=False)
        return Layout("class-split", root, entries, other)
    if all(not subdirs[d] for d in dirs):
        entries = [FileEntry(f, normalise_class_name(d.name), "")
                   for d in dirs for f in _files(d)]
        return Layout("class-folders", root, entries, list(top_files))
    raise LayoutError(
        f"{root}: unknown dataset layout (sub-folders: {', '.join(d.name for d in dirs[:8])}). "
        f"Understood layouts:\n  {LAYOUTS_HELP}")
