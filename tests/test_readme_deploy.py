"""The README's install, run as written: its shell block, as root, against this machine's
own Apache (/etc/apache2), then real clients and every command through it.

Only ``UPSTREAM`` (a loopback fake index), the passwords and Apache's port are changed.
/etc/apache2 is restored exactly afterwards (checked by checksums), the system Apache is
left running or stopped as it was, and /var/lib/pypi-fallback and /etc/pypi-fallback are
removed. Runs as root with CI=true or PYPI_FALLBACK_SYSTEM_TESTS=1; skipped otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apache_server import free_port
from clients import PIP_ACCEPT, pip_install, raw_get, twine_upload, uv_install
from distfactory import wheel_bytes, wheel_name, write_wheel
from fake_upstream import FakeUpstream, running_upstream
from helpers import not_writable_by

CHECKOUT = Path(__file__).resolve().parent.parent
ETC_APACHE = Path("/etc/apache2")
MADE = [Path("/var/lib/pypi-fallback"), Path("/etc/pypi-fallback")]
PID_FILE = Path("/var/run/apache2/apache2.pid")
SECTION = "## Installing into an existing Apache (sysadmins)"
PASSWORDS = {"alice": "alice-Pw-7", "bob": "bob-Pw-7", "carol": "carol-Pw-7"}

pytestmark = [
    pytest.mark.apache,
    pytest.mark.skipif(
        os.geteuid() != 0 or not (os.environ.get("CI") == "true"
                                  or os.environ.get("PYPI_FALLBACK_SYSTEM_TESTS") == "1"),
        reason="changes the system's Apache: runs as root with CI=true or "
               "PYPI_FALLBACK_SYSTEM_TESTS=1"),
]


def readme_install_block(upstream: str) -> str:
    """The first ``sh`` block of the README's sysadmin section, with the upstream URL and
    the passwords filled in (each substitution must find its one placeholder)."""
    text = (CHECKOUT / "README.md").read_text()
    section = text[text.index(SECTION):]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    script = block.group(1)
    for old, new in [('UPSTREAM=""', f'UPSTREAM="{upstream}"'),
                     *[(f"'change-me-{u}'", f"'{p}'") for u, p in PASSWORDS.items()]]:
        assert script.count(old) == 1, f"{old!r} is not once in the README's block"
        script = script.replace(old, new)
    return script


def tree_digest(top: Path) -> list[tuple[str, ...]]:
    """Every path under ``top`` with its type, mode, owner and content (or link target)."""
    rows = []
    for folder, dirs, files in os.walk(top):
        dirs.sort()
        for name in [".", *sorted(files), *dirs]:
            path = Path(folder, name)
            st = path.lstat()
            if path.is_symlink():
                what = "-> " + os.readlink(path)
            elif path.is_file():
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                what = "dir"
            rows.append((str(path.relative_to(top)), oct(st.st_mode), str(st.st_uid),
                         str(st.st_gid), what))
    return rows


def system_apache_pid() -> int | None:
    try:
        pid = int(PID_FILE.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def stop_system_apache() -> None:
    pid = system_apache_pid()
    if pid is None:
        return
    subprocess.run(["apache2ctl", "stop"], capture_output=True, timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise RuntimeError("the system Apache did not stop within 30 s")


def wait_for(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the system Apache does not listen on {port}")


def error_log() -> str:
    try:
        return Path("/var/log/apache2/error.log").read_text(errors="replace")[-3000:]
    except OSError:
        return ""


@pytest.fixture
def system_apache() -> Iterator[int]:
    """The system Apache, free to be changed: yields the port it will listen on."""
    for path in MADE:
        if path.exists():
            pytest.fail(f"{path} exists: this machine has a deployment the test would overwrite")
    was_running = system_apache_pid() is not None
    before = tree_digest(ETC_APACHE)
    backup = Path(tempfile.mkdtemp(prefix="pf-etc-apache2-"))
    subprocess.run(["cp", "-a", str(ETC_APACHE), str(backup / "apache2")], check=True)
    try:
        port = free_port()
        ports = ETC_APACHE / "ports.conf"
        text = ports.read_text()
        assert re.search(r"^Listen 80$", text, re.M), "ports.conf: no 'Listen 80' to replace"
        ports.write_text(re.sub(r"^Listen 80$", f"Listen 127.0.0.1:{port}", text, flags=re.M))
        yield port
    finally:
        stop_system_apache()
        shutil.rmtree(ETC_APACHE)
        subprocess.run(["cp", "-a", str(backup / "apache2"), str(ETC_APACHE)], check=True)
        shutil.rmtree(backup)
        for path in MADE:
            shutil.rmtree(path, ignore_errors=True)
        if was_running:
            subprocess.run(["apache2ctl", "start"], capture_output=True, timeout=60)
    assert tree_digest(ETC_APACHE) == before


def command(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A command as the README runs it: as root, from the venv, with the default config."""
    env = {k: v for k, v in os.environ.items() if k != "PYPI_FALLBACK_CONFIG"}
    return subprocess.run([str(Path(sys.prefix) / "bin" / name), *args], capture_output=True,
                          text=True, timeout=120, env=env)


def upload(url: str, user: str, *files: Path) -> str:
    done = twine_upload(url, user, PASSWORDS[user], *files)
    assert done.returncode == 0, done.stdout + done.stderr + error_log()
    return done.stdout


def test_the_readmes_install_works_as_written(system_apache: int, tmp_path: Path) -> None:
    with running_upstream() as up:
        up.add("six", wheel_name("six", "1.16.0"), wheel_bytes("six", "1.16.0"))
        script = readme_install_block(up.simple_url)
        env = {**os.environ, "PYPI_FALLBACK_VENV": sys.prefix,
               "DEBIAN_FRONTEND": "noninteractive",
               "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        env.pop("PYPI_FALLBACK_CONFIG", None)
        ran = subprocess.run(["/bin/sh", "-e", "-c", script], cwd=CHECKOUT, env=env,
                             capture_output=True, text=True, timeout=600)
        assert ran.returncode == 0, ran.stdout + ran.stderr + error_log()
        wait_for(system_apache)
        drive_clients(up, f"http://127.0.0.1:{system_apache}/pypi", tmp_path)


def drive_clients(up: FakeUpstream, base: str, tmp_path: Path) -> None:
    for repo in ("dev", "stable"):
        status, _, body = raw_get(f"{base}/{repo}/", headers={"Accept": PIP_ACCEPT})
        assert status == 200, error_log()
        assert json.loads(body)["projects"] == []
    status, _, body = raw_get(f"{base}/", headers={"Accept": PIP_ACCEPT})
    assert status == 200
    assert [r["name"] for r in json.loads(body)["repositories"]] == ["dev", "stable"]

    # the upstream fallback
    fallback = pip_install(f"{base}/dev/", tmp_path / "t1", "six==1.16.0")
    assert fallback.returncode == 0, fallback.stdout + fallback.stderr + error_log()
    assert (tmp_path / "t1" / "six-1.16.0.dist-info").is_dir()

    dist = tmp_path / "dist"
    upload(f"{base}/dev/", "alice", write_wheel(dist, "acme-deploy", "1.0"))
    upload(f"{base}/stable/", "carol", write_wheel(dist, "acme-released", "1.0"))
    refused = twine_upload(f"{base}/stable/", "bob", PASSWORDS["bob"],
                           write_wheel(dist, "acme-deploy", "1.1"))
    said = " ".join((refused.stdout + refused.stderr).split())
    assert refused.returncode != 0 and "403" in said
    assert "User 'bob' may not upload to 'stable': only members of the groups qc may" in said

    for install, target in [(pip_install, tmp_path / "t2"), (uv_install, tmp_path / "t3")]:
        got = install(f"{base}/dev/", target, "acme-deploy==1.0", "acme-released==1.0")
        assert got.returncode == 0, got.stdout + got.stderr + error_log()
        assert sorted(p.name for p in target.glob("*.dist-info")) == \
            ["acme_deploy-1.0.dist-info", "acme_released-1.0.dist-info"]

    # every command once, as root
    six = hashlib.sha256(wheel_bytes("six", "1.16.0")).hexdigest()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"six==1.16.0 --hash=sha256:{six}\n")
    for name, *args in [
        ("regen-rules", "--check", "--output", "/etc/apache2/conf-available/pypi-fallback.conf"),
        ("regen-index",),
        ("regen-index", "--refresh-upstream"),
        ("promote", "acme-deploy==1.0"),
        ("pin", "-r", str(requirements)),
        ("yank", "acme-deploy==1.0", "--reason", "broken", "--repo", "dev"),
        ("unyank", "acme-deploy==1.0", "--repo", "dev"),
        ("remove", "acme-deploy==1.0", "--repo", "dev"),
        ("verify",),
        ("audit",),
    ]:
        result = command(name, *args)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
    www = pwd.getpwnam("www-data").pw_uid
    for top in (Path("/var/lib/pypi-fallback/www"), Path("/var/lib/pypi-fallback/state")):
        assert not_writable_by(www, top) == []

    # uploads still work
    upload(f"{base}/dev/", "alice", write_wheel(dist, "acme-deploy", "2.0"))
    upload(f"{base}/stable/", "carol", write_wheel(dist, "acme-released", "2.0"))
    again = pip_install(f"{base}/dev/", tmp_path / "t4", "acme-deploy==2.0",
                        "acme-released==2.0")
    assert again.returncode == 0, again.stdout + again.stderr + error_log()

    # an upload token, as the README's "Upload tokens for CI" creates and uses it: the
    # system Apache runs the token provider in its own processes
    made = command("token", "create", "--user", "alice", "--repo", "dev", "--expires", "1d")
    assert made.returncode == 0, made.stderr
    ci = twine_upload(f"{base}/dev/", "__token__", made.stdout.strip(),
                      write_wheel(dist, "acme-deploy", "3.0"))
    assert ci.returncode == 0, ci.stdout + ci.stderr + error_log()
    assert command("token", "revoke", made.stdout.split("_")[1]).returncode == 0
    late = twine_upload(f"{base}/dev/", "__token__", made.stdout.strip(),
                        write_wheel(dist, "acme-deploy", "3.1"))
    assert late.returncode != 0 and "401" in late.stdout + late.stderr
