"""Integration: real Apache from the generated drop-in, real pip, uv and twine, and a fake
upstream on 127.0.0.1 that records every request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from apache_server import USERS, Deployment, deployed
from clients import PIP_ACCEPT, pip_install, raw_get, twine_upload, uv_install
from distfactory import sdist_bytes, wheel_bytes, wheel_name, write_sdist, write_wheel
from fake_upstream import FakeUpstream, running_upstream
from pypi_fallback.storage import Tree, add_claims
from uploads import twine_fields

pytestmark = pytest.mark.apache


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with running_upstream() as up:
        up.add("public-lib", wheel_name("public-lib", "3.0"), wheel_bytes("public-lib", "3.0"))
        up.add("overlay-lib", wheel_name("overlay-lib", "1.0"), wheel_bytes("overlay-lib", "1.0"))
        yield up


@pytest.fixture(scope="module")
def site(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Deployment]:
    """dev holds acme-app (uploaded by alice), stable holds acme-lib (uploaded by carol);
    both names were unknown upstream when first uploaded, so they are claimed."""
    with deployed(upstream, '[policy]\nprivate = ["secret-*"]\noverlay = ["overlay-lib"]\n') as d:
        dist = tmp_path_factory.mktemp("dist")
        app = write_wheel(dist / "app", "acme-app", "1.0")
        lib = write_wheel(dist / "lib", "acme-lib", "1.0")
        for url, user, path in [(d.url("dev"), "alice", app), (d.url("stable"), "carol", lib)]:
            result = twine_upload(url, user, USERS[user], path)
            assert result.returncode == 0, result.stdout + result.stderr + d.error_log()
        # later, someone publishes the same name upstream, with a higher version
        upstream.add("acme-app", wheel_name("acme-app", "99.0"), wheel_bytes("acme-app", "99.0"))
        yield d


def installed(target: Path) -> list[str]:
    return sorted(p.name for p in target.iterdir() if p.name.endswith(".dist-info"))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("acme-app", "acme_app-1.0.dist-info"),        # local, in dev
        ("acme-lib", "acme_lib-1.0.dist-info"),        # only in stable: dev falls back
        ("public-lib", "public_lib-3.0.dist-info"),    # only upstream: redirected
        ("Acme_Lib", "acme_lib-1.0.dist-info"),        # a name as a user types it
    ],
)
@pytest.mark.parametrize("client", ["pip", "uv"])
def test_install_through_dev(site: Deployment, tmp_path: Path, client: str, spec: str,
                             expected: str) -> None:
    install = pip_install if client == "pip" else uv_install
    result = install(site.url("dev"), tmp_path, spec)
    assert result.returncode == 0, result.stdout + result.stderr + site.error_log()
    assert installed(tmp_path) == [expected]


@pytest.mark.parametrize("client", ["pip", "uv"])
def test_local_name_never_goes_upstream(site: Deployment, tmp_path: Path, client: str) -> None:
    """acme-app is local (claimed): upstream's 99.0 is never offered, never asked for."""
    install = pip_install if client == "pip" else uv_install
    site.upstream.requests.clear()
    ok = install(site.url("dev"), tmp_path / "a", "acme-app")
    assert ok.returncode == 0 and installed(tmp_path / "a") == ["acme_app-1.0.dist-info"]
    refused = install(site.url("dev"), tmp_path / "b", "acme-app==99.0")
    assert refused.returncode != 0
    # stable lacks acme-app, and must not send it upstream either
    status, headers, _ = raw_get(site.url("stable") + "acme-app/")
    assert status == 404 and "Location" not in headers
    assert not site.upstream.requested("acme-app")


def test_claims_in_either_file_of_the_map_are_read_by_apache(site: Deployment) -> None:
    """A new name is claimed in the map's small file, then folded into the bulk (a full
    regen-index): stable sends it upstream at no point."""
    state = site.settings.state
    for fold in (False, True):
        if fold:
            add_claims(Tree.of(site.settings), {}, fold=True)
        where = state / ("claims.map" if fold else "claims.new.map")
        assert "acme-app unknown-upstream" in where.read_text().splitlines()
        status, headers, _ = raw_get(site.url("stable") + "acme-app/")
        assert status == 404 and "Location" not in headers
    status, headers, _ = raw_get(site.url("stable") + "public-lib/")  # not claimed
    assert status == 302 and headers["Location"].endswith("/public-lib/")
    assert not site.upstream.requested("acme-app")


def test_private_pattern_never_goes_upstream(site: Deployment) -> None:
    site.upstream.add("secret-sauce", wheel_name("secret-sauce", "1.0"),
                      wheel_bytes("secret-sauce", "1.0"))
    site.upstream.requests.clear()
    status, headers, _ = raw_get(site.url("dev") + "secret-sauce/")
    assert status == 404 and "Location" not in headers
    assert site.upstream.requests == []


def test_redirects(site: Deployment) -> None:
    status, headers, _ = raw_get(site.url("dev") + "acme-lib/")
    assert status == 302 and headers["Location"] == site.url("stable") + "acme-lib/"
    status, headers, _ = raw_get(site.url("dev") + "public-lib/")
    assert status == 302 and headers["Location"] == site.upstream.simple_url + "public-lib/"
    for typed in ("Acme_App/", "Acme_App", "acme_app", "ACME-APP"):
        status, headers, _ = raw_get(site.url("dev") + typed)
        assert status == 301 and headers["Location"] == site.url("dev") + "acme-app/", typed
    status, headers, _ = raw_get(site.url("dev") + "ACME..APP/acme_app-1.0-py3-none-any.whl")
    assert status == 301
    assert headers["Location"] == site.url("dev") + "acme-app/acme_app-1.0-py3-none-any.whl"
    for method in ("GET", "HEAD"):
        status, headers, _ = raw_get(site.url("dev") + "acme-lib/acme_lib-1.0-py3-none-any.whl",
                                     method=method)
        assert status == 302
        assert headers["Location"].endswith("/stable/acme-lib/acme_lib-1.0-py3-none-any.whl")


@pytest.mark.parametrize(
    ("accept", "status", "ctype"),
    [
        (PIP_ACCEPT, 200, "application/vnd.pypi.simple.v1+json"),
        ("application/vnd.pypi.simple.v1+json", 200, "application/vnd.pypi.simple.v1+json"),
        ("*/*", 200, "text/html"),  # what curl sends
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", 200, "text/html"),
        ("application/vnd.pypi.simple.v1+html", 200, "application/vnd.pypi.simple.v1+html"),
        # PEP 691's aliases: the answer names the version
        ("application/vnd.pypi.simple.latest+json", 200, "application/vnd.pypi.simple.v1+json"),
        ("application/vnd.pypi.simple.latest+html", 200, "application/vnd.pypi.simple.v1+html"),
        ("image/png, application/vnd.pypi.simple.latest+json;q=0.5", 200,
         "application/vnd.pypi.simple.v1+json"),
        ("image/png", 406, None),
    ],
)
def test_content_negotiation(site: Deployment, accept: str, status: int,
                             ctype: str | None) -> None:
    for path in ("", "acme-app/"):
        got, headers, body = raw_get(site.url("dev") + path, headers={"Accept": accept})
        assert got == status
        assert "accept" in headers.get("Vary", "").lower()
        if ctype:
            assert headers["Content-Type"].split(";")[0] == ctype
        if ctype and "json" in ctype:
            page = json.loads(body)
            assert page["meta"]["api-version"] == "1.4"
    assert "AH00690" not in site.error_log() and "no acceptable variant" not in site.error_log()


def test_dist_files_served_as_bytes(site: Deployment, tmp_path: Path) -> None:
    sdist = write_sdist(tmp_path, "acme-app", "1.1")
    result = twine_upload(site.url("dev"), "alice", USERS["alice"], sdist)
    assert result.returncode == 0, result.stdout + result.stderr
    for name, expected in [(sdist.name, sdist.read_bytes()),
                           (wheel_name("acme-app", "1.0"), None)]:
        for accept_encoding in ("gzip", "identity"):
            status, headers, body = raw_get(site.url("dev") + f"acme-app/{name}",
                                            headers={"Accept-Encoding": accept_encoding})
            assert status == 200
            assert headers["Content-Type"] == "application/octet-stream"
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert "Content-Encoding" not in headers
            assert int(headers["Content-Length"]) == len(body)
            if expected is not None:
                assert body == expected
    status, headers, body = raw_get(site.url("dev") +
                                    f"acme-app/{wheel_name('acme-app', '1.0')}.metadata")
    assert status == 200 and body.startswith(b"Metadata-Version")
    assert headers["Content-Type"] == "application/octet-stream"


def test_dotfiles_and_state_are_never_served(site: Deployment) -> None:
    folder = site.settings.root / "dev" / "acme-app"
    (folder / ".tmp-1-x-acme_app-9.0-py3-none-any.whl").write_bytes(b"partial")
    status, _, _ = raw_get(site.url("dev") + "acme-app/.tmp-1-x-acme_app-9.0-py3-none-any.whl")
    assert status in (403, 404)
    for path in ("/pypi/../state/audit.jsonl", "/pypi/dev/../../state/audit.jsonl",
                 "/pypi/%2e%2e/state/audit.jsonl", "/pypi/dev/%2e%2e/%2e%2e/state/claims.map"):
        status, _, body = raw_get(site.origin, path)
        assert status in (400, 403, 404), path
        assert b"alice" not in body


HOSTILE = [
    "/pypi/dev/%0d%0aSet-Cookie:%20evil=1/",
    "/pypi/dev/x%0d%0aLocation:%20http://evil.example/",
    "/pypi/dev//evil.example/",
    "/pypi/dev/%2F%2Fevil.example/",
    "/pypi/dev/%2f%2fevil.example%2f/",
    "/pypi/dev/@evil.example/",
    "/pypi/dev/Evil@evil.example/",
    "/pypi/dev/..%2F..%2Fevil/",
    "/pypi/dev/ACME%0aAPP/",
    "/pypi//dev/acme-lib/",
    "/pypi/dev/acme-lib%0d%0aX-Injected:%201/",
    "/pypi/dev/\\\\evil.example/",
]


@pytest.mark.parametrize("path", HOSTILE)
def test_hostile_urls_never_redirect_off_site(site: Deployment, path: str) -> None:
    status, headers, _ = raw_get(site.origin, path)
    assert status < 500
    assert "Set-Cookie" not in headers and "X-Injected" not in headers
    location = headers.get("Location")
    if location:
        assert location.startswith((site.origin + "/pypi/", site.upstream.simple_url)), location
        assert "evil" not in location.split("/")[2]
        assert "\r" not in location and "\n" not in location


def test_twine_permissions(site: Deployment, tmp_path: Path) -> None:
    wheel = write_wheel(tmp_path, "acme-perm", "1.0")
    cases = [
        ("stable", "alice", USERS["alice"], "403"),   # a developer cannot write stable
        ("dev", "alice", "wrong", "401"),             # wrong password
        ("dev", "dave", USERS["dave"], "403"),        # a valid user in no group
    ]
    for repo, user, password, code in cases:
        result = twine_upload(site.url(repo), user, password, wheel)
        assert result.returncode != 0, (repo, user)
        assert code in result.stdout + result.stderr, result.stdout + result.stderr
    # anonymous (twine will not even try without credentials)
    import requests

    data = wheel.read_bytes()
    anonymous = requests.post(site.url("dev"), data=twine_fields(wheel.name, data),
                              files={"content": (wheel.name, data)}, timeout=30)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    ok = twine_upload(site.url("stable"), "carol", USERS["carol"], wheel)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    again = twine_upload(site.url("stable"), "carol", USERS["carol"], wheel)
    assert again.returncode == 0, again.stdout + again.stderr   # identical: 200
    changed = write_wheel(tmp_path / "changed", "acme-perm", "1.0", payload=b"# new\n")
    refused = twine_upload(site.url("stable"), "carol", USERS["carol"], changed)
    assert refused.returncode != 0 and "File already exists" in refused.stdout + refused.stderr
    target = tmp_path / "target"
    installed_ok = pip_install(site.url("dev"), target, "acme-perm")   # via the chain
    assert installed_ok.returncode == 0, installed_ok.stderr
    assert installed(target) == ["acme_perm-1.0.dist-info"]


def test_upload_routes_and_limits(site: Deployment) -> None:
    status, headers, _ = raw_get(site.url("dev"), method="PUT")
    assert status == 401  # every method but GET/HEAD/OPTIONS needs a writer
    status, _, _ = raw_get(site.origin, "/pypi/+app/nope/", method="POST",
                           headers={"Authorization": "Basic YWxpY2U6YWxpY2UtcHc="})
    assert status == 404
    status, headers, body = raw_get(site.origin, "/pypi/+health")
    assert status == 200 and json.loads(body)["ok"] is True


def test_sdist_upload_through_apache_keeps_bytes(site: Deployment, tmp_path: Path) -> None:
    path = tmp_path / "acme_bytes-1.0.tar.gz"
    path.write_bytes(sdist_bytes("acme-bytes", "1.0"))
    result = twine_upload(site.url("dev"), "bob", USERS["bob"], path)
    assert result.returncode == 0, result.stdout + result.stderr + site.error_log()
    assert (site.settings.root / "dev" / "acme-bytes" / path.name).read_bytes() == \
        path.read_bytes()


@pytest.mark.parametrize("client", ["pip", "uv"])
def test_overlay_lists_local_and_upstream_versions(site: Deployment, tmp_path: Path,
                                                   client: str) -> None:
    local = tmp_path / "dist"
    wheel = write_wheel(local, "overlay-lib", "1.1")
    result = twine_upload(site.url("dev"), "alice", USERS["alice"], wheel)
    assert result.returncode == 0 or "already there" in result.stdout, result.stdout
    install = pip_install if client == "pip" else uv_install
    for spec, expected in [("overlay-lib==1.0", "overlay_lib-1.0.dist-info"),  # upstream's
                           ("overlay-lib==1.1", "overlay_lib-1.1.dist-info"),  # ours
                           ("overlay-lib", "overlay_lib-1.1.dist-info")]:
        target = tmp_path / f"t-{spec}"
        done = install(site.url("dev"), target, spec)
        assert done.returncode == 0, done.stdout + done.stderr
        assert installed(target) == [expected]
