"""Benchmark: uploads and +health while the upstream hangs, and a large cache fill on a
slow link (issue #11), against real Apache in cache mode.

Prints figures; asserts nothing. Needs root. Run with the venv's python:
``python tests/benchmarks/bench_faults.py [MB]``.

1. A cache fill of a 200 MB file from the loopback upstream throttled to 2 MB/s.
2. Upload latency (median of 20 real multipart POSTs through Apache's basic auth) and
   +health latency (median of 20), first with a healthy upstream, then while 32 clients
   keep requests to uncached projects hanging on a blackholed upstream (each client asks
   again as soon as it is answered). Target: hanging / healthy <= 1.5.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apache_server import USERS, Deployment, deployed  # noqa: E402
from distfactory import wheel_bytes, wheel_name  # noqa: E402
from fake_upstream import FakeUpstream, running_upstream  # noqa: E402
from uploads import twine_fields  # noqa: E402

HANGING = 32
SAMPLES = 20


def request(d: Deployment, method: str, path: str, body: bytes = b"",
            headers: dict[str, str] | None = None, timeout: float = 60
            ) -> tuple[int, bytes, float]:
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=timeout)
    started = time.perf_counter()
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data, time.perf_counter() - started
    finally:
        conn.close()


def upload(d: Deployment, version: str) -> float:
    filename = wheel_name("secret-bench", version)
    data = wheel_bytes("secret-bench", version)
    boundary = "benchboundary7d1f"
    parts = [(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n')
             .encode() for k, v in twine_fields(filename, data)]
    body = b"".join(parts) + (
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    auth = base64.b64encode(f"alice:{USERS['alice']}".encode()).decode()
    status, text, seconds = request(d, "POST", "/pypi/dev/", body, {
        "Authorization": f"Basic {auth}",
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    if status != 200:
        raise RuntimeError(f"upload answered {status}: {text[:200]!r}")
    return seconds


def health(d: Deployment) -> float:
    status, _, seconds = request(d, "GET", "/pypi/+health")
    if status != 200:
        raise RuntimeError(f"+health answered {status}")
    return seconds


def measure(d: Deployment, label: str, first: int) -> tuple[float, float]:
    ups = [upload(d, f"{first + i}.0") for i in range(SAMPLES)]
    hs = [health(d) for _ in range(SAMPLES)]
    u, h = statistics.median(ups), statistics.median(hs)
    print(f"  {label:<34} upload median {u * 1000:7.1f} ms (max {max(ups) * 1000:7.1f}), "
          f"+health median {h * 1000:6.1f} ms (max {max(hs) * 1000:6.1f})")
    return u, h


def hanging_clients(d: Deployment, stop: threading.Event, answers: list[int]) -> list[
        threading.Thread]:
    def client(i: int) -> None:
        for k in range(10_000):  # bounded; stops when told
            if stop.is_set():
                return
            try:
                status, _, _ = request(d, "GET", f"/pypi/+upstream/hang-{i}-{k}/", timeout=120)
                answers.append(status)
            except OSError:
                answers.append(0)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(HANGING)]
    for t in threads:
        t.start()
    return threads


def latency_under_hang(up: FakeUpstream, d: Deployment) -> None:
    print(f"Uploads and +health, {SAMPLES} each, healthy upstream vs {HANGING} requests "
          "hanging on a blackholed upstream:")
    upload(d, "0.1")  # the project exists: later uploads are new versions of it
    health(d)
    u0, h0 = measure(d, "healthy upstream", 1)
    up.fault = "hang"
    stop, answers = threading.Event(), []
    threads = hanging_clients(d, stop, answers)
    time.sleep(2)
    u1, h1 = measure(d, f"{HANGING} requests hanging upstream", 100)
    stop.set()
    up.release()
    for t in threads:
        t.join(timeout=60)
    up.fault, up.released = None, threading.Event()
    counts = {s: answers.count(s) for s in sorted(set(answers))}
    print(f"  hanging requests answered meanwhile: {counts}")
    print(f"  ratio hanging / healthy: upload {u1 / u0:.2f}, +health {h1 / h0:.2f} "
          "(target <= 1.5)")


def slow_fill(up: FakeUpstream, d: Deployment, megabytes: int) -> None:
    name = wheel_name("huge-wheel", "1.0")
    data = b"PK" + os.urandom(megabytes * 1024 * 1024 - 2)
    up.add("huge-wheel", name, data)
    status, _, _ = request(d, "GET", "/pypi/+upstream/huge-wheel/")
    if status != 200:
        raise RuntimeError(f"listing answered {status}")
    up.fault, up.rate = "throttle", 2 * 1024 * 1024
    status, body, seconds = request(d, "GET", f"/pypi/+upstream/huge-wheel/{name}",
                                    timeout=megabytes * 2)
    up.fault = None
    ok = status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    cached = d.settings.root / "+upstream" / "huge-wheel" / name
    print(f"Cache fill of a {megabytes} MB file from an upstream throttled to 2 MB/s: "
          f"status {status}, {seconds:.1f} s ({len(body) / seconds / 1024 / 1024:.2f} MB/s), "
          f"bytes {'match' if ok else 'DIFFER'}, cached on disk: {cached.exists()}")


def main() -> None:
    megabytes = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with running_upstream() as up, \
            deployed(up, '[policy]\nprivate = ["secret-*"]\n', mode="cache") as d:
        config = d.settings.source
        # a realistic timeout (a hanging upstream holds each request longer), room for the
        # large file (the app reads its config on its first request)
        config.write_text(config.read_text().replace("timeout = 2\n", "timeout = 10\n")
                          .replace("max_upload_mb = 2\n", "max_upload_mb = 300\n"))
        slow_fill(up, d, megabytes)
        latency_under_hang(up, d)


if __name__ == "__main__":
    main()
