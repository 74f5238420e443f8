"""Benchmark: a warm read replica (regen-rules --replica-of) vs the primary itself.

Prints figures; asserts nothing. Needs root (Apache's children run as www-data) and ``ab``
(apache2-utils). Run with the venv's python: ``python tests/benchmarks/bench_replica.py``.

One primary and one replica on 127.0.0.1, measured in the same run, alternately:
  - project page, JSON (pip's Accept), requests/s (ab, keep-alive, 8 at a time);
  - a 1 MiB wheel, requests/s;
  - ``pip download`` of 5 real wheels (no cache), seconds;
  - and how many requests of the cold warm-up reached the primary.
Targets (issue #17): replica/primary >= 0.8 for both req/s; pip download <= 1.1 x.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apache_server import BIN, USERS, deployed  # noqa: E402
from bench_apache import ab  # noqa: E402
from clients import PIP_ACCEPT, clean_env, twine_upload  # noqa: E402
from distfactory import write_wheel  # noqa: E402
from fake_upstream import running_upstream  # noqa: E402
from replica_server import replica_of  # noqa: E402

# Real wheels of this machine's local index: small to medium, installable here.
REAL_WHEELS = Path(os.environ.get("BENCH_WHEELS", "/opt/pypi-more/files"))
PICKS = ("setuptools-", "bcrypt-", "pynacl-", "ase-", "pillow-")


def publish_real_wheels(root: Path, config: Path) -> list[str]:
    """Copy five real wheels into stable as QC would (scp), then regen-index."""
    names = []
    for prefix in PICKS:
        wheel = sorted(p for p in REAL_WHEELS.glob(f"{prefix}*.whl"))[-1]
        project = prefix.rstrip("-")
        folder = root / "stable" / project
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(wheel, folder / wheel.name)
        names.append(project)
    subprocess.run(["chown", "-R", "www-data:www-data", str(root / "stable")], check=True)
    subprocess.run([str(BIN / "regen-index"), "--repo", "stable"], check=True,
                   env={**os.environ, "PYPI_FALLBACK_CONFIG": str(config)},
                   stdout=subprocess.DEVNULL)
    return names


def pip_download(index: str, projects: list[str]) -> float:
    with tempfile.TemporaryDirectory() as dest:
        began = time.monotonic()
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
                        "-q", "-d", dest, "--index-url", index, *projects],
                       check=True, env=clean_env(), timeout=600)
        took = time.monotonic() - began
        assert len(os.listdir(dest)) == len(projects)
    return took


def main() -> None:
    with running_upstream() as upstream, deployed(upstream) as primary, \
            replica_of(primary) as replica:
        dist = primary.home / "dist"
        big = write_wheel(dist, "bench-app", "2.0", payload=os.urandom(1024 * 1024))
        result = twine_upload(primary.url("dev"), "alice", USERS["alice"], big)
        assert result.returncode == 0, result.stdout + result.stderr
        projects = publish_real_wheels(primary.settings.root,
                                       primary.settings.source)
        print(f"wheel: {big.stat().st_size / 1024**2:.2f} MiB; real wheels: "
              f"{', '.join(projects)}")

        page = "/pypi/dev/bench-app/"
        cases = [("project page JSON", page, PIP_ACCEPT, 20000),
                 ("1 MiB wheel", page + big.name, "*/*", 2000)]
        for name, path, accept, n in cases:
            # warm the replica: 200 requests, 8 at a time, for an entry it lacks
            ab(replica.origin + path, accept, 200)
            log = (primary.home / "access.log").read_text()
            cold = len(re.findall(rf'"GET {re.escape(path)} HTTP/1\.[01]"', log))
            print(f"{name}, cold: 200 requests (8 at a time) to the replica, "
                  f"{cold} to the primary")
            ours, theirs = [], []
            for _ in range(3):  # alternately, best of three each
                theirs.append(ab(primary.origin + path, accept, n)[0])
                ours.append(ab(replica.origin + path, accept, n)[0])
            print(f"{name}: replica {max(ours):.0f} req/s vs primary {max(theirs):.0f} req/s "
                  f"= {max(ours) / max(theirs):.2f} (target >= 0.8)")

        pip_download(replica.url("stable"), projects)  # warm
        ours_s, theirs_s = [], []
        for _ in range(3):
            theirs_s.append(pip_download(primary.url("stable"), projects))
            ours_s.append(pip_download(replica.url("stable"), projects))
        a, b = statistics.median(ours_s), statistics.median(theirs_s)
        print(f"pip download of 5 real wheels: replica {a:.2f} s vs primary {b:.2f} s "
              f"= {a / b:.2f} x (target <= 1.1; medians of 3)")


if __name__ == "__main__":
    main()
