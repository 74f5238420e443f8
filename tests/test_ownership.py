"""Every command run as root leaves the tree and the state folder writable by the web
server's user (RELIABILITY.md 31), and the errors a sysadmin meets say what to do."""

from __future__ import annotations

import hashlib
import os
import pwd
import subprocess
from pathlib import Path

import pytest
from apache_server import BIN, USERS, Deployment, deployed
from clients import raw_get, twine_upload
from distfactory import wheel_bytes, wheel_name, write_wheel
from fake_upstream import running_upstream
from helpers import not_writable_by

pytestmark = [pytest.mark.apache,
              pytest.mark.skipif(os.geteuid() != 0, reason="commands change user only as root")]


def as_root(site: Deployment, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / command), "--config", str(site.settings.source), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SUDO_USER": "carol"})


def run_every_command(site: Deployment, requirements: Path) -> None:
    """Each command once, as root, each expected to succeed."""
    home = site.home
    for command, *args in [
        ("regen-rules", "--check", "--output", str(home / "pypi-fallback.conf")),
        ("regen-index",),
        ("regen-index", "--refresh-upstream"),
        ("promote", "acme-app==1.0"),
        ("pin", "-r", str(requirements)),
        ("yank", "acme-app==1.0", "--reason", "broken"),
        ("unyank", "acme-app==1.0"),
        ("remove", "acme-app==1.0", "--repo", "dev"),
        ("verify",),
        ("audit",),
    ]:
        result = as_root(site, command, *args)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"


def test_commands_run_as_root_leave_everything_to_the_web_server(tmp_path: Path) -> None:
    www = pwd.getpwnam("www-data").pw_uid
    with running_upstream() as up:
        up.add("six", wheel_name("six", "1.16.0"), wheel_bytes("six", "1.16.0"))
        with deployed(up) as site:
            first = write_wheel(tmp_path / "dist", "acme-app", "1.0")
            assert twine_upload(site.url("dev"), "alice", USERS["alice"], first).returncode == 0
            six = hashlib.sha256(wheel_bytes("six", "1.16.0")).hexdigest()
            requirements = tmp_path / "requirements.txt"
            requirements.write_text(f"six==1.16.0 --hash=sha256:{six}\n")
            # a fresh state folder: everything that regen-rules makes is made by it
            for path in (site.settings.state / "claims.map", site.settings.state / "locks"):
                assert path.exists()

            run_every_command(site, requirements)

            for top in (site.settings.root, site.settings.state):
                assert not_writable_by(www, top) == []
            later = [write_wheel(tmp_path / "dist", "acme-app", "2.0"),
                     write_wheel(tmp_path / "dist", "acme-new", "1.0")]
            for user, repo in [("alice", "dev"), ("carol", "stable")]:
                done = twine_upload(site.url(repo), user, USERS[user], *later)
                assert done.returncode == 0, done.stdout + done.stderr + site.error_log()
            status, _, _ = raw_get(site.url("stable") + "acme-new/")
            assert status == 200


def test_refusals_and_storage_errors_say_what_to_do(tmp_path: Path) -> None:
    with running_upstream() as up, deployed(up) as site:
        wheel = write_wheel(tmp_path / "dist", "acme-app", "1.0")
        refused = twine_upload(site.url("stable"), "alice", USERS["alice"], wheel)
        said = " ".join((refused.stdout + refused.stderr).split())  # twine wraps lines
        assert refused.returncode != 0 and "403" in said
        assert "User 'alice' may not upload to 'stable': only members of the groups qc may" \
            in said

        # the daemon cannot write a folder of the state: 500, the log says where and who
        records = site.settings.state / "records" / "dev"
        records.mkdir(parents=True)
        os.chown(records, 0, 0)
        failed = twine_upload(site.url("dev"), "alice", USERS["alice"], wheel)
        assert failed.returncode != 0
        assert str(site.settings.state) not in failed.stdout + failed.stderr
        log = site.error_log()
        assert f"Permission denied: {records}" in log and "running as user www-data" in log

        # a command meeting the same: exit 2, one line naming the path and the user
        audit_log = site.settings.state / "audit.jsonl"
        audit_log.write_text("")
        os.chmod(audit_log, 0o600)
        os.chown(audit_log, 0, 0)
        result = as_root(site, "audit")
        assert result.returncode == 2
        assert result.stderr.strip() == (f"audit: Permission denied: {audit_log} "
                                         "(running as user www-data)")
