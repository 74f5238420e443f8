"""Real Apache for integration tests, started from the drop-in that regen-rules writes.

Each deployment has its own ServerRoot, port, tree and state under /var/tmp (Apache's
children run as www-data and cannot read pytest's 0700 temporary folders).
"""

from __future__ import annotations

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
def deployed(upstream: FakeUpstream, extra_config: str = "",
             extra_apache: str = "", mode: str = "redirect", upstream_url: str | None = None,
             rules_env: dict[str, str] | None = None,
             server_config: str = "", ttl: int = 600) -> Iterator[Deployment]:
    """A running deployment. ``upstream_url`` goes into the config (default: the fake
    upstream's); ``rules_env`` is added to the environment regen-rules runs in;
    ``server_config`` adds lines to the config's [server] table."""
    home = Path(tempfile.mkdtemp(prefix="pf-it-", dir="/var/tmp"))
    os.chmod(home, 0o755)
    proc = None
    try:
        config = write_config(home, extra_config, mode=mode, server=server_config, ttl=ttl,
                              upstream=upstream.simple_url if upstream_url is None
                              else upstream_url)
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
        check = subprocess.run([APACHE, "-t", "-f", str(conf)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        proc = subprocess.Popen([APACHE, "-f", str(conf), "-DFOREGROUND"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port, proc)
        yield Deployment(home, port, load_settings(config), upstream)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(home, ignore_errors=True)
