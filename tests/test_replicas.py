"""One primary and two read replicas, all real Apache on 127.0.0.1: the replicas are the
drop-in that ``regen-rules --replica-of`` writes (mod_proxy + mod_cache_disk), driven by
real pip, uv and twine."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from apache_server import USERS, Deployment, deployed
from clients import PIP_ACCEPT, pip_install, raw_get, twine_upload, uv_install
from distfactory import wheel_bytes, wheel_name, write_wheel
from fake_upstream import FakeUpstream, running_upstream
from replica_server import Replica, replica_of, stop_primary
from uploads import twine_fields

pytestmark = pytest.mark.apache

MAX_AGE = 2  # server.listing_max_age of the primary: small, so that tests stay short
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with running_upstream() as up:
        up.add("public-lib", wheel_name("public-lib", "3.0"), wheel_bytes("public-lib", "3.0"))
        yield up


@pytest.fixture(scope="module")
def primary(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Deployment]:
    """stable holds acme-lib (only there: dev falls back to it)."""
    with deployed(upstream, server_config=f"listing_max_age = {MAX_AGE}\n") as d:
        wheel = write_wheel(tmp_path_factory.mktemp("dist"), "acme-lib", "1.0")
        result = twine_upload(d.url("stable"), "carol", USERS["carol"], wheel)
        assert result.returncode == 0, result.stdout + result.stderr + d.error_log()
        yield d


@pytest.fixture(scope="module")
def replicas(primary: Deployment) -> Iterator[tuple[Replica, Replica]]:
    """one: the drop-in inside a <VirtualHost> (regen-rules --vhost), as on Debian, whose
    000-default.conf is one; two: the drop-in server-wide, in an Apache without any."""
    with replica_of(primary, vhost=True) as one, replica_of(primary) as two:
        yield one, two


def installed(target: Path) -> list[str]:
    return sorted(p.name for p in target.iterdir() if p.name.endswith(".dist-info"))


def primary_requests(primary: Deployment, path: str) -> int:
    """How many GET/HEAD requests for exactly ``path`` reached the primary."""
    log = (primary.home / "access.log").read_text()
    return len(re.findall(rf'"(?:GET|HEAD) {re.escape(path)} HTTP/1\.1"', log))


@pytest.mark.parametrize(("spec", "expected"), [
    ("acme-lib", "acme_lib-1.0.dist-info"),      # only stable has it: dev's chain
    ("public-lib", "public_lib-3.0.dist-info"),  # nobody local has it: the upstream
])
@pytest.mark.parametrize("client", ["pip", "uv"])
def test_install_through_a_replica(primary: Deployment, replicas: tuple[Replica, Replica],
                                   tmp_path: Path, client: str, spec: str,
                                   expected: str) -> None:
    install = pip_install if client == "pip" else uv_install
    for replica in replicas:
        result = install(replica.url("dev"), tmp_path / str(replica.port), spec)
        assert result.returncode == 0, result.stdout + result.stderr + replica.error_log()
        assert installed(tmp_path / str(replica.port)) == [expected]


def test_redirects_to_the_primary_point_at_the_replica(primary: Deployment,
                                                       replicas: tuple[Replica, Replica]
                                                       ) -> None:
    one, _ = replicas
    status, headers, _ = raw_get(one.url("dev") + "acme-lib/", headers={"Accept": PIP_ACCEPT})
    assert status == 302 and headers["Location"] == one.url("stable") + "acme-lib/"
    status, headers, _ = raw_get(one.url("dev") + "Acme_Lib/", headers={"Accept": PIP_ACCEPT})
    assert status == 301 and headers["Location"] == one.url("dev") + "acme-lib/"
    # the upstream's own address is left as it is
    status, headers, _ = raw_get(one.url("dev") + "public-lib/", headers={"Accept": PIP_ACCEPT})
    assert status == 302
    assert headers["Location"] == primary.upstream.simple_url + "public-lib/"


def test_json_and_html_are_cached_apart(primary: Deployment,
                                        replicas: tuple[Replica, Replica],
                                        tmp_path: Path) -> None:
    _, two = replicas
    wheel = write_wheel(tmp_path, "acme-web", "1.0")
    result = twine_upload(primary.url("stable"), "carol", USERS["carol"], wheel)
    assert result.returncode == 0, result.stdout + result.stderr
    path = "/pypi/stable/acme-web/"
    answers = [raw_get(two.origin + path, headers={"Accept": accept})
               for accept in (PIP_ACCEPT, BROWSER, PIP_ACCEPT, BROWSER)]
    types = [headers["Content-Type"] for _, headers, _ in answers]
    assert types == ["application/vnd.pypi.simple.v1+json", "text/html"] * 2
    assert answers[0][2].startswith(b"{") and b"<html" in answers[1][2].lower()
    assert answers[2][2] == answers[0][2] and answers[3][2] == answers[1][2]
    assert [h["X-Cache"].split()[0] for _, h, _ in answers[2:]] == ["HIT", "HIT"]
    # one request per variant reached the primary (at most one more if the listing's
    # max-age ran out in between)
    assert primary_requests(primary, path) in (2, 3)


def test_an_upload_through_one_replica_is_installable_from_the_other(
        primary: Deployment, replicas: tuple[Replica, Replica], tmp_path: Path) -> None:
    one, two = replicas
    # the other replica has the project page cached already (as the upstream's redirect)
    status, _, _ = raw_get(two.url("dev") + "acme-new/", headers={"Accept": PIP_ACCEPT})
    assert status == 302
    wheel = write_wheel(tmp_path / "dist", "acme-new", "1.0")
    result = twine_upload(one.url("dev"), "alice", USERS["alice"], wheel)
    assert result.returncode == 0, result.stdout + result.stderr + one.error_log()
    uploaded = time.monotonic()
    assert (primary.settings.root / "dev" / "acme-new" / wheel.name).read_bytes() == \
        wheel.read_bytes()
    # visible on the other replica within the listing's max-age (plus a little slack)
    while True:
        status, _, _ = raw_get(two.url("dev") + "acme-new/", headers={"Accept": PIP_ACCEPT})
        if status == 200 or time.monotonic() - uploaded > MAX_AGE + 2:
            break
        time.sleep(0.1)
    assert status == 200, f"not visible after {time.monotonic() - uploaded:.1f} s"
    result = pip_install(two.url("dev"), tmp_path / "target", "acme-new")
    assert result.returncode == 0, result.stdout + result.stderr + two.error_log()
    assert installed(tmp_path / "target") == ["acme_new-1.0.dist-info"]


def burst(url: str, count: int = 20) -> list[tuple[int, str]]:
    """``count`` GETs of ``url`` at once: each answer's status and body's sha256."""
    answers: list[tuple[int, str]] = []
    start = threading.Barrier(count)

    def fetch() -> None:
        start.wait(timeout=30)
        status, _, body = raw_get(url)
        answers.append((status, hashlib.sha256(body).hexdigest()))

    threads = [threading.Thread(target=fetch) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


@pytest.mark.parametrize("suffix", ["", ".metadata"])
def test_a_burst_for_a_cold_file_makes_one_request_to_the_primary(
        primary: Deployment, replicas: tuple[Replica, Replica], tmp_path: Path,
        suffix: str) -> None:
    one, _ = replicas
    project = f"acme-big{len(suffix)}"
    wheel = write_wheel(tmp_path, project, "1.0", payload=b"#" * 1024 * 1024)
    result = twine_upload(primary.url("stable"), "carol", USERS["carol"], wheel)
    assert result.returncode == 0, result.stdout + result.stderr
    name = wheel.name + suffix
    path = f"/pypi/stable/{project}/{name}"
    on_primary = (primary.settings.root / "stable" / project / name).read_bytes()
    assert burst(one.origin + path) == [(200, hashlib.sha256(on_primary).hexdigest())] * 20
    assert primary_requests(primary, path) == 1
    # from now on the replica answers alone, from its folder of files, with the primary's
    # caching headers
    assert (one.files / "stable" / project / name).read_bytes() == on_primary
    status, headers, body = raw_get(one.origin + path)
    assert status == 200 and headers.get_all("X-Cache") == ["HIT"] and body == on_primary
    assert primary_requests(primary, path) == 1
    _, at_primary, _ = raw_get(primary.origin + path)
    for header in ("Cache-Control", "Content-Type", "Last-Modified",
                   "X-Content-Type-Options"):
        assert headers[header] == at_primary[header], header
    assert "immutable" in headers["Cache-Control"] and "Content-Encoding" not in headers
    assert "Vary" not in headers
    # nothing but the file is left in its folder (no temporary file, no lock)
    assert os.listdir(one.files / "stable" / project) == [name]


def test_a_files_redirect_or_404_is_passed_through_and_never_kept(
        primary: Deployment, replicas: tuple[Replica, Replica], tmp_path: Path) -> None:
    one, _ = replicas
    wheel = wheel_name("acme-lib", "1.0")
    # dev lacks acme-lib: the primary's fallback redirect, pointing at the replica
    for attempt in (1, 2):
        status, headers, _ = raw_get(one.url("dev") + f"acme-lib/{wheel}")
        assert status == 302 and headers["X-Cache"] == "MISS"
        assert headers["Location"] == one.url("stable") + f"acme-lib/{wheel}"
        assert primary_requests(primary, f"/pypi/dev/acme-lib/{wheel}") == attempt
    # a file nobody has: the primary's 404
    missing = wheel_name("acme-lib", "9.9")
    status, _, _ = raw_get(one.url("stable") + f"acme-lib/{missing}")
    assert status == 404
    # a HEAD of a cold file: the primary's answer, the file not fetched
    cold = wheel_name("acme-head", "1.0")
    result = twine_upload(primary.url("stable"), "carol", USERS["carol"],
                          write_wheel(tmp_path, "acme-head", "1.0"))
    assert result.returncode == 0, result.stdout + result.stderr
    status, headers, body = raw_get(one.url("stable") + f"acme-head/{cold}", method="HEAD")
    assert status == 200 and body == b"" and "immutable" in headers["Cache-Control"]
    assert not (one.files / "dev").exists()
    assert not (one.files / "stable" / "acme-lib" / missing).exists()
    assert not (one.files / "stable" / "acme-head").exists()
    # the fill's own URL answers only what the replica's rules send it
    status, _, _ = raw_get(one.origin + f"/pypi/+replica-fill/stable/acme-head/{cold}")
    assert status == 403


def test_with_the_primary_down_replicas_serve_what_they_have(upstream: FakeUpstream,
                                                              tmp_path: Path) -> None:
    with deployed(upstream, server_config=f"listing_max_age = {MAX_AGE}\n") as primary, \
            replica_of(primary) as one, replica_of(primary) as two:
        wheel = write_wheel(tmp_path / "dist", "acme-lib", "1.0")
        result = twine_upload(primary.url("stable"), "carol", USERS["carol"], wheel)
        assert result.returncode == 0, result.stdout + result.stderr
        for replica in (one, two):
            for name, client in (("pip", pip_install), ("uv", uv_install)):
                warm = client(replica.url("dev"), tmp_path / f"warm-{replica.port}-{name}",
                              "acme-lib")
                assert warm.returncode == 0, warm.stdout + warm.stderr
        stop_primary(primary)
        time.sleep(MAX_AGE + 0.5)  # every listing is stale now
        for replica in (one, two):
            for name, client in (("pip", pip_install), ("uv", uv_install)):
                target = tmp_path / f"{replica.port}-{name}"
                result = client(replica.url("dev"), target, "acme-lib")
                assert result.returncode == 0, result.stdout + result.stderr
                assert installed(target) == ["acme_lib-1.0.dist-info"]
            # an upload fails at once, with a 5xx, and leaves nothing cached behind
            data = wheel_bytes("acme-lib", "1.1")
            name = wheel_name("acme-lib", "1.1")
            began = time.monotonic()
            answer = requests.post(replica.url("stable"), data=twine_fields(name, data),
                                   files={"content": (name, data)},
                                   auth=("carol", USERS["carol"]), timeout=30)
            assert 500 <= answer.status_code < 600
            assert time.monotonic() - began < 10
            # something never asked for: a clean 5xx too, a page or a file
            status, _, _ = raw_get(replica.url("dev") + "never-asked/")
            assert 500 <= status < 600
            began = time.monotonic()
            status, headers, _ = raw_get(replica.url("stable") + f"acme-lib/{name}")
            assert status == 503 and headers["Cache-Control"] == "no-store"
            assert time.monotonic() - began < 10
            assert not (replica.files / "stable" / "acme-lib" / name).exists()


class FakePrimary:
    """A primary that misbehaves on demand: serves ``/pypi/stable/fake/<file>`` from
    ``files``, cutting the body at ``cut`` bytes when set, with ``cache_control``; records
    each request's path and Authorization."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: int | None = None
        self.pause = 0.0  # seconds between the body's two halves
        self.cache_control = "public, max-age=31536000, immutable"
        self.requests: list[tuple[str, str | None]] = []


@pytest.fixture
def fake_primary() -> Iterator[tuple[FakePrimary, str]]:
    with serving_fake_primary() as served:
        yield served


@contextmanager
def serving_fake_primary(tls: ssl.SSLContext | None = None
                         ) -> Iterator[tuple[FakePrimary, str]]:
    """A FakePrimary on a loopback port, over TLS with ``tls``; it and its URL."""
    fake = FakePrimary()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            fake.requests.append((self.path, self.headers.get("Authorization")))
            data = fake.files.get(self.path.rsplit("/", 1)[-1])
            if data is None or not self.path.startswith(("/pypi/stable/fake/",
                                                         "/pypi/+upstream/fake/")):
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", fake.cache_control)
            self.send_header("Connection", "close")
            self.end_headers()
            body = data if fake.cut is None else data[:fake.cut]
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            time.sleep(fake.pause)
            self.wfile.write(body[len(body) // 2:])
            self.wfile.flush()
            self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        scheme = "https" if tls else "http"
        yield fake, f"{scheme}://127.0.0.1:{server.server_address[1]}/pypi/"
    finally:
        server.shutdown()
        server.server_close()


def fake_get(replica: Replica, name: str, **kw: Any) -> tuple[int, bytes | None]:
    """Status and body of a GET through the replica; None for a body that ended short."""
    try:
        status, _, body = raw_get(replica.url("stable") + f"fake/{name}", **kw)
    except http.client.IncompleteRead:
        return 200, None
    return status, body


def test_a_short_body_from_the_primary_is_never_kept(
        fake_primary: tuple[FakePrimary, str]) -> None:
    fake, url = fake_primary
    data = wheel_bytes("fake", "1.0", payload=os.urandom(512 * 1024))
    name = wheel_name("fake", "1.0")
    fake.files[name] = data
    fake.cut = len(data) // 2
    with replica_of(url) as replica:
        # the client's transfer ends short too: it never looks complete
        assert fake_get(replica, name) == (200, None)
        assert not (replica.files / "stable" / "fake" / name).exists()
        assert [n for n in os.listdir(replica.files / "stable" / "fake")] == []
        fake.cut = None
        assert fake_get(replica, name) == (200, data)
        assert (replica.files / "stable" / "fake" / name).read_bytes() == data
        assert fake_get(replica, name) == (200, data)
        assert len(fake.requests) == 2


def test_a_private_answer_is_asked_with_the_clients_credentials_and_never_kept(
        fake_primary: tuple[FakePrimary, str]) -> None:
    fake, url = fake_primary
    data = wheel_bytes("fake", "2.0")
    name = wheel_name("fake", "2.0")
    fake.files[name] = data
    fake.cache_control = "private, max-age=31536000, immutable"
    with replica_of(url) as replica:
        auth = {"Authorization": "Basic Y2Fyb2w6c2VjcmV0"}
        for _ in range(2):
            assert fake_get(replica, name, headers=auth) == (200, data)
        assert fake.requests == [(f"/pypi/stable/fake/{name}", auth["Authorization"])] * 2
        assert not (replica.files / "stable").exists()


def test_a_folder_that_cannot_take_a_file_still_lets_it_through(
        fake_primary: tuple[FakePrimary, str]) -> None:
    fake, url = fake_primary
    data = wheel_bytes("fake", "3.0")
    name = wheel_name("fake", "3.0")
    fake.files[name] = data
    with replica_of(url) as replica:
        # a folder the replica may not write in (as a full disk would refuse the file)
        (replica.files / "stable").mkdir(mode=0o555)
        for count in (1, 2):
            assert fake_get(replica, name) == (200, data)
            assert len(fake.requests) == count
        assert os.listdir(replica.files / "stable") == []
        assert f"cannot keep {replica.files / 'stable' / 'fake' / name}" in \
            replica.error_log()


def test_waiters_get_the_file_when_the_first_client_goes_away(
        fake_primary: tuple[FakePrimary, str]) -> None:
    fake, url = fake_primary
    data = wheel_bytes("fake", "4.0", payload=os.urandom(4 * 1024 * 1024))
    name = wheel_name("fake", "4.0")
    fake.files[name] = data
    fake.pause = 1.5
    with replica_of(url) as replica:
        first = http.client.HTTPConnection("127.0.0.1", replica.port, timeout=30)
        first.request("GET", f"/pypi/stable/fake/{name}")
        answer = first.getresponse()
        assert answer.status == 200 and answer.read(1024) == data[:1024]
        answers: list[tuple[int, bytes | None]] = []
        waiters = [threading.Thread(target=lambda: answers.append(fake_get(replica, name)))
                   for _ in range(5)]
        for waiter in waiters:
            waiter.start()
        time.sleep(0.3)
        first.close()  # the first client goes away in the middle of the file
        for waiter in waiters:
            waiter.join(timeout=60)
        assert answers == [(200, data)] * 5
        # the download went on to the end on its own
        assert len(fake.requests) == 1
        assert (replica.files / "stable" / "fake" / name).read_bytes() == data
        assert os.listdir(replica.files / "stable" / "fake") == [name]


def test_a_slow_client_holds_back_neither_the_others_nor_the_download(
        fake_primary: tuple[FakePrimary, str]) -> None:
    """The file comes at the primary's pace: a first client that stops reading gets it
    when it reads again, and the others get it whole meanwhile, from one request."""
    fake, url = fake_primary
    data = wheel_bytes("fake", "5.0", payload=os.urandom(8 * 1024 * 1024))
    name = wheel_name("fake", "5.0")
    fake.files[name] = data
    fake.pause = 0.5
    with replica_of(url) as replica:
        slow = http.client.HTTPConnection("127.0.0.1", replica.port, timeout=60)
        slow.request("GET", f"/pypi/stable/fake/{name}")
        answer = slow.getresponse()
        assert answer.status == 200 and answer.read(1024) == data[:1024]
        # it reads no more; the others come meanwhile
        began = time.monotonic()
        answers: list[tuple[int, bytes | None]] = []
        others = [threading.Thread(target=lambda: answers.append(fake_get(replica, name)))
                  for _ in range(5)]
        for other in others:
            other.start()
        for other in others:
            other.join(timeout=60)
        assert answers == [(200, data)] * 5
        assert time.monotonic() - began < 30
        assert (replica.files / "stable" / "fake" / name).read_bytes() == data
        assert len(fake.requests) == 1
        # the slow client gets the rest, whole
        assert data[:1024] + answer.read() == data
        slow.close()
        assert len(fake.requests) == 1
        assert os.listdir(replica.files / "stable" / "fake") == [name]


def test_the_clients_streaming_a_file_another_started_are_bounded(
        fake_primary: tuple[FakePrimary, str]) -> None:
    fake, url = fake_primary
    data = wheel_bytes("fake", "6.0", payload=os.urandom(1024 * 1024))
    name = wheel_name("fake", "6.0")
    fake.files[name] = data
    fake.pause = 3
    file_url = f"/pypi/stable/fake/{name}"

    def at_most_two(text: str) -> str:
        assert 'PYPI_FALLBACK_REPLICA_MAX_WAITERS "24"' in text
        return text.replace('PYPI_FALLBACK_REPLICA_MAX_WAITERS "24"',
                            'PYPI_FALLBACK_REPLICA_MAX_WAITERS "2"')

    with replica_of(url, edit=at_most_two) as replica:
        answers: list[tuple[int, str | None, bytes]] = []

        def get() -> None:
            status, headers, body = raw_get(replica.origin + file_url)
            answers.append((status, headers["Retry-After"], body))

        first = threading.Thread(target=get)
        first.start()
        time.sleep(1)  # its download is under way (half the file, then a pause)
        others = [threading.Thread(target=get) for _ in range(4)]
        for thread in others:
            thread.start()
        for thread in [first, *others]:
            thread.join(timeout=60)
        assert sorted(a[:2] for a in answers) == [(200, None)] * 3 + [(503, "5")] * 2
        assert [a[2] for a in answers if a[0] == 200] == [data] * 3
        assert len(fake.requests) == 1


def test_a_primary_that_stops_sending_is_given_up_on_after_the_read_timeout(
        fake_primary: tuple[FakePrimary, str]) -> None:
    fake, url = fake_primary
    data = wheel_bytes("fake", "7.0", payload=os.urandom(256 * 1024))
    name = wheel_name("fake", "7.0")
    fake.files[name] = data
    fake.pause = 8

    def two_seconds(text: str) -> str:
        assert 'PYPI_FALLBACK_REPLICA_READ_TIMEOUT "60"' in text
        return text.replace('PYPI_FALLBACK_REPLICA_READ_TIMEOUT "60"',
                            'PYPI_FALLBACK_REPLICA_READ_TIMEOUT "2"')

    with replica_of(url, edit=two_seconds) as replica:
        began = time.monotonic()
        # the transfer ends short, never looking complete (had the fill waited, the whole
        # file would have come after 8 s); the client sees the end when Apache closes the
        # connection (KeepAliveTimeout, 5 s)
        assert fake_get(replica, name) == (200, None)
        assert time.monotonic() - began < 12
        assert f"cannot keep {replica.files / 'stable' / 'fake' / name}: timed out" in \
            replica.error_log()
        assert not (replica.files / "stable" / "fake" / name).exists()


def test_cache_modes_upstream_files_are_filled_once(
        fake_primary: tuple[FakePrimary, str]) -> None:
    fake, url = fake_primary
    data = wheel_bytes("fake", "8.0", payload=os.urandom(1024 * 1024))
    name = wheel_name("fake", "8.0")
    fake.files[name] = data
    fake.pause = 0.5
    with replica_of(url) as replica:
        path = f"/pypi/+upstream/fake/{name}"
        assert burst(replica.origin + path, 10) == \
            [(200, hashlib.sha256(data).hexdigest())] * 10
        assert fake.requests == [(path, None)]
        assert (replica.files / "+upstream" / "fake" / name).read_bytes() == data
        # "+" written %2B: the same file, from the folder
        status, headers, body = raw_get(replica.origin + path.replace("+", "%2B"))
        assert (status, headers.get_all("X-Cache"), body) == (200, ["HIT"], data)
        assert len(fake.requests) == 1


def test_odd_requests_for_files(fake_primary: tuple[FakePrimary, str]) -> None:
    fake, url = fake_primary
    data = wheel_bytes("fake", "9.0")
    name = wheel_name("fake", "9.0")
    fake.files[name] = data
    with replica_of(url) as replica:
        # absolute form (a proxy's way of asking): the file, cold then from the folder
        absolute = f"{replica.origin}/pypi/stable/fake/{name}"
        for x_cache in ("MISS", "HIT"):
            status, headers, body = raw_get(replica.origin, path=absolute)
            assert (status, headers.get_all("X-Cache"), body) == (200, [x_cache], data)
        assert len(fake.requests) == 1
        # a name longer than a file system takes: 404, as the primary answers
        status, _, _ = raw_get(replica.url("stable") + "fake/" + "a" * 300 + ".whl")
        assert status == 404
        assert "Traceback" not in replica.error_log()


def make_ca_and_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A CA of our own and a certificate it signed for 127.0.0.1: ca, cert, key."""
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.pem", "server.key",
                                                       "server.csr", "server.pem"))
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n")
    for command in (
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
             "-days", "2", "-subj", "/CN=pypi-fallback test CA"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
             "-subj", "/CN=127.0.0.1"],
            ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", "2", "-extfile", ext]):
        done = subprocess.run(["openssl", *map(str, command)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    for path in (ca, cert):
        path.chmod(0o644)
    return ca, cert, key


def test_an_https_primary_is_asked_with_its_certificate_checked(tmp_path: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="pf-tls-", dir="/var/tmp"))
    try:
        folder.chmod(0o755)
        ca, cert, key = make_ca_and_certificate(folder)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
        with serving_fake_primary(tls) as (fake, url):
            data = wheel_bytes("fake", "10.0")
            name = wheel_name("fake", "10.0")
            fake.files[name] = data
            # the CA that signed it: files through the fill, the rest through mod_proxy
            with replica_of(url, vhost=True, options=["--ca-file", str(ca)]) as replica:
                assert fake_get(replica, name) == (200, data)
                assert (replica.files / "stable" / "fake" / name).read_bytes() == data
                status, _, _ = raw_get(replica.url("stable") + "fake/")
                assert status == 404  # the primary's own answer, over TLS
                assert len(fake.requests) == 2
            # the system's CAs, which never signed it: nothing is asked, nothing kept
            with replica_of(url, vhost=True) as replica:
                status, _, _ = raw_get(replica.url("stable") + f"fake/{name}")
                assert status == 503
                status, _, _ = raw_get(replica.url("stable") + "fake/")
                assert 500 <= status < 600
                assert "certificate verify failed" in replica.error_log()
                assert not (replica.files / "stable" / "fake" / name).exists()
                assert len(fake.requests) == 2
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def readme_block(first_line: str) -> str:
    """The README's ``sh`` block that starts with ``first_line``."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = [b for b in re.findall(r"```sh\n(.*?)```", text, re.S)
              if b.startswith(first_line)]
    assert len(blocks) == 1, f"{len(blocks)} blocks start with {first_line!r}"
    return blocks[0]


def test_the_readmes_purge_takes_a_file_and_its_listings_away_from_a_replica(
        primary: Deployment) -> None:
    wheel = wheel_name("acme-lib", "1.0")
    script = readme_block("# on every replica, after `remove`")
    assert script.count(wheel) == 2 and "/pypi/stable/acme-lib/" in script
    with replica_of(primary) as replica:
        listing = replica.url("stable") + "acme-lib/"
        for url in (listing + wheel, listing + wheel + ".metadata"):
            assert raw_get(url)[0] == 200
        for accept in (PIP_ACCEPT, BROWSER):
            for x_cache in ("MISS", "HIT"):
                status, headers, _ = raw_get(listing, headers={"Accept": accept})
                assert status == 200 and headers["X-Cache"].startswith(x_cache)
        folder = replica.files / "stable" / "acme-lib"
        assert sorted(os.listdir(folder)) == [wheel, wheel + ".metadata"]
        done = subprocess.run(
            script.replace("/var/cache/pypi-fallback/replica", str(replica.files))
            .replace("/var/cache/apache2/mod_cache_disk", str(replica.home / "cache")),
            shell=True, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert os.listdir(folder) == []
        # the listings are asked of the primary again, each variant
        for accept in (PIP_ACCEPT, BROWSER):
            status, headers, _ = raw_get(listing, headers={"Accept": accept})
            assert status == 200 and headers["X-Cache"].startswith("MISS"), headers
