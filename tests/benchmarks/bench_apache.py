"""Benchmark: Apache serving pypi-fallback vs Apache serving plain static files.

Prints figures; asserts nothing. Needs root (Apache's children run as www-data) and ``ab``
(apache2-utils). Run with the venv's python: ``python tests/benchmarks/bench_apache.py``.

In one Apache (the drop-in plus a plain ``/plain`` alias with no rewrite rules, no type map):
  - project page, JSON (pip's Accept) and HTML (a browser's), requests/s, vs the same bytes
    as a plain static file;
  - a 1 MiB wheel, MiB/s, vs the same bytes as a plain static file;
  - idle memory of Apache and the WSGI daemon (RSS and PSS sums).
Targets (issue #4): every ratio >= 0.9; idle memory <= 60 MiB.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apache_server import USERS, deployed  # noqa: E402
from clients import PIP_ACCEPT, twine_upload  # noqa: E402
from distfactory import write_wheel  # noqa: E402
from fake_upstream import running_upstream  # noqa: E402

PLAIN = """
Alias /plain "{home}/plain"
<Directory "{home}/plain">
    Options None
    AllowOverride None
    Require all granted
</Directory>
"""
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def ab(url: str, accept: str, requests: int, concurrency: int = 8) -> tuple[float, float]:
    """(requests/s, transfer KiB/s) as ``ab`` measures them, keep-alive on."""
    out = subprocess.run(["ab", "-q", "-k", "-n", str(requests), "-c", str(concurrency),
                          "-H", f"Accept: {accept}", url],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    rps = float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    assert failed == 0 and not non2xx, out
    rate = float(re.search(r"Transfer rate:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rps, rate


def best_of(runs: int, url: str, accept: str, requests: int) -> tuple[float, float]:
    return max((ab(url, accept, requests) for _ in range(runs)), key=lambda r: r[0])


def rollup(pid: int | str) -> tuple[int, int]:
    """(RSS KiB, PSS KiB) of one process (OSError when it is gone)."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss += int(line.split()[1])
        elif line.startswith("Pss:"):
            pss += int(line.split()[1])
    return rss, pss


def memory(home: Path) -> tuple[float, float, int]:
    """(RSS MiB, PSS MiB, processes) of every process of this Apache and its daemon."""
    rss = pss = 0
    count = 0
    marker = str(home / "httpd.conf")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if marker not in cmd and "(wsgi:pypi-fallback" not in cmd:
                continue
            one_rss, one_pss = rollup(pid)
            rss, pss, count = rss + one_rss, pss + one_pss, count + 1
        except OSError:  # gone, or not ours to read
            continue
    return rss / 1024, pss / 1024, count


def main() -> None:
    with running_upstream() as upstream, deployed(upstream, extra_apache=PLAIN) as site:
        dist = site.home / "dist"
        small = write_wheel(dist, "bench-app", "1.0")
        big = write_wheel(dist, "bench-app", "2.0", payload=b"#" * (1024 * 1024))
        result = twine_upload(site.url("dev"), "alice", USERS["alice"], small, big)
        assert result.returncode == 0, result.stdout + result.stderr
        folder = site.settings.root / "dev" / "bench-app"
        plain = site.home / "plain"
        plain.mkdir()
        shutil.copy(folder / "index.v1_json", plain / "page.json")
        shutil.copy(folder / "index.html", plain / "page.html")
        shutil.copy(folder / big.name, plain / "big.whl")
        os.chmod(plain, 0o755)
        time.sleep(1)
        rss, pss, procs = memory(site.home)
        print(f"idle memory: {procs} processes, RSS {rss:.1f} MiB, PSS {pss:.1f} MiB "
              "(target <= 60 MiB)")

        page = site.url("dev") + "bench-app/"
        cases = [
            ("project page JSON", page, site.origin + "/plain/page.json", PIP_ACCEPT, 20000),
            ("project page HTML", page, site.origin + "/plain/page.html", BROWSER_ACCEPT,
             20000),
            ("1 MiB wheel", page + big.name, site.origin + "/plain/big.whl", "*/*", 2000),
        ]
        for name, ours_url, plain_url, accept, n in cases:
            ab(ours_url, accept, 500)  # warm up
            ab(plain_url, accept, 500)
            ours = best_of(3, ours_url, accept, n)
            base = best_of(3, plain_url, accept, n)
            if "wheel" in name:
                print(f"{name}: {ours[1] / 1024:.0f} MiB/s vs plain {base[1] / 1024:.0f} MiB/s "
                      f"= {ours[1] / base[1]:.2f} (target >= 0.9)")
            else:
                print(f"{name}: {ours[0]:.0f} req/s vs plain {base[0]:.0f} req/s "
                      f"= {ours[0] / base[0]:.2f} (target >= 0.9)")
        rss, pss, procs = memory(site.home)
        print(f"memory after load: {procs} processes, RSS {rss:.1f} MiB, PSS {pss:.1f} MiB")


if __name__ == "__main__":
    main()
