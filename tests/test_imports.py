"""The mod_wsgi daemon's entry point: no work at import, renderers loaded when needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

WSGI = Path(__file__).resolve().parent.parent / "wsgi" / "pypi_fallback.wsgi"


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_the_entry_point_starts_no_process_and_loads_no_renderer() -> None:
    """What mod_wsgi runs (the .wsgi file) starts no program (finding the C library runs
    ldconfig) and loads none of the description renderers (docutils alone is megabytes)."""
    result = run(f"""
import subprocess, sys
def refuse(*args, **kwargs):
    raise AssertionError(f"a program started at import: {{args!r}}")
subprocess.Popen = refuse
exec(compile(open({str(WSGI)!r}).read(), "pypi_fallback.wsgi", "exec"))
assert callable(application)
loaded = sorted(m for m in ("readme_renderer", "docutils", "nh3", "comrak", "ctypes.util")
                if m in sys.modules)
assert not loaded, loaded
""")
    assert result.returncode == 0, result.stderr


def test_a_description_loads_only_its_renderer() -> None:
    result = run("""
import sys
from pypi_fallback.pagehtml import render_description
assert render_description("", "text/x-rst")[1] == "none"
html, used = render_description("plain <words>", "text/plain")
assert used == "text" and "&lt;words&gt;" in html
assert "docutils" not in sys.modules and "readme_renderer.markdown" not in sys.modules
html, used = render_description("Title\\n=====\\n\\ntext", "text/x-rst")
assert used == "rst" and "docutils" in sys.modules
""")
    assert result.returncode == 0, result.stderr
