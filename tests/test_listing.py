"""Rendered pages: golden HTML, and JSON checked field by field against PEP 691/700/714."""

from __future__ import annotations

import json

import pytest
from helpers import golden
from pypi_fallback.listing import (
    FileEntry,
    ProjectStatus,
    build_project_page,
    build_root_page,
    merge_files,
    render_json,
    render_project_html,
    render_root_html,
)
from pypi_fallback.names import NormalizedName

SHA = "a" * 64
META = "b" * 64

ENTRIES = [
    FileEntry("acme-1.0.tar.gz", "acme-1.0.tar.gz", SHA, 1234, "1.0",
              upload_time="2026-01-02T03:04:05.000006Z", requires_python=">=3.8"),
    FileEntry("acme-1.0-py3-none-any.whl", "acme-1.0-py3-none-any.whl", SHA, 999, "1.0",
              upload_time="2026-01-02T03:04:05.000006Z", requires_python='<4,>=3.8"><script>',
              metadata_sha256=META, yanked="broken <b>build</b>",
              provenance="acme-1.0-py3-none-any.whl.provenance"),
    FileEntry("acme-0.9-py3-none-any.whl", "../../stable/acme/acme-0.9-py3-none-any.whl", SHA,
              10, "0.9", metadata_sha256=META, yanked=True),
]


def test_project_html_matches_golden() -> None:
    page = build_project_page(NormalizedName("acme"), ENTRIES)
    golden("project.html", render_project_html(page))


def test_api_1_4_html_matches_golden() -> None:
    """PEP 708 tracks and alternate locations, PEP 740 provenance, PEP 792 status."""
    page = build_project_page(NormalizedName("acme"), ENTRIES, ["https://up.example/acme/"],
                              ProjectStatus("deprecated", 'use "acme2" <instead>'),
                              ["https://other.example/acme/"])
    golden("project_1_4.html", render_project_html(page))


def test_quarantined_project_offers_no_files() -> None:
    page = build_project_page(NormalizedName("acme"), ENTRIES, (),
                              ProjectStatus("quarantined", "malware"))
    assert page["files"] == [] and page["versions"] == []
    assert page["project-status"] == {"status": "quarantined", "reason": "malware"}
    html = render_project_html(page).decode()
    assert '<meta name="pypi:project-status" content="quarantined">' in html
    assert '<meta name="pypi:project-status-reason" content="malware">' in html
    assert "<a " not in html


def test_active_status_without_reason_is_not_written() -> None:
    page = build_project_page(NormalizedName("acme"), ENTRIES, (), ProjectStatus("active"))
    assert "project-status" not in page and len(page["files"]) == 3


def test_root_html_matches_golden() -> None:
    golden("root.html", render_root_html(build_root_page(["zeta", "acme", "acme-foo"])))


def test_html_escapes_everything_from_uploads() -> None:
    html = render_project_html(build_project_page(NormalizedName("acme"), ENTRIES)).decode()
    assert "<script>" not in html and "<b>" not in html
    assert 'data-requires-python="&lt;4,&gt;=3.8&#34;&gt;&lt;script&gt;"' in html
    assert 'data-yanked="broken &lt;b&gt;build&lt;/b&gt;"' in html
    assert f'data-core-metadata="sha256={META}" data-dist-info-metadata="sha256={META}"' in html


def test_project_json_fields() -> None:
    page = json.loads(render_json(build_project_page(NormalizedName("acme"), ENTRIES,
                                                     tracks=["https://up.example/acme/"])))
    assert page["meta"] == {"api-version": "1.4", "tracks": ["https://up.example/acme/"]}
    assert page["name"] == "acme"
    assert page["versions"] == ["0.9", "1.0"]
    sdist, wheel, old = page["files"]
    assert sdist == {
        "filename": "acme-1.0.tar.gz", "url": "acme-1.0.tar.gz", "hashes": {"sha256": SHA},
        "requires-python": ">=3.8", "core-metadata": False, "dist-info-metadata": False,
        "yanked": False, "size": 1234, "upload-time": "2026-01-02T03:04:05.000006Z",
        "provenance": None,
    }
    assert wheel["provenance"] == "acme-1.0-py3-none-any.whl.provenance"
    assert wheel["core-metadata"] == wheel["dist-info-metadata"] == {"sha256": META}
    assert wheel["yanked"] == "broken <b>build</b>"
    assert old["yanked"] is True and "upload-time" not in old
    assert old["url"] == "../../stable/acme/acme-0.9-py3-none-any.whl"


def test_root_json() -> None:
    page = json.loads(render_json(build_root_page(["b", "a", "b"])))
    assert page == {"meta": {"api-version": "1.4"}, "projects": [{"name": "a"}, {"name": "b"}]}


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        ([["x-1.0.tar.gz"], ["x-1.0.tar.gz", "x-0.1.tar.gz"]], [("x-1.0.tar.gz", 0),
                                                                   ("x-0.1.tar.gz", 1)]),
        ([[], ["x-2.0.tar.gz"]], [("x-2.0.tar.gz", 1)]),
        ([["x-2.0.tar.gz", "x-10.0.tar.gz"]], [("x-2.0.tar.gz", 0), ("x-10.0.tar.gz", 0)]),
    ],
)
def test_merge_nearest_wins(layers: list[list[str]], expected: list[tuple[str, int]]) -> None:
    def entry(name: str, layer: int) -> FileEntry:
        return FileEntry(name, f"{layer}/{name}", SHA, layer, name[2:-7])

    merged = merge_files([[entry(n, i) for n in layer] for i, layer in enumerate(layers)])
    assert [(e.filename, e.size) for e in merged] == expected
