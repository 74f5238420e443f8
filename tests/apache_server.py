"""Real Apache for integration tests, started from the drop-in that regen-rules writes.

Each deployment has its own ServerRoot, port, tree and state under /var/tmp (Apache's
children run as www-data and cannot read pytest's 0700 temporary folders).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conftest import write_config
from fake_upstream import FakeUpstream
from pypi_fallback.config import Settings, load_settings
from pypi_fallback.serve import APACHE, write_httpd_conf

USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "dave": "dave-pw"}
BIN = Path(sys.prefix) / "bin"


@dataclass
class Deployment:
    home: Path
    port: int
    settings: Settings
    upstream: FakeUpstream

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, repo: str) -> str:
        return f"{self.origin}{self.settings.url_prefix}/{repo}/"

    def error_log(self) -> str:
        try:
            return (self.home / "error.log").read_text()
        except FileNotFoundError:
            return ""


CHECKOUT = Path(__file__).resolve().parent.parent


@functools.cache
def venv_runs_the_checkout() -> None:
    """Apache runs the copy of the code installed in the venv: make sure it is this
    checkout's (``scripts/test`` installs it first), so that a test never passes or fails
    on code other than the one under test."""
    import pypi_fallback

    installed = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" \
        / "site-packages" / "pypi_fallback"
    pairs = [(path, installed / path.relative_to(CHECKOUT / "wsgi" / "pypi_fallback"))
             for path in (CHECKOUT / "wsgi" / "pypi_fallback").rglob("*")
             if path.is_file() and "__pycache__" not in path.parts]
    share = Path(sys.prefix) / "share" / "pypi-fallback"
    pairs += [(path, share / path.name) for path in (CHECKOUT / "apache").glob("*.j2")]
    assert pypi_fallback.__file__  # imported from the checkout (conftest), compared below
    for source, copy in pairs:
        if not copy.is_file() or copy.read_bytes() != source.read_bytes():
            raise RuntimeError(f"{copy} is not this checkout's {source.relative_to(CHECKOUT)}: "
                               "run the tests with scripts/test, which installs the checkout "
                               "into the venv Apache runs")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"apache2 exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"apache2 did not listen on {port} within {seconds} s")


@contextmanager
def running(args: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A server process (Apache, slapd) listening on ``port`` on loopback; stopped on exit
    (SIGTERM, then SIGKILL), within bounded time either way."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def running_apache(conf: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Apache from ``conf``, after its own config test."""
    check = subprocess.run([APACHE, "-t", "-f", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    with running([APACHE, "-f", str(conf), "-DFOREGROUND"], port) as proc:
        yield proc


@contextmanager
def deployed(upstream: FakeUpstream, extra_config: str = "",
             extra_apache: str = "", mode: str = "redirect", upstream_url: str | None = None,
             rules_env: dict[str, str] | None = None,
             server_config: str = "", repos: str | None = None,
             ttl: int = 600) -> Iterator[Deployment]:
    """A running deployment. ``upstream_url`` goes into the config (default: the fake
    upstream's); ``rules_env`` is added to the environment regen-rules runs in;
    ``server_config`` adds lines to the config's [server] table; ``repos`` replaces the
    config's [repos.*] tables."""
    venv_runs_the_checkout()
    home = Path(tempfile.mkdtemp(prefix="pf-it-", dir="/var/tmp"))
    os.chmod(home, 0o755)
    try:
        config = write_config(home, extra_config, mode=mode, server=server_config, ttl=ttl,
                              upstream=upstream.simple_url if upstream_url is None
                              else upstream_url, repos=repos)
        if os.geteuid() == 0:
            for sub in ("www", "state"):
                shutil.chown(home / sub, "www-data", "www-data")
        htpasswd = home / "htpasswd"
        htpasswd.unlink()
        for i, (user, password) in enumerate(USERS.items()):
            flags = "-bmc" if i == 0 else "-bm"
            subprocess.run(["htpasswd", flags, str(htpasswd), user, password], check=True,
                           capture_output=True)
        os.chmod(htpasswd, 0o644)
        env = {**os.environ, "PYPI_FALLBACK_CONFIG": str(config), **(rules_env or {})}
        dropin = home / "pypi-fallback.conf"
        subprocess.run([str(BIN / "regen-rules"), "--output", str(dropin), "--check"],
                       check=True, env=env, capture_output=True)
        port = free_port()
        conf = write_httpd_conf(home, "127.0.0.1", port, dropin, "www-data")
        if extra_apache:
            conf.write_text(conf.read_text() + extra_apache.format(home=home))
        with running_apache(conf, port):
            yield Deployment(home, port, load_settings(config), upstream)
    finally:
        shutil.rmtree(home, ignore_errors=True)
