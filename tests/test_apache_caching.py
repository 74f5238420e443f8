"""Every answer of the real Apache says how long a cache may keep it: files immutable,
listings and redirects a short max-age with stale-if-error and validators, Vary: Accept on
listings only, the app's own answers no-store."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from apache_server import USERS, Deployment, deployed
from clients import PIP_ACCEPT, raw_get, twine_upload
from distfactory import wheel_bytes, wheel_name, write_wheel
from fake_upstream import FakeUpstream, running_upstream
from uploads import twine_fields

pytestmark = pytest.mark.apache

LISTING = "public, max-age=7, stale-if-error=604800"
IMMUTABLE = "public, max-age=31536000, immutable"
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
WHEEL = "acme_lib-1.0-py3-none-any.whl"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with running_upstream() as up:
        up.add("public-lib", wheel_name("public-lib", "3.0"), wheel_bytes("public-lib", "3.0"))
        yield up


@pytest.fixture(scope="module")
def site(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Deployment]:
    with deployed(upstream, server_config="listing_max_age = 7\n") as d:
        wheel = write_wheel(tmp_path_factory.mktemp("dist"), "acme-lib", "1.0")
        result = twine_upload(d.url("stable"), "carol", USERS["carol"], wheel)
        assert result.returncode == 0, result.stdout + result.stderr + d.error_log()
        yield d


def header(headers: object, name: str) -> list[str]:
    return headers.get_all(name) or []  # type: ignore[attr-defined, no-any-return]


@pytest.mark.parametrize("accept", [PIP_ACCEPT, BROWSER, "application/vnd.pypi.simple.v1+html"])
@pytest.mark.parametrize("path", ["stable/acme-lib/", "stable/", "dev/", ""])
def test_listings_are_fresh_briefly_and_vary_by_accept(site: Deployment, path: str,
                                                       accept: str) -> None:
    status, headers, _ = raw_get(f"{site.origin}/pypi/{path}", headers={"Accept": accept})
    assert status == 200
    assert header(headers, "Cache-Control") == [LISTING]
    assert "accept" in headers["Vary"].lower()
    assert headers["ETag"] and headers["Last-Modified"]
    # a revalidation is answered 304 (a cache refreshes without the body)
    status, _, body = raw_get(f"{site.origin}/pypi/{path}",
                              headers={"Accept": accept, "If-None-Match": headers["ETag"]})
    assert status == 304 and body == b""


@pytest.mark.parametrize("name", [WHEEL, WHEEL + ".metadata"])
@pytest.mark.parametrize("accept", [PIP_ACCEPT, "*/*", BROWSER])
def test_files_are_immutable_and_do_not_vary(site: Deployment, name: str, accept: str) -> None:
    status, headers, _ = raw_get(site.url("stable") + "acme-lib/" + name,
                                 headers={"Accept": accept})
    assert status == 200
    assert header(headers, "Cache-Control") == [IMMUTABLE]
    assert "Vary" not in headers
    assert headers["ETag"] and headers["Last-Modified"]


@pytest.mark.parametrize(("path", "status"), [
    ("dev/acme-lib/", 302),                # down the chain
    ("dev/acme-lib/" + WHEEL, 302),
    ("dev/public-lib/", 302),              # to the upstream
    ("dev/Acme_Lib/", 301),                # not normalized
    ("stable/acme-lib/nope-1.0.tar.gz", 404),
])
def test_redirects_and_misses_last_as_long_as_a_listing(site: Deployment, path: str,
                                                         status: int) -> None:
    got, headers, _ = raw_get(f"{site.origin}/pypi/{path}", headers={"Accept": PIP_ACCEPT})
    assert got == status
    assert header(headers, "Cache-Control") == [LISTING]


def test_the_apps_answers_are_not_stored(site: Deployment) -> None:
    status, headers, _ = raw_get(f"{site.origin}/pypi/+health")
    assert status == 200 and header(headers, "Cache-Control") == ["no-store"]
    # refused by Apache before the app (no password), and by the app (a bad form)
    status, headers, _ = raw_get(site.url("dev"), method="POST",
                                 headers={"Content-Length": "0"})
    assert status == 401 and header(headers, "Cache-Control") == ["no-store"]
    auth = base64.b64encode(b"alice:" + USERS["alice"].encode()).decode()
    status, headers, _ = raw_get(site.url("dev"), method="POST",
                                 headers={"Content-Length": "0", "Authorization": f"Basic {auth}"})
    assert status == 400 and header(headers, "Cache-Control") == ["no-store"]


def test_an_upload_is_not_stored(site: Deployment, tmp_path: Path) -> None:
    wheel = write_wheel(tmp_path, "acme-lib", "1.1")
    data = wheel.read_bytes()
    answer = requests.post(site.url("stable"), data=twine_fields(wheel.name, data),
                           files={"content": (wheel.name, data)},
                           auth=("carol", USERS["carol"]), timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"


def test_cache_mode_fills_say_what_apache_says(upstream: FakeUpstream) -> None:
    """The app answers the first request for an upstream listing or file (cache mode); Apache
    every later one from disk: the same Cache-Control either way."""
    with deployed(upstream, mode="cache", server_config="listing_max_age = 7\n") as d:
        name = wheel_name("public-lib", "3.0")
        for _ in range(2):
            status, headers, _ = raw_get(d.url("+upstream") + "public-lib/",
                                         headers={"Accept": PIP_ACCEPT})
            assert status == 200 and header(headers, "Cache-Control") == [LISTING]
            assert "accept" in headers["Vary"].lower()
            status, headers, _ = raw_get(d.url("+upstream") + "public-lib/" + name)
            assert status == 200 and header(headers, "Cache-Control") == [IMMUTABLE]
        status, headers, _ = raw_get(d.url("+upstream") + "no-such-lib/")
        assert status == 404 and header(headers, "Cache-Control") == ["no-store"]
