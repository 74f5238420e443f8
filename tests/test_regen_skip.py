"""A full regen-index skips a project in which nothing changed, and only then: any change
to what a listing or a page is made of (a file, a record, the config, the program's
templates, the upstream's listing) rebuilds them. Each test runs regen-index as an operator
does and reads the listing and the page it wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import write_config
from distfactory import wheel_bytes, wheel_name, write_wheel
from fake_upstream import running_upstream
from pypi_fallback.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "regen-index"


def regen_index(settings: Settings, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([sys.executable, str(SCRIPT), "--config", str(settings.source),
                             *args], capture_output=True, text=True, timeout=120,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr
    return result.stdout


def listing(settings: Settings, project: str, repo: str = "dev") -> dict[str, Any]:
    return json.loads((settings.root / repo / project / "index.v1_json").read_text())


def files(settings: Settings, project: str, repo: str = "dev") -> list[str]:
    return [f["filename"] for f in listing(settings, project, repo)["files"]]


def page(settings: Settings, project: str) -> str:
    return (settings.root / "+pages" / project / "index.html").read_text()


def written(settings: Settings, project: str) -> list[tuple[int, int]]:
    """The identity of a project's listing and page files: rewritten, they change."""
    paths = [settings.root / "dev" / project / name for name in ("index.html", "index.v1_json")]
    paths.append(settings.root / "+pages" / project / "index.html")
    return [(p.stat().st_ino, p.stat().st_mtime_ns) for p in paths]


def test_a_second_run_skips_what_did_not_change_and_rebuilds_what_did(
        settings: Settings) -> None:
    for project in ("acme", "other"):
        write_wheel(settings.root / "dev" / project, project, "1.0")
    regen_index(settings)
    before = {p: written(settings, p) for p in ("acme", "other")}

    assert "0 listings written" in regen_index(settings)
    assert {p: written(settings, p) for p in ("acme", "other")} == before

    write_wheel(settings.root / "dev" / "acme", "acme", "1.1")  # a new file
    out = regen_index(settings)

    assert "published dev/acme/acme-1.1-py3-none-any.whl" in out
    assert files(settings, "acme") == [wheel_name("acme", v) for v in ("1.0", "1.1")]
    assert wheel_name("acme", "1.1") in page(settings, "acme")
    assert written(settings, "other") == before["other"]  # the other project: skipped


def test_a_removed_file_is_dropped_from_listing_and_page(settings: Settings) -> None:
    folder = settings.root / "dev" / "acme"
    old = write_wheel(folder, "acme", "1.0")
    write_wheel(folder, "acme", "1.1")
    regen_index(settings)
    regen_index(settings)

    old.unlink()
    regen_index(settings)

    assert files(settings, "acme") == [wheel_name("acme", "1.1")]
    assert '<span class="status">removed</span>: <span class="reason">deleted from disk' \
        in page(settings, "acme")


def test_a_record_changed_by_another_program_is_rendered_again(settings: Settings) -> None:
    """A yank written into the record by a command that died before it wrote the listing."""
    write_wheel(settings.root / "dev" / "acme", "acme", "1.0")
    regen_index(settings)
    regen_index(settings)
    path = settings.state / "records" / "dev" / "acme.json"
    record = json.loads(path.read_text())
    record["files"][wheel_name("acme", "1.0")]["yanked"] = "broken build"
    path.write_text(json.dumps(record, sort_keys=True, separators=(",", ":")))

    regen_index(settings)

    assert listing(settings, "acme")["files"][0]["yanked"] == "broken build"
    assert 'data-yanked="broken build"' in \
        (settings.root / "dev" / "acme" / "index.html").read_text()
    assert '<span class="reason">broken build</span>' in page(settings, "acme")


def test_a_listing_file_replaced_by_hand_is_written_again(settings: Settings) -> None:
    write_wheel(settings.root / "dev" / "acme", "acme", "1.0")
    regen_index(settings)
    regen_index(settings)
    html = settings.root / "dev" / "acme" / "index.html"
    good = html.read_bytes()
    html.write_text("<html>defaced</html>")

    regen_index(settings)

    assert html.read_bytes() == good


def test_a_config_change_rebuilds_the_pages(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path))
    write_wheel(settings.root / "dev" / "acme", "acme", "1.0")
    regen_index(settings)
    regen_index(settings)
    assert "/pypi/dev/" in page(settings, "acme")

    text = settings.source.read_text().replace('url_prefix = "/pypi"', 'url_prefix = "/idx"')
    settings.source.write_text(text)
    regen_index(settings)

    assert "/idx/dev/" in page(settings, "acme") and "/pypi/dev/" not in page(settings, "acme")


def test_a_template_change_rebuilds_the_pages(settings: Settings, tmp_path: Path) -> None:
    """An upgrade of the program: the same tree, run by a copy whose page template differs."""
    copy = tmp_path / "program"
    shutil.copytree(ROOT / "wsgi" / "pypi_fallback", copy / "pypi_fallback",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PYTHONPATH": str(copy)}
    write_wheel(settings.root / "dev" / "acme", "acme", "1.0")
    regen_index(settings, env=env)
    regen_index(settings, env=env)

    template = copy / "pypi_fallback" / "templates" / "page_project.html"
    template.write_text(template.read_text().replace("</body>", "<!-- upgraded --></body>"))
    regen_index(settings, env=env)

    assert "<!-- upgraded -->" in page(settings, "acme")


def test_an_upstream_listing_change_reaches_an_overlay(tmp_path: Path) -> None:
    with running_upstream() as upstream:
        upstream.add("requests", wheel_name("requests", "2.0"), wheel_bytes("requests", "2.0"))
        settings = load_settings(write_config(tmp_path, '[policy]\noverlay = ["requests"]\n',
                                              upstream=upstream.simple_url, ttl=0))
        write_wheel(settings.root / "dev" / "requests", "requests", "2.1")
        regen_index(settings)
        regen_index(settings)
        assert sorted(files(settings, "requests")) == [wheel_name("requests", v)
                                                       for v in ("2.0", "2.1")]

        upstream.add("requests", wheel_name("requests", "2.2"), wheel_bytes("requests", "2.2"))
        regen_index(settings, "--refresh-upstream")

        assert sorted(files(settings, "requests")) == [wheel_name("requests", v)
                                                       for v in ("2.0", "2.1", "2.2")]
        assert wheel_name("requests", "2.2") in page(settings, "requests")
