"""Item 32: a slow or hostile upstream cannot hold the app (the client against the fake
upstream's slow faults)."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from distfactory import wheel_bytes, wheel_name
from fake_upstream import FakeUpstream, running_upstream
from pypi_fallback.errors import UpstreamBusy, UpstreamError, UpstreamTimeout
from pypi_fallback.upstream import Upstream

BIG = wheel_name("big", "1.0")


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with running_upstream() as up:
        up.add("acme", wheel_name("acme", "1.0"), wheel_bytes("acme", "1.0"))
        up.add("big", BIG, b"PK" + bytes(1_500_000))
        yield up
        up.release()


def test_headers_one_byte_a_second_meet_the_total_deadline(upstream: FakeUpstream) -> None:
    upstream.fault = "slow-headers"
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        Upstream(upstream.simple_url, 1).fetch_listing("acme")  # total deadline: 3 s
    assert time.monotonic() - started < 4.5


def test_a_large_file_on_a_slow_link_still_arrives(upstream: FakeUpstream) -> None:
    """1.5 MB at 300 KB/s: 5 s, longer than any fixed total the timeout would give."""
    client = Upstream(upstream.simple_url, 1)
    (entry,) = client.fetch_listing("big").files
    upstream.fault, upstream.rate = "throttle", 300 * 1024
    out = io.BytesIO()
    started = time.monotonic()
    assert client.fetch_file(entry, out, 10**8) == (entry.sha256, 1_500_002)
    assert time.monotonic() - started > 4
    assert out.getvalue() == upstream.files["big"][BIG]


def test_a_stalled_file_fails_on_the_minimum_rate(upstream: FakeUpstream) -> None:
    client = Upstream(upstream.simple_url, 2)
    (entry,) = client.fetch_listing("big").files
    upstream.fault = "drip"  # one byte a second: never a read timeout, always too slow
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="too slow"):
        client.fetch_file(entry, io.BytesIO(), 10**8)
    assert time.monotonic() - started < 9  # a window of 6 s


def test_failures_are_remembered_briefly(upstream: FakeUpstream) -> None:
    client = Upstream(upstream.simple_url, 0.5, negative_ttl=1.5)
    upstream.fault = "blackhole"
    with pytest.raises(UpstreamTimeout):
        client.fetch_listing("acme")
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="not asked again"):
        client.fetch_listing("other")  # the same host: not waited for again
    assert time.monotonic() - started < 0.2
    upstream.fault = None
    time.sleep(1.6)
    assert client.fetch_listing("acme").found  # asked again after the short memory


def test_concurrent_upstream_work_is_bounded(upstream: FakeUpstream) -> None:
    client = Upstream(upstream.simple_url, 5, max_concurrent=2)
    upstream.fault = "hang"
    errors: list[Exception] = []

    def fetch() -> None:
        try:
            client.fetch_listing("acme")
        except UpstreamError as exc:
            errors.append(exc)

    hanging = [threading.Thread(target=fetch) for _ in range(2)]
    for t in hanging:
        t.start()
    time.sleep(0.3)
    started = time.monotonic()
    with pytest.raises(UpstreamBusy):
        client.fetch_listing("acme")
    assert time.monotonic() - started < 1
    upstream.release()
    for t in hanging:
        t.join(timeout=10)
    upstream.fault, upstream.released = None, threading.Event()
    client.negative_ttl = 0
    assert client.fetch_listing("acme").found  # slots given back


def test_connections_are_kept_alive_and_replaced_when_closed(upstream: FakeUpstream) -> None:
    client = Upstream(upstream.simple_url, timeout=2)
    for _ in range(5):
        listing = client.fetch_listing("acme")
        assert listing.found
        data = io.BytesIO()
        client.fetch_file(listing.files[0], data, 10**8)
        assert client.fetch_listing("nothing-here").found is False  # a 404 keeps it too
        # a file far larger than what is drained is read to its end: kept as well
        big = client.fetch_listing("big").files[0]
        client.fetch_file(big, data, 10**8)
    assert client.connections == 1
    # the upstream goes away and comes back on another connection: a pooled connection it
    # closed is replaced without an error
    for conns in client._idle.values():
        for _, conn in conns:
            assert conn.sock is not None
            conn.sock.shutdown(socket.SHUT_RDWR)
    assert client.fetch_listing("acme").found
    assert client.connections == 2
    client.close()


def test_requests_start_no_thread_each(upstream: FakeUpstream) -> None:
    """Each request's deadline is kept by one thread per process, started once (a new
    thread a request made each wait for it to start: milliseconds on a busy machine)."""
    client = Upstream(upstream.simple_url, timeout=2)
    client.fetch_listing("acme")
    started = [0]
    real_start = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        if "process_request" not in self.name:  # the fake upstream's own
            started[0] += 1
        real_start(self)

    threading.Thread.start = counting_start  # type: ignore[method-assign]
    try:
        for _ in range(20):
            listing = client.fetch_listing("acme")
            client.fetch_file(listing.files[0], io.BytesIO(), 10**8)
    finally:
        threading.Thread.start = real_start  # type: ignore[method-assign]
    assert started[0] == 0
    assert [t.name for t in threading.enumerate()].count("pypi-fallback-deadlines") == 1
    client.close()


def test_files_wait_for_a_slot_while_listings_are_refused(upstream: FakeUpstream) -> None:
    client = Upstream(upstream.simple_url, timeout=2, max_concurrent=1)
    entry = client.fetch_listing("acme").files[0]
    held = client.get(upstream.simple_url + "acme/")  # the only slot
    threading.Timer(1.0, held.close).start()
    with pytest.raises(UpstreamBusy):
        client.fetch_listing("acme")
    started = time.monotonic()
    data = io.BytesIO()
    client.fetch_file(entry, data, 10**8)  # waited for the slot, then streamed
    assert 0.5 < time.monotonic() - started < 5 and data.getvalue()
