"""The dependency-confusion rule at upload time, overlay listings, stale-if-error refresh."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import write_config
from distfactory import wheel_bytes, wheel_name
from fake_upstream import FakeUpstream, running_upstream
from helpers import post, snapshot
from pypi_fallback.app import make_app
from pypi_fallback.config import Settings, load_settings
from pypi_fallback.regen import regenerate
from webtest import TestApp

POLICY = '[policy]\noverlay = ["requests"]\nprivate = ["secret-*"]\n'


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with running_upstream() as up:
        for version in ("2.0", "2.1"):
            up.add("requests", wheel_name("requests", version), wheel_bytes("requests", version))
        up.add("acme-internal", wheel_name("acme-internal", "99.0"),
               wheel_bytes("acme-internal", "99.0"))
        up.add("left-pad", wheel_name("left-pad", "1.0"), wheel_bytes("left-pad", "1.0"))
        yield up


@pytest.fixture
def settings(tmp_path: Path, upstream: FakeUpstream) -> Settings:
    return load_settings(write_config(tmp_path, POLICY, upstream=upstream.simple_url, ttl=0))


@pytest.fixture
def app(settings: Settings) -> TestApp:
    return TestApp(make_app(settings))


def claims(settings: Settings) -> dict[str, str]:
    """Both files of the claims map (the bulk and the names claimed since), as Apache reads
    them."""
    lines = [line for name in ("claims.map", "claims.new.map")
             if (settings.state / name).exists()
             for line in (settings.state / name).read_text().splitlines()]
    return dict(line.split(" ", 1) for line in lines if not line.startswith("#"))


def claims_or_none(settings: Settings) -> dict[str, str]:
    return claims(settings) if (settings.state / "claims.map").exists() else {}


def audit(settings: Settings) -> list[dict[str, Any]]:
    return [json.loads(line) for line in
            (settings.state / "audit.jsonl").read_text().splitlines()]


def page(settings: Settings, repo: str, project: str) -> dict[str, Any]:
    return json.loads((settings.root / repo / project / "index.v1_json").read_text())


def test_new_name_unknown_upstream_is_claimed(app: TestApp, settings: Settings,
                                              upstream: FakeUpstream) -> None:
    post(app, "dev", wheel_name("acme-tools", "1.0"), wheel_bytes("acme-tools", "1.0"),
         status=200)
    assert claims(settings) == {"acme-tools": "unknown-upstream"}
    assert audit(settings)[-1]["claim"] == "unknown-upstream"
    assert audit(settings)[-1]["upstream"] == upstream.simple_url
    upstream.requests.clear()
    post(app, "dev", wheel_name("acme-tools", "1.1"), wheel_bytes("acme-tools", "1.1"),
         status=200)
    assert upstream.requests == []  # a claimed name is never asked about again


def test_public_name_outside_overlay_is_refused(app: TestApp, settings: Settings) -> None:
    before = snapshot(settings)
    resp = post(app, "dev", wheel_name("acme-internal", "1.0"),
                wheel_bytes("acme-internal", "1.0"), status=403)
    assert "public project on the upstream" in resp.status
    assert "policy.overlay" in resp.status
    # an uploader learns which key an administrator must set, not where the server keeps it
    assert str(settings.source) not in resp.text and str(settings.state) not in resp.text
    assert snapshot(settings) == before


def test_private_name_is_claimed_without_asking(app: TestApp, settings: Settings,
                                                upstream: FakeUpstream) -> None:
    post(app, "dev", wheel_name("secret-sauce", "1.0"), wheel_bytes("secret-sauce", "1.0"),
         status=200)
    assert claims(settings)["secret-sauce"] == "private"
    assert not upstream.requested("secret-sauce")


@pytest.mark.parametrize("fault", ["blackhole", "503", "malformed-json"])
def test_upstream_down_at_first_upload_refuses_a_new_name_with_503(
        app: TestApp, settings: Settings, upstream: FakeUpstream, fault: str) -> None:
    """An outage must never turn a (maybe public) name into a local claim that shadows it."""
    before = snapshot(settings)
    upstream.fault = fault
    resp = post(app, "dev", wheel_name("left-pad", "2.0"), wheel_bytes("left-pad", "2.0"),
                status=503)
    assert "'left-pad'" in resp.status and "upstream index could not be asked" in resp.status
    assert int(resp.headers["Retry-After"]) > 0
    assert snapshot(settings) == before
    assert "left-pad" not in claims_or_none(settings)
    # when the upstream is back (and the failure is no longer remembered: a fresh app),
    # the same upload goes through the normal rule
    upstream.fault = None
    upstream.add("left-pad", wheel_name("left-pad", "1.0"), wheel_bytes("left-pad", "1.0"))
    post(TestApp(make_app(settings)), "dev", wheel_name("left-pad", "2.0"),
         wheel_bytes("left-pad", "2.0"), status=403)


def test_upstream_down_still_takes_private_names_and_known_names(
        app: TestApp, settings: Settings, upstream: FakeUpstream) -> None:
    post(app, "dev", wheel_name("acme-tools", "1.0"), wheel_bytes("acme-tools", "1.0"),
         status=200)
    upstream.fault = "blackhole"
    post(app, "dev", wheel_name("secret-sauce", "1.0"), wheel_bytes("secret-sauce", "1.0"),
         status=200)
    post(app, "dev", wheel_name("acme-tools", "1.1"), wheel_bytes("acme-tools", "1.1"),
         status=200)  # a claimed name is not asked about again
    assert claims(settings) == {"acme-tools": "unknown-upstream", "secret-sauce": "private"}


def test_overlay_listing_merges_upstream_with_its_metadata(app: TestApp, settings: Settings,
                                                           upstream: FakeUpstream) -> None:
    local = wheel_bytes("requests", "2.1", payload=b"# patched here\n")
    post(app, "dev", wheel_name("requests", "2.1"), local, status=200)
    post(app, "dev", wheel_name("requests", "2.2"), wheel_bytes("requests", "2.2"), status=200)
    assert "requests" not in claims(settings)
    listing = page(settings, "dev", "requests")
    assert listing["meta"]["tracks"] == [f"{upstream.simple_url}requests/"]
    files = {f["filename"]: f for f in listing["files"]}
    assert sorted(files) == [wheel_name("requests", v) for v in ("2.0", "2.1", "2.2")]
    assert files[wheel_name("requests", "2.1")]["url"] == wheel_name("requests", "2.1")  # local
    remote = files[wheel_name("requests", "2.0")]
    assert remote["url"] == f"{upstream.base}/files/{wheel_name('requests', '2.0')}"
    assert remote["requires-python"] == ">=3.8"
    assert remote["upload-time"] == "2025-01-02T03:04:05.000000Z"
    assert remote["size"] == len(upstream.files["requests"][wheel_name("requests", "2.0")])
    html = (settings.root / "dev" / "requests" / "index.html").read_text()
    assert f'<meta name="pypi:tracks" content="{upstream.simple_url}requests/">' in html


def run_refresh(settings: Settings) -> Any:
    return regenerate(settings, refresh_upstream=True)


def test_refresh_keeps_last_good_copy_and_picks_up_new_versions(
        app: TestApp, settings: Settings, upstream: FakeUpstream) -> None:
    post(app, "dev", wheel_name("requests", "2.2"), wheel_bytes("requests", "2.2"), status=200)
    before = [f["filename"] for f in page(settings, "dev", "requests")["files"]]
    assert len(before) == 3

    for fault in ("503", "malformed-json", "truncated"):
        upstream.fault = fault
        report = run_refresh(settings)
        assert not report.ok and "requests" in report.upstream_errors[0]
        assert [f["filename"] for f in page(settings, "dev", "requests")["files"]] == before

    upstream.fault = None
    upstream.add("requests", wheel_name("requests", "2.3"), wheel_bytes("requests", "2.3"))
    report = run_refresh(settings)
    assert report.ok
    after = [f["filename"] for f in page(settings, "dev", "requests")["files"]]
    assert wheel_name("requests", "2.3") in after


def test_regen_index_cli_reports_upstream_errors(app: TestApp, settings: Settings,
                                                 upstream: FakeUpstream) -> None:
    import subprocess
    import sys

    post(app, "dev", wheel_name("requests", "2.2"), wheel_bytes("requests", "2.2"), status=200)
    upstream.fault = "503"
    script = Path(__file__).resolve().parent.parent / "scripts" / "regen-index"
    result = subprocess.run([sys.executable, str(script), "--config", str(settings.source),
                             "--refresh-upstream"], capture_output=True, text=True, timeout=60,
                            env={**os.environ})
    assert result.returncode == 1
    assert "upstream: requests: Upstream answered 503" in result.stderr


def reachable_as_reported(settings: Settings) -> bool | None:
    """+health's answer once its background check is done (5 s at most)."""
    app = TestApp(make_app(settings))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        answer = app.get("/pypi/+health").json["upstream_reachable"]
        if answer is not None:
            return bool(answer)
        time.sleep(0.05)
    return None


def test_health_reports_upstream(settings: Settings, upstream: FakeUpstream) -> None:
    assert reachable_as_reported(settings) is True
    upstream.fault = "503"
    assert reachable_as_reported(settings) is False


def test_health_never_waits_for_a_hanging_upstream(settings: Settings,
                                                   upstream: FakeUpstream) -> None:
    upstream.fault = "slow-headers"
    app = TestApp(make_app(settings))
    for _ in range(3):
        started = time.monotonic()
        body = app.get("/pypi/+health", status=200).json
        assert time.monotonic() - started < 0.5
        assert body["ok"] is True and body["upstream_reachable"] is None  # not known yet
    upstream.release()
