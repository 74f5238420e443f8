from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
# the checkout's code, not whatever copy a venv holds (Apache runs the copy that
# scripts/test installs from this same checkout)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "wsgi"))

from fake_upstream import FakeUpstream, running_upstream  # noqa: E402
from pypi_fallback.config import Settings, load_settings  # noqa: E402


def write_config(tmp: Path, extra: str = "", *, upstream: str = "http://127.0.0.1:9/simple/",
                 repos: str | None = None, ttl: int = 600, mode: str = "redirect",
                 server: str = "") -> Path:
    """A config with dev and stable under ``tmp``, as in DESIGN.md."""
    (tmp / "www").mkdir(exist_ok=True)
    (tmp / "state").mkdir(exist_ok=True)
    (tmp / "htpasswd").touch()
    groups = tmp / "htgroups"
    if not groups.exists():
        groups.write_text("developers: alice bob\nqc: carol\n")
    repos = repos if repos is not None else (
        '[repos.dev]\nwriters = ["developers", "qc"]\nfallback = ["stable", "upstream"]\n\n'
        '[repos.stable]\nwriters = ["qc"]\nfallback = ["upstream"]\n'
    )
    text = f"""\
[server]
root = "{tmp / 'www'}"
state = "{tmp / 'state'}"
url_prefix = "/pypi"
htpasswd = "{tmp / 'htpasswd'}"
htgroups = "{groups}"
max_upload_mb = 2
{server}
[upstream]
url = "{upstream}"
timeout = 2
ttl = {ttl}

[fallback]
mode = "{mode}"

{repos}
{extra}
"""
    path = tmp / "config.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def empty_upstream() -> Iterator[FakeUpstream]:
    """A loopback upstream that knows no project: new names are asked about and claimed."""
    with running_upstream() as up:
        yield up


@pytest.fixture
def config_file(tmp_path: Path, empty_upstream: FakeUpstream) -> Path:
    return write_config(tmp_path, upstream=empty_upstream.simple_url)


@pytest.fixture
def settings(config_file: Path) -> Settings:
    return load_settings(config_file)
