"""The dependency-confusion guarantee through real Apache, one test per way it was broken:
the fake upstream's request log is the witness."""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from apache_server import USERS, Deployment, deployed
from clients import pip_install, raw_get, raw_upload, twine_upload
from distfactory import sdist_bytes, wheel_bytes, wheel_name, write_wheel
from fake_upstream import FakeUpstream, running_upstream

pytestmark = pytest.mark.apache

POLICY = '[policy]\nprivate = ["secret-*"]\noverlay = ["overlay-lib"]\n'


def upload(site: Deployment, repo: str, filename: str, data: bytes, user: str = "alice",
           **kw: object) -> tuple[int, str, str]:
    status, headers, body = raw_upload(site.url(repo), user, USERS[user], filename, data,
                                       **kw)  # type: ignore[arg-type]
    return status, body, headers.get("Retry-After", "")


def claims(site: Deployment) -> str:
    """Both files of the claims map (the bulk and the names claimed since)."""
    paths = [site.settings.state / "claims.map", site.settings.state / "claims.new.map"]
    return "".join(path.read_text() for path in paths if path.exists())


@pytest.fixture
def public() -> Iterator[FakeUpstream]:
    with running_upstream() as up:
        up.add("pubpkg", wheel_name("pubpkg", "1.0"), wheel_bytes("pubpkg", "1.0"))
        up.add("six", wheel_name("six", "1.16.0"), wheel_bytes("six", "1.16.0"))
        yield up


def test_1_a_space_in_an_sdist_name_cannot_take_over_a_public_project(
        public: FakeUpstream, tmp_path: Path) -> None:
    with deployed(public, POLICY) as site:
        for name in ("pubpkg x", "pubpkg;x", "pubpkg?x", "pubpkg#x", "pubpkg%x", "pubpkg<x",
                     'pubpkg"x'):
            status, body, _ = upload(site, "dev", f"{name}-1.0.tar.gz", sdist_bytes(name, "1.0"))
            assert status == 400, (name, status, body)
            assert "Invalid" in body
        status, body, _ = upload(site, "dev", "pubpkg-6.6.6.tar.gz",
                                 sdist_bytes("pubpkg", "6.6.6"))
        assert status == 403 and "public project" in body
        assert "pubpkg" not in claims(site)
        # pip still gets the public project, through the fallback, from dev
        result = pip_install(site.url("dev"), tmp_path / "t", "pubpkg")
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "t" / "pubpkg-1.0.dist-info").is_dir()


INTERNAL = ["/pypi/+app/+cache/claimedpkg%09/", "/pypi/+app/+cache/claimedpkg%23/",
            "/pypi/+app/+cache/claimedpkg%3F/", "/pypi/+app/+cache/claimedpkg;x/",
            "/pypi/+app/+cache/claimedpkg/", "/pypi/+app/+cache/secret-x/",
            "/pypi/+app/+fetch/claimedpkg/claimedpkg-1.0.tar.gz",
            "/pypi/+app/+fetch/pubpkg/pubpkg-1.0-py3-none-any.whl"]


@pytest.mark.parametrize("mode", ["cache", "redirect"])
def test_2_anonymous_clients_cannot_reach_the_internal_routes(public: FakeUpstream,
                                                              mode: str) -> None:
    public.add("claimedpkg", "claimedpkg-1.0.tar.gz", sdist_bytes("claimedpkg", "1.0"))
    with deployed(public, POLICY, mode=mode) as site:
        status, body, _ = upload(site, "dev", "claimedpkg-1.0.tar.gz",
                                 sdist_bytes("claimedpkg", "1.0"))
        assert status == 403  # public: refused (it is not an overlay)
        site.settings.state.joinpath("claims.map").write_text(
            "# claims\nclaimedpkg unknown-upstream\n")
        public.requests.clear()
        state_before = sorted(p.name for p in site.settings.state.rglob("*"))
        for path in INTERNAL:
            status, _, _ = raw_get(site.origin, path)
            assert status == 403, path
        for i in range(50):
            status, _, _ = raw_get(site.origin, f"/pypi/+app/+cache/random-name-{i}/")
            assert status == 403
        assert public.requests == []
        assert sorted(p.name for p in site.settings.state.rglob("*")) == state_before
        assert not (site.settings.root / "+upstream").exists()


def test_2b_cache_mode_random_names_leave_no_state(public: FakeUpstream) -> None:
    with deployed(public, POLICY, mode="cache") as site:
        for i in range(50):
            status, _, _ = raw_get(site.origin, f"/pypi/+upstream/random-name-{i}/")
            assert status == 404
        assert len(public.requests) == 50  # each name asked once: a caching proxy must
        cached = site.settings.state / "upstream"
        assert not cached.exists() or list(cached.iterdir()) == []
        assert not (site.settings.root / "+upstream").exists() or \
            list((site.settings.root / "+upstream").iterdir()) == []


def test_3_an_outage_never_turns_a_public_name_into_a_claim(public: FakeUpstream,
                                                            tmp_path: Path) -> None:
    with deployed(public, POLICY) as site:
        public.fault = "blackhole"
        started = time.monotonic()
        status, body, retry = upload(site, "dev", wheel_name("six", "99.0.0"),
                                     wheel_bytes("six", "99.0.0"))
        assert status == 503, body
        assert "'six'" in body and "could not be asked" in body and int(retry) > 0
        assert time.monotonic() - started < 3 * site.settings.upstream_timeout + 5
        # a private name needs no upstream: it goes through during the outage
        status, body, _ = upload(site, "dev", wheel_name("secret-sauce", "1.0"),
                                 wheel_bytes("secret-sauce", "1.0"))
        assert status == 200, body
        public.fault = None
        assert "six" not in claims(site)
        assert not (site.settings.root / "dev" / "six").exists()
        result = pip_install(site.url("dev"), tmp_path / "t", "six<2")
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "t" / "six-1.16.0.dist-info").is_dir()


def test_4_one_upstream_for_the_rules_and_the_app(public: FakeUpstream,
                                                  tmp_path: Path) -> None:
    """upstream.url = "": regen-rules (root, with its own pip config) resolves it, and the
    daemon (www-data, another HOME, no such setting) uses the same index from the record."""
    with deployed(public, POLICY, upstream_url="",
                  rules_env={"PIP_INDEX_URL": public.simple_url}) as site:
        record = json.loads((site.settings.state / "upstream.json").read_text())
        assert record["url"] == public.simple_url
        status, headers, _ = raw_get(site.origin, "/pypi/dev/pubpkg/")
        assert status == 302 and headers["Location"] == f"{public.simple_url}pubpkg/"
        public.requests.clear()
        status, body, _ = upload(site, "dev", wheel_name("pubpkg", "2.0"),
                                 wheel_bytes("pubpkg", "2.0"))
        assert status == 403, body  # the app asked the same upstream, which knows pubpkg
        assert public.requested("pubpkg")
        health = json.loads(raw_get(site.origin, "/pypi/+health")[2])
        assert health["upstream_url"] == public.simple_url
        status, body, _ = upload(site, "dev", wheel_name("brand-new", "1.0"),
                                 wheel_bytes("brand-new", "1.0"))
        assert status == 200, body
        audit = [json.loads(line) for line in
                 (site.settings.state / "audit.jsonl").read_text().splitlines()]
        assert audit[-1]["upstream"] == public.simple_url
        assert audit[-1]["claim"] == "unknown-upstream"


def symlink_wheel() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(wheel_bytes("acme", "1.0"))) as src, \
            zipfile.ZipFile(buf, "w") as out:
        for info in src.infolist():
            out.writestr(info, src.read(info))
        link = zipfile.ZipInfo("acme/passwd")
        link.external_attr = 0o120777 << 16
        out.writestr(link, "/etc/passwd")
    return buf.getvalue()


def test_5_the_rest(public: FakeUpstream, tmp_path: Path) -> None:
    with deployed(public, POLICY) as site:
        status, body, _ = upload(site, "dev", "acmé-1.0.tar.gz", sdist_bytes("acmé", "1.0"))
        assert status == 400 and "Invalid" in body
        assert upload(site, "dev", "claimedpkg-1.0.tar.gz",
                      sdist_bytes("claimedpkg", "1.0"))[0] == 200
        status, body, _ = upload(site, "dev", "CLAIMEDPKG-1.0.tar.gz",
                                 sdist_bytes("CLAIMEDPKG", "1.0"))
        assert status == 400 and "already exists" in body
        status, body, _ = upload(site, "dev", wheel_name("pubpkg", "3.0"),
                                 wheel_bytes("pubpkg", "3.0"))
        assert status == 403 and "policy.overlay" in body
        assert str(site.settings.source) not in body and str(site.home) not in body
        status, body, _ = upload(site, "dev", wheel_name("acme", "1.0"), symlink_wheel())
        assert status == 400 and "Symbolic link" in body
        for method in ("POST", "PUT", "DELETE"):
            assert raw_get(site.origin, "/pypi/+health", method=method)[0] in (403, 405)
        assert raw_get(site.origin, "/pypi/+health")[0] == 200
        # a real client sees the same: twine prints the reason
        result = twine_upload(site.url("dev"), "alice", USERS["alice"],
                              write_wheel(tmp_path, "pubpkg", "4.0"))
        assert result.returncode != 0 and "policy.overlay" in result.stdout + result.stderr
        assert os.path.exists(site.settings.state / "claims.map")
