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

import errno
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from http.client import HTTPException, IncompleteRead
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError
from urllib.request import Request, urlopen

from fracturelib.files import OutputError, atomic_output, open_output, output_error, refuse_overwriting_inputs

FRACATLAS_URL = "https://figshare.com/ndownloader/files/43283628"
FRACATLAS_IMAGES = 4083
FOLDER = "FracAtlas"
CHUNK = 1 << 16
#: Limits (the release is ~330 MB zipped, ~340 MB unpacked, ~4,100 images plus annotations; JPEGs
#: barely compress). Whole-archive limits hold whatever the member sizes: the total declared
#: unpacked size, the member count and the overall compression ratio (counted once the archive
#: unpacks to more than ``RATIO_FLOOR``), with the per-member ratio on top.
MAX_DOWNLOAD = 4 << 30        #: bytes a download may reach (Content-Length, then bytes received)
MAX_UNPACKED = 4 << 30        #: declared unpacked bytes, all members together
MAX_RATIO = 100               #: unpacked / compressed, per member and for the whole archive
RATIO_FLOOR = 1 << 20         #: below this many unpacked bytes no ratio is checked
MAX_MEMBERS = 50_000
MAX_NAME_BYTES = 255          #: per path component (NAME_MAX on common file systems)
MAX_PATH_BYTES = 4000         #: the whole extracted path, ``--dest`` included (PATH_MAX 4096)


class FetchError(RuntimeError):
    """Download or unpack failed; the message says what to do."""


class _TooSlow(OSError):
    pass


class _Restart(OSError):
    """The server answered a resume with other bytes than asked for: start the file again."""


def _disk_error(path: Path, e: OSError, part: str = "") -> FetchError:
    """One line for a write that failed (full disk, read-only, permission)."""
    return FetchError(f"{output_error(path, e)}{part}")


def _drop_link(path: Path, what: str) -> None:
    """Remove ``path`` when it is a symbolic link (never its target), saying so on stderr: the files
    fetch writes in ``--dest`` (the working copy of the zip, the download's ``.part``, the unpacked
    folder) are its own, and writing through a link left there would overwrite an unrelated file.

    Args:
        path: the working file or folder about to be written.
        what: what it is, for the note.

    Raises:
        OSError: the link cannot be removed.
    """
    if path.is_symlink():
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        path.unlink()
        print(f"note: {path} ({what}) was a symbolic link to {target}; removed the link, its "
              "target was not touched", file=sys.stderr)


def _content_range_start(value: str | None) -> int | None:
    """``bytes 100-199/200`` -> 100; None when absent or malformed."""
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    return int(m.group(1)) if m else None


def download(url: str, target: Path, retries: int = 4, timeout: float = 60,
             backoff: float = 1.0, progress: bool = True, deadline: float = 6 * 3600,
             min_speed: float = 1024, window: float = 60, max_bytes: int | None = None) -> Path:
    """Download ``url`` to ``target``, resuming from ``target.part`` when it exists.

    A resumed transfer is appended to only when the server answers 206 with a ``Content-Range``
    that starts exactly where the part ends; a server that ignores the range (200) restarts the
    file from byte 0, one that answers another range restarts it with a new request. A full disk
    or an unwritable folder stops at once, with the part removed.

    Args:
        url: what to fetch (http or https).
        target: the finished file; bytes go to ``target.part`` until the transfer is whole.
        retries: attempts after the first.
        timeout: seconds without a byte before an attempt is abandoned.
        backoff: seconds before the first retry, doubled for each next one.
        progress: show a progress bar.
        deadline: seconds for all attempts together.
        min_speed: bytes/s averaged over each ``window`` seconds below which an attempt is abandoned.
        window: seconds of that average.
        max_bytes: the most bytes the file may have (None: ``MAX_DOWNLOAD``).

    Returns:
        ``target``.

    Raises:
        FetchError: one line saying what failed and what to do.
    """
    from tqdm.auto import tqdm

    cap = MAX_DOWNLOAD if max_bytes is None else max_bytes
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        _drop_link(part, "the partial download")     # never append to a file a link points at
    except OSError as e:
        raise _disk_error(part, e) from None
    if part.exists() and not part.is_file():
        raise FetchError(f"{part}: exists and is not a file (the partial download goes there); "
                         "move it away and run the command again")
    start, tries = time.monotonic(), 0
    last_error: Exception | None = None
    too_big = (f"download of {url} is larger than the limit of {cap / 2**20:.0f} MiB; is --url the "
               "FracAtlas archive? The partial file was removed.")
    for attempt in range(retries + 1):
        tries += 1
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "fracturelib-fetch"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with urlopen(Request(url, headers=headers), timeout=timeout) as r:
                if r.status == 206:
                    if _content_range_start(r.headers.get("Content-Range")) != have:
                        part.unlink(missing_ok=True)   # other bytes than asked for: never append them
                        raise _Restart(f"the server answered Range bytes={have}- with Content-Range "
                                       f"{r.headers.get('Content-Range')!r}")
                elif have:                            # server ignored the range: start again
                    have = 0
                length = r.headers.get("Content-Length")
                total = have + int(length) if length is not None and length.isdigit() else None
                if total is not None and total > cap:
                    part.unlink(missing_ok=True)
                    raise FetchError(too_big)
                with open_output(part, "ab" if have else "wb") as f, tqdm(
                        total=total, initial=have, unit="B", unit_scale=True,
                        desc=target.name, disable=not progress) as bar:
                    w_start, w_bytes, size = time.monotonic(), 0, have
                    while chunk := r.read1(CHUNK):
                        size += len(chunk)
                        if size > cap:
                            raise FetchError(too_big)
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
        except FetchError as e:
            if str(e) == too_big:
                part.unlink(missing_ok=True)
            raise
        except _Restart as e:
            last_error = e
            continue                                  # at once: the next request has no Range
        except OSError as e:
            if isinstance(e, OutputError) or getattr(e, "errno", None) in _DISK_ERRNOS:
                part.unlink(missing_ok=True)
                raise _disk_error(part, e, "; the partial download was removed") from None
            last_error = e
        except (IncompleteRead, HTTPException) as e:
            last_error = e
        if time.monotonic() - start > deadline:
            break
        if attempt < retries:
            time.sleep(backoff * 2 ** attempt)
    if isinstance(last_error, HTTPError) and 400 <= last_error.code < 500:
        raise FetchError(f"download of {url} refused: HTTP {last_error.code} {last_error.reason}; "
                         "check --url, or download the archive yourself and pass it with --archive")
    if isinstance(last_error, _Restart):
        part.unlink(missing_ok=True)
    raise FetchError(f"download of {url} failed after {tries} {'try' if tries == 1 else 'tries'} "
                     f"({' '.join(str(last_error).split())}); run the same command again to resume "
                     f"from {part}, or download the file yourself and pass it with --archive.")


#: errno values of a write that retrying cannot fix.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _check_members(z: zipfile.ZipFile, archive: Path, dest: Path) -> int:
    """Refuse unsafe or oversized archives before extracting; return the declared unpacked size.

    Whole-archive limits first (member count, total declared size, overall compression ratio),
    then each member (path inside ``--dest``, name lengths, encryption, its own ratio), then the
    free space of ``dest``.
    """
    infos = z.infolist()
    if len(infos) > MAX_MEMBERS:
        raise FetchError(f"{archive}: {len(infos)} members (limit {MAX_MEMBERS}); not FracAtlas")
    total = sum(m.file_size for m in infos)
    packed = sum(m.compress_size for m in infos)
    if total > MAX_UNPACKED:
        raise FetchError(f"{archive}: would unpack to {total / 2**30:.1f} GiB (limit "
                         f"{MAX_UNPACKED / 2**30:.0f} GiB); refusing to unpack it")
    if total > RATIO_FLOOR and total > MAX_RATIO * max(packed, 1):
        raise FetchError(f"{archive}: {len(infos)} members expand {total / max(packed, 1):.0f}x "
                         f"overall (limit {MAX_RATIO}x): a zip bomb, not FracAtlas; refusing to unpack it")
    base = len(os.fsencode(str(dest))) + 1 + len(".unpack-xxxxxxxx/")
    files, folders = set(), set()
    for m in infos:
        name = PurePosixPath(m.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts or (name.parts and ":" in name.parts[0]):
            raise FetchError(f"{archive}: unsafe path {m.filename!r} in the archive (it would be "
                             "written outside --dest); refusing to unpack it")
        parts = tuple(p for p in name.parts if p not in ("", "."))
        folders.update(parts[:k] for k in range(1, len(parts)))
        if not m.is_dir():
            if parts in files or not parts:
                raise FetchError(f"{archive}: two members unpack to {m.filename!r}; the archive is "
                                 "corrupt or hostile, refusing to unpack it")
            files.add(parts)
        raw = m.filename.encode("utf-8", "surrogateescape")
        if any(len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for part in name.parts):
            raise FetchError(f"{archive}: member name {m.filename[:60]!r}... has a part longer than "
                             f"{MAX_NAME_BYTES} bytes; not FracAtlas, refusing to unpack it")
        if base + len(raw) > MAX_PATH_BYTES:
            raise FetchError(f"{archive}: member path {m.filename[:60]!r}... is too long to unpack "
                             f"under {dest} (limit {MAX_PATH_BYTES} bytes); refusing to unpack it")
        if m.flag_bits & 0x1:
            raise FetchError(f"{archive}: member {m.filename!r} is encrypted; the FracAtlas release "
                             "is not, refusing to unpack it")
        if m.compress_size and m.file_size / m.compress_size > MAX_RATIO and m.file_size > RATIO_FLOOR:
            raise FetchError(f"{archive}: member {m.filename!r} expands {m.file_size / m.compress_size:.0f}x "
                             f"(limit {MAX_RATIO}x): a zip bomb, not FracAtlas; refusing to unpack it")
    both = files & folders
    if both:
        raise FetchError(f"{archive}: {'/'.join(sorted(both)[0])!r} is both a file and a folder in "
                         "the archive; refusing to unpack it")
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
        with z.open(m) as src, open_output(out, "wb") as dst:
            while block := src.read(CHUNK):
                written += len(block)
                if written > m.file_size:
                    raise FetchError(f"{archive}: member {m.filename!r} is larger than it declares; "
                                     "the archive is corrupt or hostile")
                dst.write(block)


def unpack(archive: Path, dest: Path) -> Path:
    """Check and extract ``archive`` into ``dest/FracAtlas``; return that folder.

    Nothing is left in ``dest`` unless the archive holds a FracAtlas ``images/`` folder; an archive
    that fails any check, or that could not be written out (full disk), is deleted (so that the
    next run downloads it afresh) and the failure is one :class:`FetchError` line.

    Args:
        archive: the zip (a copy of the user's own file, or the download).
        dest: the folder that receives ``FracAtlas/``.

    Returns:
        ``dest/FracAtlas``.

    Raises:
        FetchError: the archive is not a valid, safe FracAtlas zip, or could not be written out.
    """
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / FOLDER
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest))
        try:
            with zipfile.ZipFile(archive) as z:
                _check_members(z, archive, dest)
                _extract(z, tmp, archive)
        except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, NotImplementedError) as e:
            raise FetchError(f"{archive}: not a valid zip ({' '.join(str(e).split())}); it was "
                             "deleted, run the command again to download it afresh.") from None
        except RuntimeError as e:                     # zipfile: encrypted without a password ...
            if isinstance(e, FetchError):
                raise
            raise FetchError(f"{archive}: cannot be unpacked ({' '.join(str(e).split())}); it "
                             "was deleted") from None
        found = [p.parent for p in sorted(tmp.rglob("images")) if p.is_dir()
                 and {"fractured", "non_fractured"} <= {c.name.lower() for c in p.iterdir()}]
        if not found:
            raise FetchError(f"{archive}: no FracAtlas images/Fractured and images/Non_fractured "
                             "folders inside; is this the FracAtlas archive? It was deleted.")
        _drop_link(final, "the unpacked dataset")     # replace the link, never the folder it names
        if final.exists():
            shutil.rmtree(final)
        found[0].replace(final)
        return final
    except FetchError:
        archive.unlink(missing_ok=True)
        raise
    except OSError as e:
        archive.unlink(missing_ok=True)
        raise _disk_error(dest, e, f"; unpacking {archive.name} stopped, nothing was kept") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _copy_archive(archive: Path, local: Path) -> None:
    """Copy the user's zip to ``local`` whole or not at all (a full disk leaves nothing).

    ``local`` is fetch's own working copy, not a file the user named: a symbolic link found there
    is removed (and the removal reported), never written through, so its target is not touched.
    The copy goes to a fresh temporary file in ``local``'s folder (O_EXCL) renamed onto ``local``.
    """
    try:
        _drop_link(local, "the working copy of --archive")
        with open(archive, "rb") as src, atomic_output(local, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
    except OSError as e:
        raise _disk_error(local, e, "; nothing was kept") from None


def fetch_fracatlas(dest: str | Path, url: str = FRACATLAS_URL,
                    expected_images: int | None = FRACATLAS_IMAGES, progress: bool = True,
                    retries: int = 4, backoff: float = 1.0, archive: str | Path | None = None,
                    **download_options) -> Path:
    """Download (or take ``archive``), check and unpack FracAtlas into ``dest``; return its root.

    ``download_options``: ``timeout``, ``deadline``, ``min_speed``, ``window``, ``max_bytes`` of
    :func:`download`. An ``archive`` inside ``dest`` is refused (unpacking replaces what is there).
    An existing ``dest/FracAtlas.zip`` is unpacked without downloading again.

    Args:
        dest: the folder that receives ``FracAtlas.zip`` and ``FracAtlas/``.
        url: where to download the archive from.
        expected_images: the number of image files the unpacked dataset must hold (None: no check).
        progress: show a progress bar while downloading.
        retries, backoff: as :func:`download`.
        archive: a local copy of the zip to use instead of downloading (it is copied, never deleted).
        **download_options: passed to :func:`download`.

    Returns:
        The dataset's root, ``dest/FracAtlas``.

    Raises:
        NotADirectoryError: ``dest`` is a file.
        FileNotFoundError: ``archive`` does not exist.
        OutputError: ``dest`` would overwrite ``archive``.
        FetchError: the download, copy or unpacking failed, or the image count is not ``expected_images``.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"--dest {dest}: is a file; give a folder")
    if archive is not None:
        archive = Path(archive)
        if not archive.is_file():
            raise FileNotFoundError(f"--archive {archive}: no such file")
        refuse_overwriting_inputs([dest], [archive], "--dest")
        local = dest / "FracAtlas.zip"
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _disk_error(dest, e) from None
        _copy_archive(archive, local)         # unpack deletes a bad archive: never the user's own
        archive = local
    else:
        archive = dest / "FracAtlas.zip"
        if not archive.exists():
            try:
                dest.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise _disk_error(dest, e) from None
            download(url, archive, retries=retries, backoff=backoff, progress=progress,
                     **download_options)
    root = unpack(archive, dest)
    n = sum(1 for p in (root / "images").rglob("*") if p.is_file())
    if expected_images is not None and n != expected_images:
        raise FetchError(f"{root}: {n} image files after unpacking, expected {expected_images}; "
                         f"delete {archive} and run again.")
    return root
