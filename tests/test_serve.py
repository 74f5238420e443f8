"""The Apache that ``scripts/serve`` runs: its server settings (sendfile, buffered access
log, the MPM's values), with real Apache."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apache_server import free_port, running_apache
from clients import raw_get
from pypi_fallback.serve import write_httpd_conf

pytestmark = pytest.mark.apache


@pytest.fixture()
def home() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pf-serve-", dir="/var/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_serve_config_sends_files_whole_and_buffers_its_access_log(home: Path) -> None:
    files = home / "files"
    files.mkdir()
    data = os.urandom(3 * 1024 * 1024 + 17)  # several sendfile() calls' worth
    (files / "big.whl").write_bytes(data)
    dropin = home / "dropin.conf"
    dropin.write_text(f'Alias /files "{files}"\n<Directory "{files}">\n'
                      "    Require all granted\n</Directory>\n")
    port = free_port()
    conf = write_httpd_conf(home, "127.0.0.1", port, dropin, "www-data", buffered_log=True)
    text = conf.read_text()
    assert "EnableSendfile On" in text and "MaxRequestWorkers 400" in text
    assert "mod_ldap.so" not in text  # only for a drop-in that asks a directory
    with running_apache(conf, port):
        status, _, body = raw_get(f"http://127.0.0.1:{port}/files/big.whl")
        assert status == 200 and body == data
        # a .htaccess anywhere on the way is not read (AllowOverride None from / down)
        (files / ".htaccess").write_text("Require all denied\n")
        status, _, body = raw_get(f"http://127.0.0.1:{port}/files/big.whl")
        assert status == 200 and body == data
        # buffered: two short lines are still in Apache's buffer …
        assert (home / "access.log").read_text() == ""
    # … and written when it stops
    assert (home / "access.log").read_text().count("GET /files/big.whl") == 2


def test_tests_config_logs_each_request_at_once(home: Path) -> None:
    dropin = home / "dropin.conf"
    dropin.write_text("")
    port = free_port()
    conf = write_httpd_conf(home, "127.0.0.1", port, dropin, "www-data")
    with running_apache(conf, port):
        raw_get(f"http://127.0.0.1:{port}/nothing-here")
        # Apache logs just after the answer went out: wait a little for the line, no more
        deadline = time.monotonic() + 5
        while "GET /nothing-here" not in (home / "access.log").read_text() and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        assert "GET /nothing-here" in (home / "access.log").read_text()


def test_a_dropin_that_asks_a_directory_gets_the_ldap_modules(home: Path) -> None:
    dropin = home / "dropin.conf"
    dropin.write_text('<Location "/x">\n    AuthType Basic\n    AuthName x\n'
                      '    AuthBasicProvider ldap\n'
                      '    AuthLDAPURL "ldap://127.0.0.1:1/dc=example?uid"\n'
                      '    Require valid-user\n</Location>\n')
    port = free_port()
    conf = write_httpd_conf(home, "127.0.0.1", port, dropin, "www-data")
    assert "mod_authnz_ldap.so" in conf.read_text()
    with running_apache(conf, port):  # after its own config test
        status, _, _ = raw_get(f"http://127.0.0.1:{port}/x")
        assert status == 401
