"""Benchmark (issue 13): cache mode against going straight to the upstream, with real wheels.

A loopback upstream (tests/fake_upstream.py) serves 32 real wheels copied from
``$BENCH_WHEELS`` (default /opt/pypi-more/files; copied into a temporary folder, never
into the checkout) with 20 ms added to every request. Each round times, in the same run:
``pip download`` and ``uv pip install`` of all 32 straight from that upstream, through cache
mode cold (the cache emptied first) and warm. Prints each ratio (through the index ÷
straight) as median, min and max over the rounds. Targets: cold <= 1.25, warm <= 1.0.

Needs root (Apache runs as www-data). Run with the venv's python:
``python tests/benchmarks/bench_cache_tree.py [rounds]``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from packaging.utils import parse_wheel_filename

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apache_server import deployed  # noqa: E402
from clients import clean_env  # noqa: E402
from fake_upstream import FakeUpstream, running_upstream  # noqa: E402

WHEELS = Path(os.environ.get("BENCH_WHEELS", "/opt/pypi-more/files"))
COUNT = 32
MAX_BYTES = 14 * 1024 * 1024  # per wheel: keeps a round to seconds on a shared machine
LATENCY = 0.020


def pick_wheels() -> list[Path]:
    """The smallest wheel of each project, up to COUNT projects, that this Python takes."""
    from packaging.tags import sys_tags

    supported = set(sys_tags())
    chosen: dict[str, Path] = {}
    for path in sorted(WHEELS.glob("*.whl"), key=lambda p: p.stat().st_size):
        name, _, _, tags = parse_wheel_filename(path.name)
        if path.stat().st_size <= MAX_BYTES and name not in chosen and tags & supported:
            chosen[name] = path
    return list(chosen.values())[:COUNT]


def pip_download(index: str, names: list[str]) -> float:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
                        "-q", "-d", out, "--index-url", index, *names],
                       check=True, env=clean_env(), timeout=600)
        return time.perf_counter() - started


def uv_install(index: str, names: list[str]) -> float:
    uv = Path(sys.prefix) / "bin" / "uv"
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        subprocess.run([str(uv), "pip", "install", "-q", "--no-deps", "--no-cache",
                        "--python", sys.executable, "--target", out, "--index-url", index,
                        *names], check=True, env=clean_env(), timeout=600)
        return time.perf_counter() - started


def empty_cache(root: Path, state: Path) -> None:
    for folder in (root / "+upstream", state / "upstream", state / "fresh"):
        shutil.rmtree(folder, ignore_errors=True)


def load(up: FakeUpstream, wheels: list[Path]) -> list[str]:
    names = []
    for path in wheels:
        name = str(parse_wheel_filename(path.name)[0])
        up.add(name, path.name, path.read_bytes())
        names.append(name)
    return names


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    wheels = pick_wheels()
    size = sum(p.stat().st_size for p in wheels)
    ratios: dict[str, list[float]] = {}
    times: dict[str, list[float]] = {}
    with running_upstream() as up:
        names = load(up, wheels)
        up.latency = LATENCY
        with deployed(up, mode="cache") as site:
            index = site.url("dev")
            for _ in range(rounds):
                for client, run in (("pip", pip_download), ("uv", uv_install)):
                    straight = run(up.simple_url, names)
                    empty_cache(site.settings.root, site.settings.state)
                    cold = run(index, names)
                    warm = run(index, names)
                    for label, value in (("straight", straight), ("cold", cold),
                                         ("warm", warm)):
                        times.setdefault(f"{client} {label}", []).append(value)
                    ratios.setdefault(f"{client} cold", []).append(cold / straight)
                    ratios.setdefault(f"{client} warm", []).append(warm / straight)
    print(f"{len(names)} real wheels ({size / 1e6:.0f} MB), {LATENCY * 1000:.0f} ms added per "
          f"upstream request, {rounds} rounds; seconds and ratios (index / straight):")
    for key, values in times.items():
        print(f"  {key:13s} median {statistics.median(values):6.2f} s  "
              f"(min {min(values):.2f}, max {max(values):.2f})")
    for key, values in ratios.items():
        target = 1.25 if "cold" in key else 1.0
        print(f"  {key:10s} ratio median {statistics.median(values):.2f}  (min {min(values):.2f}, "
              f"max {max(values):.2f}; target <= {target})")


if __name__ == "__main__":
    main()
