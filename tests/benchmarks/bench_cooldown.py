"""Benchmark: what the release-age cooldown adds to a full regen-index run in cache mode.

Prints figures; asserts nothing. Run: ``python tests/benchmarks/bench_cooldown.py [N]``.

N cached upstream listings of 20 files each (upload times spread over 60 days), with their
``+upstream`` pages on disk, and ``policy.min_age = "7d"``:
  first     re-rendering every page under the policy (each changes: young files go)
  unchanged the same again with nothing changed (what every timer run pays)
  judge     the cooldown's verdict alone, per file
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conftest import write_config  # noqa: E402
from pypi_fallback.config import load_settings  # noqa: E402
from pypi_fallback.mirror import store_listing  # noqa: E402
from pypi_fallback.names import NormalizedName  # noqa: E402
from pypi_fallback.records import FileEntry, UpstreamListing  # noqa: E402
from pypi_fallback.scan import Report  # noqa: E402
from pypi_fallback.storage import Tree, Writer, utc_timestamp  # noqa: E402
from pypi_fallback.upstream_pages import (  # noqa: E402
    publish_upstream_page,
    rerender_upstream_pages,
)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        base = Path(tmp)
        plain = load_settings(write_config(base, mode="cache"))
        now = time.time()
        for i in range(count):
            project = f"proj-{i}"
            files = tuple(FileEntry(
                f"proj_{i}-1.{n}-py3-none-any.whl", f"http://127.0.0.1:9/f/{i}/{n}",
                "a" * 64, size=1000, version=f"1.{n}",
                upload_time=utc_timestamp(now - n * 3 * 86400)) for n in range(20))
            store_listing(Tree.of(plain), UpstreamListing(project, "http://127.0.0.1:9/",
                                                          True, files, now))
            publish_upstream_page(plain, NormalizedName(project), Writer())
        cool = load_settings(write_config(base, '[policy]\nmin_age = "7d"\n', mode="cache"))
        for label in ("first", "unchanged"):
            start = time.perf_counter()
            changed = rerender_upstream_pages(cool, Report())
            took = time.perf_counter() - start
            print(f"{label:>9}: {count} pages, {changed} rewritten, {took:.2f} s "
                  f"({took / count * 1e3:.2f} ms a page)")
        files = 20 * count
        start = time.perf_counter()
        for _ in range(files):
            cool.cooldown.judge("proj", "1.0", "2026-01-02T03:04:05.000000Z", now)
        took = time.perf_counter() - start
        print(f"    judge: {took / files * 1e6:.1f} µs a file")


if __name__ == "__main__":
    main()
