"""Download and unpack the full FracAtlas release (figshare 10.6084/m9.figshare.22363012).

Download: resumes an interrupted transfer with HTTP Range requests, retries with back-off, and
gives up on a server that stalls (no byte for ``stall`` seconds), crawls (below ``min_speed`` over a
window) or runs past an overall ``deadline``. Unpacking: the zip is checked before one byte is
written (member paths stay inside ``--dest``, declared sizes, total size, compression ratio, free
space), extracted into a temporary folder inside ``--dest`` with the written bytes counted against
the declared sizes, and renamed into place only when it holds FracAtlas; on any failure the
temporary folder and the bad archive are removed. Only the standard library is used.
"""
from __future__ import annotations

import shutil
import tempfile
import time
import zipfile
from http.client import HTTPException, IncompleteRead
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

FRACATLAS_URL = "https://figshare.com/ndownloader/files/43283628"
FRACATLAS_IMAGES = 4083
FOLDER = "FracAtlas"
CHUNK = 1 << 16
#: Unpacking limits: the release is ~330 MB zipped, ~340 MB unpacked; JPEGs barely compress.
MAX_UNPACKED = 8 << 30
MAX_RATIO = 100
MAX_MEMBERS = 100_000


class FetchError(RuntimeError):
    """Download or unpack failed; the message says what to do."""


class _TooSlow(OSError):
    pass


def download(url: str, target: Path, retries: int = 4, timeout: float = 60,
             backoff: float = 1.0, progress: bool = True, deadline: float = 6 * 3600,
             min_speed: float = 1024, window: float = 60) -> Path:
    """Download ``url`` to ``target``, resuming from ``target.part`` when it exists.

    ``timeout``: seconds without a byte before an attempt is abandoned; ``min_speed`` (bytes/s)
    averaged over each ``window`` seconds; ``deadline``: seconds for all attempts together.
    """
    from tqdm.auto import tqdm

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    start, tries = time.monotonic(), 0
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        tries += 1
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "fracturelib-fetch"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with urlopen(Request(url, headers=headers), timeout=timeout) as r:
                if have and r.status != 206:          # server ignored the range: start again
                    have = 0
                length = r.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                with open(part, "ab" if have else "wb") as f, tqdm(
                        total=total, initial=have, unit="B", unit_scale=True,
                        desc=target.name, disable=not progress) as bar:
                    w_start, w_bytes = time.monotonic(), 0
                    while chunk := r.read1(CHUNK):
                        f.write(chunk)
                        bar.update(len(chunk))
                        now, w_bytes = time.monotonic(), w_bytes + len(chunk)
                        if now - start > deadline:
                            raise FetchError(f"download of {url} passed its deadline of {deadline:.0f} s; "
                                             f"run the same command again to resume from {part}")
                        if now - w_start >= window:
                            if w_bytes / (now - w_start) < min_speed:
                                raise _TooSlow(f"slower than {min_speed:.0f} bytes/s for {window:.0f} s")
                            w_start, w_bytes = now, 0
            size = part.stat().st_size
            if total is not None and size != total:
                raise IncompleteRead(b"", total - size)
            part.replace(target)
            return target
        except HTTPError as e:
            if e.code == 416 and have:                # nothing left to fetch: the part is whole
                part.replace(target)
                return target
            last_error = e
            if 400 <= e.code < 500:
                break                                 # retrying will not change the answer
        except (URLError, OSError, IncompleteRead, HTTPException, TimeoutError) as e:
            last_error = e
        if time.monotonic() - start > deadline:
            break
        if attempt < retries:
            time.sleep(backoff * 2 ** attempt)
    if isinstance(last_error, HTTPError) and 400 <= last_error.code < 500:
        raise FetchError(f"download of {url} refused: HTTP {last_error.code} {last_error.reason}; "
                         "check --url, or download the archive yourself and pass it with --archive")
    raise FetchError(f"download of {url} failed after {tries} {'try' if tries == 1 else 'tries'} "
                     f"({last_error}); run the same command again to resume from {part}, or "
                     "download the file yourself and pass it with --archive.")


def _check_members(z: zipfile.ZipFile, archive: Path, dest: Path) -> int:
    """Refuse unsafe or oversized archives before extracting; return the declared unpacked size."""
    infos = z.infolist()
    if len(infos) > MAX_MEMBERS:
        raise FetchError(f"{archive}: {len(infos)} members (limit {MAX_MEMBERS}); not FracAtlas")
    total = 0
    for m in infos:
        name = PurePosixPath(m.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts or (name.parts and ":" in name.parts[0]):
            raise FetchError(f"{archive}: unsafe path {m.filename!r} in the archive (it would be "
                             "written outside --dest); refusing to unpack it")
        total += m.file_size
        if m.compress_size and m.file_size / m.compress_size > MAX_RATIO and m.file_size > 1 << 20:
            raise FetchError(f"{archive}: member {m.filename!r} expands {m.file_size / m.compress_size:.0f}x "
                             f"(limit {MAX_RATIO}x): a zip bomb, not FracAtlas; refusing to unpack it")
    if total > MAX_UNPACKED:
        raise FetchError(f"{archive}: would unpack to {total / 2**30:.1f} GiB (limit "
                         f"{MAX_UNPACKED / 2**30:.0f} GiB); refusing to unpack it")
    free = shutil.disk_usage(dest).free
    if total > free:
        raise FetchError(f"{archive}: needs {total / 2**20:.0f} MiB to unpack, {dest} has "
                         f"{free / 2**20:.0f} MiB free; free some space or choose another --dest")
    return total


def _extract(z: zipfile.ZipFile, into: Path, archive: Path) -> None:
    """Extract member by member, never writing more bytes than a member declares."""
    for m in z.infolist():
        out = into / m.filename
        if m.is_dir():
            out.mkdir(parents=True, exist_ok=True)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with z.open(m) as src, open(out, "wb") as dst:
            while block := src.read(CHUNK):
                written += len(block)
                if written > m.file_size:
                    raise FetchError(f"{archive}: member {m.filename!r} is larger than it declares; "
                                     "the archive is corrupt or hostile")
                dst.write(block)


def unpack(archive: Path, dest: Path) -> Path:
    """Check and extract ``archive`` into ``dest/FracAtlas``; return that folder.

    Nothing is left in ``dest`` unless the archive holds a FracAtlas ``images/`` folder; an archive
    that fails any check is deleted (so that the next run downloads it afresh).
    """
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / FOLDER
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest))
    try:
        try:
            with zipfile.ZipFile(archive) as z:
                _check_members(z, archive, dest)
                _extract(z, tmp, archive)
        except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, NotImplementedError) as e:
            raise FetchError(f"{archive}: not a valid zip ({e}); it was deleted, run the command "
                             "again to download it afresh.") from None
        found = [p.parent for p in sorted(tmp.rglob("images")) if p.is_dir()
                 and {"fractured", "non_fractured"} <= {c.name.lower() for c in p.iterdir()}]
        if not found:
            raise FetchError(f"{archive}: no FracAtlas images/Fractured and images/Non_fractured "
                             "folders inside; is this the FracAtlas archive? It was deleted.")
        if final.exists():
            shutil.rmtree(final)
        found[0].replace(final)
        return final
    except (FetchError, OSError):
        archive.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_fracatlas(dest: str | Path, url: str = FRACATLAS_URL,
                    expected_images: int | None = FRACATLAS_IMAGES, progress: bool = True,
                    retries: int = 4, backoff: float = 1.0, archive: str | Path | None = None,
                    **download_options) -> Path:
    """Download (or take ``archive``), check and unpack FracAtlas into ``dest``; return its root.

    ``download_options``: ``timeout``, ``deadline``, ``min_speed``, ``window`` of :func:`download`.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"--dest {dest}: is a file; give a folder")
    if archive is not None:
        archive = Path(archive)
        if not archive.is_file():
            raise FileNotFoundError(f"--archive {archive}: no such file")
        local = dest / "FracAtlas.zip"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive, local)       # unpack deletes a bad archive: never the user's own
        archive = local
    else:
        archive = dest / "FracAtlas.zip"
        if not archive.exists():
            download(url, archive, retries=retries, backoff=backoff, progress=progress,
                     **download_options)
    root = unpack(archive, dest)
    n = sum(1 for p in (root / "images").rglob("*") if p.is_file())
    if expected_images is not None and n != expected_images:
        raise FetchError(f"{root}: {n} image files after unpacking, expected {expected_images}; "
                         f"delete {archive} and run again.")
    return root
