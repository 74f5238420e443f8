"""End to end: upload to dev, promote to stable, pin two upstream packages into stable,
stop the upstream, and install from stable with --require-hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from apache_server import USERS, deployed
from clients import pip_install, twine_upload
from distfactory import wheel_bytes, wheel_name, write_wheel
from fake_upstream import running_upstream
from helpers import run

pytestmark = pytest.mark.apache


def test_release_is_repeatable_without_the_upstream(tmp_path: Path) -> None:
    with running_upstream() as up:
        for name, version in [("six", "1.16.0"), ("attrs", "23.1.0")]:
            up.add(name, wheel_name(name, version), wheel_bytes(name, version))
        with deployed(up) as site:
            config = site.settings.source
            app = write_wheel(tmp_path / "dist", "acme-service", "2.0")
            uploaded = twine_upload(site.url("dev"), "alice", USERS["alice"], app)
            assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
            run("promote", "acme-service==2.0", "--from", "dev", "--to", "stable",
                config=config)

            lines = []
            for path_name, data in [(app.name, app.read_bytes()),
                                    *[(n, d) for files in up.files.values()
                                      for n, d in files.items()]]:
                project, version = path_name.split("-")[:2]
                lines.append(f"{project}=={version} "
                             f"--hash=sha256:{hashlib.sha256(data).hexdigest()}")
            requirements = tmp_path / "requirements.txt"
            requirements.write_text("\n".join(lines) + "\n")
            upstream_only = tmp_path / "upstream.txt"
            upstream_only.write_text("\n".join(lines[1:]) + "\n")
            pinned = run("pin", "-r", str(upstream_only), "--to", "stable", config=config)
            assert "2 files copied" in pinned.stdout

            up.stop()
            target = tmp_path / "site-packages"
            result = pip_install(site.url("stable"), target, "--require-hashes", "-r",
                                 str(requirements))
            assert result.returncode == 0, result.stdout + result.stderr + site.error_log()
            assert sorted(p.name for p in target.iterdir() if p.name.endswith(".dist-info")) \
                == ["acme_service-2.0.dist-info", "attrs-23.1.0.dist-info",
                    "six-1.16.0.dist-info"]
            audit = run("audit", "--user", "carol", config=config).stdout
            assert audit.count("promote") == 1 and audit.count("pin") == 2
            assert run("verify", config=config).returncode == 0
