"""Integration, fallback.mode = "cache": real Apache, real pip and uv, a fake upstream that
goes away; the local copy keeps installs working."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import pytest
from apache_server import USERS, Deployment, deployed
from clients import basic, pip_install, raw_get, uv_install
from distfactory import wheel_bytes, wheel_name
from fake_upstream import running_upstream
from helpers import concurrent_gets

pytestmark = pytest.mark.apache
PACKAGES = [f"pkg-{c}" for c in "abcde"]


@contextlib.contextmanager
def cache_deployment() -> Iterator[Deployment]:
    with running_upstream() as up:
        for name in [*PACKAGES, "lazy-pkg", "bad-bytes", "busy-pkg"]:
            up.add(name, wheel_name(name, "1.0"), wheel_bytes(name, "1.0",
                                                              payload=b"#" * 50_000))
        with deployed(up, '[policy]\nprivate = ["secret-*"]\n', mode="cache") as d:
            yield d


@pytest.fixture(scope="module")
def shared_site() -> Iterator[Deployment]:
    """One Apache for the tests that each use projects of their own."""
    with cache_deployment() as d:
        yield d


@pytest.fixture
def cache_site(shared_site: Deployment) -> Iterator[Deployment]:
    """The shared site, its upstream's faults and rate put back after each test."""
    up = shared_site.upstream
    rate = up.rate
    yield shared_site
    up.fault, up.rate = None, rate


@pytest.fixture
def fresh_cache_site() -> Iterator[Deployment]:
    """A site of its own: for a test that stops the upstream or makes the app remember an
    unreachable upstream."""
    with cache_deployment() as d:
        yield d


def kept(path: Path) -> bool:
    """Whether a fetched file is kept: it is published just after its client got its last
    byte (in the background), so give it a moment."""
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.exists()


def installed(target: Path) -> list[str]:
    return sorted(p.name for p in target.iterdir() if p.name.endswith(".dist-info"))


def test_installs_keep_working_when_the_upstream_is_gone(fresh_cache_site: Deployment,
                                                         tmp_path: Path) -> None:
    expected = [f"{p.replace('-', '_')}-1.0.dist-info" for p in PACKAGES]
    first = pip_install(fresh_cache_site.url("dev"), tmp_path / "first", *PACKAGES)
    assert first.returncode == 0, first.stdout + first.stderr + fresh_cache_site.error_log()
    assert installed(tmp_path / "first") == expected
    cached = fresh_cache_site.settings.root / "+upstream"
    for name in PACKAGES:
        assert kept(cached / name / wheel_name(name, "1.0"))
        assert (cached / name / "index.v1_json").exists()

    fresh_cache_site.upstream.stop()
    for client, install in (("pip", pip_install), ("uv", uv_install)):
        again = install(fresh_cache_site.url("dev"), tmp_path / client, *PACKAGES)
        assert again.returncode == 0, again.stdout + again.stderr + fresh_cache_site.error_log()
        assert installed(tmp_path / client) == expected


JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


def test_cache_mode_listing_links_through_this_server(cache_site: Deployment) -> None:
    """A project no local repo holds: the +upstream page is the repo's answer, in place (no
    round trip back to the client), at the same depth, so that its links hold there too."""
    url = cache_site.url("dev") + "lazy-pkg/"
    status, headers, body = raw_get(url, headers=JSON)  # cold: the app fills it
    assert status == 200, body
    assert headers["Content-Type"] == "application/vnd.pypi.simple.v1+json"
    assert headers["ETag"] and headers["Last-Modified"] and "accept" in headers["Vary"].lower()
    assert headers["Cache-Control"] == cache_site.settings.listing_cache_control
    link = "../../+upstream/lazy-pkg/lazy_pkg-1.0-py3-none-any.whl"
    assert f'"url":"{link}"'.encode() in body
    assert str(cache_site.upstream.base).encode() not in body
    assert raw_get(cache_site.origin + "/pypi/+upstream/lazy-pkg/", headers=JSON)[2] == body
    status, headers, html = raw_get(url, headers={"Accept": "text/html"})  # warm: from disk
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert f'href="{link}'.encode() in html
    # the file link, resolved against the repo's URL, is the cached file
    status, _, wheel = raw_get(urljoin(url, link))
    assert status == 200
    assert wheel == cache_site.upstream.files["lazy-pkg"][wheel_name("lazy-pkg", "1.0")]
    assert sum(p.startswith("/simple/lazy-pkg/") for p in cache_site.upstream.requests) == 1
    # without the slash: a redirect to the page (relative links need the slash)
    status, headers, _ = raw_get(cache_site.url("dev") + "lazy-pkg")
    assert status == 302
    assert headers["Location"] == cache_site.origin + "/pypi/+upstream/lazy-pkg/"
    status, headers, _ = raw_get(cache_site.url("dev") + "no-such-pkg/", headers=JSON)
    assert status == 404 and headers["Cache-Control"] == "no-store"


def test_a_repo_with_readers_redirects_to_the_public_page(tmp_path: Path) -> None:
    """The +upstream page is public: a repository with readers redirects to it (its answer
    is private) instead of answering with it."""
    repos = ('[repos.dev]\nwriters = ["developers"]\nreaders = ["developers"]\n'
             'fallback = ["stable", "upstream"]\n\n'
             '[repos.stable]\nwriters = ["qc"]\nfallback = ["upstream"]\n')
    with running_upstream() as up:
        up.add("open-pkg", wheel_name("open-pkg", "1.0"), wheel_bytes("open-pkg", "1.0"))
        with deployed(up, mode="cache", repos=repos, server_config="pages = false\n") as site:
            status, headers, _ = raw_get(site.url("dev") + "open-pkg/",
                                         headers={**JSON, **basic("alice", USERS["alice"])})
            assert status == 302, site.error_log()
            assert headers["Location"] == site.origin + "/pypi/+upstream/open-pkg/"
            assert "private" in headers["Cache-Control"]
            assert raw_get(site.url("dev") + "open-pkg/", headers=JSON)[0] == 401
            status, _, body = raw_get(site.url("stable") + "open-pkg/", headers=JSON)
            assert status == 200 and b'"name":"open-pkg"' in body


def test_one_download_per_file_under_concurrent_requests(cache_site: Deployment) -> None:
    raw_get(cache_site.origin + "/pypi/+upstream/busy-pkg/")
    name = wheel_name("busy-pkg", "1.0")
    cache_site.upstream.requests.clear()
    results = concurrent_gets(cache_site.origin + f"/pypi/+upstream/busy-pkg/{name}", 8)
    expected = cache_site.upstream.files["busy-pkg"][name]
    assert results == [(200, expected)] * 8
    assert [p for p in cache_site.upstream.requests if p.endswith(name)] == [f"/files/{name}"]


def test_a_cold_file_streams_while_it_downloads(cache_site: Deployment, tmp_path: Path) -> None:
    """The first byte reaches the client long before the upstream's transfer ends; pip
    installs it and the file is cached."""
    up = cache_site.upstream
    up.add("slow-pkg", wheel_name("slow-pkg", "1.0"),
           wheel_bytes("slow-pkg", "1.0", payload=os.urandom(600_000)))
    name = wheel_name("slow-pkg", "1.0")
    size = len(up.files["slow-pkg"][name])
    raw_get(cache_site.origin + "/pypi/+upstream/slow-pkg/")
    up.fault, up.rate = "throttle", size // 3  # about 3 s for the whole file
    conn = http.client.HTTPConnection("127.0.0.1", cache_site.port, timeout=30)
    started = time.monotonic()
    conn.request("GET", f"/pypi/+upstream/slow-pkg/{name}")
    resp = conn.getresponse()
    first = resp.read(1)
    first_byte = time.monotonic() - started
    rest = resp.read()
    total = time.monotonic() - started
    conn.close()
    assert resp.status == 200 and first + rest == up.files["slow-pkg"][name]
    assert resp.headers["Content-Length"] == str(size)
    assert first_byte < 1.5 and total > 2.5, (first_byte, total)
    assert kept(cache_site.settings.root / "+upstream" / "slow-pkg" / name)
    up.fault = None
    again = pip_install(cache_site.url("dev"), tmp_path / "t", "slow-pkg")
    assert again.returncode == 0, again.stdout + again.stderr + cache_site.error_log()


def test_wrong_bytes_from_upstream_fail_pip_and_are_not_published(cache_site: Deployment,
                                                                   tmp_path: Path) -> None:
    up = cache_site.upstream
    up.add("bad-bytes", wheel_name("bad-bytes", "2.0"),
           wheel_bytes("bad-bytes", "2.0", payload=os.urandom(2_000_000)))
    raw_get(cache_site.origin + "/pypi/+upstream/bad-bytes/")
    name, big = wheel_name("bad-bytes", "1.0"), wheel_name("bad-bytes", "2.0")
    up.fault = "wrong-bytes"
    # a file that arrives in one piece is checked before the answer: 502
    status, _, body = raw_get(cache_site.origin + f"/pypi/+upstream/bad-bytes/{name}")
    assert status == 502 and b"sha256 differs" in body
    # a streamed one ends short: never a complete-looking wrong file
    up.fault, up.rate = "throttle-wrong-bytes", 1_000_000
    conn = http.client.HTTPConnection("127.0.0.1", cache_site.port, timeout=30)
    conn.request("GET", f"/pypi/+upstream/bad-bytes/{big}")
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    conn.close()
    result = pip_install(cache_site.url("dev"), tmp_path / "t", "bad-bytes")
    assert result.returncode != 0
    folder = cache_site.settings.root / "+upstream" / "bad-bytes"
    assert not (folder / name).exists() and not (folder / big).exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    up.fault = None
    result = pip_install(cache_site.url("dev"), tmp_path / "t2", "bad-bytes")
    assert result.returncode == 0, result.stdout + result.stderr + cache_site.error_log()
    assert kept(folder / big)


@pytest.mark.parametrize(("fault", "status"), [("blackhole", 504), ("503", 502)])
def test_uncached_project_with_upstream_down_fails_in_time(fresh_cache_site: Deployment,
                                                           fault: str, status: int) -> None:
    fresh_cache_site.upstream.fault = fault
    started = time.monotonic()
    got, _, _ = raw_get(fresh_cache_site.origin + "/pypi/+upstream/pkg-a/")
    assert got == status
    assert time.monotonic() - started < 3 * fresh_cache_site.settings.upstream_timeout + 2


def test_claimed_and_private_names_never_reach_the_upstream(cache_site: Deployment) -> None:
    cache_site.upstream.add("secret-x", wheel_name("secret-x", "1.0"),
                            wheel_bytes("secret-x", "1.0"))
    cache_site.upstream.requests.clear()
    for path in ("/pypi/dev/secret-x/", "/pypi/+upstream/secret-x/",
                 f"/pypi/+upstream/secret-x/{wheel_name('secret-x', '1.0')}"):
        status, headers, _ = raw_get(cache_site.origin, path)
        assert status == 404, path
    # the app's internal route, asked directly: refused by the drop-in
    status, _, _ = raw_get(cache_site.origin, "/pypi/+app/+cache/secret-x/")
    assert status == 403
    assert cache_site.upstream.requests == []


def test_core_metadata_is_fetched_on_demand_verified_and_kept(cache_site: Deployment,
                                                               tmp_path: Path) -> None:
    up = cache_site.upstream
    name = wheel_name("meta-pkg", "1.0")
    up.add("meta-pkg", name, wheel_bytes("meta-pkg", "1.0"), with_metadata=True)
    up.add("meta-bad", wheel_name("meta-bad", "1.0"), wheel_bytes("meta-bad", "1.0"),
           with_metadata=True)
    expected = up.metadata[name]
    status, _, body = raw_get(cache_site.origin + "/pypi/+upstream/meta-pkg/",
                              headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    assert status == 200
    entry = json.loads(body)["files"][0]
    assert entry["core-metadata"] == {"sha256": hashlib.sha256(expected).hexdigest()}
    status, headers, body = raw_get(cache_site.origin + f"/pypi/+upstream/meta-pkg/{name}"
                                    ".metadata")
    assert status == 200 and body == expected
    assert headers["Content-Type"] == "application/octet-stream"
    on_disk = cache_site.settings.root / "+upstream" / "meta-pkg" / f"{name}.metadata"
    assert on_disk.read_bytes() == expected
    assert not (on_disk.parent / name).exists()  # the metadata alone, not the wheel
    up.requests.clear()
    status, headers, body = raw_get(cache_site.origin + f"/pypi/+upstream/meta-pkg/{name}"
                                    ".metadata")
    assert status == 200 and body == expected and "ETag" in headers  # Apache, from disk
    assert up.requests == []
    # metadata that does not match the listing's hash is refused and not kept
    raw_get(cache_site.origin + "/pypi/+upstream/meta-bad/")
    up.fault = "wrong-bytes"
    bad = wheel_name("meta-bad", "1.0") + ".metadata"
    status, _, body = raw_get(cache_site.origin + f"/pypi/+upstream/meta-bad/{bad}")
    assert status == 502 and b"sha256 differs" in body
    assert not (cache_site.settings.root / "+upstream" / "meta-bad" / bad).exists()
    up.fault = None
    result = pip_install(cache_site.url("dev"), tmp_path / "t", "meta-pkg")
    assert result.returncode == 0, result.stdout + result.stderr + cache_site.error_log()


def test_concurrent_requests_for_a_streaming_cold_file_cause_one_download(
        cache_site: Deployment) -> None:
    up = cache_site.upstream
    name = wheel_name("shared-pkg", "1.0")
    up.add("shared-pkg", name, wheel_bytes("shared-pkg", "1.0", payload=os.urandom(800_000)))
    raw_get(cache_site.origin + "/pypi/+upstream/shared-pkg/")
    expected = up.files["shared-pkg"][name]
    up.fault, up.rate = "throttle", len(expected) // 2  # about 2 s
    up.requests.clear()
    # the first one is streaming when the others ask
    results = concurrent_gets(cache_site.origin + f"/pypi/+upstream/shared-pkg/{name}", 4,
                              stagger=0.2)
    assert results == [(200, expected)] * 4
    assert [p for p in up.requests if p.endswith(name)] == [f"/files/{name}"]
