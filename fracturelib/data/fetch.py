"""Download and unpack the full FracAtlas release (figshare 10.6084/m9.figshare.22363012).

Resumes an interrupted download with HTTP Range requests, retries with back-off, verifies the zip
and counts the images after unpacking. Only the standard library is used for HTTP.
"""
from __future__ import annotations

import time
import zipfile
from http.client import IncompleteRead
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

FRACATLAS_URL = "https://figshare.com/ndownloader/files/43283628"
FRACATLAS_IMAGES = 4083
CHUNK = 1 << 16


class FetchError(RuntimeError):
    """Download or unpack failed; the message says what to do."""


def download(url: str, target: Path, retries: int = 4, timeout: float = 60,
             backoff: float = 1.0, progress: bool = True) -> Path:
    """Download ``url`` to ``target``, resuming from ``target.part`` when it exists."""
    from tqdm.auto import tqdm

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    last_error: Exception | None = None
    for attempt in range(retries + 1):
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
                    while chunk := r.read(CHUNK):
                        f.write(chunk)
                        bar.update(len(chunk))
            size = part.stat().st_size
            if total is not None and size < total:
                raise IncompleteRead(b"", total - size)
            part.replace(target)
            return target
        except HTTPError as e:
            if e.code == 416 and have:                # nothing left to fetch: the part is whole
                part.replace(target)
                return target
            last_error = e
            if 400 <= e.code < 500:
                break
        except (URLError, OSError, IncompleteRead, TimeoutError) as e:
            last_error = e
        if attempt < retries:
            time.sleep(backoff * 2 ** attempt)
    raise FetchError(f"download of {url} failed after {retries + 1} tries ({last_error}); "
                     f"run the same command again to resume from {part}, or download the file "
                     f"yourself and pass it with --archive.")


def unpack(archive: Path, dest: Path) -> Path:
    """Verify and extract ``archive`` into ``dest``; return the folder holding ``images/``."""
    try:
        with zipfile.ZipFile(archive) as z:
            bad = z.testzip()
            if bad is not None:
                raise FetchError(f"{archive}: corrupt member {bad}")
            dest = Path(dest).resolve()
            for m in z.infolist():
                out = (dest / m.filename).resolve()
                if dest not in out.parents and out != dest:
                    raise FetchError(f"{archive}: unsafe path {m.filename!r} in the archive")
            z.extractall(dest)
    except (zipfile.BadZipFile, EOFError) as e:
        archive.unlink(missing_ok=True)
        raise FetchError(f"{archive}: not a valid zip ({e}); it was deleted, run the command "
                         "again to download it afresh.") from e
    for cand in [dest / "FracAtlas", dest]:
        if (cand / "images").is_dir():
            return cand
    found = list(dest.rglob("images"))
    if found:
        return found[0].parent
    raise FetchError(f"{archive}: no images/ folder inside; is this the FracAtlas archive?")


def fetch_fracatlas(dest: str | Path, url: str = FRACATLAS_URL,
                    expected_images: int | None = FRACATLAS_IMAGES, progress: bool = True,
                    retries: int = 4, backoff: float = 1.0) -> Path:
    """Download, verify and unpack FracAtlas into ``dest``; return the dataset root."""
    dest = Path(dest)
    archive = dest / "FracAtlas.zip"
    if not archive.exists():
        download(url, archive, retries=retries, backoff=backoff, progress=progress)
    root = unpack(archive, dest)
    n = sum(1 for p in (root / "images").rglob("*") if p.is_file())
    if expected_images is not None and n != expected_images:
        raise FetchError(f"{root}: {n} image files after unpacking, expected {expected_images}; "
                         f"delete {archive} and run again.")
    return root

