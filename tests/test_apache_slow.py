"""Integration, item 33: slow clients against real Apache (mod_reqtimeout set up by
``write_httpd_conf``, as ``scripts/serve`` runs it)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apache_server import USERS, Deployment, deployed
from clients import raw_get
from distfactory import wheel_bytes, wheel_name
from fake_upstream import running_upstream
from uploads import twine_fields

pytestmark = pytest.mark.apache
SLOW_CONNECTIONS = 450  # more than Apache's 400 workers (event MPM defaults)


@pytest.fixture(scope="module")
def site() -> Iterator[Deployment]:
    with running_upstream() as up, deployed(up) as d:
        yield d


def test_slow_connections_do_not_stop_normal_reads(site: Deployment) -> None:
    """450 clients sending their headers a few bytes a second: a normal read still answers
    (they are cut off after 10 s), where without request read timeouts it waited."""
    socks = []
    try:
        for _ in range(SLOW_CONNECTIONS):
            s = socket.create_connection(("127.0.0.1", site.port), timeout=5)
            s.sendall(b"GET /pypi/dev/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            s.setblocking(False)
            socks.append(s)
        answer: list[tuple[int, float]] = []

        def normal_read() -> None:
            started = time.monotonic()
            status, _, _ = raw_get(site.url("dev"))
            answer.append((status, time.monotonic() - started))

        reader = threading.Thread(target=normal_read)
        reader.start()
        cut_off = 0
        deadline = time.monotonic() + 40
        while reader.is_alive() and time.monotonic() < deadline:  # drip, 8 bytes a second
            for s in socks:
                if s.fileno() < 0:
                    continue
                try:
                    s.send(b"X-Slow: 1\r\n")
                except OSError:
                    s.close()
                    cut_off += 1
            reader.join(timeout=1)
        reader.join(timeout=5)
        assert answer and answer[0][0] == 200, answer
        assert answer[0][1] < 25, answer
    finally:
        for s in socks:
            s.close()


def test_slow_upload_at_a_steady_pace_finishes(site: Deployment) -> None:
    """A body that keeps coming at 1 KB/s takes longer than the 20 s a body gets at first,
    and still finishes: the read timeout is a minimum rate, not a fixed total."""
    import base64
    import os

    name = wheel_name("slow-pkg", "1.0")
    data = wheel_bytes("slow-pkg", "1.0", payload=b"# " + os.urandom(26_000))
    boundary = "slowboundary0123456789"
    body = b""
    for key, value in twine_fields(name, data):
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{key}\"\r\n\r\n"
                 f"{value}\r\n").encode()
    body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"content\"; "
             f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    body += data + f"\r\n--{boundary}--\r\n".encode()
    assert len(body) > 25_000
    auth = base64.b64encode(f"alice:{USERS['alice']}".encode()).decode()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", site.port), timeout=30) as s:
        s.sendall((f"POST /pypi/dev/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   f"Authorization: Basic {auth}\r\nConnection: close\r\n"
                   f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode())
        for i in range(0, len(body), 1000):  # 1000 bytes a second
            s.sendall(body[i:i + 1000])
            time.sleep(1)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert time.monotonic() - started > 20
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    assert (site.settings.root / "dev" / "slow-pkg" / name).read_bytes() == data


def test_symlinks_planted_in_the_tree_are_not_followed(site: Deployment) -> None:
    """A folder or a file that is a symlink (here to /etc) is refused, even before
    regen-index quarantines it."""
    root = site.settings.root
    (root / "stable").mkdir(exist_ok=True)
    os.symlink("/etc", root / "stable" / "etcproj")
    folder = root / "dev" / "linked"
    folder.mkdir(parents=True)
    os.symlink("/etc/passwd", folder / "linked-1.0.tar.gz")
    os.symlink("/etc/passwd", folder / "index.html")
    (folder / "sub").mkdir()  # deeper down: a folder in a project folder
    os.symlink("/etc/passwd", folder / "sub" / "passwd")
    published = root / "dev" / "published"  # a project with real listings …
    published.mkdir()
    for name in ("index.v1_json", "index.var"):
        (published / name).write_bytes((root / "dev" / name).read_bytes())
    os.symlink("/etc/passwd", published / "index.html")  # … but a planted index.html
    passwd = Path("/etc/passwd").read_bytes()
    for path, accept in [("/pypi/stable/etcproj/passwd", "*/*"),
                         ("/pypi/stable/etcproj/", "text/html"),
                         ("/pypi/dev/linked/linked-1.0.tar.gz", "*/*"),
                         ("/pypi/dev/linked/index.html", "*/*"),
                         ("/pypi/dev/linked/sub/passwd", "*/*"),
                         ("/pypi/dev/linked/", "text/html"),
                         ("/pypi/dev/published/", "text/html"),
                         ("/pypi/dev/published/", "application/vnd.pypi.simple.v1+html"),
                         ("/pypi/dev/published/index.html", "*/*")]:
        status, _, body = raw_get(site.origin, path, headers={"Accept": accept})
        assert passwd not in body and b"root:" not in body, (path, accept)
        assert status != 200 or body.startswith(b"{"), (path, accept, status)


def test_a_hostile_upstream_cannot_hold_uploads_or_health(tmp_path: Path) -> None:
    """Item 32 against real Apache in cache mode: 24 requests held by an upstream that
    sends its headers one byte a second; an upload and +health still answer at once."""
    from clients import twine_upload
    from distfactory import write_wheel

    with running_upstream() as up, deployed(up, '[policy]\nprivate = ["secret-*"]\n',
                                            mode="cache") as d:
        for i in range(24):
            up.add(f"slow-{i}", wheel_name(f"slow-{i}", "1.0"), wheel_bytes(f"slow-{i}", "1.0"))
        up.fault = "slow-headers"
        statuses: list[int] = []

        def uncached(i: int) -> None:
            statuses.append(raw_get(d.origin, f"/pypi/+upstream/slow-{i}/")[0])

        threads = [threading.Thread(target=uncached, args=(i,)) for i in range(24)]
        for t in threads:
            t.start()
        time.sleep(1)
        started = time.monotonic()
        status, _, body = raw_get(d.origin, "/pypi/+health")
        assert status == 200 and time.monotonic() - started < 2, body
        wheel = write_wheel(tmp_path, "secret-thing", "1.0")
        started = time.monotonic()
        result = twine_upload(d.url("dev"), "alice", USERS["alice"], wheel)
        assert result.returncode == 0, result.stdout + result.stderr + d.error_log()
        assert time.monotonic() - started < 8  # twine itself takes a few seconds
        for t in threads:
            t.join(timeout=30)
        assert len(statuses) == 24 and set(statuses) <= {502, 503, 504}, statuses
        up.release()


def test_slow_anonymous_posts_do_not_block_uploads(site: Deployment, tmp_path: Path) -> None:
    """20 anonymous POSTs to +health whose bodies come 10 bytes a second: an upload and a
    +health GET still answer at once."""
    from clients import twine_upload
    from distfactory import write_wheel

    assert raw_get(site.origin, "/pypi/+health", method="POST")[0] == 403
    socks = []
    try:
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", site.port), timeout=5)
            s.sendall(b"POST /pypi/+health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n")
            socks.append(s)
        stop = threading.Event()

        def drip() -> None:
            for _ in range(30):  # 30 s at most
                for s in socks:
                    with contextlib.suppress(OSError):
                        s.send(b"x" * 10)
                if stop.wait(1):
                    return

        dripper = threading.Thread(target=drip)
        dripper.start()
        time.sleep(1)
        started = time.monotonic()
        assert raw_get(site.origin, "/pypi/+health")[0] == 200
        assert time.monotonic() - started < 2
        wheel = write_wheel(tmp_path, "steady-pkg", "1.0")
        started = time.monotonic()
        result = twine_upload(site.url("dev"), "alice", USERS["alice"], wheel)
        assert result.returncode == 0, result.stdout + result.stderr
        assert time.monotonic() - started < 8
        stop.set()
        dripper.join(timeout=5)
    finally:
        for s in socks:
            s.close()
