"""The dependency-confusion guarantee at every entrance of the app (WebTest): strict names,
internal routes closed to everyone but Apache's own rules, no shadowing by an outage."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_config
from distfactory import sdist_bytes, wheel_bytes, wheel_name
from fake_upstream import FakeUpstream, running_upstream
from helpers import post, snapshot
from pypi_fallback.app import ROUTE_FLAG, make_app
from pypi_fallback.config import Settings, load_settings
from pypi_fallback.mirror import resolved_upstream_url
from pypi_fallback.names import NormalizedName
from pypi_fallback.regen import regenerate
from pypi_fallback.storage import Tree, add_claims, load_claims
from webtest import TestApp

POLICY = '[policy]\noverlay = ["requests"]\nprivate = ["secret-*"]\n'


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with running_upstream() as up:
        up.add("pubpkg", wheel_name("pubpkg", "1.0"), wheel_bytes("pubpkg", "1.0"))
        yield up


def make_settings(tmp_path: Path, upstream: FakeUpstream, mode: str = "redirect") -> Settings:
    return load_settings(write_config(tmp_path, POLICY, upstream=upstream.simple_url, mode=mode))


@pytest.fixture
def settings(tmp_path: Path, upstream: FakeUpstream) -> Settings:
    return make_settings(tmp_path, upstream)


@pytest.fixture
def app(settings: Settings) -> TestApp:
    return TestApp(make_app(settings))


def test_a_space_in_an_sdist_name_cannot_take_over_a_public_project(
        app: TestApp, settings: Settings, upstream: FakeUpstream) -> None:
    before = snapshot(settings)
    resp = post(app, "dev", "pubpkg x-1.0.tar.gz", sdist_bytes("pubpkg x", "1.0"), status=400)
    assert "Invalid" in resp.status and "pubpkg x" in resp.status
    assert snapshot(settings) == before
    # and the public name is still refused, as before the attempt
    post(app, "dev", "pubpkg-6.6.6.tar.gz", sdist_bytes("pubpkg", "6.6.6"), status=403)
    assert snapshot(settings) == before


@pytest.mark.parametrize("char", [";", "?", "#", "%", "<", '"', "'", "\t", "é", " ", "+"])
def test_odd_characters_in_names_are_400_and_change_nothing(
        app: TestApp, settings: Settings, char: str) -> None:
    before = snapshot(settings)
    name = f"acme{char}x"
    for filename, data in [(f"{name}-1.0.tar.gz", sdist_bytes(name, "1.0")),
                           (f"{name}-1.0-py3-none-any.whl", wheel_bytes("acme", "1.0"))]:
        resp = post(app, "dev", filename, data, status="*")
        assert resp.status_int == 400, (filename, resp.status)
    # the same odd name in the form only, with a clean filename
    resp = post(app, "dev", wheel_name("acme", "1.0"), wheel_bytes("acme", "1.0"), name=name,
                status=400)
    assert snapshot(settings) == before


def test_metadata_name_with_odd_characters_is_400(app: TestApp, settings: Settings) -> None:
    data = wheel_bytes("acme", "1.0", metadata="Name: acme x\nVersion: 1.0\n\n")
    resp = post(app, "dev", wheel_name("acme", "1.0"), data, status=400)
    assert "name in metadata" in resp.status


def test_one_sdist_per_release_however_spelled(app: TestApp, settings: Settings) -> None:
    first = sdist_bytes("claimedpkg", "1.0")
    post(app, "dev", "claimedpkg-1.0.tar.gz", first, status=200)
    before = snapshot(settings)
    for filename in ("CLAIMEDPKG-1.0.tar.gz",
                     "ClaimedPkg-1.0.0.tar.gz", "claimedpkg-1.0.0.tar.gz"):
        data = sdist_bytes(filename.split("-")[0], "1.0")
        resp = post(app, "dev", filename, data, status=400)
        assert "already exists" in resp.status and "claimedpkg-1.0.tar.gz" in resp.status
    assert snapshot(settings) == before
    post(app, "dev", "claimedpkg-1.0.tar.gz", first, status=200)  # the same file: fine


def test_symlinks_inside_a_wheel_are_refused(app: TestApp, settings: Settings) -> None:
    good = wheel_bytes("acme", "1.0")
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(buf, "w") as out:
        for info in src.infolist():
            out.writestr(info, src.read(info))
        link = zipfile.ZipInfo("acme/passwd")
        link.external_attr = 0o120777 << 16
        out.writestr(link, "/etc/passwd")
    before = snapshot(settings)
    resp = post(app, "dev", wheel_name("acme", "1.0"), buf.getvalue(), status=400)
    assert "Symbolic link" in resp.status
    assert snapshot(settings) == before


def test_the_overlay_refusal_names_the_key_not_the_server_path(
        app: TestApp, settings: Settings) -> None:
    resp = post(app, "dev", wheel_name("pubpkg", "2.0"), wheel_bytes("pubpkg", "2.0"),
                status=403)
    assert "policy.overlay" in resp.text
    for secret in (str(settings.source), str(settings.root), str(settings.state)):
        assert secret not in resp.text and secret not in resp.status


def test_health_answers_get_and_head_only_and_names_the_upstream(
        app: TestApp, upstream: FakeUpstream) -> None:
    body = app.get("/pypi/+health", status=200).json
    assert body["upstream_url"] == upstream.simple_url
    for method in ("post", "put", "delete"):
        getattr(app, method)("/pypi/+health", status=405)
    app.head("/pypi/+health", status=200)


# -- the internal routes -------------------------------------------------------------------------


def internal(app: TestApp, path: str, flag: str | None, status: int | str = "*") -> object:
    env = {ROUTE_FLAG: flag} if flag else {}
    return app.get(path, extra_environ=env, status=status)


def test_internal_routes_do_not_exist_in_redirect_mode(
        app: TestApp, settings: Settings, upstream: FakeUpstream) -> None:
    before = snapshot(settings)
    upstream.requests.clear()
    filename = wheel_name("pubpkg", "1.0")
    for path, flag in [("/pypi/+app/+cache/pubpkg/", "cache"),
                       (f"/pypi/+app/+fetch/pubpkg/{filename}", "fetch"),
                       ("/pypi/+cache/pubpkg/", None)]:
        internal(app, path, flag, status=404)
        internal(app, path, None, status=404)
    assert upstream.requests == []
    assert snapshot(settings) == before


@pytest.fixture
def cache_app(tmp_path: Path, upstream: FakeUpstream) -> Iterator[tuple[TestApp, Settings]]:
    settings = make_settings(tmp_path, upstream, mode="cache")
    add_claims(Tree.of(settings), {NormalizedName("claimedpkg"): "unknown-upstream"})
    upstream.add("claimedpkg", wheel_name("claimedpkg", "1.0"), wheel_bytes("claimedpkg", "1.0"))
    upstream.add("secret-x", wheel_name("secret-x", "1.0"), wheel_bytes("secret-x", "1.0"))
    yield TestApp(make_app(settings)), settings


def test_internal_routes_answer_only_what_the_rules_sent(
        cache_app: tuple[TestApp, Settings], upstream: FakeUpstream) -> None:
    app, settings = cache_app
    upstream.requests.clear()
    internal(app, "/pypi/+app/+cache/pubpkg/", None, status=404)
    internal(app, "/pypi/+app/+cache/pubpkg/", "fetch", status=404)  # the other route's flag
    assert upstream.requests == []
    internal(app, "/pypi/+app/+cache/pubpkg/", "cache", status=200)
    assert upstream.requested("pubpkg")


@pytest.mark.parametrize("name", ["claimedpkg", "secret-x", "claimedpkg%09", "claimedpkg%23",
                                  "claimedpkg%3F", "claimedpkg;x", "ClaimedPkg", "claimed_pkg",
                                  "claimedpkg%0a", "%E2%84%AAlaimedpkg"])
def test_claimed_and_private_names_never_reach_the_upstream_through_the_app(
        cache_app: tuple[TestApp, Settings], upstream: FakeUpstream, name: str) -> None:
    app, settings = cache_app
    before = snapshot(settings)
    upstream.requests.clear()
    for path, flag in [(f"/pypi/+app/+cache/{name}/", "cache"),
                       (f"/pypi/+app/+fetch/{name}/{wheel_name('claimedpkg', '1.0')}", "fetch")]:
        resp = internal(app, path, flag)
        assert resp.status_int in (400, 404), (path, resp.status)  # type: ignore[attr-defined]
    assert upstream.requests == []
    assert snapshot(settings) == before


def test_unknown_names_leave_no_state_behind(cache_app: tuple[TestApp, Settings],
                                            upstream: FakeUpstream) -> None:
    app, settings = cache_app
    before = snapshot(settings)
    for i in range(20):
        internal(app, f"/pypi/+app/+cache/nosuch-{i}/", "cache", status=404)
    assert snapshot(settings) == before


# -- one upstream, resolved once ------------------------------------------------------------------


def test_regen_rules_records_the_upstream_for_everyone(tmp_path: Path,
                                                       upstream: FakeUpstream) -> None:
    """With upstream.url empty, the index pip uses *for whoever runs regen-rules* is recorded;
    the app and the commands use the record, whatever their own pip would say."""
    config = write_config(tmp_path, upstream="")
    settings = load_settings(config)
    bin_dir = Path(sys.prefix) / "bin"
    env = {**os.environ, "PYPI_FALLBACK_CONFIG": str(config),
           "PIP_INDEX_URL": upstream.simple_url, "PIP_CONFIG_FILE": os.devnull}
    out = subprocess.run([str(bin_dir / "regen-rules")], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert f"{upstream.simple_url}$1/" in out  # printing alone records nothing new…
    drop = tmp_path / "dropin.conf"
    subprocess.run([str(bin_dir / "regen-rules"), "--output", str(drop)], env=env, check=True,
                   capture_output=True)
    record = json.loads((settings.state / "upstream.json").read_text())
    assert record["url"] == upstream.simple_url and record["configured"] == ""
    # …and a process whose own pip points elsewhere uses the record
    os.environ["PIP_INDEX_URL"] = "http://127.0.0.1:9/elsewhere/"
    try:
        assert resolved_upstream_url(settings) == upstream.simple_url
        app = TestApp(make_app(settings))
        assert app.get("/pypi/+health").json["upstream_url"] == upstream.simple_url
        upstream.requests.clear()
        post(app, "dev", wheel_name("brand-new", "1.0"), wheel_bytes("brand-new", "1.0"),
             status=200)
        assert upstream.requested("brand-new")
    finally:
        del os.environ["PIP_INDEX_URL"]


# -- claims made under the old rule are checked again ----------------------------------------------


def test_refresh_upstream_reports_public_names_claimed_during_an_outage(
        settings: Settings, upstream: FakeUpstream) -> None:
    tree = Tree.of(settings)
    tree.claims_map.write_text(
        "# pypi-fallback claims\n"
        "pubpkg upstream could not be asked (Upstream timed out); claimed to fail safe\n"
        "localonly unreachable\nacme unknown-upstream\n")
    claims_before = tree.claims_map.read_bytes()
    report = regenerate(settings, refresh_upstream=True)
    assert not report.ok
    problems = [p for p in report.upstream_errors if "public project" in p]
    assert len(problems) == 1 and problems[0].startswith("pubpkg:")
    assert "policy.overlay" in problems[0] and "claims.map" in problems[0]
    assert tree.claims_map.read_bytes() == claims_before  # reported, nothing changed
    assert set(load_claims(tree)) == {"pubpkg", "localonly", "acme"}


@pytest.mark.parametrize("name", ["claimedpkg", "secret-x", "pubpkg", "claimedpkg%0a",
                                  "ClaimedPkg", "nosuch"])
def test_refresh_route_asks_the_upstream_only_for_a_cached_public_listing(
        cache_app: tuple[TestApp, Settings], upstream: FakeUpstream, name: str) -> None:
    """+refresh (any mode) needs the rules' flag; for a claimed, private, invalid or
    never-cached name it asks nothing and changes nothing (a valid one is handed back to
    Apache as it is)."""
    app, settings = cache_app
    before = snapshot(settings)
    upstream.requests.clear()
    internal(app, f"/pypi/+app/+refresh/dev/{name}/", None, status=404)
    internal(app, f"/pypi/+app/+refresh/dev/{name}/", "cache", status=404)
    internal(app, f"/pypi/+app/+refresh/nosuchrepo/{name}/", "refresh", status=404)
    resp = internal(app, f"/pypi/+app/+refresh/dev/{name}/", "refresh")
    assert resp.status_int in (200, 400, 404)  # type: ignore[attr-defined]
    if resp.status_int == 200:  # type: ignore[attr-defined]
        assert resp.headers["Location"] == f"/pypi/dev/{name}/"  # type: ignore[attr-defined]
    assert upstream.requests == []
    assert snapshot(settings) == before
