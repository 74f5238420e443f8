"""Real clients, isolated from this machine's own configuration."""

from __future__ import annotations

import base64
import http.client
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

PIP_ACCEPT = ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; "
              "q=0.1, text/html; q=0.01")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "UV_", "TWINE_"))}
    env.update({"PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "PIP_NO_INPUT": "1",
                "PIP_DISABLE_PIP_VERSION_CHECK": "1", "UV_NO_CONFIG": "1",
                "UV_PYTHON_DOWNLOADS": "never",
                "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"})
    env.update(extra)
    return env


def pip_install(index: str, target: Path, *specs: str,
                extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir",
         "--target", str(target), "--index-url", index, *extra, *specs],
        capture_output=True, text=True, env=clean_env(), timeout=180)


def uv_install(index: str, target: Path, *specs: str) -> subprocess.CompletedProcess[str]:
    uv = Path(sys.prefix) / "bin" / "uv"
    return subprocess.run(
        [str(uv), "pip", "install", "--no-deps", "--no-cache", "--python", sys.executable,
         "--target", str(target), "--index-url", index, *specs],
        capture_output=True, text=True, env=clean_env(), timeout=180)


def twine_upload(url: str, user: str | None, password: str | None,
                 *files: Path) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "twine", "upload", "--non-interactive",
            "--disable-progress-bar", "--repository-url", url]
    if user is not None:
        args += ["-u", user, "-p", password or ""]
    return subprocess.run([*args, *map(str, files)], capture_output=True, text=True,
                          env=clean_env(), timeout=180)


def uv_publish(url: str, user: str, password: str, *files: Path,
               check_url: str | None = None) -> subprocess.CompletedProcess[str]:
    """``uv publish``; the user ``__token__`` is given as ``--token``, as the README has it."""
    uv = Path(sys.prefix) / "bin" / "uv"
    who = ["--token", password] if user == "__token__" else ["--username", user,
                                                             "--password", password]
    args = [str(uv), "publish", "--publish-url", url, *who, "--trusted-publishing", "never"]
    if check_url:
        args += ["--check-url", check_url]
    return subprocess.run([*args, *map(str, files)], capture_output=True, text=True,
                          env=clean_env(), timeout=180)


def basic(user: str, password: str) -> dict[str, str]:
    """The Authorization header of a Basic-auth request."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def raw_get(url: str, path: str | None = None, headers: dict[str, str] | None = None,
            method: str = "GET") -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request exactly as given (no client-side normalization of the path)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.putrequest(method, path if path is not None else parts.path,
                        skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def raw_upload(url: str, user: str | None, password: str, filename: str, data: bytes,
               fields: list[tuple[str, str]] | None = None
               ) -> tuple[int, http.client.HTTPMessage, str]:
    """One upload POST as an attacker (or a careless tool) might send it: whatever the
    filename and fields, no retries. Returns status, headers and body text."""
    from uploads import multipart, twine_fields

    content_type, body = multipart(fields if fields is not None else
                                   twine_fields(filename, data), filename, data)
    headers = {"Content-Type": content_type}
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    try:
        conn.request("POST", parts.path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()
