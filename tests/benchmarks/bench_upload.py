"""Benchmark: POST latency of a small wheel into a repo of 1,000 and 100,000 projects.

Prints figures; asserts nothing. Run: ``python tests/benchmarks/bench_upload.py [N …]``.
The app runs on a loopback WSGI server (wsgiref, threaded) behind the tests' basic-auth
layer; each upload is a real multipart POST over a new connection, as twine sends it.
Two kinds of upload, 60 each: a new release of an existing project, and a new project
(whose root-listing refresh runs after the response). Targets (issue #3): median <= 25 ms,
median at 100k / median at 1k <= 1.2.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conftest import write_config  # noqa: E402
from distfactory import wheel_bytes, wheel_name, write_wheel  # noqa: E402
from pypi_fallback.app import make_app  # noqa: E402
from pypi_fallback.config import Settings, load_settings  # noqa: E402
from pypi_fallback.names import NormalizedName  # noqa: E402
from pypi_fallback.regen import regenerate  # noqa: E402
from pypi_fallback.storage import Tree, add_claims  # noqa: E402
from servers import BasicAuth, serve  # noqa: E402
from test_upload_live import USERS, raw_upload  # noqa: E402

UPLOADS = 60


def populate(settings: Settings, projects: int) -> None:
    """A repo holding ``projects`` listed projects; the first UPLOADS are real ones. Each
    is claimed, as a project first published here is (folded into the claims map's bulk,
    as a full regen-index leaves it)."""
    dev = settings.root / "dev"
    for i in range(UPLOADS):
        write_wheel(dev / f"proj-{i}", f"proj-{i}", "1.0")
    regenerate(settings)
    page = {"meta": {"api-version": "1.1"}, "name": "", "versions": [], "files": []}
    for i in range(UPLOADS, projects):
        folder = dev / f"proj-{i}"
        folder.mkdir()
        (folder / "index.v1_json").write_text(json.dumps({**page, "name": f"proj-{i}"}))
        (folder / "index.html").write_text("<!DOCTYPE html>\n")
    regenerate(settings, names=["proj-0"])
    add_claims(Tree.of(settings), {NormalizedName(f"proj-{i}"): "unknown-upstream"
                                   for i in range(projects)}, fold=True)


def measure(projects: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        settings = load_settings(write_config(Path(tmp)))
        t0 = time.perf_counter()
        populate(settings, projects)
        print(f"  repo of {projects} projects built in {time.perf_counter() - t0:.1f} s")
        figures = {}
        with serve(BasicAuth(make_app(settings), USERS)) as base:
            for kind in ("release", "project"):
                times = []
                for i in range(UPLOADS):
                    name = f"proj-{i}" if kind == "release" else f"new-{i}"
                    data = wheel_bytes(name, "2.0")
                    t0 = time.perf_counter()
                    status, reason = raw_upload(base, "/pypi/dev/", wheel_name(name, "2.0"), data)
                    times.append(time.perf_counter() - t0)
                    assert status == 200, reason
                figures[kind] = statistics.median(times) * 1000
                figures[kind + "_p90"] = statistics.quantiles(times, n=10)[-1] * 1000
        return figures


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1_000, 100_000]
    results = {}
    for n in sizes:
        print(f"repo of {n} projects:")
        results[n] = measure(n)
        r = results[n]
        print(f"  new release: median {r['release']:.1f} ms (p90 {r['release_p90']:.1f} ms)")
        print(f"  new project: median {r['project']:.1f} ms (p90 {r['project_p90']:.1f} ms)")
    if len(sizes) >= 2:
        small, large = results[sizes[0]], results[sizes[-1]]
        for kind in ("release", "project"):
            print(f"{kind}: median {sizes[-1]}/{sizes[0]} ratio = "
                  f"{large[kind] / small[kind]:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
