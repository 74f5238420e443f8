"""The upstream client against a fake upstream on 127.0.0.1 that fails in every usual way."""

from __future__ import annotations

import hashlib
import io
import socket
import time
from collections.abc import Iterator

import pytest
from distfactory import wheel_bytes, wheel_name
from fake_upstream import FakeUpstream, running_upstream
from pypi_fallback.upstream import (
    Upstream,
    UpstreamError,
    UpstreamTimeout,
    parse_html_listing,
    parse_json_listing,
)

PAGE = "https://up.example/simple/acme/"
SHA = "a" * 64


def test_json_and_html_give_the_same_records() -> None:
    html = (f'<a href="../../files/acme-1.0.tar.gz#sha256={SHA}" '
            'data-requires-python="&gt;=3.8" data-yanked="bad">acme-1.0.tar.gz</a>'
            f'<a href="https://files.example/acme-1.0-py3-none-any.whl#sha256={SHA}" '
            f'data-core-metadata="sha256={SHA}">acme-1.0-py3-none-any.whl</a>').encode()
    json_body = (
        '{"meta": {"api-version": "1.1"}, "name": "acme", "files": ['
        f'{{"filename": "acme-1.0.tar.gz", "url": "../../files/acme-1.0.tar.gz", '
        f'"hashes": {{"sha256": "{SHA}"}}, "requires-python": ">=3.8", "yanked": "bad"}},'
        '{"filename": "acme-1.0-py3-none-any.whl", '
        '"url": "https://files.example/acme-1.0-py3-none-any.whl", '
        f'"hashes": {{"sha256": "{SHA}"}}, "core-metadata": {{"sha256": "{SHA}"}}}}]}}'
    ).encode()
    from_html = parse_html_listing("acme", html, PAGE)
    from_json = parse_json_listing("acme", json_body, PAGE)
    assert from_html == from_json
    sdist, wheel = from_json
    assert sdist.url == "https://up.example/files/acme-1.0.tar.gz"
    assert sdist.yanked == "bad" and sdist.requires_python == ">=3.8" and sdist.sha256 == SHA
    assert wheel.metadata_sha256 == SHA and wheel.version == "1.0"


@pytest.mark.parametrize(
    "href",
    ["../../files/other-1.0.tar.gz",            # another project's file
     "javascript:alert(1)//acme-1.0.tar.gz",    # not http(s)
     "https://user@evil.example/acme-1.0.tar.gz",
     "../../files/..%2Facme-1.0.tar.gz/..",
     "../../files/acme-1.0.exe"],
)
def test_unsafe_or_foreign_entries_are_dropped(href: str) -> None:
    assert parse_html_listing("acme", f'<a href="{href}">x</a>'.encode(), PAGE) == []


@pytest.mark.parametrize("body", [b'{"files": [oops', b'{"files": 3}', b"[]"])
def test_malformed_json_is_an_error(body: bytes) -> None:
    with pytest.raises(UpstreamError, match="Malformed JSON listing"):
        parse_json_listing("acme", body, PAGE)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with running_upstream() as up:
        data = wheel_bytes("acme", "1.0")
        up.add("acme", wheel_name("acme", "1.0"), data)
        yield up


def client(up: FakeUpstream, timeout: float = 1.0) -> Upstream:
    return Upstream(up.simple_url, timeout)


@pytest.mark.parametrize("use_json", [True, False])
def test_fetch_listing_and_file(upstream: FakeUpstream, use_json: bool) -> None:
    upstream.json = use_json
    listing = client(upstream).fetch_listing("acme")
    assert listing.found
    (entry,) = listing.files
    data = upstream.files["acme"][entry.filename]
    assert entry.sha256 == hashlib.sha256(data).hexdigest()
    assert entry.url == f"{upstream.base}/files/{entry.filename}"
    out = io.BytesIO()
    assert client(upstream).fetch_file(entry, out, 10**8) == (entry.sha256, len(data))
    assert out.getvalue() == data


def test_unknown_project_is_not_found(upstream: FakeUpstream) -> None:
    listing = client(upstream).fetch_listing("nope")
    assert not listing.found and listing.files == ()


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        ("blackhole", UpstreamTimeout, "timed out"),
        ("503", UpstreamError, "answered 503"),
        ("drip", UpstreamTimeout, "too slow|timed out"),
        ("truncated", UpstreamError, "truncated"),
        ("gzip", UpstreamError, "Content-Encoding 'gzip'"),
        ("redirect-loop", UpstreamError, "redirected more than"),
        ("huge", UpstreamError, "too large"),
        ("malformed-html", UpstreamError, "Malformed HTML"),
        ("malformed-json", UpstreamError, "Malformed JSON"),
        ("other-project", UpstreamError, "to another project"),
    ],
)
def test_listing_faults_fail_clearly_and_in_time(upstream: FakeUpstream, fault: str,
                                                 error: type[Exception], message: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import pypi_fallback.upstream as module

    monkeypatch.setattr(module, "MAX_LISTING_BYTES", 1024 * 1024)
    upstream.fault = fault
    if fault == "malformed-html":
        upstream.json = False
    started = time.monotonic()
    with pytest.raises(error, match=message):
        client(upstream).fetch_listing("acme")
    assert time.monotonic() - started < 5  # connect/read timeout 1 s, total 3 s


@pytest.mark.parametrize("fault", ["wrong-bytes", "truncated", "gzip", "503"])
def test_file_faults_are_refused(upstream: FakeUpstream, fault: str) -> None:
    (entry,) = client(upstream).fetch_listing("acme").files
    upstream.fault = fault
    with pytest.raises(UpstreamError):
        client(upstream).fetch_file(entry, io.BytesIO(), 10**8)


def test_refused_connection_fails_at_once() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="unreachable"):
        Upstream(f"http://127.0.0.1:{port}/simple/", 1).fetch_listing("acme")
    assert time.monotonic() - started < 2


def test_conditional_refresh(upstream: FakeUpstream) -> None:
    first = client(upstream).fetch_listing("acme")
    assert first.etag
    again = client(upstream).fetch_listing("acme", first)
    assert upstream.not_modified == 1  # the upstream answered 304 to the ETag
    assert again.files == first.files and again.fetched >= first.fetched
    assert again.etag == first.etag
    # a change upstream: a new ETag, a full answer with the new file
    upstream.add("acme", "acme-9.0.tar.gz", b"new")
    changed = client(upstream).fetch_listing("acme", again)
    assert upstream.not_modified == 1
    assert "acme-9.0.tar.gz" in {f.filename for f in changed.files} and changed.etag != first.etag
