"""One writer for every output file, and one SHA-256 of a file.

Every file fracturelib writes for the user (the ``scan --out`` manifest, ``run --out`` reports and
index, the sweep index, a copied ``fetch --archive``) goes through :func:`atomic_output` or
:func:`atomic_write`: the bytes go to a temporary file in the target's own folder (same file
system, so the final ``os.replace`` is atomic), which replaces the target only once it is whole and
flushed to disk. Readers see the old file or the new one, never half of one. Any ``OSError`` on the
way (a full disk, a read-only file system, a missing permission) becomes one :class:`OutputError`
naming the path, and nothing partial is left behind: the temporary file is removed and the old
target keeps its content.

A target that is a symbolic link is written *through* the link: the file the link points to is
replaced and the link itself stays a link.

Only the standard library is used, so every layer may import this module.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

#: errno values that mean "the work ran, the machine could not hold its result" (exit code 1);
#: any other write failure (read-only, permission, not a folder ...) is a path to fix (exit code 2).
_RESOURCE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}
_HINTS = {errno.ENOSPC: "the disk is full; free some space or choose another place",
          errno.EDQUOT: "the disk quota is used up; free some space or choose another place",
          errno.EROFS: "the file system is read-only; choose a place you can write to",
          errno.EACCES: "permission denied; choose a place you can write to",
          errno.EPERM: "permission denied; choose a place you can write to",
          errno.ENOENT: "its folder does not exist",
          errno.ENOTDIR: "a part of the path is a file, not a folder",
          errno.EISDIR: "it is a folder; give a file name",
          errno.ENAMETOOLONG: "the name is too long for this file system"}


class OutputError(OSError):
    """An output could not be written (or would overwrite an input); nothing partial was left.

    ``exit_code``: 1 when the machine ran out of room (the work ran, its result did not fit),
    2 when the path itself is the problem (read-only, permission, refused), as the README's
    "Exit codes" says. The message is one line that names the path.
    """

    def __init__(self, message: str, code: int | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.errno = code
        self.exit_code = exit_code if exit_code is not None else (1 if code in _RESOURCE_ERRNOS else 2)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def output_error(path: str | os.PathLike, e: OSError, verb: str = "cannot write") -> OutputError:
    """The one-line :class:`OutputError` for ``e`` raised while writing ``path``.

    Args:
        path: the file (or folder) being written, as the user named it.
        e: the ``OSError`` that stopped the write.
        verb: how the message starts (``cannot write``, ``cannot create`` ...).

    Returns:
        An OutputError (not raised) whose message names ``path`` and says what to do.
    """
    if isinstance(e, OutputError):
        return e
    why = _HINTS.get(e.errno) or " ".join(str(e.strerror or e).split())
    return OutputError(f"{verb} {_shown(path)}: {why}", e.errno)


def shown(text: str | os.PathLike) -> str:
    """A path or name as a terminal and a one-line message can show it: bytes that are not UTF-8,
    control characters (newline, carriage return, escape sequences) and invisible format characters
    (bidirectional overrides, zero-width) become backslash escapes, so a hostile file name can neither
    break a line nor recolour or reorder what is printed.

    Args:
        text: a path, file name or any string.

    Returns:
        The printable form (unchanged for ordinary names).
    """
    s = os.fsdecode(text) if isinstance(text, (bytes, os.PathLike)) else str(text)
    s = s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)


_shown = shown


def resolve_target(path: str | os.PathLike) -> Path:
    """The file that writing ``path`` changes: ``path`` itself, or what its symlink(s) point to.

    Args:
        path: the output path the user gave.

    Returns:
        The absolute path of the real file (which may not exist yet).
    """
    return Path(os.path.realpath(os.fspath(path)))


class _FdWriter(io.RawIOBase):
    """A raw writer over a file descriptor whose writes go through ``os.write`` (one place where
    a full disk shows up, and where tests inject one)."""

    def __init__(self, fd: int):
        super().__init__()
        self._fd = fd

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, b) -> int:
        return os.write(self._fd, b)

    def seek(self, pos: int, whence: int = 0) -> int:
        return os.lseek(self._fd, pos, whence)

    def tell(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def truncate(self, size: int | None = None) -> int:
        size = self.tell() if size is None else size
        os.ftruncate(self._fd, size)
        return size

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if not self.closed:
            try:
                super().close()
            finally:
                os.close(self._fd)


def _wrap(fd: int, mode: str, encoding: str | None, errors: str | None, newline: str | None) -> IO:
    buffered = io.BufferedWriter(_FdWriter(fd), buffer_size=1 << 16)
    if "b" in mode:
        return buffered
    return io.TextIOWrapper(buffered, encoding=encoding or "utf-8", errors=errors, newline=newline,
                            write_through=False)


def open_output(path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None,
                errors: str | None = None, newline: str | None = None) -> IO:
    """Open ``path`` for writing in place (not atomically), for files that are meant to grow in
    steps, such as a resumable download's ``.part``; failing to open it is an :class:`OutputError`.

    Args:
        path: the file to write (created with the usual permissions if missing).
        mode: ``wb``/``ab`` (or ``w``/``a`` for text).
        encoding, errors, newline: for text modes, as :func:`open`.

    Returns:
        A buffered file object; its writes go through ``os.write``.

    Raises:
        OutputError: the file could not be opened (missing folder, read-only, no permission ...).
    """
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    flags |= os.O_APPEND if "a" in mode else os.O_TRUNC
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        raise output_error(path, e) from None
    return _wrap(fd, mode, encoding, errors, newline)


def refuse_special(path: str | os.PathLike, target: Path | None = None) -> None:
    """Refuse an output whose target exists and is not a regular file (a device such as /dev/full, a
    pipe, a socket, a folder): renaming a file over it would replace it, and writing into it is not
    what an output file means.

    Args:
        path: the output path the user gave.
        target: its resolved target (:func:`resolve_target`), when already known.

    Raises:
        OutputError: one line naming the path (exit code 2).
    """
    import stat as stat_
    target = target or resolve_target(path)
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return                                   # not there yet (or unreadable: the write will say)
    if stat_.S_ISDIR(mode):
        raise OutputError(f"{_shown(path)}: is a folder; give a file name", exit_code=2)
    if not stat_.S_ISREG(mode):
        raise OutputError(f"{_shown(path)}: is not a regular file (a device, pipe or socket); give a file name",
                          exit_code=2)


def check_output(path: str | os.PathLike, inside: str | os.PathLike | None = None, what: str = "--out") -> Path:
    """Check an output file before any work is done, so a mistake costs nothing: not a folder, device,
    pipe or socket; its folder exists and is a folder; and, when ``inside`` is given (the folder a
    command reads, e.g. the dataset ``scan`` walks), not an existing file in it (it is an input).

    Args:
        path: the output path the user gave.
        inside: a folder whose existing files are inputs.
        what: how the message names the output.

    Returns:
        The resolved target.

    Raises:
        OutputError: one line naming the path and the fix (exit code 2).
    """
    target = resolve_target(path)
    refuse_special(path, target)
    if not target.parent.is_dir():
        raise OutputError(f"{what} {_shown(path)}: its folder {_shown(target.parent)} does not exist or is not a "
                          "folder; create it or choose another place", exit_code=2)
    if inside is not None and target.exists():
        root = resolve_target(inside)
        if target == root or root in target.parents:
            raise OutputError(f"{what} {_shown(path)}: would overwrite the input {_shown(path)} (a file of the "
                              f"folder being read, {_shown(inside)}); write the output elsewhere", exit_code=2)
    return target


def _temp_name(target: Path) -> Path:
    stem = target.name.encode("utf-8", "surrogateescape")[:80].decode("utf-8", "ignore")
    return target.with_name(f".{stem}.{secrets.token_hex(4)}.tmp")


@contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None,
                  errors: str | None = None, newline: str | None = None) -> Iterator[IO]:
    """A file object whose content replaces ``path`` when the ``with`` block ends without error.

    The temporary file lives in the target's folder; on any exception it is removed and the
    target keeps its old content. A symlinked ``path`` is written through: the link's target file
    is replaced and the link stays. An existing target keeps its permission bits.

    Args:
        path: the output file.
        mode: ``wb`` (bytes) or ``w`` (text).
        encoding, errors, newline: for text mode, as :func:`open` (encoding defaults to UTF-8).

    Yields:
        The open temporary file.

    Raises:
        OutputError: the file could not be written (full disk, read-only, no permission ...).
        ValueError: ``mode`` is not a write mode (``w``, ``wt`` or ``wb``).
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_output mode {mode!r}: use 'w' or 'wb'")
    target = resolve_target(path)
    refuse_special(path, target)
    tmp = _temp_name(target)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        raise output_error(path, e) from None
    f = _wrap(fd, mode, encoding, errors, newline)
    done = False
    try:
        try:
            yield f
            f.flush()
            os.fsync(f.fileno())
            f.close()
            try:
                os.chmod(tmp, os.stat(target).st_mode & 0o7777)
            except FileNotFoundError:
                pass
            os.replace(tmp, target)
            done = True
        except OSError as e:
            raise output_error(path, e) from None
    finally:
        if not done:
            try:
                f.close()
            except OSError:
                pass
            try:
                os.unlink(tmp)
            except OSError:
                pass


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[IO], object], *,
                 encoding: str = "utf-8", errors: str = "strict", newline: str | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`); return ``path``.

    Args:
        path: the output file; a symlink is written through to the file it points to.
        data: bytes, text (encoded with ``encoding``/``errors``), or a function that is given the
            open binary temporary file and writes into it (e.g. ``lambda f: image.save(f, "PNG")``).
        encoding, errors, newline: for text ``data``.

    Returns:
        ``path`` as a Path.

    Raises:
        OutputError: one line naming ``path``; the old content, if any, is untouched.
    """
    if isinstance(data, str):
        with atomic_output(path, "w", encoding=encoding, errors=errors, newline=newline) as f:
            f.write(data)
    elif isinstance(data, (bytes, bytearray, memoryview)):
        with atomic_output(path, "wb") as f:
            f.write(data)
    else:
        with atomic_output(path, "wb") as f:
            data(f)
    return Path(path)


def ensure_dir(path: str | os.PathLike, what: str = "") -> Path:
    """Create folder ``path`` (and its parents) or raise a one-line :class:`OutputError`.

    Args:
        path: the folder.
        what: how the user named it (``--out``, ``--dest`` ...), put before the path in errors.

    Returns:
        ``path`` as a Path.

    Raises:
        OutputError: ``path`` is a file, or the folder could not be created.
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{what + ' ' if what else ''}{_shown(p)}: is a file; give a folder",
                          errno.ENOTDIR) from None
    except OSError as e:
        raise output_error(p, e, f"{what + ' ' if what else ''}cannot create") from None
    return p


def _same_or_inside(out: Path, inp: Path) -> bool:
    return out == inp or out in inp.parents


def refuse_overwriting_inputs(outputs: Iterable[str | os.PathLike],
                              inputs: Iterable[str | os.PathLike], what: str = "output") -> None:
    """Refuse outputs that are (or, for folders, contain) one of the inputs, symlinks resolved.

    Args:
        outputs: files (or folders) about to be written or replaced.
        inputs: files the same command reads.
        what: how to name an output in the message (``--out``, ``--archive`` ...).

    Raises:
        OutputError: one line naming both paths (exit code 2), before anything is written.
    """
    ins = [(i, resolve_target(i)) for i in inputs]
    for o in outputs:
        ro = resolve_target(o)
        for i, ri in ins:
            if _same_or_inside(ro, ri):
                raise OutputError(f"{what} {_shown(o)}: would overwrite the input {_shown(i)}; "
                                  "choose another place for the output", exit_code=2)


def sha256_file(path: str | os.PathLike, default: str | None = None) -> str:
    """The SHA-256 (hex) of a file, read in chunks (``hashlib.file_digest``): a 1.5 GB file costs
    a buffer, not 1.5 GB.

    Args:
        path: the file.
        default: returned instead of raising when the file cannot be read (None: raise).

    Returns:
        64 hex digits, or ``default``.

    Raises:
        OSError: the file cannot be read and ``default`` is None.
    """
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        if default is None:
            raise
        return default
