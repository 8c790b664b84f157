"""Incremental runs: a notebook whose inputs are unchanged is not run again, its report is reused.

The key of a run hashes everything its result depends on: the notebook file (content and
modification time, so touching it reruns it), its resolved parameters, the fracturelib source, a
manifest of every data folder it reads (relative path, size, modification time of each file) and
the model files it reads (so 04 reruns when 02's model changed). A run's outputs (its report and
the files it wrote next to its ``*_path`` parameters) are recorded too: a deleted or changed output
is a cache miss. Entries are written atomically, and only for runs that succeeded.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from fracturelib import config
from fracturelib.files import atomic_write, sha256_file

#: Parameter values that name model files (read when the parameter is an input).
MODEL_SUFFIXES = (".keras", ".npz")
#: Parameters ending so are files the notebook writes, not reads.
OUTPUT_SUFFIX = "_path"


def file_digest(path: Path) -> str:
    """The file's SHA-256, or ``missing`` when it cannot be read.

    Args:
        path: the file to hash.

    Returns:
        The hex digest, or ``"missing"``.
    """
    return sha256_file(path, default="missing")


def source_digest() -> str:
    """The fracturelib package as installed here: every source and asset file's content (all stages,
    not only this module's folder: a change in data/ or models/ must rerun the notebooks).

    Returns:
        The hex SHA-256 over the relative path and content digest of every ``.py``, ``.json``,
        ``.yaml`` and ``.txt`` file under the package.
    """
    h = hashlib.sha256()
    root = config.PACKAGE_DIR
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in (".py", ".json", ".yaml", ".txt") and "__pycache__" not in p.parts:
            h.update(p.relative_to(root).as_posix().encode())
            h.update(file_digest(p).encode())
    return h.hexdigest()


def folder_digest(folder: Path) -> str:
    """Relative path, size and modification time of every file under ``folder`` (no reads).

    Hashing metadata rather than content keeps the key cheap for large image folders.

    Args:
        folder: the data folder to summarise.

    Returns:
        The hex digest of the manifest, or ``"missing"`` when ``folder`` is not a directory.
    """
    h = hashlib.sha256()
    if not folder.is_dir():
        return "missing"
    for top, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            p = os.path.join(top, name)
            try:
                st = os.stat(p)
            except OSError:
                continue
            h.update(f"{os.path.relpath(p, folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode(
                "utf-8", "surrogateescape"))
    return h.hexdigest()


def resolve_path(value: str) -> Path:
    """Notebooks run in notebooks/: their relative paths are relative to it.

    Args:
        value: a path as a notebook parameter gives it (``~`` is expanded).

    Returns:
        ``value`` itself when absolute, else resolved against the notebooks folder.
    """
    p = Path(value).expanduser()
    return p if p.is_absolute() else (config.NOTEBOOKS_DIR / p).resolve()


def _model_inputs(params: dict) -> dict:
    return {k: v for k, v in params.items() if isinstance(v, str) and v.endswith(MODEL_SUFFIXES)
            and not k.endswith(OUTPUT_SUFFIX)}


def output_folders(params: dict) -> list[Path]:
    """The folders a run writes into: the parents of its non-empty ``*_path`` parameters.

    Args:
        params: the run's resolved parameters.

    Returns:
        The distinct folders, sorted.
    """
    return sorted({resolve_path(v).parent for k, v in params.items()
                   if k.endswith(OUTPUT_SUFFIX) and isinstance(v, str) and v})


def key(notebook: Path, params: dict, source: str | None = None) -> str:
    """The hash of everything a run's result depends on (see the module docstring).

    Args:
        notebook: the notebook file.
        params: its resolved parameters (``output_dir`` is left out of the key).
        source: a precomputed :func:`source_digest`, to hash the package once for many runs.

    Returns:
        The hex SHA-256 of the key's parts.
    """
    parts = {"notebook": file_digest(notebook), "mtime": notebook.stat().st_mtime_ns,
             "parameters": {k: v for k, v in params.items() if k != "output_dir"},
             "source": source or source_digest()}
    data = {k: v for k, v in params.items() if k.endswith("data_dir") and isinstance(v, str)}
    parts["data"] = {k: folder_digest(resolve_path(v) if v else config.DATASET_DIR)
                     for k, v in sorted(data.items())}
    parts["models"] = {}
    for k, v in sorted(_model_inputs(params).items()):
        p = resolve_path(v)
        parts["models"][k] = [file_digest(p), file_digest(p.with_suffix(".json"))]
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def outputs_written(params: dict, since: float) -> dict:
    """Files in the output folders changed at or after ``since`` -> their digest.

    Args:
        params: the run's resolved parameters (their ``*_path`` values name the output folders).
        since: the run's start time (epoch seconds); one second of slack allows for coarse mtimes.

    Returns:
        File path -> SHA-256 of each file the run wrote.
    """
    out = {}
    for folder in output_folders(params):
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if p.is_file() and p.stat().st_mtime >= since - 1:
                    out[str(p)] = file_digest(p)
    return out


class RunCache:
    """``<out_dir>/.cache/<run>.json``: the key, figures and outputs of the last successful run."""

    def __init__(self, out_dir: Path):
        self.dir = Path(out_dir) / ".cache"

    def _path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def get(self, name: str, run_key: str, reports: list[Path]) -> dict | None:
        """The entry when the key matches and every output is still there, unchanged.

        Args:
            name: the run's name.
            run_key: the run's current :func:`key`.
            reports: the report files that must still exist.

        Returns:
            The cached entry (``key``, ``seconds``, ``finished``, ``figures``, ``outputs``), or None
            on a miss or an unreadable entry.
        """
        try:
            entry = json.loads(self._path(name).read_text())
        except (OSError, ValueError):
            return None
        if entry.get("key") != run_key or not all(p.exists() for p in reports):
            return None
        if any(file_digest(Path(p)) != d for p, d in entry.get("outputs", {}).items()):
            return None
        return entry

    def put(self, name: str, run_key: str, seconds: float, figures: dict, outputs: dict) -> None:
        """Record a successful run, written atomically so a crash never leaves a half entry.

        Args:
            name: the run's name.
            run_key: its :func:`key`.
            seconds: how long it ran.
            figures: its key figures.
            outputs: file path -> digest of what it wrote (see :func:`outputs_written`).
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        entry = {"key": run_key, "seconds": seconds, "finished": time.time(), "figures": figures,
                 "outputs": outputs}
        atomic_write(self._path(name), json.dumps(entry, indent=1, default=str))

    def drop(self, name: str) -> None:
        """Forget a run's entry (if any), so that it runs again next time.

        Args:
            name: the run's name.
        """
        self._path(name).unlink(missing_ok=True)


def age(seconds: float) -> str:
    """A duration in its largest whole unit: '42 s', '5 min', '3 h', '2 days'.

    Args:
        seconds: the duration.

    Returns:
        The rounded duration with its unit.
    """
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"
