"""The upstream index: the one module that talks to it."""

from __future__ import annotations

import os
import subprocess
import sys


def pip_index_url() -> str:
    """The index pip on this machine uses: $PIP_INDEX_URL, pip's config, else pip's default."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"].split()[0]
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                             capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key in ("global.index-url", "install.index-url", "download.index-url"):
            return value.strip().strip("'\"")
    from pip._internal.models.index import PyPI  # pip's own default, not written here

    return str(PyPI.simple_url)


def upstream_url(configured: str) -> str:
    return configured or pip_index_url()
