"""Recognise how a dataset folder is organised and list its image files with label and split.

Understood layouts (names compared case-insensitively):

* ``fracatlas``        ``root/images/{Fractured,Non_fractured}/*`` (+ ``dataset.csv``, COCO boxes)
* ``split-folders``    ``root/{train,val|valid,test}/<class>/*``
* ``class-split``      ``root/<class>/{Train,Test}/*`` (the Bone Break Classification layout)
* ``class-folders``    ``root/<class>/**`` (sub-folders of a class folder belong to that class)
* ``flat``             ``root/*`` (images without labels, e.g. to predict)

One accounting rule holds for every layout: each entry under ``root`` that is not a folder is
either an entry of :attr:`Layout.entries` (a file to check, or one skipped with its reason: hidden,
broken link, pipe, link loop, or the layout rule that leaves it out, images outside the image
folders included) or, when it is a visible regular file outside the image folders that is not an
image by its name (README, ``dataset.csv``, annotations), one of :attr:`Layout.other_files`.
Sibling folders whose names mean the same class or split (``Fractured`` and ``fractured``,
``Non_fractured`` and ``non fractured``) are merged, and their entries carry a note saying so.

Folder links are followed: the whole dataset is walked once, real folders first and then folder
links, so every folder is listed once (a link to a folder already listed, such as a loop or a link to
a sibling class folder, is one skipped entry), and links to ``root`` or above it are never walked.
"""
from __future__ import annotations

import os
import stat
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fracturelib import config
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
FRACATLAS_CLASSES = ("fractured", "non-fractured")
LOOP = "symbolic link loop: this folder is already listed (a loop, or a second path to a folder)"
_LINK = object()     # marker: a link to a folder, walked after every real folder is known


class LayoutError(ValueError):
    """The folder is missing or not organised in a way we understand."""


@dataclass
class FileEntry:
    path: Path          # absolute
    label: str          # normalised class name ("" when unlabelled)
    split: str          # train / val / test, or "" when the layout has none
    skip: str = ""      # why it cannot be an image (hidden, broken link, pipe ...), "" to check it
    note: str = ""      # e.g. that its class folder was merged with a case variant


@dataclass
class Layout:
    name: str
    root: Path
    entries: list[FileEntry]
    #: visible regular files outside the image folders (README, csv, annotations)
    other_files: list[Path] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return sorted({e.label for e in self.entries if e.label})


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _dir_id(path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _chain_ids(folder: Path) -> set[tuple[int, int]]:
    """Ids of ``folder`` (links resolved) and of every folder above it."""
    real = Path(os.path.realpath(folder))
    return {i for i in map(_dir_id, [real, *real.parents]) if i}


_SPECIAL = [(stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
            (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]


def _classify(e: os.DirEntry, inherited: str):
    """None for a real folder, ``_LINK`` for a link to a folder, else "" or the skip reason."""
    try:
        if e.is_dir(follow_symlinks=False):
            return None
        if e.is_dir():
            return _LINK
        if e.is_file():
            return inherited or ("hidden file: its name starts with '.'" if _hidden(e.name) else "")
        if e.is_symlink() and not os.path.exists(e.path):
            return "broken symbolic link: its target does not exist"
        mode = e.stat().st_mode
    except OSError as err:
        return f"unreadable: {err.strerror or err}"
    return "not a regular file: " + next((k for test, k in _SPECIAL if test(mode)), "unknown kind")


def _hidden_reason(name: str, inherited: str) -> str:
    return inherited or (f"in hidden folder {name}" if _hidden(name) else "")


def _walk_tree(start: Path, inherited: str, seen: set, out: list, links: deque) -> None:
    """List ``start`` and its real sub-folders into ``out``; queue the folder links met."""
    stack = [(start, inherited)]
    while stack:
        d, inh = stack.pop()
        i = _dir_id(d)
        if i in seen:
            out.append((d, LOOP))
            continue
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError as e:
            out.append((d, f"unreadable folder: {e.strerror or e}"))
            continue
        seen.add(i)
        for e in sorted(entries, key=lambda x: x.name):
            kind = _classify(e, inh)
            if kind is None:
                stack.append((Path(e.path), _hidden_reason(e.name, inh)))
            elif kind is _LINK:
                links.append((Path(e.path), _hidden_reason(e.name, inh)))
            else:
                out.append((Path(e.path), kind))


def walk(folder: str | Path, inherited: str = "", seen: set | None = None) -> list[tuple[Path, str]]:
    """Every entry under ``folder`` that is not a folder, with its skip reason.

    Hidden files and folders, broken symbolic links, pipes, sockets and devices are listed, never
    dropped. Iterative (no recursion limit on deep trees). Real folders are listed first; folder
    links are then followed in name order, each folder once: a link to a folder already listed
    (a loop, a second link) is one entry with the reason :data:`LOOP`.

    Args:
        folder: the folder to list.
        inherited: reason given to every file found ("" to check them), e.g. for a hidden folder.
        seen: ids of folders never to walk; default: the folders above ``folder``.

    Returns:
        ``(path, reason)`` pairs sorted by path; reason "" for a file to check.
    """
    folder = Path(folder)
    seen = _chain_ids(folder.parent) if seen is None else seen
    out: list[tuple[Path, str]] = []
    links: deque = deque()
    _walk_tree(folder, inherited, seen, out, links)
    while links:
        link, inh = links.popleft()
        _walk_tree(link, inh, seen, out, links)
    return sorted(out, key=lambda t: str(t[0]))


def _dirs(p: Path, above: set | None = None) -> list[Path]:
    """Visible folders (links followed) in ``p``, except links back to ``p`` or above it."""
    above = _chain_ids(p) if above is None else above
    out = []
    for c in p.iterdir():
        if _visible_dir(c) and _dir_id(c) not in above:
            out.append(c)
    return sorted(out)


def _visible_dir(c: Path) -> bool:
    try:
        return c.is_dir() and not _hidden(c.name)
    except OSError:
        return False


def _split_name(p: Path) -> str | None:
    return SPLIT_ALIASES.get(p.name.strip().lower())


def _split_key(name: str) -> str:
    return SPLIT_ALIASES.get(name.strip().lower(), name)


def _images_key(name: str) -> str:
    return name.strip().lower()


# --- where each layout puts labels: rel (path parts under root) -> (label, split, reason) ---------
# None: outside the image folders (metadata when it is a visible regular file).

def _place_flat(rel: tuple[str, ...]):
    return "", "", ""


def _place_class_folders(rel: tuple[str, ...]):
    if len(rel) == 1:
        return None
    return ("", "", "") if _hidden(rel[0]) else (normalise_class_name(rel[0]), "", "")


def _place_split_folders(rel: tuple[str, ...]):
    if len(rel) == 1 or _hidden(rel[0]):
        return None if len(rel) == 1 else ("", "", "")
    split = _split_key(rel[0])
    if len(rel) == 2:
        return "", split, ("left out by the split-folders layout: a file directly in a split "
                           "folder, not in a class folder")
    return ("", split, "") if _hidden(rel[1]) else (normalise_class_name(rel[1]), split, "")


def _place_class_split(rel: tuple[str, ...]):
    if len(rel) == 1 or _hidden(rel[0]):
        return None if len(rel) == 1 else ("", "", "")
    label = normalise_class_name(rel[0])
    if len(rel) == 2:
        return label, "", ("left out by the class-split layout: a file directly in a class "
                           "folder, not in its Train/Test folders")
    return (label, "", "") if _hidden(rel[1]) else (label, _split_key(rel[1]), "")


def _place_fracatlas(rel: tuple[str, ...]):
    if len(rel) == 1 or _images_key(rel[0]) != "images":
        return None
    if len(rel) == 2:
        return "", "", ("left out by the fracatlas layout: a file directly in images/, not in "
                        "images/Fractured or images/Non_fractured")
    label = normalise_class_name(rel[1])
    if _hidden(rel[1]) or label in FRACATLAS_CLASSES:
        return ("" if _hidden(rel[1]) else label), "", ""
    return "", "", (f"left out by the fracatlas layout: {rel[0]}/{rel[1]} is not a class "
                    "folder (Fractured, Non_fractured)")


#: where each layout keeps its images (said in the row of an image found elsewhere)
_IMAGE_FOLDERS = {"flat": "the top folder", "class-folders": "the class folders",
                  "split-folders": "<split>/<class>/", "class-split": "<class>/<Train|Test>/",
                  "fracatlas": "images/Fractured, images/Non_fractured"}
_CLASS = "class folders {names} merged as one class '{key}'"
_SPLIT = "split folders {names} merged as one split '{key}'"
_IMAGES = "image folders {names} merged as one images folder"

#: layout -> (place, {folder level: (name -> key, merge note)})
_RULES: dict[str, tuple[Callable, dict]] = {
    "flat": (_place_flat, {}),
    "class-folders": (_place_class_folders, {0: (normalise_class_name, _CLASS)}),
    "split-folders": (_place_split_folders, {0: (_split_key, _SPLIT), 1: (normalise_class_name, _CLASS)}),
    "class-split": (_place_class_split, {0: (normalise_class_name, _CLASS), 1: (_split_key, _SPLIT)}),
    "fracatlas": (_place_fracatlas, {0: (_images_key, _IMAGES), 1: (normalise_class_name, _CLASS)}),
}


def _merge_notes(rels: list[tuple[str, ...]], levels: dict) -> dict[tuple[str, ...], str]:
    """{folder parts: note} for sibling folders whose names mean the same class or split."""
    groups: dict[tuple, set] = defaultdict(set)
    for rel in rels:
        for k, (key, text) in levels.items():
            if len(rel) > k + 1 and not _hidden(rel[k]):
                groups[(rel[:k], key(rel[k]), text)].add(rel[k])
    notes = {}
    for (parent, key, text), names in groups.items():
        if len(names) > 1:
            note = text.format(names=", ".join(repr(n) for n in sorted(names)), key=key)
            notes.update({parent + (n,): note for n in names})
    return notes


def _top_level(root: Path) -> tuple[list[tuple[Path, str]], list[Path]]:
    """Entries of ``root`` that are not folders (with reasons), and the folders to walk."""
    above = _chain_ids(root)
    files, dirs = [], []
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda x: x.name)
    except OSError as e:
        raise LayoutError(f"{root}: cannot list the folder: {e.strerror or e}") from e
    for e in entries:
        kind = _classify(e, "")
        if kind is None or kind is _LINK:
            if _dir_id(e.path) in above:
                files.append((Path(e.path), LOOP))
            else:
                dirs.append(Path(e.path))
        else:
            files.append((Path(e.path), kind))
    return files, dirs


def _detect(root: Path, dirs: list[Path]) -> str:
    """The layout's name, from the visible folders of ``root``."""
    above = _chain_ids(root)
    visible = [d for d in dirs if not _hidden(d.name)]
    images = [d for d in visible if _images_key(d.name) == "images"]
    classes = {normalise_class_name(c.name) for d in images for c in _dirs(d, above | {_dir_id(d)})}
    if set(FRACATLAS_CLASSES) <= classes:
        return "fracatlas"
    if not visible:
        return "flat"
    if all(_split_name(d) for d in visible):
        return "split-folders"
    subdirs = {d: _dirs(d, above | {_dir_id(d)}) for d in visible}
    if all(subdirs[d] and all(_split_name(s) for s in subdirs[d]) for d in visible):
        return "class-split"
    if any(_split_name(d) for d in visible):
        raise LayoutError(
            f"{root}: mixes split folders ({', '.join(d.name for d in visible if _split_name(d))}) "
            f"with other folders ({', '.join(d.name for d in visible if not _split_name(d))[:200]}). "
            f"Understood layouts: {LAYOUTS_HELP}")
    return "class-folders"


def _account(root: Path, name: str, found: list[tuple[Path, str]]) -> Layout:
    """Apply layout ``name``'s rule to every entry found: an entry of the layout or a metadata file."""
    place, levels = _RULES[name]
    rels = [p.relative_to(root).parts for p, _ in found]
    notes = _merge_notes(rels, levels)
    entries, other = [], []
    for (path, why), rel in zip(found, rels):
        placed = place(rel)
        if placed is None:
            if why:
                entries.append(FileEntry(path, "", "", why))
            elif path.suffix.lower() in config.IMAGE_SUFFIXES:     # an image is never only metadata
                entries.append(FileEntry(path, "", "", f"left out by the {name} layout: outside its image folders "
                                         f"({_IMAGE_FOLDERS[name]})"))
            else:
                other.append(path)
            continue
        label, split, rule_why = placed
        note = "; ".join(notes[rel[:k + 1]] for k in sorted(levels) if rel[:k + 1] in notes)
        entries.append(FileEntry(path, label, split, why or rule_why, note))
    return Layout(name, root, entries, other)


def discover(root: str | Path) -> Layout:
    """Detect the layout of ``root`` and account for every entry under it.

    Args:
        root: the dataset folder.

    Returns:
        The layout: its entries (one per file, link, pipe ... in or beside the image folders) and
        the metadata files outside the image folders.

    Raises:
        LayoutError: the folder is missing, empty or mixes split folders with other folders.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise LayoutError(f"{root}: no such folder. Check the path (or run `fracturelib fetch`).")
    if not root.is_dir():
        raise LayoutError(f"{root}: is a file, not a dataset folder.")
    root = root.resolve()
    found, dirs = _top_level(root)
    if not found and not dirs:
        raise LayoutError(f"{root}: the folder is empty. Understood layouts: {LAYOUTS_HELP}")
    name = _detect(root, dirs)
    # One walk over the whole dataset: every real folder first, then every folder link (top-level links
    # included), so a link to a sibling class folder is one skipped row, never a second copy of that
    # class under another name.
    seen, links = _chain_ids(root), deque()
    for d in dirs:
        if d.is_symlink():
            links.append((d, _hidden_reason(d.name, "")))
        else:
            _walk_tree(d, _hidden_reason(d.name, ""), seen, found, links)
    while links:
        link, inh = links.popleft()
        _walk_tree(link, inh, seen, found, links)
    found.sort(key=lambda t: str(t[0]))
    return _account(root, name, found)
