"""Benchmark: pip download of five packages through cache mode, cold and warm, vs the same
from a plain static PEP 503 tree on the same Apache.

Prints figures; asserts nothing. Needs root. Run with the venv's python:
``python tests/benchmarks/bench_cache.py``. Target (issue #5): warm / plain <= 1.05.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apache_server import deployed  # noqa: E402
from clients import clean_env  # noqa: E402
from distfactory import wheel_bytes, wheel_name  # noqa: E402
from fake_upstream import running_upstream  # noqa: E402

PACKAGES = [f"bench-{c}" for c in "abcde"]
PLAIN = """
Alias /plain "{home}/plain"
<Directory "{home}/plain">
    Options None
    AllowOverride None
    DirectoryIndex index.html
    Require all granted
</Directory>
"""


def download(index: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
                        "-q", "-d", out, "--index-url", index, *PACKAGES],
                       check=True, env=clean_env(), timeout=300)
        return time.perf_counter() - started


def main() -> None:
    with running_upstream() as up:
        for name in PACKAGES:
            up.add(name, wheel_name(name, "1.0"),
                   wheel_bytes(name, "1.0", payload=os.urandom(256 * 1024)))
        with deployed(up, mode="cache", extra_apache=PLAIN) as site:
            plain = site.home / "plain"
            for name in PACKAGES:
                folder = plain / name
                folder.mkdir(parents=True)
                filename = wheel_name(name, "1.0")
                data = up.files[name][filename]
                (folder / filename).write_bytes(data)
                sha = hashlib.sha256(data).hexdigest()
                (folder / "index.html").write_text(
                    f'<!DOCTYPE html><html><body><a href="{filename}#sha256={sha}">'
                    f"{filename}</a></body></html>\n")
            for p in [plain, *plain.iterdir()]:
                os.chmod(p, 0o755)
            cold = download(site.url("dev"))
            warm = [download(site.url("dev")) for _ in range(5)]
            base = [download(site.origin + "/plain/") for _ in range(5)]
            w, b = statistics.median(warm), statistics.median(base)
            print(f"pip download of {len(PACKAGES)} packages (256 KiB wheels), median of 5:")
            print(f"  plain static tree:  {b:.3f} s")
            print(f"  cache mode, cold:   {cold:.3f} s ({cold / b:.2f}x plain; one run)")
            print(f"  cache mode, warm:   {w:.3f} s ({w / b:.2f}x plain; target <= 1.05)")


if __name__ == "__main__":
    main()
