"""One primary and two read replicas, all real Apache on 127.0.0.1: the replicas are the
drop-in that ``regen-rules --replica-of`` writes (mod_proxy + mod_cache_disk), driven by
real pip, uv and twine."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from apache_server import USERS, Deployment, deployed
from clients import PIP_ACCEPT, pip_install, raw_get, twine_upload, uv_install
from distfactory import wheel_bytes, wheel_name, write_wheel
from fake_upstream import FakeUpstream, running_upstream
from replica_server import Replica, replica_of, stop_primary
from uploads import twine_fields

pytestmark = pytest.mark.apache

MAX_AGE = 2  # server.listing_max_age of the primary: small, so that tests stay short
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with running_upstream() as up:
        up.add("public-lib", wheel_name("public-lib", "3.0"), wheel_bytes("public-lib", "3.0"))
        yield up


@pytest.fixture(scope="module")
def primary(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Deployment]:
    """stable holds acme-lib (only there: dev falls back to it)."""
    with deployed(upstream, server_config=f"listing_max_age = {MAX_AGE}\n") as d:
        wheel = write_wheel(tmp_path_factory.mktemp("dist"), "acme-lib", "1.0")
        result = twine_upload(d.url("stable"), "carol", USERS["carol"], wheel)
        assert result.returncode == 0, result.stdout + result.stderr + d.error_log()
        yield d


@pytest.fixture(scope="module")
def replicas(primary: Deployment) -> Iterator[tuple[Replica, Replica]]:
    with replica_of(primary) as one, replica_of(primary) as two:
        yield one, two


def installed(target: Path) -> list[str]:
    return sorted(p.name for p in target.iterdir() if p.name.endswith(".dist-info"))


def primary_requests(primary: Deployment, path: str) -> int:
    """How many GET/HEAD requests for exactly ``path`` reached the primary."""
    log = (primary.home / "access.log").read_text()
    return len(re.findall(rf'"(?:GET|HEAD) {re.escape(path)} HTTP/1\.1"', log))


@pytest.mark.parametrize(("spec", "expected"), [
    ("acme-lib", "acme_lib-1.0.dist-info"),      # only stable has it: dev's chain
    ("public-lib", "public_lib-3.0.dist-info"),  # nobody local has it: the upstream
])
@pytest.mark.parametrize("client", ["pip", "uv"])
def test_install_through_a_replica(primary: Deployment, replicas: tuple[Replica, Replica],
                                   tmp_path: Path, client: str, spec: str,
                                   expected: str) -> None:
    install = pip_install if client == "pip" else uv_install
    for replica in replicas:
        result = install(replica.url("dev"), tmp_path / str(replica.port), spec)
        assert result.returncode == 0, result.stdout + result.stderr + replica.error_log()
        assert installed(tmp_path / str(replica.port)) == [expected]


def test_redirects_to_the_primary_point_at_the_replica(primary: Deployment,
                                                       replicas: tuple[Replica, Replica]
                                                       ) -> None:
    one, _ = replicas
    status, headers, _ = raw_get(one.url("dev") + "acme-lib/", headers={"Accept": PIP_ACCEPT})
    assert status == 302 and headers["Location"] == one.url("stable") + "acme-lib/"
    status, headers, _ = raw_get(one.url("dev") + "Acme_Lib/", headers={"Accept": PIP_ACCEPT})
    assert status == 301 and headers["Location"] == one.url("dev") + "acme-lib/"
    # the upstream's own address is left as it is
    status, headers, _ = raw_get(one.url("dev") + "public-lib/", headers={"Accept": PIP_ACCEPT})
    assert status == 302
    assert headers["Location"] == primary.upstream.simple_url + "public-lib/"


def test_json_and_html_are_cached_apart(primary: Deployment,
                                        replicas: tuple[Replica, Replica],
                                        tmp_path: Path) -> None:
    _, two = replicas
    wheel = write_wheel(tmp_path, "acme-web", "1.0")
    result = twine_upload(primary.url("stable"), "carol", USERS["carol"], wheel)
    assert result.returncode == 0, result.stdout + result.stderr
    path = "/pypi/stable/acme-web/"
    answers = [raw_get(two.origin + path, headers={"Accept": accept})
               for accept in (PIP_ACCEPT, BROWSER, PIP_ACCEPT, BROWSER)]
    types = [headers["Content-Type"] for _, headers, _ in answers]
    assert types == ["application/vnd.pypi.simple.v1+json", "text/html"] * 2
    assert answers[0][2].startswith(b"{") and b"<html" in answers[1][2].lower()
    assert answers[2][2] == answers[0][2] and answers[3][2] == answers[1][2]
    assert [h["X-Cache"].split()[0] for _, h, _ in answers[2:]] == ["HIT", "HIT"]
    # one request per variant reached the primary (at most one more if the listing's
    # max-age ran out in between)
    assert primary_requests(primary, path) in (2, 3)


def test_an_upload_through_one_replica_is_installable_from_the_other(
        primary: Deployment, replicas: tuple[Replica, Replica], tmp_path: Path) -> None:
    one, two = replicas
    # the other replica has the project page cached already (as the upstream's redirect)
    status, _, _ = raw_get(two.url("dev") + "acme-new/", headers={"Accept": PIP_ACCEPT})
    assert status == 302
    wheel = write_wheel(tmp_path / "dist", "acme-new", "1.0")
    result = twine_upload(one.url("dev"), "alice", USERS["alice"], wheel)
    assert result.returncode == 0, result.stdout + result.stderr + one.error_log()
    uploaded = time.monotonic()
    assert (primary.settings.root / "dev" / "acme-new" / wheel.name).read_bytes() == \
        wheel.read_bytes()
    # visible on the other replica within the listing's max-age (plus a little slack)
    while True:
        status, _, _ = raw_get(two.url("dev") + "acme-new/", headers={"Accept": PIP_ACCEPT})
        if status == 200 or time.monotonic() - uploaded > MAX_AGE + 2:
            break
        time.sleep(0.1)
    assert status == 200, f"not visible after {time.monotonic() - uploaded:.1f} s"
    result = pip_install(two.url("dev"), tmp_path / "target", "acme-new")
    assert result.returncode == 0, result.stdout + result.stderr + two.error_log()
    assert installed(tmp_path / "target") == ["acme_new-1.0.dist-info"]


def test_a_burst_for_a_cold_file_is_answered_and_then_served_from_the_cache(
        primary: Deployment, replicas: tuple[Replica, Replica], tmp_path: Path) -> None:
    one, _ = replicas
    wheel = write_wheel(tmp_path, "acme-big", "1.0", payload=b"#" * 1024 * 1024)
    result = twine_upload(primary.url("stable"), "carol", USERS["carol"], wheel)
    assert result.returncode == 0, result.stdout + result.stderr
    path = f"/pypi/stable/acme-big/{wheel.name}"
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    answers: list[tuple[int, str]] = []
    start = threading.Barrier(20)

    def fetch() -> None:
        start.wait(timeout=30)
        status, _, body = raw_get(one.origin + path)
        answers.append((status, hashlib.sha256(body).hexdigest()))

    threads = [threading.Thread(target=fetch) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert answers == [(200, digest)] * 20
    burst = primary_requests(primary, path)
    # mod_cache's CacheLock covers stale entries only: how many of a burst for a cold file
    # reach the primary depends on timing (6-8 of 20 on a quiet machine, all 20 under load),
    # so it is printed, not asserted; what holds is that every answer is right and that
    # the replica answers alone from then on
    print(f"a burst of 20 for a cold file: {burst} requests reached the primary")
    assert 1 <= burst <= 20
    # from now on the replica answers alone
    status, headers, _ = raw_get(one.origin + path)
    assert status == 200 and headers["X-Cache"].startswith("HIT")
    assert primary_requests(primary, path) == burst


def test_with_the_primary_down_replicas_serve_what_they_have(upstream: FakeUpstream,
                                                              tmp_path: Path) -> None:
    with deployed(upstream, server_config=f"listing_max_age = {MAX_AGE}\n") as primary, \
            replica_of(primary) as one, replica_of(primary) as two:
        wheel = write_wheel(tmp_path / "dist", "acme-lib", "1.0")
        result = twine_upload(primary.url("stable"), "carol", USERS["carol"], wheel)
        assert result.returncode == 0, result.stdout + result.stderr
        for replica in (one, two):
            for name, client in (("pip", pip_install), ("uv", uv_install)):
                warm = client(replica.url("dev"), tmp_path / f"warm-{replica.port}-{name}",
                              "acme-lib")
                assert warm.returncode == 0, warm.stdout + warm.stderr
        stop_primary(primary)
        time.sleep(MAX_AGE + 0.5)  # every listing is stale now
        for replica in (one, two):
            for name, client in (("pip", pip_install), ("uv", uv_install)):
                target = tmp_path / f"{replica.port}-{name}"
                result = client(replica.url("dev"), target, "acme-lib")
                assert result.returncode == 0, result.stdout + result.stderr
                assert installed(target) == ["acme_lib-1.0.dist-info"]
            # an upload fails at once, with a 5xx, and leaves nothing cached behind
            data = wheel_bytes("acme-lib", "1.1")
            name = wheel_name("acme-lib", "1.1")
            began = time.monotonic()
            answer = requests.post(replica.url("stable"), data=twine_fields(name, data),
                                   files={"content": (name, data)},
                                   auth=("carol", USERS["carol"]), timeout=30)
            assert 500 <= answer.status_code < 600
            assert time.monotonic() - began < 10
            # something never asked for: a clean 5xx too
            status, _, _ = raw_get(replica.url("dev") + "never-asked/")
            assert 500 <= status < 600
