"""Helpers shared by test modules (so that no test module imports another)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from apache_server import BIN
from pypi_fallback.config import Settings
from uploads import twine_fields
from webtest import TestApp

GOLDEN = Path(__file__).parent / "golden"
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def post(app: TestApp, repo: str, filename: str, data: bytes, *, user: str | None = "alice",
         status: int | str = "*", **fields: Any) -> Any:
    env = {"REMOTE_USER": user} if user else {}
    return app.post(f"/pypi/{repo}/", params=twine_fields(filename, data, **fields),
                    upload_files=[("content", filename, data)], extra_environ=env,
                    status=status)


def snapshot(settings: Settings) -> dict[str, tuple[int, int, int]]:
    """Every file (inode, mtime, size) and folder under the served tree and the state folder.

    A folder's own mtime is left out: a temporary file made and removed in it changes it.
    """
    seen = {}
    for base in (settings.root, settings.state):
        for dirpath, dirnames, filenames in os.walk(base):
            for name in dirnames:
                seen[os.path.join(dirpath, name)] = (0, 0, 0)
            for name in filenames:
                st = os.lstat(os.path.join(dirpath, name))
                seen[os.path.join(dirpath, name)] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return seen


def golden(name: str, actual: bytes) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_bytes(actual)
    assert actual.decode() == path.read_text()


def run(command: str, *args: str, config: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(BIN / command), "--config", str(config), *args],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "SUDO_USER": "carol"})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


HOSTILE = (
    "# Acme\n\n<script>window.pwned = 1</script>\n\n"
    "[click me](javascript:window.pwned=2) <img src=x onerror=\"window.pwned=3\">\n\n"
    "<a href=\"javascript:window.pwned=4\">raw link</a> <b onmouseover=\"x()\">bold</b>\n"
)


def metadata(name: str, version: str, description: str = HOSTILE,
             content_type: str = "text/markdown", summary: str = "Acme <b>tools</b>") -> str:
    return (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {summary}\n"
            "Requires-Python: >=3.9\nRequires-Dist: requests>=2\n"
            "Requires-Dist: tomli; python_version < \"3.11\"\n"
            "Project-URL: Source, https://git.example/acme\n"
            "Project-URL: Evil, javascript:alert(1)\n"
            f"Description-Content-Type: {content_type}\n\n{description}")


def not_writable_by(uid: int, top: Path) -> list[str]:
    """Paths under ``top`` that the user ``uid`` could not write (it owns what it writes)."""
    bad = []
    for folder, dirs, files in os.walk(top):
        for name in [".", *dirs, *files]:
            path = Path(folder, name)
            st = path.lstat()
            if st.st_uid != uid or not st.st_mode & stat.S_IWUSR:
                bad.append(f"{path} (uid {st.st_uid}, mode {stat.filemode(st.st_mode)})")
    return bad


def cli(name: str, *args: str, settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPTS / name), "--config", str(settings.source),
                           *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SUDO_USER": "qc-carol"})


def concurrent_gets(url: str, count: int, stagger: float = 0.0) -> list[tuple[int, bytes]]:
    """``count`` GETs of ``url`` at once (each ``stagger`` seconds after the one before):
    their (status, body), in the order they ended; each waits 60 s at most."""
    from clients import raw_get

    results: list[tuple[int, bytes]] = []

    def get() -> None:
        status, _, body = raw_get(url)
        results.append((status, body))

    threads = [threading.Thread(target=get) for _ in range(count)]
    for t in threads:
        t.start()
        time.sleep(stagger)
    for t in threads:
        t.join(timeout=60)
    return results


@contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``1m``) mounted on ``folder`` for a full-disk test; unmounted
    after. CI runs as root: there it must work (elsewhere the test is skipped)."""
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                           str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs in CI: {done.stderr}")
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
