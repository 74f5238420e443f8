"""Freshness without cron, through real Apache: a cached or overlay listing older than
upstream.ttl is revalidated on the next request (at most ttl + mirror.FRESH_SLACK old), is
served from disk while fresh, carries Apache's validators from its first answer, and
stays served while the upstream fails."""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from apache_server import USERS, deployed
from clients import pip_install, raw_get, raw_upload
from conftest import write_config
from distfactory import wheel_bytes, wheel_name
from fake_upstream import FakeUpstream, running_upstream
from pypi_fallback.config import load_settings
from pypi_fallback.mirror import FRESH_SLACK, fresh_stamps, make_upstream
from pypi_fallback.names import NormalizedName
from pypi_fallback.storage import touch_only
from pypi_fallback.upstream_pages import revalidate_cached_page, stamper

pytestmark = pytest.mark.apache
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
TTL = 2


def versions(url: str) -> list[str]:
    status, _, body = raw_get(url, headers=JSON)
    assert status == 200, body
    return [str(v) for v in json.loads(body)["versions"]]


def wait_until(check: Callable[[], bool], seconds: float) -> float:
    """Seconds until ``check()`` held (polled twice a second), or fail after ``seconds``."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if check():
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"not within {seconds} s")


def listing_requests(up: FakeUpstream, project: str) -> int:
    return sum(1 for p in up.requests if p.startswith(f"/simple/{project}/"))


def test_fresh_stamps_cover_the_ttl_and_no_more() -> None:
    now = time.mktime((2026, 3, 4, 10, 20, 33, 0, 0, -1)) + 0.4
    assert fresh_stamps(now + 600, now) == [
        *(f"2026030410{m}" for m in range(20, 30)), "2026030410300", "2026030410301",
        "2026030410302", "2026030410303"]
    assert fresh_stamps(now + 2, now) == ["2026030410203"]  # this ten seconds at least
    assert fresh_stamps(now - 5, now) == ["2026030410203"]  # stale: only now


def test_the_page_is_written_before_the_answer_and_stamped_just_after(tmp_path: Path) -> None:
    """+cache's work: the page is on disk when revalidate_cached_page returns (Apache
    serves it next); the stamps follow from a thread of their own, for the ttl."""
    with running_upstream() as up:
        up.add("stamp-pkg", wheel_name("stamp-pkg", "1.0"), wheel_bytes("stamp-pkg", "1.0"))
        settings = load_settings(write_config(tmp_path, upstream=up.simple_url, mode="cache"))
        upstream = make_upstream(settings)
        started = time.time()
        revalidate_cached_page(settings, upstream, NormalizedName("stamp-pkg"))
        page = settings.root / "+upstream" / "stamp-pkg"
        assert json.loads((page / "index.v1_json").read_bytes())["name"] == "stamp-pkg"
        assert b"stamp_pkg-1.0" in (page / "index.html").read_bytes()
        assert (page / "index.var").stat().st_nlink >= 2  # the shared type map
        assert stamper.wait(10)
        stamps = sorted(p.name for p in (settings.state / "fresh" / "stamp-pkg").iterdir())
        assert stamps in (fresh_stamps(started + 600, started),
                          fresh_stamps(started + 600, time.time()))
        # each stamp a name for one empty file: no new inode per stamp
        shared = (settings.state / "fresh" / ".stamp").stat()
        assert shared.st_size == 0 and shared.st_nlink == len(stamps) + 1
        for stamp in (settings.state / "fresh" / "stamp-pkg").iterdir():
            assert stamp.stat().st_ino == shared.st_ino
        # a second request, fresh: no upstream request, the same stamps
        revalidate_cached_page(settings, upstream, NormalizedName("stamp-pkg"))
        assert stamper.wait(10)
        assert sum(p.startswith("/simple/stamp-pkg/") for p in up.requests) == 1
        assert (settings.state / "fresh" / "stamp-pkg").is_dir()


def test_stamps_link_one_empty_file_made_anew_when_missing_or_full(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    like, folder = tmp_path / ".stamp", tmp_path / "pkg"
    touch_only(folder, ["a", "b"], like)  # no .stamp yet: made
    assert like.stat().st_nlink == 3 and like.read_bytes() == b""
    first = like.stat().st_ino
    real_link = os.link

    def full(src: Any, dst: Any, *args: Any, **kw: Any) -> None:
        if os.stat(src).st_ino == first:  # the file system allows it no more links
            raise OSError(errno.EMLINK, os.strerror(errno.EMLINK))
        real_link(src, dst, *args, **kw)

    monkeypatch.setattr(os, "link", full)
    touch_only(folder, ["b", "c"], like)
    assert sorted(p.name for p in folder.iterdir()) == ["b", "c"]
    assert (folder / "b").stat().st_ino == first  # kept as it was
    assert (folder / "c").stat().st_ino == like.stat().st_ino != first
    assert (folder / "c").read_bytes() == b""


@pytest.mark.parametrize("function", ["open", "fsync", "replace", "link"])
def test_a_fault_while_publishing_a_cold_page_leaves_no_half_page(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, function: str) -> None:
    """The listing's copy and the page are made durable together: an OSError at any call
    leaves no temporary file, and no page Apache would serve (it serves a page once its
    index.var is there) that is not whole; the next request publishes it."""
    with running_upstream() as up:
        up.add("fault-pkg", wheel_name("fault-pkg", "1.0"), wheel_bytes("fault-pkg", "1.0"))
        settings = load_settings(write_config(tmp_path, upstream=up.simple_url, mode="cache"))
        upstream = make_upstream(settings)
        page = settings.root / "+upstream" / "fault-pkg"
        copy = settings.state / "upstream"
        real = getattr(os, function)
        for n in range(1, 40):
            calls = [0]

            def fake(*args: Any, _n: int = n, _calls: list[int] = calls, **kw: Any) -> Any:
                _calls[0] += 1
                if _calls[0] == _n:
                    raise OSError(errno.EIO, os.strerror(errno.EIO))
                return real(*args, **kw)

            monkeypatch.setattr(os, function, fake)
            try:
                revalidate_cached_page(settings, upstream, NormalizedName("fault-pkg"))
                failed = False
            except OSError:
                failed = True
            finally:
                monkeypatch.setattr(os, function, real)
            stamper.wait(10)
            left = [p.name for d in (page, copy) if d.is_dir() for p in d.iterdir()]
            assert not [name for name in left if name.startswith(".tmp-")], (n, left)
            if (page / "index.var").exists():
                assert json.loads((page / "index.v1_json").read_bytes())["name"] == "fault-pkg"
                assert b"fault_pkg-1.0" in (page / "index.html").read_bytes()
            if not failed:
                break
            shutil.rmtree(page, ignore_errors=True)  # cold again
            shutil.rmtree(copy, ignore_errors=True)
        assert not failed and calls[0] < n, "the fault was never hit"
        assert (page / "index.var").exists()


def test_a_new_upstream_release_is_seen_within_ttl_plus_the_slack(tmp_path: Path) -> None:
    with running_upstream() as up:
        up.add("fresh-pkg", wheel_name("fresh-pkg", "1.0"), wheel_bytes("fresh-pkg", "1.0"))
        with deployed(up, mode="cache", ttl=TTL) as site:
            up.versions["fresh-pkg"] = ["0.9", "1.0"]  # 0.9: a version without files
            url = site.origin + "/pypi/+upstream/fresh-pkg/"
            status, headers, _ = raw_get(url, headers=JSON)  # the app's first answer
            assert status == 200 and "ETag" in headers and "Last-Modified" in headers
            assert headers["Content-Type"] == "application/vnd.pypi.simple.v1+json"
            added = time.monotonic()
            up.add("fresh-pkg", wheel_name("fresh-pkg", "1.1"), wheel_bytes("fresh-pkg", "1.1"))
            up.versions["fresh-pkg"] = ["0.9", "1.0", "1.1"]
            assert versions(url) == ["0.9", "1.0"]  # fresh: from disk, upstream not asked
            assert listing_requests(up, "fresh-pkg") == 1
            wait_until(lambda: versions(url) == ["0.9", "1.0", "1.1"], TTL + FRESH_SLACK + 3)
            assert time.monotonic() - added <= TTL + FRESH_SLACK + 3
            etag = raw_get(url, headers=JSON)[1]["ETag"].removeprefix("W/")  # weak: just written
            for _ in range(5):
                assert versions(url) == ["0.9", "1.0", "1.1"]
            assert listing_requests(up, "fresh-pkg") == 2  # once per ttl, not per request
            result = pip_install(site.url("dev"), tmp_path / "t", "fresh-pkg==1.1")
            assert result.returncode == 0, result.stdout + result.stderr + site.error_log()
            # stale-if-error: the upstream gone, the listing is still served
            time.sleep(TTL + FRESH_SLACK)  # revalidated, unchanged: the same validators
            assert raw_get(url, headers=JSON)[1]["ETag"].removeprefix("W/") == etag
            up.stop()
            time.sleep(TTL + FRESH_SLACK)
            assert versions(url) == ["0.9", "1.0", "1.1"]
            result = pip_install(site.url("dev"), tmp_path / "t2", "fresh-pkg==1.1")
            assert result.returncode == 0, result.stdout + result.stderr + site.error_log()
            assert "AH00124" not in site.error_log()  # no internal redirect loop


def test_an_overlay_listing_follows_the_upstream(tmp_path: Path) -> None:
    with running_upstream() as up:
        up.add("overlay-lib", wheel_name("overlay-lib", "1.0"),
               wheel_bytes("overlay-lib", "1.0"))
        with deployed(up, '[policy]\noverlay = ["overlay-lib"]\n', ttl=TTL) as site:
            status, _, body = raw_upload(site.url("dev"), "alice", USERS["alice"],
                                         wheel_name("overlay-lib", "1.0+local"),
                                         wheel_bytes("overlay-lib", "1.0+local"))
            assert status == 200, body
            url = site.url("dev") + "overlay-lib/"
            assert versions(url) == ["1.0", "1.0+local"]
            up.add("overlay-lib", wheel_name("overlay-lib", "2.0"),
                   wheel_bytes("overlay-lib", "2.0"))
            wait_until(lambda: "2.0" in versions(url), TTL + FRESH_SLACK + 3)
            assert versions(url) == ["1.0", "1.0+local", "2.0"]
            status, headers, _ = raw_get(url, headers=JSON)
            assert status == 200 and "ETag" in headers


def test_a_hanging_upstream_leaves_health_its_threads_with_pinned_files(tmp_path: Path
                                                                        ) -> None:
    """Redirect mode, no overlay policy (so no fills' daemon), a file pinned into stable:
    its listing merges the upstream's and is revalidated when its stamps run out. A CI farm
    reading it while the upstream hangs must not take the threads +health and uploads
    need (the fills' daemon exists for that in the other configs)."""
    import hashlib
    import threading

    from helpers import run

    with running_upstream() as up:
        data = wheel_bytes("six", "1.16.0")
        up.add("six", wheel_name("six", "1.16.0"), data)
        with deployed(up, ttl=TTL) as site:
            assert "pypi-fallback-fill" not in (site.home / "pypi-fallback.conf").read_text()
            pins = tmp_path / "requirements.txt"
            pins.write_text(f"six==1.16.0 --hash=sha256:{hashlib.sha256(data).hexdigest()}\n")
            run("pin", "-r", str(pins), "--to", "stable", config=site.settings.source)
            url = site.url("stable") + "six/"
            assert versions(url) == ["1.16.0"]
            up.fault = "hang"  # upstream.timeout (2 s here, 10 s by default) per request
            time.sleep(TTL + 0.5)  # the copy is stale
            shutil.rmtree(site.settings.state / "fresh" / "six")  # its stamps ran out
            statuses: list[int] = []
            readers = [threading.Thread(target=lambda: statuses.append(
                raw_get(url, headers=JSON)[0])) for _ in range(20)]
            try:
                for reader in readers:
                    reader.start()
                time.sleep(0.1)
                started = time.monotonic()
                status, _, body = raw_get(site.origin, "/pypi/+health")
                waited = time.monotonic() - started
            finally:
                for reader in readers:
                    reader.join(30)
                up.release()
            assert statuses == [200] * 20  # the last good copy, as ever
            assert status == 200, body
            assert waited < 1.0, f"+health waited {waited:.1f} s for the upstream"
