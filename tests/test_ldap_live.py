"""LDAP through Apache's own mod_authnz_ldap, against a real OpenLDAP (issue 16): the
directory's users and groups decide who uploads and who reads; the app learns only what
Apache let through."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from apache_server import BIN, USERS, Deployment, deployed
from clients import basic, pip_install, raw_get, twine_upload, uv_publish
from distfactory import write_sdist, write_wheel
from fake_upstream import FakeUpstream
from ldap_server import BIND_PASSWORD, PEOPLE, Directory, running_directory

pytestmark = pytest.mark.apache

REPOS = """\
[repos.dev]
writers = ["developers", "qc"]
readers = ["developers"]
fallback = ["stable", "upstream"]

[repos.stable]
writers = ["qc"]
readers = ["developers"]
fallback = ["upstream"]
"""
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


def password(user: str) -> str:
    return PEOPLE[user][0]


@pytest.fixture(scope="module")
def ldap_deployment(empty_upstream: FakeUpstream) -> Iterator[tuple[Deployment, Directory]]:
    with ldap_deployed(empty_upstream) as found:
        yield found


@contextmanager
def ldap_deployed(upstream: FakeUpstream) -> Iterator[tuple[Deployment, Directory]]:
    """A directory of its own and a deployment that asks it (bound with a password)."""
    with running_directory() as directory:
        secret = directory.home / "bind-password"
        secret.write_text(BIND_PASSWORD + "\n")
        secret.chmod(0o600)
        with deployed(upstream, directory.config(secret), repos=REPOS,
                      server_config="pages = false") as d:
            yield d, directory


def test_directory_users_upload_where_their_groups_may(
        ldap_deployment: tuple[Deployment, Directory], tmp_path: Path) -> None:
    d, _ = ldap_deployment
    wheel = write_wheel(tmp_path, "acme", "1.0")
    done = twine_upload(d.url("dev"), "alice", password("alice"), wheel)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (d.settings.root / "dev" / "acme" / wheel.name).exists()
    line = (d.settings.state / "audit.jsonl").read_text().splitlines()[-1]
    assert '"user": "alice"' in line
    # developers may not upload to stable; the qc group may
    other = write_wheel(tmp_path, "acme", "1.1")
    done = twine_upload(d.url("stable"), "alice", password("alice"), other)
    assert done.returncode != 0 and "403" in done.stdout + done.stderr
    assert not (d.settings.root / "stable" / "acme").exists()
    done = twine_upload(d.url("stable"), "carol", password("carol"), other)
    assert done.returncode == 0, done.stdout + done.stderr
    # in the directory but in no group; a wrong password; the htpasswd password is not used
    assert "403" in twine_upload(d.url("dev"), "dave", password("dave"), other).stdout
    for user, pw in [("bob", "nope"), ("bob", USERS["bob"])]:
        done = twine_upload(d.url("dev"), user, pw, write_wheel(tmp_path, "beta", "1.0"))
        assert done.returncode != 0 and "401" in done.stdout + done.stderr
    assert not (d.settings.root / "dev" / "beta").exists()


def test_directory_groups_decide_who_reads(ldap_deployment: tuple[Deployment, Directory],
                                           tmp_path: Path) -> None:
    d, _ = ldap_deployment
    wheel = write_wheel(tmp_path, "gamma", "1.0")
    assert twine_upload(d.url("stable"), "carol", password("carol"), wheel).returncode == 0
    assert raw_get(d.origin, "/pypi/dev/gamma/", JSON)[0] == 401
    assert raw_get(d.origin, "/pypi/dev/gamma/", {**JSON, **basic("dave", password("dave"))}
                   )[0] == 403
    status, headers, _ = raw_get(d.origin, "/pypi/dev/gamma/",
                                 {**JSON, **basic("bob", password("bob"))})
    assert status == 302 and headers["Location"].endswith("/pypi/stable/gamma/")
    assert raw_get(d.origin, "/pypi/stable/gamma/",
                   {**JSON, **basic("carol", password("carol"))})[0] == 200
    index = d.url("dev").replace("http://", f"http://bob:{password('bob')}@")
    done = pip_install(index, tmp_path / "site", "gamma")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "gamma").is_dir()
    assert pip_install(d.url("dev"), tmp_path / "anon", "gamma").returncode != 0


def test_tokens_with_a_directory(ldap_deployment: tuple[Deployment, Directory],
                                 tmp_path: Path) -> None:
    d, _ = ldap_deployment
    env = {**os.environ, "PYPI_FALLBACK_CONFIG": str(d.settings.source)}
    made = subprocess.run([str(BIN / "token"), "create", "--user", "bob", "--repo", "dev",
                           "--project", "delta"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert made.returncode == 0, made.stderr
    sdist = write_sdist(tmp_path, "delta", "1.0")
    done = uv_publish(d.url("dev"), "__token__", made.stdout.strip(), sdist)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (d.settings.root / "dev" / "delta" / sdist.name).exists()
    line = (d.settings.state / "audit.jsonl").read_text().splitlines()[-1]
    assert '"user": "bob"' in line and '"token": "' in line
    done = twine_upload(d.url("stable"), "__token__", made.stdout.strip(),
                        write_wheel(tmp_path, "delta", "1.1"))
    assert done.returncode != 0 and "403" in done.stdout + done.stderr


def test_tokens_work_while_the_directory_is_down(empty_upstream: FakeUpstream,
                                                 tmp_path: Path) -> None:
    """A token replaces a person's password in a pipeline and is checked against the
    index's own store: CI uploads (and `uv publish --check-url` reads of a restricted
    repository) must not fail because the directory is down or being restarted."""
    with ldap_deployed(empty_upstream) as (d, directory):
        env = {**os.environ, "PYPI_FALLBACK_CONFIG": str(d.settings.source)}
        made = subprocess.run([str(BIN / "token"), "create", "--user", "bob", "--repo",
                               "dev"], capture_output=True, text=True, env=env,
                              timeout=60)
        assert made.returncode == 0, made.stderr
        text = made.stdout.strip()
        first = write_wheel(tmp_path, "omega", "1.0")
        done = twine_upload(d.url("dev"), "__token__", text, first)
        assert done.returncode == 0, done.stdout + done.stderr
        # the directory goes away (a restart, an outage): slapd stops
        pid = int((directory.home / "slapd.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (directory.home / "slapd.pid").exists():
            time.sleep(0.1)
        assert not (directory.home / "slapd.pid").exists()
        # people cannot log in now; the token still reads and uploads
        assert raw_get(d.origin, "/pypi/dev/omega/",
                       {**JSON, **basic("bob", password("bob"))})[0] != 200
        status, _, body = raw_get(d.origin, "/pypi/dev/omega/",
                                  {**JSON, **basic("__token__", text)})
        assert status == 200, (status, body[:200])
        second = write_wheel(tmp_path, "omega", "1.1")
        done = twine_upload(d.url("dev"), "__token__", text, second)
        assert done.returncode == 0, done.stdout[-600:] + done.stderr[-600:]
        assert (d.settings.root / "dev" / "omega" / second.name).exists()
