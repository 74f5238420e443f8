"""A fresh deployment answers from the first minute: regen-rules makes what Apache needs."""

from __future__ import annotations

import json
import os

import pytest
from apache_server import deployed
from clients import PIP_ACCEPT, raw_get
from fake_upstream import running_upstream
from pypi_fallback.config import Settings
from pypi_fallback.deployment import prepare_deployment


@pytest.mark.apache
def test_fresh_deployment_lists_its_repositories() -> None:
    with running_upstream() as up, deployed(up) as site:  # regen-rules only, nothing published
        for repo in ("dev", "stable"):
            status, headers, body = raw_get(site.url(repo), headers={"Accept": PIP_ACCEPT})
            assert status == 200, site.error_log()
            assert json.loads(body)["projects"] == []
            status, _, body = raw_get(site.url(repo), headers={"Accept": "text/html"})
            assert status == 200 and b"<a " not in body

        status, headers, body = raw_get(site.origin, "/pypi/", headers={"Accept": PIP_ACCEPT})
        assert status == 200 and "Accept" in headers["Vary"]
        repos = json.loads(body)["repositories"]
        assert repos == [{"name": "dev", "url": "dev/", "fallback": ["stable", "upstream"]},
                         {"name": "stable", "url": "stable/", "fallback": ["upstream"]}]
        status, headers, body = raw_get(site.origin, "/pypi/", headers={"Accept": "text/html"})
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert b'<a href="dev/">dev</a>' in body and b'<a href="stable/">stable</a>' in body
        status, headers, _ = raw_get(site.origin, "/pypi")
        assert status == 301 and headers["Location"].endswith("/pypi/")
        status, headers, _ = raw_get(site.origin, "/")  # scripts/serve's own server
        assert status == 302 and headers["Location"].endswith("/pypi/")


def test_prepare_deployment_is_idempotent(settings: Settings) -> None:
    prepare_deployment(settings)
    made = sorted(p for p in settings.root.rglob("*")) + [settings.state / "claims.map",
                                                          settings.state / "claims.new.map"]
    stamps = [os.stat(p).st_mtime_ns for p in made]
    prepare_deployment(settings)
    assert [os.stat(p).st_mtime_ns for p in made] == stamps
    assert sorted(p.name for p in (settings.root / "dev").iterdir()) == \
        ["index.html", "index.v1_json", "index.var"]
    assert (settings.root / "index.var").samefile(settings.root / ".index.var")
