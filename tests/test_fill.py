"""Cache mode's cold files (``fill``), in process against the loopback upstream: streamed
whole and kept once verified; cut short, never complete-looking, and nothing kept, when the
upstream breaks off or the disk fills up mid-stream (the pump thread's write fails); a
client that goes away stops the pump. However it ends, no temporary is left and the
file's lock is released."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_config
from distfactory import wheel_bytes, wheel_name
from fake_upstream import FakeUpstream, running_upstream
from helpers import small_tmpfs
from pypi_fallback import fill
from pypi_fallback.config import Settings, load_settings
from pypi_fallback.errors import UpstreamError
from pypi_fallback.mirror import Fetched, get_listing, make_upstream
from pypi_fallback.names import NormalizedName
from pypi_fallback.upstream import Upstream

PROJECT = NormalizedName("cold-pkg")
NAME = wheel_name("cold-pkg", "1.0")


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with running_upstream() as up:
        up.add("cold-pkg", NAME, wheel_bytes("cold-pkg", "1.0", payload=os.urandom(3_000_000)))
        yield up


def cache_site(tmp_path: Path, up: FakeUpstream) -> tuple[Settings, Upstream]:
    settings = load_settings(write_config(tmp_path, upstream=up.simple_url, mode="cache"))
    return settings, make_upstream(settings)


def stream(settings: Settings, client: Upstream
           ) -> tuple[fill.ColdFile, bytes, BaseException | None]:
    """What a client of a cold file receives: the bytes, and the error that cut them short."""
    opened = fill.open_file(settings, client, PROJECT, NAME)
    assert isinstance(opened, fill.ColdFile)
    got = bytearray()
    try:
        for block in opened:
            got += block
    except (UpstreamError, OSError) as exc:
        return opened, bytes(got), exc
    return opened, bytes(got), None


def kept_nothing(settings: Settings) -> None:
    folder = settings.root / "+upstream" / PROJECT
    assert not (folder / NAME).exists()
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporary


def test_a_cold_file_streams_whole_and_is_kept_once_verified(tmp_path: Path,
                                                             upstream: FakeUpstream) -> None:
    settings, client = cache_site(tmp_path, upstream)
    opened, got, error = stream(settings, client)
    assert error is None and got == upstream.files["cold-pkg"][NAME]
    assert opened.published.wait(10)
    assert (settings.root / "+upstream" / PROJECT / NAME).read_bytes() == got
    assert isinstance(fill.open_file(settings, client, PROJECT, NAME), Fetched)


def test_an_upstream_cut_mid_body_ends_the_transfer_short(tmp_path: Path,
                                                          upstream: FakeUpstream) -> None:
    settings, client = cache_site(tmp_path, upstream)
    get_listing(settings, client, PROJECT)
    upstream.fault = "truncated"
    opened, got, error = stream(settings, client)
    assert isinstance(error, UpstreamError) and "truncated" in str(error)
    assert len(got) < opened.size  # never complete-looking
    assert opened.published.wait(10)  # the pump done
    kept_nothing(settings)
    upstream.fault, client.negative_ttl = None, 0
    opened, got, error = stream(settings, client)  # the lock was released: fetched again
    assert error is None and opened.published.wait(10)
    assert (settings.root / "+upstream" / PROJECT / NAME).read_bytes() == got


def test_a_client_that_goes_away_stops_the_download_and_nothing_is_kept(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    settings, client = cache_site(tmp_path, upstream)
    get_listing(settings, client, PROJECT)
    upstream.fault, upstream.rate = "throttle", 1_000_000  # about 3 s for the whole file
    opened = fill.open_file(settings, client, PROJECT, NAME)
    assert isinstance(opened, fill.ColdFile)
    blocks = iter(opened)
    assert next(blocks)  # the transfer has begun
    blocks.close()  # what mod_wsgi does when the client hangs up
    assert opened.published.wait(10)
    kept_nothing(settings)
    upstream.fault = None
    opened, got, error = stream(settings, client)  # the lock was released
    assert error is None and got == upstream.files["cold-pkg"][NAME]


@pytest.fixture
def small_upstream_dir(tmp_path: Path) -> Iterator[Path]:
    """``<root>/+upstream/cold-pkg`` on a 1 MB tmpfs of its own (CI runs as root: there
    it must work)."""
    folder = tmp_path / "www" / "+upstream" / PROJECT
    folder.mkdir(parents=True)
    with small_tmpfs(folder, "1m"):
        yield folder


def test_a_disk_full_mid_stream_ends_the_transfer_short_and_keeps_nothing(
        tmp_path: Path, upstream: FakeUpstream, small_upstream_dir: Path) -> None:
    settings, client = cache_site(tmp_path, upstream)
    opened, got, error = stream(settings, client)
    assert isinstance(error, OSError), error
    assert len(got) < opened.size
    assert opened.published.wait(10)  # the pump done
    kept_nothing(settings)
    # the lock was released: with room again, the next request fetches it
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_upstream_dir)], check=True)
    opened, got, error = stream(settings, client)
    assert error is None and opened.published.wait(10)
    assert (small_upstream_dir / NAME).read_bytes() == upstream.files["cold-pkg"][NAME]
