"""Benchmark (issue 13): cache mode against going straight to the upstream, with real wheels.

A loopback upstream (tests/fake_upstream.py) serves 32 real wheels copied from
``$BENCH_WHEELS`` (default /opt/pypi-more/files; copied into a temporary folder, never
into the checkout) with 20 ms added to every request. Each round times, in the same run:
``pip download`` and ``uv pip install`` of all 32 straight from that upstream, through cache
mode cold (the cache emptied first) and warm. Prints each ratio (through the index ÷
straight) as median, min and max over the rounds. Targets: cold <= 1.25, warm <= 1.0.

What the clients write goes to a tmpfs (``$BENCH_TMP``, default /dev/shm), their
temporary files included, for every run alike: uv unpacks each wheel into its temporary
folder before installing it (about 23,000 files here), and on a disk whose inodes other
jobs keep churning each new file cost it ~0.3 ms of system time, which made uv's own
runs swing from 3.5 to 18.6 s. Next to the times it prints the CPU seconds this Apache
(children and daemons) used per run: they move far less with the machine's load than the
times do.

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
OUT = os.environ.get("BENCH_TMP", "/dev/shm" if Path("/dev/shm").is_dir() else None)
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


def client_env() -> dict[str, str]:
    """The clients' environment: isolated, their temporary files on OUT too (uv unpacks
    every wheel there before installing it: 20,000+ files)."""
    return clean_env(**({"TMPDIR": OUT} if OUT else {}))


def pip_download(index: str, names: list[str]) -> float:
    with tempfile.TemporaryDirectory(dir=OUT) as out:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
                        "-q", "-d", out, "--index-url", index, *names],
                       check=True, env=client_env(), timeout=600)
        return time.perf_counter() - started


def uv_install(index: str, names: list[str]) -> float:
    uv = Path(sys.prefix) / "bin" / "uv"
    with tempfile.TemporaryDirectory(dir=OUT) as out:
        started = time.perf_counter()
        subprocess.run([str(uv), "pip", "install", "-q", "--no-deps", "--no-cache",
                        "--python", sys.executable, "--target", out, "--index-url", index,
                        *names], check=True, env=client_env(), timeout=600)
        return time.perf_counter() - started


def apache_cpu(home: Path) -> float:
    """CPU seconds used so far by the processes of the Apache running from ``home``."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if str(home).encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


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
    cpu: dict[str, list[float]] = {}  # Apache's CPU seconds per run
    with running_upstream() as up:
        names = load(up, wheels)
        up.latency = LATENCY
        with deployed(up, mode="cache") as site:
            index = site.url("dev")
            for _ in range(rounds):
                for client, run in (("pip", pip_download), ("uv", uv_install)):
                    straight = run(up.simple_url, names)
                    empty_cache(site.settings.root, site.settings.state)
                    before = apache_cpu(site.home)
                    cold = run(index, names)
                    middle = apache_cpu(site.home)
                    warm = run(index, names)
                    after = apache_cpu(site.home)
                    for label, value in (("straight", straight), ("cold", cold),
                                         ("warm", warm)):
                        times.setdefault(f"{client} {label}", []).append(value)
                    cpu.setdefault(f"{client} cold", []).append(middle - before)
                    cpu.setdefault(f"{client} warm", []).append(after - middle)
                    ratios.setdefault(f"{client} cold", []).append(cold / straight)
                    ratios.setdefault(f"{client} warm", []).append(warm / straight)
    print(f"{len(names)} real wheels ({size / 1e6:.0f} MB), {LATENCY * 1000:.0f} ms added per "
          f"upstream request, {rounds} rounds, clients writing to {OUT or 'the default tmp'}; "
          "seconds and ratios (index / straight):")
    for key, values in times.items():
        print(f"  {key:13s} median {statistics.median(values):6.2f} s  "
              f"(min {min(values):.2f}, max {max(values):.2f})")
    for key, values in cpu.items():
        print(f"  {key:13s} Apache CPU median {statistics.median(values):5.2f} s  "
              f"(min {min(values):.2f}, max {max(values):.2f})")
    for key, values in ratios.items():
        target = 1.25 if "cold" in key else 1.0
        print(f"  {key:10s} ratio median {statistics.median(values):.2f}  (min {min(values):.2f}, "
              f"max {max(values):.2f}; target <= {target})")


if __name__ == "__main__":
    main()
