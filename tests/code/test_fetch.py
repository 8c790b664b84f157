"""`fracturelib fetch` against a local HTTP server on 127.0.0.1 (no internet in tests)."""
import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fracturelib.cli import main
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


class Server:
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

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


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
