"""Real Apache as a read replica of a test deployment, from the drop-in that
``regen-rules --replica-of`` writes: its own ServerRoot, port, disk cache and folder of files
under /var/tmp."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from apache_server import BIN, Deployment, free_port, running_apache
from pypi_fallback.rules import replica_modules
from pypi_fallback.serve import server_head

# the core modules of any Apache, then what the replica's drop-in says it needs
CORE_MODULES = ("mpm_event", "authz_core", "mime")


@dataclass
class Replica:
    home: Path
    port: int
    prefix: str

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, repo: str) -> str:
        return f"{self.origin}{self.prefix}/{repo}/"

    @property
    def files(self) -> Path:
        """The replica's folder of distributions and metadata (--files-root)."""
        return self.home / "files"

    def error_log(self) -> str:
        try:
            return (self.home / "error.log").read_text()
        except FileNotFoundError:
            return ""


def write_replica_httpd_conf(home: Path, port: int, dropin: Path,
                             modules: Sequence[str], vhost: bool = False) -> Path:
    """httpd.conf of a replica: the drop-in included server-wide, or (``vhost``) inside a
    <VirtualHost> as on Debian, where 000-default.conf is one."""
    include = (f'<VirtualHost 127.0.0.1:{port}>\n    ServerName 127.0.0.1\n'
               f'    Include "{dropin}"\n</VirtualHost>\n' if vhost else f'Include "{dropin}"\n')
    conf = home / "httpd.conf"
    conf.write_text(server_head(home, "127.0.0.1", port, (*CORE_MODULES, *modules),
                                "www-data") + f"""\
LogLevel warn
LogFormat "%h %t \\"%r\\" %>s %b \\"%{{X-Cache}}o\\"" replica
CustomLog "{home}/access.log" replica
WSGISocketPrefix "{home / "run"}/wsgi"
KeepAliveTimeout 5
Timeout 60
{include}""")
    return conf


@contextmanager
def replica_of(primary: Deployment | str, vhost: bool = False,
               options: Sequence[str] = (),
               edit: Callable[[str], str] | None = None) -> Iterator[Replica]:
    """A replica of a test deployment, or of any server at a URL (``http://host/prefix/``):
    its drop-in from ``regen-rules --replica-of`` (plus ``options``; ``--vhost`` with
    ``vhost``, included in a <VirtualHost>), passed through ``edit`` when given."""
    primary_url = (primary if isinstance(primary, str)
                   else f"{primary.origin}{primary.settings.url_prefix}/")
    home = Path(tempfile.mkdtemp(prefix="pf-replica-", dir="/var/tmp"))
    os.chmod(home, 0o755)
    try:
        for sub in ("cache", "files"):
            (home / sub).mkdir()
            if os.geteuid() == 0:
                shutil.chown(home / sub, "www-data", "www-data")
        dropin = home / "pypi-fallback-replica.conf"
        done = subprocess.run([str(BIN / "regen-rules"), "--replica-of", primary_url,
                               "--cache-root", str(home / "cache"),
                               "--files-root", str(home / "files"),
                               "--output", str(dropin), "--check",
                               *(["--vhost"] if vhost else []), *options],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        if edit is not None:
            dropin.write_text(edit(dropin.read_text()))
        port = free_port()
        conf = write_replica_httpd_conf(home, port, dropin, replica_modules(primary_url),
                                        vhost)
        with running_apache(conf, port):
            yield Replica(home, port, urlsplit(primary_url).path.rstrip("/"))
    finally:
        shutil.rmtree(home, ignore_errors=True)


def stop_primary(primary: Deployment) -> None:
    """Stop the primary's Apache (the one ``deployed`` started; it reaps it at the end) and
    wait until its port refuses connections."""
    pid = int((primary.home / "run" / "httpd.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    for _ in range(300):
        try:
            with socket.create_connection(("127.0.0.1", primary.port), timeout=0.5):
                pass
        except OSError:
            return
        time.sleep(0.05)
    raise RuntimeError(f"the primary's Apache (pid {pid}) did not stop")
