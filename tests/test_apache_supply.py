"""Integration: real Apache, real pip and uv, a fake upstream with upload times. The
clients' own cut-offs (pip --uploaded-prior-to, uv --exclude-newer) select what the
timestamps say; the index's release-age policy keeps yesterday's release out until an
exception lets it in (an edit of the config, no restart); a quarantined project offers
nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apache_server import BIN, USERS, deployed
from clients import clean_env, pip_install, raw_get, twine_upload, uv_install
from distfactory import wheel_bytes, wheel_name, write_wheel
from fake_upstream import FakeUpstream, running_upstream
from pypi_fallback.storage import utc_timestamp

pytestmark = pytest.mark.apache
DAY = 86400.0
PROVENANCE = json.dumps({"version": 1, "attestation_bundles": []}).encode()


def pip_download(index: str, dest: Path, spec: str, *extra: str
                 ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-d",
         str(dest), "--index-url", index, *extra, spec],
        capture_output=True, text=True, env=clean_env(), timeout=180)


def uv_with(index: str, target: Path, spec: str, *extra: str
            ) -> subprocess.CompletedProcess[str]:
    uv = Path(sys.prefix) / "bin" / "uv"
    return subprocess.run(
        [str(uv), "pip", "install", "--no-deps", "--no-cache", "--python", sys.executable,
         "--target", str(target), "--index-url", index, *extra, spec],
        capture_output=True, text=True, env=clean_env(), timeout=180)


def got(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".whl", ".dist-info")))


@pytest.fixture
def upstream_times() -> Iterator[FakeUpstream]:
    with running_upstream() as up:
        up.add("cool-pkg", wheel_name("cool-pkg", "1.0"), wheel_bytes("cool-pkg", "1.0"),
               upload_time=utc_timestamp(time.time() - 30 * DAY), provenance=PROVENANCE)
        up.add("cool-pkg", wheel_name("cool-pkg", "1.1"), wheel_bytes("cool-pkg", "1.1"),
               upload_time=utc_timestamp(time.time() - 1 * DAY))  # published yesterday
        yield up


def test_client_cutoffs_follow_upload_times(upstream_times: FakeUpstream, tmp_path: Path) -> None:
    with deployed(upstream_times, mode="cache") as site:
        index = site.url("dev")
        cutoff = utc_timestamp(time.time() - 10 * DAY)[:19] + "Z"
        for spec, extra, expected in (
                ("cool-pkg", (), ["cool_pkg-1.1-py3-none-any.whl"]),
                ("cool-pkg", ("--uploaded-prior-to", cutoff), ["cool_pkg-1.0-py3-none-any.whl"])):
            dest = tmp_path / f"pip-{len(extra)}"
            result = pip_download(index, dest, spec, *extra)
            assert result.returncode == 0, result.stdout + result.stderr + site.error_log()
            assert got(dest) == expected
        result = uv_with(index, tmp_path / "uv", "cool-pkg", "--exclude-newer", cutoff)
        assert result.returncode == 0, result.stdout + result.stderr + site.error_log()
        assert got(tmp_path / "uv") == ["cool_pkg-1.0.dist-info"]

        # PEP 740: the listing links the provenance through this server; fetched once
        status, _, body = raw_get(f"{site.origin}/pypi/+upstream/cool-pkg/",
                                  headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        old = json.loads(body)["files"][0]
        assert old["provenance"] == f"../../+upstream/cool-pkg/{old['filename']}.provenance"
        url = f"{site.origin}/pypi/+upstream/cool-pkg/{old['filename']}.provenance"
        for _ in range(2):
            site.upstream.requests.clear()
            status, headers, body = raw_get(url)
            assert (status, body) == (200, PROVENANCE), body
            assert headers["Content-Type"].startswith("application/json")
        assert site.upstream.requests == []  # the second one came from disk

        # local files: the time each entered the repository
        first = write_wheel(tmp_path / "dist", "acme-times", "1.0")
        assert twine_upload(site.url("dev"), "alice", USERS["alice"], first).returncode == 0
        time.sleep(1.5)
        between = utc_timestamp()[:19] + "Z"
        time.sleep(1.5)
        second = write_wheel(tmp_path / "dist", "acme-times", "2.0")
        assert twine_upload(site.url("dev"), "alice", USERS["alice"], second).returncode == 0
        dest = tmp_path / "pip-local"
        result = pip_download(index, dest, "acme-times", "--uploaded-prior-to", between)
        assert result.returncode == 0, result.stdout + result.stderr
        assert got(dest) == ["acme_times-1.0-py3-none-any.whl"]
        result = uv_with(index, tmp_path / "uv-local", "acme-times", "--exclude-newer", between)
        assert result.returncode == 0, result.stdout + result.stderr
        assert got(tmp_path / "uv-local") == ["acme_times-1.0.dist-info"]
        result = uv_with(index, tmp_path / "uv-now", "acme-times")
        assert got(tmp_path / "uv-now") == ["acme_times-2.0.dist-info"], result.stderr


def test_min_age_keeps_yesterday_out_until_an_exception(upstream_times: FakeUpstream,
                                                        tmp_path: Path) -> None:
    with deployed(upstream_times, '[policy]\nmin_age = "7d"\n',
                  mode="cache") as site:
        index = site.url("dev")
        for client, install in (("pip", pip_install), ("uv", uv_install)):
            result = install(index, tmp_path / client, "cool-pkg")
            assert result.returncode == 0, result.stdout + result.stderr + site.error_log()
            assert got(tmp_path / client) == ["cool_pkg-1.0.dist-info"], client
        young = wheel_name("cool-pkg", "1.1")
        status, headers, body = raw_get(f"{site.origin}/pypi/+upstream/cool-pkg/{young}")
        assert status == 403, body
        assert b"younger than policy.min_age 7d" in body
        result = pip_install(index, tmp_path / "pinned", "cool-pkg==1.1")
        assert result.returncode != 0

        # break glass: an exception in the config, no restart
        config = site.settings.source
        config.write_text(config.read_text().replace(
            'min_age = "7d"', 'min_age = "7d"\nexceptions = ["cool-pkg==1.1"]'))
        # at once, though the fills' process looked at the policy within the second (for
        # the 403 above): a refusal looks at the config file first
        status, _, body = raw_get(f"{site.origin}/pypi/+upstream/cool-pkg/{young}")
        assert status == 200, body[:300]
        raw_get(f"{site.origin}/pypi/+health")  # the app notices on its next request
        listing = site.settings.root / "+upstream" / "cool-pkg" / "index.v1_json"
        deadline = time.monotonic() + 30
        while young not in listing.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
            raw_get(f"{site.origin}/pypi/+health")
        assert young in listing.read_text(), site.error_log()
        for client, install in (("pip", pip_install), ("uv", uv_install)):
            result = install(index, tmp_path / f"{client}-2", "cool-pkg")
            assert result.returncode == 0, result.stdout + result.stderr + site.error_log()
            assert got(tmp_path / f"{client}-2") == ["cool_pkg-1.1.dist-info"], client
        lines = [json.loads(line) for line in
                 (site.settings.state / "audit.jsonl").read_text().splitlines()]
        assert any(e["action"] == "policy-exception" and e["filename"] == young for e in lines)
        assert any(e["action"] == "cache" and e.get("policy_exception") == "cool-pkg==1.1"
                   for e in lines)


def test_quarantined_project_installs_nothing(upstream_times: FakeUpstream, tmp_path: Path) -> None:
    with deployed(upstream_times) as site:
        wheel = write_wheel(tmp_path / "dist", "acme-bad", "1.0")
        attestation = {"version": 1, "verification_material": {"certificate": "x"},
                       "envelope": {"statement": "e30=", "signature": "c2ln"}}
        att = wheel.with_name(wheel.name + ".publish.attestation")
        att.write_text(json.dumps(attestation))
        upload = subprocess.run(  # twine sends the attestations field
            [sys.executable, "-m", "twine", "upload", "--non-interactive",
             "--disable-progress-bar", "--attestations", "--repository-url", site.url("dev"),
             "-u", "alice", "-p", USERS["alice"], str(wheel), str(att)],
            capture_output=True, text=True, env=clean_env(), timeout=180)
        assert upload.returncode == 0, upload.stdout + upload.stderr
        kept = site.settings.root / "dev" / "acme-bad" / f"{wheel.name}.attestations"
        assert json.loads(kept.read_text()) == [attestation]
        env = {**os.environ, "PYPI_FALLBACK_CONFIG": str(site.settings.source)}
        result = subprocess.run([str(BIN / "status"), "acme-bad", "quarantined", "--reason",
                                 "malware found"], capture_output=True, text=True, env=env,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        status, _, body = raw_get(site.url("dev") + "acme-bad/",
                                  headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        assert status == 200
        assert json.loads(body)["project-status"] == {"status": "quarantined",
                                                      "reason": "malware found"}
        result = pip_install(site.url("dev"), tmp_path / "t", "acme-bad")
        assert result.returncode != 0 and "acme-bad" in result.stderr
        again = write_wheel(tmp_path / "dist", "acme-bad", "1.1")
        upload = twine_upload(site.url("dev"), "alice", USERS["alice"], again)
        assert upload.returncode != 0 and "quarantined" in upload.stdout + upload.stderr
