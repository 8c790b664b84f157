"""Multi-device training (issue 12): the same model and training code inside a mirrored strategy
on two logical CPU devices, and inside a multi-worker strategy with two worker processes on
127.0.0.1 (TF_CONFIG), each in fresh processes because devices are fixed when TensorFlow starts."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fracturelib.models import distribute

WORKER = str(Path(__file__).with_name("distribute_worker.py"))
ROOT = str(Path(__file__).parents[2])


def _run(args, env=None, timeout=240):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.Popen([sys.executable, WORKER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _result(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_names_and_auto_without_devices_or_cluster(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.resolve("auto") == "none"            # one CPU, no cluster
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert distribute.resolve("auto") == "multiworker"
    with pytest.raises(ValueError, match="choose one of auto, mirrored, multiworker, none"):
        distribute.resolve("tpu")
    monkeypatch.delenv("TF_CONFIG")
    s = distribute.make_strategy("auto")
    assert distribute.global_batch(32, s) == 32 and "1 replica(s) on the default device" in distribute.describe(s)


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_trains_with_a_doubled_batch():
    r = _result(_run(["mirrored", "2"]))
    assert r["kind"] == "MirroredStrategy" and r["replicas"] == 2 and r["batch"] == 16
    assert r["loss"][-1] < r["loss"][0] and r["accuracy"] >= 0.9
    single = _result(_run(["none", "1"]))
    assert single["replicas"] == 1 and single["batch"] == 8


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_multiworker_with_two_processes_on_loopback_stays_in_sync():
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = [_run(["multiworker", "1"], env={"TF_CONFIG": json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})}) for i in range(2)]
    results = [_result(p) for p in procs]
    assert all(r["kind"] in ("MultiWorkerMirroredStrategy", "CollectiveAllReduceStrategy")  # its class
               and r["replicas"] == 2 for r in results)
    assert results[0]["checksum"] == pytest.approx(results[1]["checksum"], rel=1e-6)   # one model
    assert results[0]["loss"][-1] < results[0]["loss"][0]
