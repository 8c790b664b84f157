"""`fracturelib serve` under load: 8 concurrent clients x 25 requests each to ``POST /api/predict`` on
loopback (FracAtlas radiographs). Prints failed requests (must be 0), p50/p95 latency, throughput and
the server's resident memory after warm-up vs after the run. Bounded: every request has a timeout,
the whole run a deadline, and the server (a child process) is stopped at the end.

    .venv/bin/python bench/serve.py [--models models] [--clients 8] [--requests 25]

Without ``--models`` it serves ``models/`` when ``make reports`` has written it, else a tiny untrained
binary CNN (no radiograph detector), which measures the server rather than the model.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    """Resident memory of a process (MB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tiny_models(folder: Path) -> Path:
    """A 64 px binary CNN with its card: the server's own cost, not a real model's."""
    from fracturelib import config
    from fracturelib.models import cards, cnn
    cards.save_model(cnn.build_binary_cnn(64, 1), folder / "binary_cnn.keras",
                     {"task": "binary", "classes": list(config.BINARY_CLASSES), "image_size": 64, "channels": 1,
                      "preprocessing": "bench", "threshold": 0.5})
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=None)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=25, help="per client")
    ap.add_argument("--deadline", type=float, default=900, help="seconds for the whole run")
    a = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import httpx

    from fracturelib import config
    tmp = tempfile.TemporaryDirectory(prefix="bench-serve-")
    models = a.models
    if models is None:
        have = config.MODELS_DIR.is_dir() and any(config.MODELS_DIR.glob("*.keras"))
        models = str(config.MODELS_DIR) if have else str(tiny_models(Path(tmp.name)))
    images = sorted((config.DEFAULT_FRACATLAS / "images" / "Fractured").glob("*.jpg"))[:20]
    payloads = [(p.name, p.read_bytes()) for p in images]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "TF_CPP_MIN_LOG_LEVEL": "2"}
    server = subprocess.Popen([sys.executable, "-m", "fracturelib.app.cli", "serve", "--models", models,
                               "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    start = time.monotonic()
    try:
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() - start > 180:
                print("the server did not start", file=sys.stderr)
                return 1
            time.sleep(0.5)
        print(f"serving {models} (pid {server.pid}) after {time.monotonic() - start:.1f} s")
        with httpx.Client(timeout=120) as c:
            for name, data in payloads[:3]:                    # warm-up: the model loads, first graphs trace
                c.post(url + "/api/predict", files={"file": (name, data)}).raise_for_status()
        warm = rss_mb(server.pid)
        latencies, failures, lock = [], [], threading.Lock()
        deadline = time.monotonic() + a.deadline

        def client(k: int) -> None:
            with httpx.Client(timeout=120) as c:
                for i in range(a.requests):
                    if time.monotonic() > deadline:
                        with lock:
                            failures.append("deadline")
                        return
                    name, data = payloads[(k * a.requests + i) % len(payloads)]
                    t = time.perf_counter()
                    try:
                        r = c.post(url + "/api/predict", files={"file": (name, data)})
                        ok = r.status_code == 200 and "class" in r.json()
                        why = f"{r.status_code} {r.text[:200]}"
                    except httpx.HTTPError as e:
                        ok, why = False, f"{type(e).__name__}: {e}"
                    with lock:
                        (latencies.append(time.perf_counter() - t) if ok else failures.append(why))

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        after = rss_mb(server.pid)
        healthy = httpx.get(url + "/healthz", timeout=10).status_code == 200
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        tmp.cleanup()
    lat = np.array(latencies) * 1000
    total = a.clients * a.requests
    print(f"{a.clients} clients x {a.requests} requests = {total} on loopback in {wall:.1f} s "
          f"({len(lat) / wall:.1f} req/s)")
    print(f"failed requests: {len(failures)}" + (f" (first: {failures[0]})" if failures else ""))
    if len(lat):
        print(f"latency p50 {np.percentile(lat, 50):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms, "
              f"max {lat.max():.0f} ms")
    print(f"server resident memory: {warm:.0f} MB after warm-up, {after:.0f} MB after the run "
          f"({after - warm:+.0f} MB); still answering: {healthy}")
    return 0 if not failures and healthy else 1


if __name__ == "__main__":
    sys.exit(main())
