"""Uploads over real HTTP on 127.0.0.1: real twine, concurrent uploads, a killed server."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from distfactory import wheel_bytes, wheel_name, write_sdist, write_wheel
from pypi_fallback.app import make_app
from pypi_fallback.config import Settings
from pypi_fallback.regen import regenerate
from servers import BasicAuth, serve
from uploads import multipart, twine_fields

USERS = {"alice": "alice-pw", "carol": "carol-pw"}


def raw_upload(base: str, path: str, filename: str, data: bytes,
               user: str = "alice") -> tuple[int, str]:
    content_type, body = multipart(twine_fields(filename, data), filename, data)
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    import base64

    auth = base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()
    conn.request("POST", path, body=body, headers={"Content-Type": content_type,
                                                   "Authorization": f"Basic {auth}"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status, resp.reason


def test_concurrent_uploads_of_one_filename_exactly_one_wins(settings: Settings) -> None:
    name = wheel_name("acme", "1.0")
    contents = [wheel_bytes("acme", "1.0", payload=f"# variant {i}\n".encode()) for i in (0, 1)]
    results: list[tuple[int, str, int]] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        status, reason = raw_upload(base, "/pypi/dev/", name, contents[i % 2])
        with lock:
            results.append((status, reason, i % 2))

    with serve(BasicAuth(make_app(settings), USERS)) as base:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert len(results) == 16
    on_disk = (settings.root / "dev" / "acme" / name).read_bytes()
    winner = contents.index(on_disk)
    for status, reason, variant in results:
        if variant == winner:
            assert status == 200, reason
        else:
            assert status == 400 and "File already exists" in reason
    (entry,) = json.loads((settings.root / "dev" / "acme" / "index.v1_json").read_text())["files"]
    assert entry["hashes"]["sha256"] == hashlib.sha256(on_disk).hexdigest()
    audit = (settings.state / "audit.jsonl").read_text().splitlines()
    assert len(audit) == 1
    assert not [p for p in (settings.root / "dev" / "acme").iterdir() if p.name.startswith(".")]


SERVER = """
import sys, time
sys.path.insert(0, {tests!r})
from wsgiref.simple_server import make_server
from pypi_fallback.app import make_app
from pypi_fallback.config import load_settings
from servers import BasicAuth
app = BasicAuth(make_app(load_settings({config!r})), {users!r})
server = make_server("127.0.0.1", 0, app)
print(server.server_port, flush=True)
server.serve_forever()
"""


def test_server_killed_mid_upload_publishes_nothing(settings: Settings) -> None:
    code = SERVER.format(tests=str(Path(__file__).parent), config=str(settings.source),
                         users=USERS)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        name = wheel_name("acme", "1.0")
        data = wheel_bytes("acme", "1.0", payload=os.urandom(1024 * 1024))
        content_type, body = multipart(twine_fields(name, data), name, data)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.putrequest("POST", "/pypi/dev/")
        conn.putheader("Content-Type", content_type)
        conn.putheader("Content-Length", str(len(body)))
        conn.putheader("Authorization", "Basic YWxpY2U6YWxpY2UtcHc=")
        conn.endheaders()
        conn.send(body[: len(body) // 2])
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    folder = settings.root / "dev" / "acme"
    assert not (folder / name).exists()
    assert not (folder / "index.v1_json").exists()
    report = regenerate(settings)
    assert report.ok
    assert not folder.exists() or not [p for p in folder.iterdir()]
    assert json.loads((settings.root / "dev" / "index.v1_json").read_text())["projects"] == []


def assert_twine_would_skip(base: str, path: Path) -> None:
    """``--skip-existing``: twine 6.2+ allows the flag only for PyPI itself, so the CLI
    cannot be run against any other index; twine's own decision function is run on our
    real answer instead (the one twine < 6.2 applied)."""
    import requests
    from twine.commands.upload import skip_upload

    data = path.read_bytes()
    resp = requests.post(f"{base}/pypi/dev/", data=twine_fields(path.name, data),
                         files={"content": (path.name, data)}, auth=("alice", "alice-pw"),
                         timeout=30)
    assert resp.status_code == 400
    assert skip_upload(resp, True, None)  # type: ignore[arg-type]
    assert not skip_upload(resp, False, None)  # type: ignore[arg-type]


def twine(base: str, repo: str, user: str, password: str,
          *files: Path) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
            "--repository-url", f"{base}/pypi/{repo}/", "-u", user, "-p", password]
    env = {**os.environ, "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}
    for key in ("TWINE_USERNAME", "TWINE_PASSWORD", "TWINE_REPOSITORY_URL", "TWINE_REPOSITORY"):
        env.pop(key, None)
    return subprocess.run([*args, *map(str, files)], capture_output=True, text=True, env=env,
                          timeout=120)


def test_real_twine_upload_and_skip_existing(settings: Settings, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    wheel = write_wheel(dist, "acme", "1.0")
    sdist = write_sdist(dist, "acme", "1.0")
    with serve(BasicAuth(make_app(settings), USERS)) as base:
        ok = twine(base, "dev", "alice", "alice-pw", wheel, sdist)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        # re-running the same upload succeeds, with no need for --skip-existing
        again = twine(base, "dev", "alice", "alice-pw", wheel)
        assert again.returncode == 0, again.stdout + again.stderr

        other = tmp_path / "other"
        changed = write_wheel(other, "acme", "1.0", payload=b"# other bytes\n")
        refused = twine(base, "dev", "alice", "alice-pw", changed)
        assert refused.returncode != 0
        assert "File already exists" in refused.stdout + refused.stderr
        assert_twine_would_skip(base, changed)

        denied = twine(base, "stable", "alice", "alice-pw", wheel)
        assert denied.returncode != 0
        assert "may not upload to 'stable'" in denied.stdout + denied.stderr

    files = json.loads((settings.root / "dev" / "acme" / "index.v1_json").read_text())["files"]
    assert sorted(f["filename"] for f in files) == ["acme-1.0-py3-none-any.whl",
                                                    "acme-1.0.tar.gz"]
    assert (settings.root / "dev" / "acme" / wheel.name).read_bytes() == wheel.read_bytes()


