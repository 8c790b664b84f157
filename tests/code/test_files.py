"""One writer for every output (fracturelib.files): atomic, one-line errors, nothing partial left,
symlinks written through, inputs never overwritten; faults are injected at os.write/os.open."""
import errno
import hashlib
import os

import pytest

from fracturelib import files
from fracturelib.app.cli import main
from fracturelib.files import OutputError, atomic_output, atomic_write, refuse_overwriting_inputs, sha256_file


def _tmp_fd(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp")
    except OSError:
        return False


def full_disk(monkeypatch, after: int = 100, code: int = errno.ENOSPC):
    """os.write fails with ``code`` once ``after`` bytes went to fracturelib's temporary files."""
    real, budget = os.write, [after]

    def write(fd, data):
        if fd > 2 and _tmp_fd(fd):
            if budget[0] <= 0:
                raise OSError(code, os.strerror(code))
            data = bytes(data)[: budget[0]]
            budget[0] -= len(data)
        return real(fd, data)
    monkeypatch.setattr(os, "write", write)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_bytes_text_and_callback(tmp_path):
    atomic_write(tmp_path / "a.bin", b"\0\1")
    atomic_write(tmp_path / "a.txt", "h\u00e9")
    atomic_write(tmp_path / "a.cb", lambda f: f.write(b"cb"))
    with atomic_output(tmp_path / "a.csv", "w", newline="") as f:
        f.write("x\r\ny")
    assert (tmp_path / "a.bin").read_bytes() == b"\0\1"
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "h\u00e9"
    assert (tmp_path / "a.cb").read_bytes() == b"cb" and (tmp_path / "a.csv").read_bytes() == b"x\r\ny"
    assert _leftovers(tmp_path) == []


def test_existing_file_keeps_its_mode(tmp_path):
    p = tmp_path / "m"
    p.write_text("old")
    p.chmod(0o640)
    atomic_write(p, "new")
    assert p.stat().st_mode & 0o777 == 0o640 and p.read_text() == "new"


@pytest.mark.parametrize("after", [0, 100, 70_000])
def test_full_disk_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, after):
    p = tmp_path / "out.html"
    p.write_text("old content")
    full_disk(monkeypatch, after)
    with pytest.raises(OutputError) as e:
        atomic_write(p, "x" * 200_000)
    assert "\n" not in str(e.value) and str(p) in str(e.value) and "disk is full" in str(e.value)
    assert e.value.exit_code == 1
    assert p.read_text() == "old content" and _leftovers(tmp_path) == []


@pytest.mark.parametrize("code,words,exit_code", [(errno.EROFS, "read-only", 2),
                                                  (errno.EACCES, "permission denied", 2)])
def test_read_only_or_forbidden_folder(tmp_path, monkeypatch, code, words, exit_code):
    real = os.open

    def fake_open(path, flags, mode=0o777, **kw):
        if str(path).endswith(".tmp"):
            raise OSError(code, os.strerror(code), str(path))
        return real(path, flags, mode, **kw)
    monkeypatch.setattr(os, "open", fake_open)
    with pytest.raises(OutputError, match=words) as e:
        atomic_write(tmp_path / "a.txt", "x")
    assert e.value.exit_code == exit_code and not (tmp_path / "a.txt").exists()


def test_failing_rename_and_exceptions_in_the_block_leave_nothing(tmp_path, monkeypatch):
    p = tmp_path / "a.txt"
    p.write_text("old")
    with pytest.raises(ZeroDivisionError), atomic_output(p, "w") as f:
        f.write("half")
        raise ZeroDivisionError
    assert p.read_text() == "old" and _leftovers(tmp_path) == []
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EXDEV, "x")))
    with pytest.raises(OutputError):
        atomic_write(p, "new")
    assert p.read_text() == "old" and _leftovers(tmp_path) == []


def test_a_symlink_is_written_through(tmp_path):
    real = tmp_path / "real" / "m.csv"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    atomic_write(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert _leftovers(tmp_path) == [] and _leftovers(real.parent) == []


def test_refuse_overwriting_inputs(tmp_path):
    a = tmp_path / "in" / "a.png"
    a.parent.mkdir()
    a.write_bytes(b"x")
    link = tmp_path / "l.png"
    link.symlink_to(a)
    refuse_overwriting_inputs([tmp_path / "out.csv"], [a])
    for out in (a, link, tmp_path / "in", tmp_path):
        with pytest.raises(OutputError, match="would overwrite the input") as e:
            refuse_overwriting_inputs([out], [a], "--out")
        assert e.value.exit_code == 2


def test_one_sha256_helper(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(os.urandom(300_000))
    assert sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()
    assert sha256_file(tmp_path / "none", "") == "" and sha256_file(tmp_path / "none", "missing") == "missing"
    with pytest.raises(FileNotFoundError):
        sha256_file(tmp_path / "none")


def test_no_module_hashes_files_itself():
    """The one helper: no other module of the package reads a file into hashlib."""
    import re
    from pathlib import Path
    pkg = Path(files.__file__).parent
    offenders = [str(f.relative_to(pkg)) for f in pkg.rglob("*.py") if f.name != "files.py"
                 and re.search(r"hashlib\.file_digest\(|sha256\([^)]*read_bytes", f.read_text())]
    assert offenders == []


def _err(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture
def dataset(tmp_path):
    from tests.conftest import write_tree
    write_tree(tmp_path / "ds", {"a": 2, "b": 2})
    return tmp_path / "ds"


def test_scan_out_on_a_full_disk(tmp_path, dataset, monkeypatch, capsys):
    out = tmp_path / "m.csv"
    out.write_text("earlier manifest")
    full_disk(monkeypatch, 10)
    assert main(["scan", str(dataset), "--quiet", "--out", str(out)]) == 1
    assert "disk is full" in _err(capsys) and str(out) in capsys.readouterr().err + str(out)
    assert out.read_text() == "earlier manifest" and _leftovers(tmp_path) == []


def test_scan_out_read_only(tmp_path, dataset, monkeypatch, capsys):
    real = os.open
    monkeypatch.setattr(os, "open", lambda p, fl, m=0o777, **kw: (_ for _ in ()).throw(
        OSError(errno.EROFS, "Read-only file system")) if str(p).endswith(".tmp") else real(p, fl, m, **kw))
    assert main(["scan", str(dataset), "--quiet", "--out", str(tmp_path / "m.csv")]) == 2
    assert "read-only" in _err(capsys) and not (tmp_path / "m.csv").exists()


def test_scan_out_through_a_symlink_and_never_over_an_input(tmp_path, dataset, capsys):
    import pandas as pd
    real = tmp_path / "real.csv"
    real.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    assert main(["scan", str(dataset), "--quiet", "--out", str(link)]) == 0
    assert link.is_symlink() and len(pd.read_csv(real)) == 4
    image = next(p for p in dataset.rglob("*") if p.is_file())
    before = image.read_bytes()
    capsys.readouterr()
    assert main(["scan", str(dataset), "--quiet", "--out", str(image)]) == 2
    assert "would overwrite the input" in _err(capsys) and image.read_bytes() == before
