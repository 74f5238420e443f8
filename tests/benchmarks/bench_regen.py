"""Benchmark: regen-index over 10,000 projects × 3 small wheels.

Prints figures; asserts nothing. Run: ``python tests/benchmarks/bench_regen.py [N] [DIR]``
(DIR: where the tree is made, /var/tmp by default; /dev/shm measures CPU only).

Compares, in the same run on the same tree:
  plain     a loop that hashes each file and writes index.html + index.v1_json into each
            project folder with plain open().write(), no validation, no locks, then one
            sync() so that it too ends with its files on disk (run before and after
            regen-index, averaged);
  full      regen-index on the fresh tree (validation, metadata, records, durable writes);
  rerun     regen-index again with nothing changed.
Targets (issue #2): full <= 3x plain; rerun <= 10% of full.
For reference (not a target), ``validate_loop``: only what a full run must do to each new
file before publishing it (read and hash it, then check the archive and its metadata with
``inspect_dist``), nothing written.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conftest import write_config  # noqa: E402
from distfactory import wheel_bytes, wheel_name  # noqa: E402
from pypi_fallback.archive import inspect_dist  # noqa: E402
from pypi_fallback.config import load_settings  # noqa: E402
from pypi_fallback.names import parse_dist_filename  # noqa: E402
from pypi_fallback.regen import regenerate  # noqa: E402


def build_tree(root: Path, projects: int) -> None:
    for i in range(projects):
        folder = root / "dev" / f"proj-{i}"
        folder.mkdir(parents=True)
        for v in ("1.0", "1.1", "2.0"):
            (folder / wheel_name(f"proj-{i}", v)).write_bytes(wheel_bytes(f"proj-{i}", v))


def plain_loop(src: Path) -> None:
    """index.html and index.v1_json into each project folder, next to its files."""
    for project in sorted(p for p in os.listdir(src) if (src / p).is_dir()):
        files = sorted(f for f in os.listdir(src / project) if f.endswith(".whl"))
        entries = []
        for name in files:
            data = (src / project / name).read_bytes()
            entries.append((name, hashlib.sha256(data).hexdigest(), len(data)))
        target = src / project
        links = "".join(f'<a href="{html.escape(n)}#sha256={h}">{html.escape(n)}</a><br>\n'
                        for n, h, _ in entries)
        (target / "index.html").write_text(f"<!DOCTYPE html><html><body>{links}</body></html>")
        page = {"meta": {"api-version": "1.1"}, "name": project,
                "files": [{"filename": n, "url": n, "hashes": {"sha256": h}, "size": s}
                          for n, h, s in entries]}
        (target / "index.v1_json").write_text(json.dumps(page))


def validate_loop(src: Path) -> None:
    """Each file read and hashed, its name parsed and its archive inspected; nothing written."""
    for project in sorted(p for p in os.listdir(src) if (src / p).is_dir()):
        for name in sorted(f for f in os.listdir(src / project) if f.endswith(".whl")):
            data = (src / project / name).read_bytes()
            hashlib.sha256(data).hexdigest()
            inspect_dist(src / project / name, parse_dist_filename(name), data)


def main() -> None:
    projects = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    where = sys.argv[2] if len(sys.argv) > 2 else "/var/tmp"
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        base = Path(tmp)
        settings = load_settings(write_config(base))
        t0 = time.perf_counter()
        build_tree(settings.root, projects)
        print(f"tree: {projects} projects x 3 wheels built in {time.perf_counter() - t0:.1f} s")
        def settle() -> None:
            """Each phase starts with nothing left to write back (the disk here is noisy)."""
            os.sync()
            time.sleep(2)

        settle()
        t0 = time.perf_counter()
        plain_loop(settings.root / "dev")
        os.sync()
        plain = time.perf_counter() - t0

        settle()
        t0 = time.perf_counter()
        validate_loop(settings.root / "dev")
        validate = time.perf_counter() - t0

        settle()
        t0 = time.perf_counter()
        report = regenerate(settings)
        full = time.perf_counter() - t0
        assert report.ok and len(report.published) == 3 * projects

        settle()
        t0 = time.perf_counter()
        report = regenerate(settings)
        rerun = time.perf_counter() - t0
        assert report.listings == 0

        settle()
        t0 = time.perf_counter()
        plain_loop(settings.root / "dev")
        os.sync()
        plain = (plain + time.perf_counter() - t0) / 2  # before and after, averaged

        print(f"{where}; load: {os.getloadavg()[0]:.2f}")
        print(f"plain loop:           {plain:7.2f} s")
        print(f"validation only:      {validate:7.2f} s  ({validate / plain:.2f}x plain; "
              "reference: what a full run must do to each new file, nothing written)")
        print(f"regen-index, full:    {full:7.2f} s  ({full / plain:.2f}x plain; target <= 3x)")
        print(f"regen-index, rerun:   {rerun:7.2f} s  ({100 * rerun / full:.1f}% of full; "
              f"target <= 10%)")


if __name__ == "__main__":
    main()
