"""`fracturelib fetch` against a local HTTP server on 127.0.0.1 (no internet in tests)."""
import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fracturelib.app.cli import main
from fracturelib.data.fetch import FetchError, fetch_fracatlas
from tests.conftest import xray_like


def _archive(n_fractured=3, n_non=4) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for folder, n in (("Fractured", n_fractured), ("Non_fractured", n_non)):
            for k in range(n):
                img = io.BytesIO()
                xray_like(k + (100 if folder == "Fractured" else 0)).save(img, "JPEG")
                z.writestr(f"FracAtlas/images/{folder}/IMG{k:07d}.jpg", img.getvalue())
        z.writestr("FracAtlas/dataset.csv", "image_id,fractured\n")
    return buf.getvalue()


class _Loopback:
    """A ThreadingHTTPServer on 127.0.0.1 (``self.httpd``) served from a thread inside ``with``."""

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class Server(_Loopback):
    """Serves one body; ``cut_first`` requests are broken off half-way (a flaky network)."""

    def __init__(self, body: bytes, cut_first: int = 0, honour_range: bool = True):
        self.body, self.cut_left, self.honour_range = body, cut_first, honour_range
        self.requests: list[str | None] = []
        srv = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                srv.requests.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if rng and srv.honour_range else 0
                data = srv.body[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(srv.body) - 1}/{len(srv.body)}")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if srv.cut_left > 0:
                    srv.cut_left -= 1
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/files/43283628"



def test_fetch_unpacks_and_counts(tmp_path):
    with Server(_archive()) as s:
        root = fetch_fracatlas(tmp_path, url=s.url, expected_images=7, progress=False)
    assert root == (tmp_path / "FracAtlas").resolve()
    assert len(list((root / "images").rglob("*.jpg"))) == 7


def test_interrupted_download_resumes_with_range(tmp_path):
    body = _archive()
    with Server(body, cut_first=2) as s:
        fetch_fracatlas(tmp_path, url=s.url, expected_images=7, progress=False, backoff=0.01)
    assert s.requests[0] is None
    assert all(r and r.startswith("bytes=") for r in s.requests[1:]) and len(s.requests) == 3
    assert (tmp_path / "FracAtlas.zip").read_bytes() == body


def test_partial_file_from_earlier_run_is_resumed(tmp_path):
    body = _archive()
    (tmp_path / "FracAtlas.zip.part").write_bytes(body[:1000])
    with Server(body) as s:
        fetch_fracatlas(tmp_path, url=s.url, expected_images=7, progress=False)
    assert s.requests == ["bytes=1000-"]


def test_server_ignoring_range_restarts_cleanly(tmp_path):
    body = _archive()
    (tmp_path / "FracAtlas.zip.part").write_bytes(b"garbage" * 10)
    with Server(body, honour_range=False) as s:
        fetch_fracatlas(tmp_path, url=s.url, expected_images=7, progress=False)
    assert (tmp_path / "FracAtlas.zip").read_bytes() == body


def test_broken_archive_is_reported_and_removed(tmp_path):
    with Server(b"PK\x03\x04 this is not really a zip" * 50) as s:
        with pytest.raises(FetchError, match="not a valid zip"):
            fetch_fracatlas(tmp_path, url=s.url, expected_images=7, progress=False)
    assert not (tmp_path / "FracAtlas.zip").exists()


def test_wrong_image_count_is_an_error(tmp_path):
    with Server(_archive()) as s:
        with pytest.raises(FetchError, match="7 image files after unpacking, expected 4083"):
            fetch_fracatlas(tmp_path, url=s.url, progress=False)


def test_unreachable_server_gives_resume_hint(tmp_path):
    with pytest.raises(FetchError, match="run the same command again"):
        fetch_fracatlas(tmp_path, url="http://127.0.0.1:9/none", retries=1, backoff=0.01, progress=False)


def test_cli_fetch_exit_codes(tmp_path, capsys):
    with Server(_archive()) as s:
        assert main(["fetch", "fracatlas", "--dest", str(tmp_path / "ok"), "--url", s.url,
                     "--expected-images", "7", "--quiet"]) == 0
        assert main(["fetch", "fracatlas", "--dest", str(tmp_path / "bad"), "--url", s.url,
                     "--quiet"]) == 1
    assert "expected 4083" in capsys.readouterr().err


class Hostile(_Loopback):
    """A loopback server whose handler misbehaves on purpose; ``script`` maps the request number
    (0, 1, ...) to a function(handler) that answers it."""

    def __init__(self, *script):
        self.script, self.n = script, 0
        srv = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                k = min(srv.n, len(srv.script) - 1)
                srv.n += 1
                srv.script[k](self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/f"



def _send(body: bytes, status=200, length=None, cut=None):
    def answer(h):
        h.send_response(status)
        h.send_header("Content-Length", str(len(body) if length is None else length))
        h.end_headers()
        h.wfile.write(body if cut is None else body[:cut])
        h.wfile.flush()
        h.close_connection = True
    return answer


def _zip(members: dict, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _fetch(tmp_path, url, **kw):
    return fetch_fracatlas(tmp_path, url=url, expected_images=kw.pop("expected", 7), progress=False,
                           backoff=0.01, **kw)


def _only_leftovers(dest):
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


def test_zip_bomb_is_refused_before_writing(tmp_path):
    bomb = _zip({"FracAtlas/images/Fractured/a.jpg": b"\0" * (64 << 20)})
    assert len(bomb) < 200_000
    with Hostile(_send(bomb)) as s, pytest.raises(FetchError, match="zip bomb"):
        _fetch(tmp_path, s.url)
    assert _only_leftovers(tmp_path) == []               # no partial file, no archive kept


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "FracAtlas/../../evil.txt"])
def test_paths_escaping_dest_are_refused(tmp_path, name):
    dest = tmp_path / "dest"
    with Hostile(_send(_zip({name: b"x", "FracAtlas/images/Fractured/a.jpg": b"y"}))) as s:
        with pytest.raises(FetchError, match="unsafe path"):
            _fetch(dest, s.url)
    assert not (tmp_path / "evil.txt").exists() and _only_leftovers(dest) == []


def test_archive_without_fracatlas_leaves_nothing_and_is_not_reused(tmp_path):
    other = _zip({"images/cat.jpg": b"x", "README": b"not fracatlas"})
    with Hostile(_send(other), _send(_archive())) as s:
        with pytest.raises(FetchError, match="no FracAtlas"):
            _fetch(tmp_path, s.url)
        assert _only_leftovers(tmp_path) == []
        root = _fetch(tmp_path, s.url)                    # the next run downloads afresh
    assert root.name == "FracAtlas" and len(list((root / "images").rglob("*.jpg"))) == 7


def test_html_instead_of_zip_is_deleted_and_the_next_run_recovers(tmp_path):
    page = b"<html><body>Please log in</body></html>" * 20
    with Hostile(_send(page), _send(_archive())) as s:
        with pytest.raises(FetchError, match="not a valid zip"):
            _fetch(tmp_path, s.url)
        assert not (tmp_path / "FracAtlas.zip").exists()
        _fetch(tmp_path, s.url)


def test_server_error_then_success_is_retried(tmp_path):
    with Hostile(_send(b"oops", status=500), _send(_archive())) as s:
        _fetch(tmp_path, s.url)
    assert s.n == 2


def test_404_is_one_try_with_an_honest_message(tmp_path, capsys):
    with Hostile(_send(b"no", status=404)) as s:
        assert main(["fetch", "fracatlas", "--dest", str(tmp_path), "--url", s.url, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert s.n == 1 and "HTTP 404" in err and "tries" not in err and err.count("\n") == 1


@pytest.mark.parametrize("length,cut", [(None, 1000), ("long", None)])
def test_long_content_length_and_dropped_connections_resume(tmp_path, length, cut):
    body = _archive()
    lie = {None: None, "long": len(body) + 500}[length]
    with Hostile(_send(body, length=lie, cut=cut), _send(body)) as s:
        _fetch(tmp_path, s.url)
    assert (tmp_path / "FracAtlas.zip").read_bytes() == body and s.n == 2


def test_short_content_length_is_caught_by_the_zip_check_and_recovered(tmp_path):
    body = _archive()
    with Hostile(_send(body, length=len(body) - 500), _send(body)) as s:
        with pytest.raises(FetchError, match="not a valid zip.*run the command again"):
            _fetch(tmp_path, s.url)        # HTTP cannot tell: the server said that was all
        _fetch(tmp_path, s.url)
    assert (tmp_path / "FracAtlas").is_dir()


def _drip(chunk: bytes, times: int, pause: float = 0.1):
    """A server that promises 100,000 bytes and sends ``chunk`` every ``pause`` seconds."""
    import time

    def answer(h):
        h.send_response(200)
        h.send_header("Content-Length", "100000")
        h.end_headers()
        for _ in range(times):
            h.wfile.write(chunk)
            h.wfile.flush()
            time.sleep(pause)
    return answer


def test_trickling_server_is_given_up(tmp_path):
    import time

    t0 = time.monotonic()
    with Hostile(_drip(b"x", 40)) as s, pytest.raises(FetchError, match="slower than"):
        _fetch(tmp_path, s.url, retries=1, min_speed=1000, window=0.5)
    assert time.monotonic() - t0 < 4


def test_overall_deadline(tmp_path):
    with Hostile(_drip(b"x" * 100, 30)) as s, pytest.raises(FetchError, match="deadline"):
        _fetch(tmp_path, s.url, retries=3, deadline=0.5, min_speed=1)


def test_local_archive_option(tmp_path, capsys):
    zipped = tmp_path / "mine.zip"
    zipped.write_bytes(_archive())
    assert main(["fetch", "fracatlas", "--dest", str(tmp_path / "d"), "--archive", str(zipped),
                 "--expected-images", "7", "--quiet"]) == 0
    assert zipped.exists()                                # the user's own file is never deleted
    assert main(["fetch", "fracatlas", "--dest", str(tmp_path / "d2"), "--archive",
                 str(tmp_path / "none.zip"), "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error: --archive")


# --- whole-archive limits, names, encryption, full disks, download cap, Content-Range (issue:
# reliability by construction) ---

import errno  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fracturelib.data import fetch  # noqa: E402


def _local(tmp_path, data: bytes) -> Path:
    z = tmp_path / "given.zip"
    z.write_bytes(data)
    return z


def _unpack_into(tmp_path, data: bytes):
    dest = tmp_path / "dest"
    return fetch_fracatlas(dest, archive=_local(tmp_path, data), expected_images=None, progress=False), dest


def test_many_exactly_one_mib_members_are_refused_by_the_overall_ratio(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for k in range(150):
            z.writestr(f"FracAtlas/images/Fractured/{k}.jpg", b"\0" * (1 << 20))
    dest = tmp_path / "dest"
    with pytest.raises(FetchError, match="overall"):
        _unpack_into(tmp_path, buf.getvalue())
    assert _only_leftovers(dest) == []


def test_member_count_and_total_size_limits(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "MAX_MEMBERS", 5)
    with pytest.raises(FetchError, match="members"):
        _unpack_into(tmp_path, _archive())
    monkeypatch.setattr(fetch, "MAX_MEMBERS", 100)
    monkeypatch.setattr(fetch, "MAX_UNPACKED", 1000)
    with pytest.raises(FetchError, match="would unpack to"):
        _unpack_into(tmp_path, _archive())
    assert _only_leftovers(tmp_path / "dest") == []


def test_encrypted_member_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        info = zipfile.ZipInfo("FracAtlas/images/Fractured/a.jpg")
        info.flag_bits |= 0x1
        z.writestr(info, b"secret")
    with pytest.raises(FetchError, match="encrypted"):
        _unpack_into(tmp_path, buf.getvalue())
    assert _only_leftovers(tmp_path / "dest") == []


@pytest.mark.parametrize("name,why", [("FracAtlas/" + "a" * 256 + ".jpg", "longer than 255 bytes"),
                                      ("FracAtlas/" + "/".join(["d" * 200] * 22) + "/x", "too long")])
def test_overlong_names_are_refused(tmp_path, name, why):
    with pytest.raises(FetchError, match=why):
        _unpack_into(tmp_path, _zip({name: b"x", "FracAtlas/images/Fractured/a.jpg": b"y"}))
    assert _only_leftovers(tmp_path / "dest") == []


def test_archive_inside_dest_is_refused(tmp_path, capsys):
    dest = tmp_path / "dest"
    (dest / "FracAtlas").mkdir(parents=True)
    mine = dest / "FracAtlas.zip"
    mine.write_bytes(_archive())
    assert main(["fetch", "fracatlas", "--dest", str(dest), "--archive", str(mine), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --dest") and err.count("\n") == 1 and mine.read_bytes() == _archive()


def _full_disk(monkeypatch, after: int):
    real, left = os.write, [after]

    def write(fd, data):
        if fd > 2:
            if left[0] <= 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            data = bytes(data)[: left[0]]
            left[0] -= len(data)
        return real(fd, data)
    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("stage", ["copy", "unpack"])      # while copying --archive, while unpacking
def test_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys, stage):
    z = _local(tmp_path, _archive(10, 10))
    dest = tmp_path / "dest"
    _full_disk(monkeypatch, 1000 if stage == "copy" else z.stat().st_size + 5000)
    assert main(["fetch", "fracatlas", "--dest", str(dest), "--archive", str(z), "--quiet",
                 "--expected-images", "20"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "disk is full" in err
    assert _only_leftovers(dest) == [] and z.exists()


def test_full_disk_during_download_removes_the_part(tmp_path, monkeypatch):
    _full_disk(monkeypatch, 5000)
    with Server(_archive()) as s, pytest.raises(FetchError, match="partial download was removed"):
        _fetch(tmp_path, s.url)
    assert _only_leftovers(tmp_path) == []


def test_download_size_cap(tmp_path):
    body = _archive()
    with Server(body) as s, pytest.raises(FetchError, match="larger than the limit"):
        _fetch(tmp_path, s.url, max_bytes=len(body) - 1)
    assert _only_leftovers(tmp_path) == []
    with Hostile(_drip(b"x" * 1000, 5, 0.01)) as s, pytest.raises(FetchError, match="larger than the limit"):
        _fetch(tmp_path, s.url, max_bytes=50_000)          # Content-Length 100,000 says it up front


def _wrong_range(body: bytes, start: int):
    def answer(h):
        h.send_response(206)
        h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        h.send_header("Content-Length", str(len(body) - start))
        h.end_headers()
        h.wfile.write(body[start:])
        h.close_connection = True
    return answer


@pytest.mark.parametrize("start", [0, 10, 1500])
def test_content_range_not_at_the_resume_offset_restarts_cleanly(tmp_path, start):
    body = _archive()
    (tmp_path / "FracAtlas.zip.part").write_bytes(body[:1000])
    with Hostile(_wrong_range(body, start), _send(body)) as s:
        _fetch(tmp_path, s.url)
    assert (tmp_path / "FracAtlas.zip").read_bytes() == body and s.n == 2


def test_content_range_always_wrong_fails_in_one_line_without_appending(tmp_path):
    body = _archive()
    (tmp_path / "FracAtlas.zip.part").write_bytes(body[:1000])
    with Hostile(_wrong_range(body, 7)) as s, pytest.raises(FetchError, match="failed after") as e:
        _fetch(tmp_path, s.url, retries=2)
    assert "\n" not in str(e.value) and _only_leftovers(tmp_path) == []


_SEGMENT = st.sampled_from(["a", "b", "..", ".", "", "x" * 300, "C:", "\u00e9t\u00e9"])


@st.composite
def _archives(draw):
    n = draw(st.integers(0, 12))
    members, names = [], set()
    if draw(st.booleans()):
        names |= {"FracAtlas/images/Fractured/f.jpg", "FracAtlas/images/Non_fractured/n.jpg"}
        members += [(n_, b"jpeg", zipfile.ZIP_STORED) for n_ in sorted(names)]
    for _ in range(n):
        parts = draw(st.lists(_SEGMENT, min_size=1, max_size=4))
        name = ("/" if draw(st.booleans()) and draw(st.booleans()) else "FracAtlas/") + "/".join(parts)
        if name in names or any(n_.startswith(name + "/") or name.startswith(n_ + "/") for n_ in names):
            continue
        names.add(name)
        size = draw(st.sampled_from([0, 1, 100, 5000, 40_000]))
        data = draw(st.sampled_from([b"\0", b"ab", bytes(range(256))])) * (size // 2 + 1)
        members.append((name, data[:size], draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))))
    return members


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_archives())
def test_property_random_archives_unpack_fully_or_fail_in_one_line(monkeypatch, members):
    monkeypatch.setattr(fetch, "MAX_MEMBERS", 10)
    monkeypatch.setattr(fetch, "MAX_UNPACKED", 100_000)
    monkeypatch.setattr(fetch, "RATIO_FLOOR", 20_000)
    monkeypatch.setattr(fetch, "MAX_RATIO", 20)
    work = Path(tempfile.mkdtemp())
    try:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for name, data, comp in members:
                z.writestr(zipfile.ZipInfo(name), data, compress_type=comp)
        dest = work / "dest"
        try:
            root, _ = _unpack_into(work, buf.getvalue())
        except FetchError as e:
            assert "\n" not in str(e)
            assert _only_leftovers(dest) == []
            return
        total = sum(len(d) for _, d, _ in members)
        assert total <= fetch.MAX_UNPACKED and len(members) <= fetch.MAX_MEMBERS
        for name, data, _ in members:
            rel = "/".join(p for p in name.split("/")[1:] if p not in ("", "."))
            if not name.endswith("/"):
                assert (root / rel).read_bytes() == data
        assert sorted(p.name for p in dest.iterdir()) == ["FracAtlas", "FracAtlas.zip"]
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- links left in --dest are never written through (issue: fetch's own working files) ---

def test_working_copy_link_is_replaced_never_written_through(tmp_path, capsys):
    victim = tmp_path / "notes.txt"
    victim.write_text("the user's own notes")
    zipped = _local(tmp_path, _archive())
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "FracAtlas.zip").symlink_to(victim)
    assert main(["fetch", "fracatlas", "--dest", str(dest), "--archive", str(zipped),
                 "--expected-images", "7", "--quiet"]) == 0
    assert victim.read_text() == "the user's own notes"
    assert not (dest / "FracAtlas.zip").is_symlink() and zipfile.is_zipfile(dest / "FracAtlas.zip")
    assert "removed the link" in capsys.readouterr().err


def test_unpacked_folder_link_is_replaced_not_emptied(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "keep.txt").write_text("keep")
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "FracAtlas").symlink_to(theirs, target_is_directory=True)
    root = fetch_fracatlas(dest, archive=_local(tmp_path, _archive()), expected_images=7, progress=False)
    assert (theirs / "keep.txt").read_text() == "keep" and not root.is_symlink()


@pytest.mark.parametrize("resume", [False, True])
def test_part_file_link_is_never_appended_to(tmp_path, resume):
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"precious" if resume else b"")
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "FracAtlas.zip.part").symlink_to(victim)
    with Server(_archive()) as s:
        root = _fetch(dest, s.url)
    assert victim.read_bytes() == (b"precious" if resume else b"")
    assert (root / "images").is_dir() and not (dest / "FracAtlas.zip.part").exists()
