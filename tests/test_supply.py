"""Supply-chain controls through the app and the commands: the release-age cooldown
(policy.min_age, freeze, exceptions), PEP 792 project status, PEP 740 provenance, and
upload times that say when a file entered each repository. A loopback upstream speaking
simple API 1.4 carries every field through."""

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
from helpers import cli, post
from pypi_fallback.app import ROUTE_FLAG, make_app
from pypi_fallback.config import Settings, load_settings
from pypi_fallback.cooldown import parse_duration, parse_time
from pypi_fallback.errors import ConfigError
from pypi_fallback.regen import regenerate
from pypi_fallback.storage import utc_timestamp
from webtest import TestApp

DAY = 86400.0
PROVENANCE = json.dumps({"version": 1, "attestation_bundles": [
    {"publisher": {"kind": "GitHub", "repository": "acme/cool"}, "attestations": []}]}).encode()


def ago(days: float) -> str:
    return utc_timestamp(time.time() - days * DAY)


def audit(settings: Settings) -> list[dict[str, Any]]:
    path = settings.state / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- the policy in the config ---------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0), ("7d", 7 * DAY), ("36h", 36 * 3600), ("1w 2d", 9 * DAY), ("90s", 90),
    ("1.5d", 1.5 * DAY), ("15m", 900),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("policy", "message"), [
    ('min_age = "7days"', r"policy.min_age must be a duration such as \"7d\""),
    ('min_age = 7', "policy.min_age must be a string, not 7"),
    ('exceptions = ["Not A Name"]', r"policy.exceptions: 'Not A Name' is not 'name' or"),
    ('exceptions = ["acme==not a version"]', "policy.exceptions: 'acme==not a version'"),
    ('freeze = "yesterday"', r"policy.freeze must be a date \(2026-11-01\) or a time"),
    ('freeze = 20261101', "policy.freeze must be a date or a time, not 20261101"),
    ('cooldown = "7d"', "unknown key policy.cooldown"),
])
def test_policy_errors_name_the_key(tmp_path: Path, policy: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write_config(tmp_path, f"[policy]\n{policy}\n"))


def test_freeze_as_a_toml_date_or_time(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, "[policy]\nfreeze = 2026-11-01\n"))
    assert settings.cooldown.freeze == parse_time("2026-11-01T00:00:00Z")
    settings = load_settings(write_config(tmp_path, "[policy]\nfreeze = 2026-11-01T12:00:00Z\n"))
    assert settings.cooldown.freeze == parse_time("2026-11-01T12:00:00Z")


def test_judging_files() -> None:
    from pypi_fallback.cooldown import Cooldown, parse_cooldown

    cool = parse_cooldown(Path("c.toml"), {"min_age": "7d", "exceptions": ["hotfix",
                                                                          "acme==1.1"]})
    now = time.time()
    assert cool.judge("acme", "1.0", ago(8), now).admitted
    young = cool.judge("acme", "1.2", ago(1), now)
    assert not young.admitted and "younger than policy.min_age 7d" in (young.reason or "")
    assert cool.judge("acme", "1.1.0", ago(1), now).exception == "acme==1.1"
    assert cool.judge("hotfix", "9", ago(0), now).exception == "hotfix"
    assert not cool.judge("acme", "1.0", None, now).admitted  # age unknown: left out
    assert Cooldown().judge("acme", "1.0", None, now).admitted  # no policy: everything
    frozen = parse_cooldown(Path("c.toml"), {"min_age": "0", "freeze": "2025-06-01"})
    assert frozen.judge("acme", "1.0", "2025-05-31T23:59:59Z", now).admitted
    late = frozen.judge("acme", "1.0", "2025-06-01T00:00:01Z", now)
    assert not late.admitted and "after policy.freeze" in (late.reason or "")


# -- cache mode: a 1.4 upstream, the cooldown, provenance -----------------------------------


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with running_upstream() as up:
        up.add("cool-pkg", wheel_name("cool-pkg", "1.0"), wheel_bytes("cool-pkg", "1.0"),
               upload_time=ago(30), provenance=PROVENANCE)
        up.add("cool-pkg", wheel_name("cool-pkg", "1.1"), wheel_bytes("cool-pkg", "1.1"),
               upload_time=ago(1))
        up.status["cool-pkg"] = ("deprecated", "use cool-pkg2")
        up.tracks["cool-pkg"] = ["https://elsewhere.example/simple/cool-pkg/"]
        up.alternate_locations["cool-pkg"] = ["https://mirror.example/simple/cool-pkg/"]
        yield up


def cache_app(tmp_path: Path, upstream: FakeUpstream, policy: str = "") -> TestApp:
    settings = load_settings(write_config(tmp_path, policy, upstream=upstream.simple_url,
                                          mode="cache", ttl=0))
    return TestApp(make_app(settings))


def cache_get(app: TestApp, path: str, flag: str, **kw: Any) -> Any:
    return app.get(f"/pypi/+app/{path}", extra_environ={ROUTE_FLAG: flag}, **kw)


def cached_page(app: TestApp, project: str) -> Any:
    """The +upstream listing the app fills and hands back to Apache, as Apache serves it."""
    cache_get(app, f"+cache/{project}/", "cache")
    settings: Settings = app.app.settings
    return json.loads((settings.root / "+upstream" / project / "index.v1_json").read_text())


def test_api_1_4_upstream_carries_every_field(tmp_path: Path, upstream: FakeUpstream) -> None:
    for as_json in (True, False):
        upstream.json = as_json
        root = tmp_path / ("json" if as_json else "html")
        root.mkdir()
        app = cache_app(root, upstream)
        settings: Settings = app.app.settings
        page = cached_page(app, "cool-pkg")
        assert page["meta"] == {"api-version": "1.4",
                                "tracks": ["https://elsewhere.example/simple/cool-pkg/"]}
        assert page["alternate-locations"] == ["https://mirror.example/simple/cool-pkg/"]
        assert page["project-status"] == {"status": "deprecated", "reason": "use cool-pkg2"}
        old, new = page["files"]
        name = wheel_name("cool-pkg", "1.0")
        assert old["url"] == f"../../+upstream/cool-pkg/{name}"
        assert old["provenance"] == f"../../+upstream/cool-pkg/{name}.provenance"
        assert new["provenance"] is None
        if as_json:  # HTML has no upload times
            assert old["upload-time"] == upstream.upload_times[name]
        html = (settings.root / "+upstream" / "cool-pkg" / "index.html").read_text()
        assert '<meta name="pypi:repository-version" content="1.4">' in html
        assert '<meta name="pypi:project-status" content="deprecated">' in html
        assert '<meta name="pypi:project-status-reason" content="use cool-pkg2">' in html
        assert '<meta name="pypi:alternate-locations" ' \
               'content="https://mirror.example/simple/cool-pkg/">' in html
        assert f'data-provenance="../../+upstream/cool-pkg/{name}.provenance"' in html

        # the provenance object: fetched from its listing link, kept beside the file
        resp = cache_get(app, f"+fetch/cool-pkg/{name}.provenance", "fetch")
        assert resp.content_type == "application/json" and resp.body == PROVENANCE
        kept = settings.root / "+upstream" / "cool-pkg" / f"{name}.provenance"
        assert kept.read_bytes() == PROVENANCE
        assert any(e["action"] == "cache-provenance" and e["filename"] == name
                   for e in audit(settings))
        upstream.requests.clear()
        assert cache_get(app, f"+fetch/cool-pkg/{name}.provenance", "fetch").body == PROVENANCE
        assert upstream.requests == []  # from the cache now
        # a file without one has none; the internal route's checks hold
        cache_get(app, f"+fetch/cool-pkg/{wheel_name('cool-pkg', '1.1')}.provenance",
                  "fetch", status=404)
        cache_get(app, f"+fetch/cool-pkg/{name}.provenance", "cache", status=404)  # flag
        app.get(f"/pypi/+app/+fetch/cool-pkg/{name}.provenance", status=404)  # no flag


def test_provenance_route_is_cache_mode_only_and_respects_claims(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = load_settings(write_config(tmp_path, '[policy]\nprivate = ["cool-*"]\n',
                                          upstream=upstream.simple_url, mode="cache"))
    app = TestApp(make_app(settings))
    name = wheel_name("cool-pkg", "1.0")
    upstream.requests.clear()
    cache_get(app, f"+fetch/cool-pkg/{name}.provenance", "fetch", status=404)
    assert not upstream.requested("cool-pkg")
    (tmp_path / "r").mkdir()
    redirect = TestApp(make_app(load_settings(write_config(tmp_path / "r",
                                                           upstream=upstream.simple_url))))
    cache_get(redirect, f"+fetch/cool-pkg/{name}.provenance", "fetch", status=404)
    assert not upstream.requested("cool-pkg")


def test_cooldown_leaves_young_files_out_and_refuses_them(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    app = cache_app(tmp_path, upstream, '[policy]\nmin_age = "7d"\n')
    settings: Settings = app.app.settings
    page = cached_page(app, "cool-pkg")
    assert [f["filename"] for f in page["files"]] == [wheel_name("cool-pkg", "1.0")]
    assert page["versions"] == ["1.0"]
    young = wheel_name("cool-pkg", "1.1")
    resp = cache_get(app, f"+fetch/cool-pkg/{young}", "fetch", status=403)
    assert "held back by this index's release-age policy" in resp.status
    assert "younger than policy.min_age 7d" in resp.text
    assert not (settings.root / "+upstream" / "cool-pkg" / young).exists()
    old = wheel_name("cool-pkg", "1.0")
    assert cache_get(app, f"+fetch/cool-pkg/{old}", "fetch").body == \
        upstream.files["cool-pkg"][old]


def test_exception_and_policy_change_without_restart(tmp_path: Path,
                                                     upstream: FakeUpstream) -> None:
    app = cache_app(tmp_path, upstream, '[policy]\nmin_age = "7d"\n')
    app.app.policy.interval = 0.0
    settings: Settings = app.app.settings
    cache_get(app, "+cache/cool-pkg/", "cache")
    listing = settings.root / "+upstream" / "cool-pkg" / "index.v1_json"
    young = wheel_name("cool-pkg", "1.1")
    assert young not in listing.read_text()

    config = settings.source
    config.write_text(config.read_text().replace(
        'min_age = "7d"', 'min_age = "7d"\nexceptions = ["cool-pkg==1.1"]'))
    os.utime(config, ns=(time.time_ns(), time.time_ns() + 10**9))
    app.get("/pypi/+health")  # any request: the app notices the new policy
    deadline = time.monotonic() + 20
    while young not in listing.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert young in listing.read_text()  # re-rendered on disk, in the background
    assert cache_get(app, f"+fetch/cool-pkg/{young}", "fetch").body == \
        upstream.files["cool-pkg"][young]
    deadline = time.monotonic() + 10  # a streamed file is published after its last block
    while time.monotonic() < deadline and not any(
            e["action"] == "cache" and e["filename"] == young for e in audit(settings)):
        time.sleep(0.05)
    lines = audit(settings)
    assert {"action": "policy-exception", "exception": "cool-pkg==1.1", "filename": young,
            "repo": "+upstream"}.items() <= next(
        e for e in lines if e["action"] == "policy-exception").items()
    assert next(e for e in lines if e["action"] == "cache" and e["filename"] == young
                )["policy_exception"] == "cool-pkg==1.1"

    # an invalid edit keeps the policy in force
    config.write_text(config.read_text().replace('min_age = "7d"', 'min_age = "soon"'))
    os.utime(config, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    app.get("/pypi/+health")
    assert app.app.settings.cooldown.min_age == 7 * DAY


def test_regen_index_lets_files_age_in(tmp_path: Path, upstream: FakeUpstream) -> None:
    app = cache_app(tmp_path, upstream, '[policy]\nmin_age = "2d"\n')
    settings: Settings = app.app.settings
    cache_get(app, "+cache/cool-pkg/", "cache")
    listing = settings.root / "+upstream" / "cool-pkg" / "index.v1_json"
    young = wheel_name("cool-pkg", "1.1")
    assert young not in listing.read_text()
    # time passes: the same policy with a shorter age stands for "two days later"
    config = settings.source
    config.write_text(config.read_text().replace('"2d"', '"12h"'))
    report = regenerate(load_settings(config))
    assert report.ok and young in listing.read_text()


# -- overlays (redirect mode): the same policy, and the upstream's status -------------------


def test_overlay_listing_policy_and_status(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = load_settings(write_config(
        tmp_path, '[policy]\noverlay = ["cool-pkg"]\nmin_age = "7d"\n',
        upstream=upstream.simple_url))
    app = TestApp(make_app(settings))
    post(app, "dev", wheel_name("cool-pkg", "0.5"), wheel_bytes("cool-pkg", "0.5"), status=200)
    page = json.loads((settings.root / "dev" / "cool-pkg" / "index.v1_json").read_text())
    names = [f["filename"] for f in page["files"]]
    assert names == [wheel_name("cool-pkg", "0.5"), wheel_name("cool-pkg", "1.0")]
    local, remote = page["files"]
    assert local["upload-time"] and remote["upload-time"] == upstream.upload_times[names[1]]
    assert remote["provenance"] == f"{upstream.base}/integrity/{names[1]}/provenance"
    assert page["project-status"] == {"status": "deprecated", "reason": "use cool-pkg2"}
    result = cli("status", "cool-pkg", "archived", "--reason", "frozen here",
                 settings=settings)
    assert result.returncode == 0, result.stderr
    page = json.loads((settings.root / "dev" / "cool-pkg" / "index.v1_json").read_text())
    assert page["project-status"] == {"status": "archived", "reason": "frozen here"}


# -- PEP 792 status of local projects --------------------------------------------------------


@pytest.fixture
def local_app(settings: Settings) -> TestApp:
    return TestApp(make_app(settings))


def listing(settings: Settings, repo: str, project: str) -> tuple[dict[str, Any], str]:
    folder = settings.root / repo / project
    return json.loads((folder / "index.v1_json").read_text()), (folder / "index.html").read_text()


def test_status_command(local_app: TestApp, settings: Settings) -> None:
    post(local_app, "dev", wheel_name("acme", "1.0"), wheel_bytes("acme", "1.0"), status=200)
    result = cli("status", "Acme", "archived", "--reason", "no longer maintained",
                 settings=settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "status: Acme is archived in dev\n"
    page, html = listing(settings, "dev", "acme")
    assert page["project-status"] == {"status": "archived", "reason": "no longer maintained"}
    assert len(page["files"]) == 1
    assert '<meta name="pypi:project-status" content="archived">' in html
    assert '<meta name="pypi:project-status-reason" content="no longer maintained">' in html
    resp = post(local_app, "dev", wheel_name("acme", "1.1"), wheel_bytes("acme", "1.1"),
                status=403)
    assert "'acme' is archived in this index: no longer maintained" in resp.status
    pages = (settings.root / "+pages" / "acme" / "index.html").read_text()
    assert "archived in dev" in pages and "no longer maintained" in pages

    assert cli("status", "acme", "quarantined", "--reason", "malware",
               settings=settings).returncode == 0
    page, html = listing(settings, "dev", "acme")
    assert page["files"] == [] and "<a " not in html.split("<body>")[1]
    assert page["project-status"] == {"status": "quarantined", "reason": "malware"}

    assert cli("status", "acme", "active", settings=settings).returncode == 0
    page, html = listing(settings, "dev", "acme")
    assert "project-status" not in page and len(page["files"]) == 1
    assert "pypi:project-status" not in html
    post(local_app, "dev", wheel_name("acme", "1.1"), wheel_bytes("acme", "1.1"), status=200)
    trail = [(e["action"], e.get("status"), e["user"]) for e in audit(settings)
             if e["action"] == "status"]
    assert trail == [("status", "archived", "qc-carol"), ("status", "quarantined", "qc-carol"),
                     ("status", "active", "qc-carol")]


@pytest.mark.parametrize(("args", "message"), [
    (("acme", "archived"), "archived needs --reason TEXT"),
    (("acme", "gone", "--reason", "x"), "invalid choice: 'gone'"),
    (("nobody", "archived", "--reason", "x"), "No files of 'nobody'"),
    (("acme", "archived", "--reason", "x", "--repo", "nope"), "No such repository 'nope'"),
])
def test_status_mistakes(local_app: TestApp, settings: Settings, args: tuple[str, ...],
                         message: str) -> None:
    post(local_app, "dev", wheel_name("acme", "1.0"), wheel_bytes("acme", "1.0"), status=200)
    result = cli("status", *args, settings=settings)
    assert result.returncode == 2 and message in result.stderr, result.stderr


# -- upload times: when a file entered *that* repository --------------------------------------


def test_upload_time_is_when_the_file_entered_the_repo(local_app: TestApp,
                                                       settings: Settings) -> None:
    post(local_app, "dev", wheel_name("acme", "1.0"), wheel_bytes("acme", "1.0"), status=200)
    time.sleep(1.1)
    assert cli("promote", "acme==1.0", settings=settings).returncode == 0
    dev_time = listing(settings, "dev", "acme")[0]["files"][0]["upload-time"]
    stable_time = listing(settings, "stable", "acme")[0]["files"][0]["upload-time"]
    assert (parse_time(stable_time) or 0) - (parse_time(dev_time) or 0) >= 1.0
    # scp keeping an old mtime (scp -p): the time is when it arrived, not the mtime
    path = settings.root / "dev" / "acme" / wheel_name("acme", "2.0")
    path.write_bytes(wheel_bytes("acme", "2.0"))
    os.utime(path, (1e9, 1e9))
    before = time.time()
    assert regenerate(settings, names=["acme"]).ok
    times = {f["filename"]: f["upload-time"] for f in listing(settings, "dev", "acme")[0]["files"]}
    assert (parse_time(times[path.name]) or 0) >= before - 5


def test_pin_carries_provenance_and_takes_its_own_time(tmp_path: Path,
                                                       upstream: FakeUpstream) -> None:
    settings = load_settings(write_config(tmp_path, '[policy]\nmin_age = "7d"\n',
                                          upstream=upstream.simple_url, mode="cache"))
    name = wheel_name("cool-pkg", "1.0")
    digest = upstream.digest(upstream.files["cool-pkg"][name])
    req = tmp_path / "requirements.txt"
    req.write_text(f"cool-pkg==1.0 --hash=sha256:{digest}\n")
    result = cli("pin", "-r", str(req), settings=settings)
    assert result.returncode == 0, result.stderr
    kept = settings.root / "stable" / "cool-pkg" / f"{name}.provenance"
    assert kept.read_bytes() == PROVENANCE
    page, html = listing(settings, "stable", "cool-pkg")
    entry = page["files"][0]
    assert entry["provenance"] == f"{name}.provenance"
    assert (parse_time(entry["upload-time"]) or 0) > time.time() - 60  # pinned now
    assert f'data-provenance="{name}.provenance"' in html
    assert regenerate(settings).ok and kept.exists()  # regen-index keeps what it wrote
    # promote carries it along
    assert cli("promote", "cool-pkg==1.0", "--from", "stable", "--to", "dev",
               settings=settings).returncode == 0
    assert (settings.root / "dev" / "cool-pkg" / f"{name}.provenance").read_bytes() == PROVENANCE


# -- uploads with attestations --------------------------------------------------------------

ATTESTATION = {"version": 1, "verification_material": {"certificate": "MII…"},
               "envelope": {"statement": "e30=", "signature": "c2ln"}}


def test_upload_keeps_attestations_beside_the_file(local_app: TestApp,
                                                   settings: Settings) -> None:
    name = wheel_name("acme", "1.0")
    post(local_app, "dev", name, wheel_bytes("acme", "1.0"), status=200,
         attestations=json.dumps([ATTESTATION]))
    kept = settings.root / "dev" / "acme" / f"{name}.attestations"
    assert json.loads(kept.read_bytes()) == [ATTESTATION]
    page, _ = listing(settings, "dev", "acme")
    assert page["files"][0]["provenance"] is None  # never offered as a provenance object
    assert regenerate(settings).ok and kept.exists()
    assert cli("promote", "acme==1.0", settings=settings).returncode == 0
    assert (settings.root / "stable" / "acme" / f"{name}.attestations").read_bytes() == \
        kept.read_bytes()
    assert cli("verify", settings=settings).returncode == 0
    kept.write_bytes(b"[]")
    result = cli("verify", settings=settings)
    assert result.returncode == 1
    assert f"attestations missing or changed: dev/acme/{name}.attestations" in result.stdout
    kept.write_bytes(json.dumps([ATTESTATION]).encode())
    # a sidecar this program did not write goes to quarantine
    stray = settings.root / "dev" / "acme" / f"{name}.provenance"
    stray.write_bytes(PROVENANCE)
    report = regenerate(settings)
    assert not stray.exists() and report.quarantined
    assert listing(settings, "dev", "acme")[0]["files"][0]["provenance"] is None


def test_the_longest_filename_taken_keeps_its_attestations(local_app: TestApp,
                                                           settings: Settings) -> None:
    # 242 bytes is the longest taken: <file>.attestations is then 255, the file system's limit
    longest = "acme-1.0-" + "x" * 220 + "-py3-none-any.whl"
    assert len(longest) == 246
    resp = post(local_app, "dev", longest, b"", status=400,
                attestations=json.dumps([ATTESTATION]))
    assert "longer than 242 bytes" in resp.status and "attestations" in resp.status
    build = "x" * (242 - len("acme-1.0--py3-none-any.whl"))
    name = f"acme-1.0-1{build[1:]}-py3-none-any.whl"
    assert len(name) == 242
    post(local_app, "dev", name, wheel_bytes("acme", "1.0"),
         status=200, attestations=json.dumps([ATTESTATION]))
    assert (settings.root / "dev" / "acme" / f"{name}.attestations").exists()


@pytest.mark.parametrize("value", ["not json", "{}", "[]", '[{"no": "envelope"}]'])
def test_bad_attestations_are_refused(local_app: TestApp, settings: Settings,
                                      value: str) -> None:
    resp = post(local_app, "dev", wheel_name("acme", "1.0"), wheel_bytes("acme", "1.0"),
                status=400, attestations=value)
    assert "attestations" in resp.status
    assert not (settings.root / "dev" / "acme").exists()
