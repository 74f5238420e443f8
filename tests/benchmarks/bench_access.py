"""Benchmark: what authentication costs (issue 16).

Prints figures; asserts nothing. Needs root (Apache's children run as www-data), ``ab``
(apache2-utils) and slapd (Debian's). Run with the venv's python:
``python tests/benchmarks/bench_access.py [UPLOADS]``.

  - upload median (small wheel, new connection each, as twine sends it) with an upload
    token, with an htpasswd password (bcrypt, htpasswd -B's default cost) and with an LDAP
    password (a real slapd on a loopback port), in the same run;
  - project-page GETs per second (pip's Accept, keep-alive, 8 at a time) on a restricted
    repo with a reader's credentials (htpasswd bcrypt; LDAP) vs an open repo.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apache_server import BIN, USERS, Deployment, deployed  # noqa: E402
from clients import PIP_ACCEPT, raw_upload, twine_upload  # noqa: E402
from distfactory import wheel_bytes, wheel_name, write_wheel  # noqa: E402
from fake_upstream import running_upstream  # noqa: E402
from ldap_server import BIND_PASSWORD, PEOPLE, running_directory  # noqa: E402

REPOS = """\
[repos.dev]
writers = ["developers"]
readers = ["developers"]
fallback = ["upstream"]

[repos.public]
writers = ["developers"]
fallback = ["upstream"]
"""


def ab(url: str, requests: int, auth: str | None) -> float:
    args = ["ab", "-q", "-k", "-n", str(requests), "-c", "8", "-H", f"Accept: {PIP_ACCEPT}"]
    if auth:
        args += ["-A", auth]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=600,
                         check=True).stdout
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    assert failed == 0 and "Non-2xx" not in out, out
    return float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def upload_median(d: Deployment, user: str, password: str, project: str, count: int
                  ) -> float:
    """Median seconds of ``count`` uploads of new versions of ``project`` (already there)."""
    times = []
    for i in range(count):
        version = f"2.{i}"
        data = wheel_bytes(project, version)
        t0 = time.perf_counter()
        status, _, body = raw_upload(d.url("dev"), user, password,
                                     wheel_name(project, version), data)
        times.append(time.perf_counter() - t0)
        assert status == 200, body
    return statistics.median(times)


def seed(d: Deployment, user: str, password: str, *projects: str) -> None:
    dist = d.home / "dist"
    for project in projects:
        for repo in ("dev", "public"):
            wheel = write_wheel(dist / repo, project, "1.0")
            done = twine_upload(d.url(repo), user, password, wheel)
            assert done.returncode == 0, done.stdout + done.stderr


def gets(d: Deployment, label: str, auth: str, requests: int) -> None:
    restricted, open_ = d.url("dev") + "bench-pw/", d.url("public") + "bench-pw/"
    ab(restricted, 300, auth)  # warm up (and fill Apache's LDAP cache)
    ab(open_, 300, None)
    closed = max(ab(restricted, requests, auth) for _ in range(3))
    opened = max(ab(open_, requests, None) for _ in range(3))
    print(f"project page GETs, {label}: restricted {closed:.0f} req/s vs open "
          f"{opened:.0f} req/s = {closed / opened:.2f}")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    with running_upstream() as upstream, running_directory() as directory:
        with deployed(upstream, repos=REPOS) as d:
            htpasswd = d.home / "htpasswd"
            subprocess.run(["htpasswd", "-bBc", str(htpasswd), "alice", USERS["alice"]],
                           check=True, capture_output=True)
            os.chmod(htpasswd, 0o644)
            seed(d, "alice", USERS["alice"], "bench-tok", "bench-pw")
            env = {**os.environ, "PYPI_FALLBACK_CONFIG": str(d.settings.source)}
            token = subprocess.run([str(BIN / "token"), "create", "--user", "alice", "--repo",
                                    "dev", "--project", "bench-tok"], env=env, check=True,
                                   capture_output=True, text=True).stdout.strip()
            tok = upload_median(d, "__token__", token, "bench-tok", count)
            pw = upload_median(d, "alice", USERS["alice"], "bench-pw", count)
            print(f"upload median, {count} each: token {tok * 1000:.1f} ms, "
                  f"htpasswd (bcrypt) {pw * 1000:.1f} ms")
            gets(d, "htpasswd (bcrypt)", f"alice:{USERS['alice']}", 5000)
            # the same with an MD5 (apr1) line: what the hash's cost is on every request
            subprocess.run(["htpasswd", "-bmc", str(htpasswd), "alice", USERS["alice"]],
                           check=True, capture_output=True)
            gets(d, "htpasswd (MD5 apr1)", f"alice:{USERS['alice']}", 5000)

        secret = directory.home / "bind-password"
        secret.write_text(BIND_PASSWORD + "\n")
        secret.chmod(0o600)
        with deployed(upstream, directory.config(secret), repos=REPOS) as d:
            password = PEOPLE["alice"][0]
            seed(d, "alice", password, "bench-ldap", "bench-pw")
            ldap = upload_median(d, "alice", password, "bench-ldap", count)
            print(f"upload median, {count}: LDAP {ldap * 1000:.1f} ms")
            gets(d, "LDAP", f"alice:{password}", 5000)


if __name__ == "__main__":
    main()
