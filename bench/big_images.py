"""Very large and hostile images against the one decoding budget (config.DECODE_BUDGET_MB = 1 GB).
Each case runs in its own child process; its peak memory is the child's peak RSS (getrusage).

* `fracturelib scan` of four 10,000 x 10,000 RGB JPEGs (goal: peak < 1.5 GB);
* `fracturelib scan` of three 64 x 64 PNGs that each carry a 400 MB private chunk (sparse files);
* `predict` (binary CNN at 128 px + Grad-CAM + overlay) on one 100 Mpx JPEG and on a 1 Mpx one,
  warm (goal: 100 Mpx < 2 s, peak < 1.5 GB), and the ratio of the two times;
* the base: the same scan of two 1 Mpx images, and the predict child before the large image.

    .venv/bin/python bench/big_images.py
"""
from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("FRACTURELIB_OFFLINE", "1")

SIDE = 10_000


def big_jpeg(path: Path, w: int, h: int, seed: int = 0) -> Path:
    """A mostly flat RGB radiograph-like JPEG with gradients and a noisy band (cheap to encode)."""
    import cv2
    import numpy as np
    rng = np.random.default_rng(seed)
    col = np.linspace(40, 200, w, dtype=np.float32)
    a = np.empty((h, w, 3), np.uint8)
    a[:] = col.astype(np.uint8)[None, :, None]
    band = slice(h // 3, h // 3 + max(1, h // 50))
    a[band] = rng.integers(0, 256, a[band].shape, dtype=np.uint8)
    cv2.imwrite(str(path), a, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def png_with_private_chunk(path: Path, chunk_mb: int = 400) -> Path:
    """A 64 x 64 PNG with a ``chunk_mb`` MB private ancillary chunk before IDAT, written sparse."""
    import io

    from PIL import Image

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    buf = io.BytesIO()
    Image.new("L", (64, 64), 90).save(buf, "PNG")
    b = buf.getvalue()
    i = b.index(b"IDAT") - 4
    n = chunk_mb << 20
    with open(path, "wb") as f:
        f.write(b[:i] + struct.pack(">I", n) + b"prIv")
        f.seek(n, os.SEEK_CUR)                        # zeros, not written
        f.write(struct.pack(">I", zlib.crc32(b"prIv")) + b[i:])
    return path


def child_peak(cmd: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS MB of this child alone, stdout); the child reports its own peak."""
    code = ("import resource, runpy, sys; sys.argv = sys.argv[1:]\n"
            "try:\n    runpy.run_module(sys.argv[0], run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, check=True).stdout
    secs = time.perf_counter() - t
    peak = int(out.rsplit("PEAK_KB", 1)[1].split()[0]) / 1024
    return secs, peak, out


PREDICT_CHILD = r"""
import json, os, resource, sys, time
from fracturelib import config
from fracturelib.app.predict import Predictor
from fracturelib.models import cards, cnn
tmp, big, small, warm = sys.argv[1:5]
m = cnn.build_binary_cnn(128, 1)
path = cards.save_model(m, os.path.join(tmp, "bench.keras"), {"classes": list(config.BINARY_CLASSES),
                        "image_size": 128, "channels": 1, "preprocessing": "bench"})
p = Predictor(path)
for _ in range(2):
    p.predict(warm, overlay_dir=tmp)
def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = {"base_mb": rss()}
for name, img in (("small", small), ("big", big)):
    times = []
    for _ in range(3):
        t = time.perf_counter()
        r = p.predict(img, overlay_dir=tmp)
        times.append(time.perf_counter() - t)
    out[name + "_s"] = sorted(times)[1]
    out[name + "_peak_mb"] = rss()
    out[name + "_answer"] = r["class"]
print("RESULT", json.dumps(out))
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jpegs, one, pngs, single = tmp / "jpegs", tmp / "one", tmp / "pngs", tmp / "single"
        for d in (jpegs, one, pngs, single):
            d.mkdir()
        t = time.perf_counter()
        for k in range(4):
            big_jpeg(jpegs / f"big{k}.jpg", SIDE, SIDE, seed=k)
        big_jpeg(single / "big.jpg", SIDE, SIDE)
        big_jpeg(one / "mp1.jpg", 1000, 1000)
        big_jpeg(one / "mp1b.jpg", 1000, 1000, seed=5)
        big_jpeg(tmp / "warm.jpg", 1000, 1000, seed=9)
        for k in range(3):
            png_with_private_chunk(pngs / f"priv{k}.png")
        mb = (jpegs / "big0.jpg").stat().st_size / 1e6
        print(f"inputs made in {time.perf_counter() - t:.1f} s: 100 Mpx JPEG = {mb:.1f} MB on disk")

        scan = ["fracturelib.app.cli", "scan"]
        s, base, _ = child_peak([*scan, str(one), "--quiet"])
        print(f"scan, two 1 Mpx JPEGs (base):             {s:5.1f} s, peak RSS {base:6.0f} MB")
        s, peak, out = child_peak([*scan, str(jpegs), "--quiet"])
        used = next((ln for ln in out.splitlines() if "used" in ln.lower()), "").strip()
        print(f"scan, four 10000x10000 RGB JPEGs:         {s:5.1f} s, peak RSS {peak:6.0f} MB "
              f"(goal < 1500; {peak - base:+.0f} MB over base)  [{used}]")
        s, peak, out = child_peak([*scan, str(pngs), "--quiet"])
        used = next((ln for ln in out.splitlines() if "used" in ln.lower()), "").strip()
        print(f"scan, three 64x64 PNGs + 400 MB chunk:    {s:5.1f} s, peak RSS {peak:6.0f} MB "
              f"({peak - base:+.0f} MB over base)  [{used}]")

        r = subprocess.run([sys.executable, "-c", PREDICT_CHILD, str(tmp), str(single / "big.jpg"),
                            str(one / "mp1.jpg"), str(tmp / "warm.jpg")],
                           capture_output=True, text=True, check=True)
        res = json.loads(r.stdout.rsplit("RESULT", 1)[1])
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"predict (CNN 128 px + Grad-CAM + overlay), warm, median of 3; child base {res['base_mb']:.0f} MB:")
        print(f"  1 Mpx JPEG:   {res['small_s']:6.2f} s, peak RSS {res['small_peak_mb']:6.0f} MB")
        print(f"  100 Mpx JPEG: {res['big_s']:6.2f} s, peak RSS {res['big_peak_mb']:6.0f} MB "
              f"(goal < 2 s, < 1500 MB; largest child {peak:.0f} MB)")
        print(f"  time ratio 100 Mpx / 1 Mpx: {res['big_s'] / res['small_s']:.1f}x (pixels: 100x)")


if __name__ == "__main__":
    main()
