"""Benchmark: what the pages for people cost.

Prints figures; asserts nothing. Run: ``python tests/benchmarks/bench_pages.py [N1 N2]``
(defaults: 1,000 projects for the upload latency, 10,000 for the landing page).

1. Upload latency with the pages on, against the same run with them off
   (``server.pages = false``), in a repo of 1,000 projects (each with its page and its
   search entry): a real multipart POST over a new connection per upload, to the app on a
   loopback threaded WSGI server, as in bench_upload.py. Pages are rewritten after the
   response, folded (the first upload at once, the rest of a burst once at the end of
   2 s). Target: ratio <= 1.2. Also shown: the same uploads with no folding at all.
2. The landing page and the search index at 10,000 projects: their size, the rebuild after
   one upload (incremental: the search index's entries, one replaced) and a full rebuild
   (every project's entry read from the state folder), and one project page's render.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_upload import UPLOADS, populate  # noqa: E402
from conftest import write_config  # noqa: E402
from distfactory import wheel_bytes, wheel_name  # noqa: E402
from fake_upstream import running_upstream  # noqa: E402
from pypi_fallback.app import make_app  # noqa: E402
from pypi_fallback.config import Settings, load_settings  # noqa: E402
from pypi_fallback.pages import refresh, refresh_landing, refresh_projects  # noqa: E402
from servers import BasicAuth, serve  # noqa: E402
from test_upload_live import USERS, raw_upload  # noqa: E402


def fake_entries(settings: Settings, start: int, stop: int) -> None:
    """Search entries (as pages.py keeps them) for projects that have only a listing."""
    folder = settings.state / "pages" / "projects"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, stop):
        entry = {"name": f"proj-{i}", "version": "1.0",
                 "summary": f"Project number {i}, a test package", "repos": ["dev"]}
        (folder / f"proj-{i}.json").write_text(json.dumps({"fingerprint": "", "entry": entry}))


def upload_run(settings: Settings, tag: str, run: int, interval: float = 2.0
               ) -> dict[str, float]:
    figures: dict[str, float] = {}
    app = make_app(settings)
    app.pages.interval = interval
    with serve(BasicAuth(app, USERS)) as base:
        for kind in ("release", "project"):
            times = []
            for i in range(UPLOADS):
                name = f"proj-{i}" if kind == "release" else f"new-{tag}-{i}"
                version = f"2.0.{run}" if kind == "release" else "2.0"
                data = wheel_bytes(name, version)
                t0 = time.perf_counter()
                status, reason = raw_upload(base, "/pypi/dev/", wheel_name(name, version), data)
                times.append(time.perf_counter() - t0)
                assert status == 200, reason
            figures[kind] = statistics.median(times) * 1000
            figures[kind + "_p90"] = statistics.quantiles(times, n=10)[-1] * 1000
        time.sleep(2.5)  # let the last folded landing rebuild finish before the next run
    return figures


def bench_uploads(projects: int) -> None:
    print(f"upload latency, repo of {projects} projects, {UPLOADS} uploads of each kind:")
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp, running_upstream() as up:
        # new names are asked about upstream (a loopback one that knows none)
        settings = load_settings(write_config(Path(tmp), upstream=up.simple_url))
        populate(settings, projects)
        fake_entries(settings, UPLOADS, projects)
        refresh_landing(settings, None)
        results = {}
        # alternate off/on twice so that a warmer disk cache favours neither
        for round_ in (1, 2):
            for mode in ("off", "on", "unfolded"):
                tag = f"{mode}{round_}"
                results[tag] = upload_run(dataclasses.replace(settings, pages=mode != "off"),
                                          tag, len(results), 0.0 if mode == "unfolded" else 2.0)
        for kind in ("release", "project"):
            off, on, unfolded = (statistics.median([results[f"{m}1"][kind],
                                                    results[f"{m}2"][kind]])
                                 for m in ("off", "on", "unfolded"))
            p90 = max(results["on1"][kind + "_p90"], results["on2"][kind + "_p90"])
            print(f"  new {kind}: pages off median {off:.1f} ms, pages on median {on:.1f} ms "
                  f"(p90 {p90:.1f} ms): ratio {on / off:.2f} (target <= 1.2)")
            print(f"    without folding (every upload rewrites its page, the landing page and "
                  f"the index after its response): median {unfolded:.1f} ms, "
                  f"ratio {unfolded / off:.2f}")
        index = settings.root / "+pages" / "search.json"
        print(f"  search index now {len(json.loads(index.read_bytes())['projects'])} projects")


def bench_landing(projects: int) -> None:
    print(f"landing page and search index, {projects} projects:")
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        settings = load_settings(write_config(Path(tmp)))
        populate(settings, 100)
        fake_entries(settings, 100, projects)
        refresh(settings, None)
        landing = settings.root / "index.html"
        index = settings.root / "+pages" / "search.json"
        print(f"  landing page {landing.stat().st_size / 1e6:.2f} MB, "
              f"search index {index.stat().st_size / 1e6:.2f} MB")
        fulls, incs, renders = [], [], []
        for i in range(5):
            t0 = time.perf_counter()
            refresh_landing(settings, None)
            fulls.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            refresh_projects(settings, ["proj-3"], force=True)
            renders.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            refresh_landing(settings, {f"proj-{i}"})
            incs.append(time.perf_counter() - t0)
        print(f"  rebuild after one upload (incremental): median "
              f"{statistics.median(incs) * 1000:.0f} ms")
        print(f"  full rebuild from every project's entry: median "
              f"{statistics.median(fulls) * 1000:.0f} ms")
        print(f"  one project page (forced render): median "
              f"{statistics.median(renders) * 1000:.1f} ms")


def main() -> None:
    args = [int(a) for a in sys.argv[1:]]
    bench_uploads(args[0] if args else 1_000)
    bench_landing(args[1] if len(args) > 1 else 10_000)


if __name__ == "__main__":
    main()
