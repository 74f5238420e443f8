"""Pages for people: golden HTML for the pure renderers, sanitized descriptions, and the
pages written by regen-index, uploads and the QC commands (no sockets here; the browser
tests are in test_pages_browser.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import write_config
from distfactory import write_sdist, write_wheel
from helpers import HOSTILE, golden, metadata
from pypi_fallback import qc
from pypi_fallback.config import Settings, load_settings
from pypi_fallback.deployment import prepare_deployment
from pypi_fallback.pagehtml import (
    FileRow,
    Install,
    LandingView,
    Metadata,
    ProjectView,
    Recent,
    RepoRow,
    TrailRow,
    VersionRow,
    parse_metadata,
    render_description,
    render_landing_page,
    render_project_page,
    render_search_index,
    search_entry,
)
from pypi_fallback.pages import PageRefresher, _link, fold_audit, refresh, refresh_landing
from pypi_fallback.records import AuditEntry
from pypi_fallback.regen import regenerate
from pypi_fallback.storage import Tree, append_audit, utc_timestamp

SHA = "a" * 64
def sample_view() -> ProjectView:
    files = (
        FileRow("acme-2.0-py3-none-any.whl", "../../dev/acme/acme-2.0-py3-none-any.whl", 1234,
                SHA, "2026-01-02T03:04:05.000000Z", "alice", ("dev",)),
        FileRow("acme-2.0.tar.gz", "../../dev/acme/acme-2.0.tar.gz", 999, SHA,
                "2026-01-02T03:04:06.000000Z", "alice", ("dev", "stable (promoted from dev)"),
                yanked="broken <b>build</b>"),
    )
    old = (FileRow("acme-1.0.tar.gz", "", None, SHA, "2025-12-01T00:00:00.000000Z", "carol",
                   ("stable",), removed="licence <problem>"),)
    return ProjectView(
        name="acme", latest="2.0",
        metadata=parse_metadata(metadata("acme", "2.0").encode()),
        versions=(VersionRow("2.0", files), VersionRow("1.0", old)),
        install=(Install("dev", "../../dev/", "/pypi/dev/"),
                 Install("stable", "../../stable/", "/pypi/stable/")),
        trail=(TrailRow("2026-01-03T00:00:00.000000Z", "carol", "promote", "stable",
                        "acme-2.0.tar.gz", "from dev"),
               TrailRow("2026-01-02T03:04:06.000000Z", "alice", "upload", "dev",
                        "acme-2.0.tar.gz", "")),
        claimed="published here (found by regen-index)", repos=("dev", "stable"))


def test_project_page_matches_golden() -> None:
    golden("page_project.html", render_project_page(sample_view()))


def test_landing_page_and_search_index_match_golden() -> None:
    entries = [{"name": "acme", "version": "2.0", "summary": "Acme <tools>", "repos": ["dev"]},
               {"name": "zeta", "version": "0.1", "summary": "", "repos": ["stable"]}]
    view = LandingView(
        repos=(RepoRow("dev", ("stable", "upstream"), 1, ("developers",)),
               RepoRow("stable", ("upstream",), 1, ("qc",))),
        recent=(Recent("2026-01-03T00:00:00.000000Z", "carol", "promote", "stable", "acme",
                       "acme-2.0.tar.gz", "from dev"),),
        entries=entries)
    golden("page_landing.html", render_landing_page(view))
    assert json.loads(render_search_index(entries)) == {
        "fields": ["name", "version", "summary", "repos"],
        "projects": [["acme", "2.0", "Acme <tools>", ["dev"]], ["zeta", "0.1", "", ["stable"]]]}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


def _no_active_content(html: str, own_script: str | None = None) -> None:
    """No element that could run: no script but the page's own file, no event handler
    attribute, no javascript: URL (text that merely shows such things is fine)."""
    parser = _Tags()
    parser.feed(html)
    scripts = [dict(attrs).get("src") for tag, attrs in parser.found if tag == "script"]
    assert scripts == ([own_script] if own_script else [])
    for tag, attrs in parser.found:
        for name, value in attrs:
            assert not name.startswith("on"), f"<{tag} {name}=…> survived"
            assert not (value or "").strip().lower().startswith("javascript:"), \
                f"<{tag} {name}={value!r}> survived"


RST_LINK = "Acme\n====\n\n`click <javascript:window.pwned=2>`_ and *more*\n"
RST_RAW = "Acme\n====\n\n.. raw:: html\n\n   <script>window.pwned = 1</script>\n"


@pytest.mark.parametrize(("content_type", "text", "kind"), [
    ("text/markdown", HOSTILE, "markdown"),
    ("text/markdown; variant=CommonMark", HOSTILE, "markdown"),
    ("text/x-rst", RST_LINK, "rst"),
    ("", RST_LINK, "rst"),
    ("text/x-rst", RST_RAW, "text"),  # raw HTML is refused: shown as plain text
    ("text/plain", HOSTILE, "text"),
])
def test_hostile_descriptions_are_sanitized_in_every_format(content_type: str, text: str,
                                                            kind: str) -> None:
    html, used = render_description(text, content_type)
    assert used == kind
    _no_active_content(html)
    page = render_project_page(ProjectView(
        name="acme", latest="1.0", metadata=Metadata(description=text,
                                                    description_content_type=content_type),
        versions=(), install=(), trail=())).decode()
    _no_active_content(page, "../+static/pages.js")


def test_descriptions_render_like_the_public_index() -> None:
    html, kind = render_description("Title\n=====\n\nSome *emphasis*.\n", "text/x-rst")
    assert kind == "rst" and "<em>emphasis</em>" in html and "<h1" in html
    html, kind = render_description("| a | b |\n|---|---|\n| 1 | 2 |\n\n~~gone~~\n",
                                    "text/markdown; charset=UTF-8")
    assert kind == "markdown" and "<table>" in html and "<del>gone</del>" in html
    html, kind = render_description("<b>not bold</b>\nline", "text/plain")
    assert kind == "text" and "&lt;b&gt;not bold&lt;/b&gt;<br>line" in html


def test_search_entries_are_one_short_line() -> None:
    view = dataclasses.replace(sample_view(), metadata=Metadata(summary="long\n" + "x" * 500))
    entry = search_entry(view)
    assert entry["summary"].startswith("long xxx") and len(entry["summary"]) == 200
    assert entry == {**entry, "name": "acme", "version": "2.0", "repos": ["dev", "stable"]}


def test_an_upstream_link_that_is_not_a_web_link_is_not_a_link() -> None:
    assert _link("javascript:alert(1)") == "" and _link("JaVaScript:x") == ""
    assert _link("https://files.example/a.whl") == "https://files.example/a.whl"
    assert _link("../../+upstream/acme/acme-1.0.tar.gz") == "../../+upstream/acme/acme-1.0.tar.gz"
    assert _link("a:b/c.whl") == ""


def test_metadata_fields_and_only_web_links() -> None:
    meta = parse_metadata(metadata("acme", "1.0").encode())
    assert meta.summary == "Acme <b>tools</b>" and meta.requires_python == ">=3.9"
    assert meta.dependencies == ("requests>=2", 'tomli; python_version < "3.11"')
    assert meta.urls == (("Source", "https://git.example/acme"),)
    assert meta.description_content_type == "text/markdown"


# -- pages on disk ------------------------------------------------------------------------------


def page(settings: Settings, project: str) -> str:
    return (settings.root / "+pages" / project / "index.html").read_text()


def test_regen_promote_yank_remove_write_the_project_page(settings: Settings) -> None:
    dev = settings.root / "dev" / "acme"
    write_wheel(dev, "acme", "1.0", metadata=metadata("acme", "1.0"))
    write_sdist(dev, "acme", "1.0")
    write_sdist(dev, "acme", "0.9")
    regenerate(settings)
    html = page(settings, "acme")
    assert "<h1>acme <span class=\"version\">1.0</span></h1>" in html
    assert 'id="user-content-acme"' in html  # the Markdown description, rendered
    _no_active_content(html, "../+static/pages.js")
    assert "requests&gt;=2" in html and "https://git.example/acme" in html

    qc.promote(settings, "acme==1.0", "dev", "stable", "carol")
    qc.yank(settings, "acme==1.0", "bad <build>", "stable", "carol")
    qc.remove(settings, "acme==0.9", "dev", "carol", reason="licence problem")
    html = page(settings, "acme")
    assert "stable (promoted from dev)" in html
    assert '<span class="reason">in stable: bad &lt;build&gt;</span>' in html
    assert '<span class="status">removed</span>: <span class="reason">licence problem' in html
    trail = html.split('id="trail-h"', 1)[1]
    assert [a for a in re.findall(r'class="action">(\w+)<', trail)] == \
        ["remove", "yank", "yank", "promote", "promote"]
    assert "from dev" in trail
    assert "pip install --index-url <span class=\"index-url\">/pypi/stable/</span> acme" in html

    landing = (settings.root / "index.html").read_text()
    assert '<a href="+pages/acme/">acme</a>' in landing
    assert landing.count('class="action">promote<') == 2
    index = json.loads((settings.root / "+pages" / "search.json").read_bytes())
    assert index["projects"] == [["acme", "1.0", "Acme <b>tools</b>", ["dev", "stable"]]]


def test_an_unchanged_regeneration_writes_no_page(settings: Settings) -> None:
    write_wheel(settings.root / "dev" / "acme", "acme", "1.0")
    regenerate(settings)
    path = settings.root / "+pages" / "acme" / "index.html"
    stamp = path.stat().st_mtime_ns
    regenerate(settings)
    assert path.stat().st_mtime_ns == stamp
    write_wheel(settings.root / "dev" / "acme", "acme", "1.1")
    regenerate(settings)
    assert path.stat().st_mtime_ns != stamp and "1.1" in path.read_text()


def test_the_audit_log_is_folded_once_and_across_rotation(settings: Settings) -> None:
    tree = Tree.of(settings)
    entry = {"time": utc_timestamp(), "user": "alice", "action": "upload", "repo": "dev",
             "project": "acme", "filename": "acme-1.0.tar.gz"}

    def line(**changes: str) -> AuditEntry:
        entry_read = AuditEntry.from_json({**entry, **changes})
        assert entry_read is not None
        return entry_read

    append_audit(tree, line())
    append_audit(tree, line(project="../etc"))  # not a project name: ignored
    assert fold_audit(tree) == {"acme"}
    assert fold_audit(tree) == set()
    trail_path = settings.state / "pages" / "trails" / "acme.json"
    assert json.loads(trail_path.read_bytes()) == [entry]
    os.rename(tree.audit_log, settings.state / "audit.jsonl.1")  # logrotate
    append_audit(tree, line(filename="acme-1.0-py3-none-any.whl"))
    assert fold_audit(tree) == {"acme"}
    assert len(json.loads(trail_path.read_bytes())) == 2


def test_incremental_landing_equals_a_full_rebuild(settings: Settings) -> None:
    for name in ("alpha", "beta", "gamma"):
        write_wheel(settings.root / "dev" / name, name, "1.0")
    regenerate(settings)
    write_wheel(settings.root / "stable" / "delta", "delta", "1.0")
    regenerate(settings, names=["delta"])
    incremental = (settings.root / "index.html").read_bytes()
    assert b'<a href="+pages/delta/">delta</a>' in incremental
    refresh_landing(settings, None)
    assert (settings.root / "index.html").read_bytes() == incremental
    assert b'<td><a href="stable/">stable</a></td><td>upstream</td><td class="num">1</td>' \
        in incremental


def test_page_refresher_renders_at_once_then_folds(settings: Settings) -> None:
    write_wheel(settings.root / "dev" / "acme", "acme", "1.0")
    regenerate(settings)
    refresher = PageRefresher(settings, interval=30)
    (settings.root / "+pages" / "acme" / "index.html").unlink()
    refresher.request(["acme"])  # due now: page and landing rebuilt at once
    assert "acme" in page(settings, "acme")
    write_wheel(settings.root / "dev" / "zeta", "zeta", "1.0")
    regenerate(dataclasses.replace(settings, pages=False), names=["zeta"])  # listings only
    refresher.request(["zeta"])  # within the interval: folded into one rebuild at its end
    assert refresher._scheduled and refresher._timer is not None
    refresher._timer.cancel()
    assert not (settings.root / "+pages" / "zeta").exists()
    assert b"zeta" not in (settings.root / "index.html").read_bytes()
    refresher._flush()
    assert "zeta" in page(settings, "zeta")
    assert b'<a href="+pages/zeta/">zeta</a>' in (settings.root / "index.html").read_bytes()


def test_pages_off_writes_no_page(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, "", repos=None).as_posix())
    config = settings.source
    config.write_text(config.read_text().replace("max_upload_mb = 2", "max_upload_mb = 2\n"
                                                 "pages = false"))
    settings = load_settings(config)
    assert settings.pages is False
    prepare_deployment(settings)
    write_wheel(settings.root / "dev" / "acme", "acme", "1.0")
    regenerate(settings)
    refresh(settings, ["acme"])
    assert not (settings.root / "+pages").exists()
    assert "Repositories" in (settings.root / "index.html").read_text()
