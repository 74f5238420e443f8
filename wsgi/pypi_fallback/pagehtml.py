"""Pages for people, as pure functions: values in, HTML (or JSON) bytes out, no I/O.

``pages`` gathers what a page shows (records, the audit trail, kept metadata) and writes
what these functions return. Every value goes through Jinja's autoescaping; a project's
description is rendered the way the public index renders it, by PyPA's
``readme_renderer``, whose output is sanitized (an allow-list of tags and attributes:
no scripts, no event handlers, no ``javascript:`` links). Pages also carry a Content
Security Policy that allows scripts only from this server's own files, so markup that
slipped through could still not run. Links are relative: the pages work behind any
prefix or virtual host.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape
from packaging.metadata import RawMetadata, parse_email

from .listing import TEMPLATES

PAGES_URL = "+pages"
SUMMARY_MAX = 200

_env = TEMPLATES


# -- core metadata ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Metadata:
    """What a project page shows from a release's core metadata."""

    summary: str = ""
    description: str = ""
    description_content_type: str = ""
    requires_python: str = ""
    dependencies: tuple[str, ...] = ()
    urls: tuple[tuple[str, str], ...] = ()  # (label, URL), http(s) only
    author: str = ""
    license: str = ""


def _safe_url(url: str) -> bool:
    return url.strip().lower().startswith(("https://", "http://"))


def parse_metadata(raw: bytes) -> Metadata:
    """The fields of METADATA / PKG-INFO a page shows (``packaging.metadata``, lenient:
    a field it cannot read is left out, never an error)."""
    return metadata_of(parse_email(raw)[0])


def metadata_of(fields: RawMetadata) -> Metadata:
    """What a page shows of core metadata parsed already (``parse_email``'s fields)."""
    urls: list[tuple[str, str]] = []
    home = fields.get("home_page")
    if home and _safe_url(home):
        urls.append(("Homepage", home.strip()))
    for label, url in (fields.get("project_urls") or {}).items():
        if _safe_url(url):
            urls.append((label.strip() or url.strip(), url.strip()))
    license_ = fields.get("license_expression") or fields.get("license") or ""
    return Metadata(
        summary=(fields.get("summary") or "").strip(),
        description=fields.get("description") or "",
        description_content_type=fields.get("description_content_type") or "",
        requires_python=(fields.get("requires_python") or "").strip(),
        dependencies=tuple(d.strip() for d in fields.get("requires_dist") or ()),
        urls=tuple(urls),
        author=(fields.get("author") or fields.get("author_email") or "").strip(),
        license=license_.strip().splitlines()[0] if license_.strip() else "",
    )


def render_description(text: str, content_type: str) -> tuple[Markup, str]:
    """A description as sanitized HTML, and the format it was rendered as.

    Markdown (GitHub's dialect, the public index's default for ``text/markdown``),
    reStructuredText (the default when no type is given), or plain text; an invalid
    reStructuredText is shown as plain text, as the public index does. Each renderer is
    imported when first needed (docutils alone is megabytes in the upload daemon)."""
    if not text.strip():
        return Markup(""), "none"
    kind = content_type.split(";", 1)[0].strip().lower()
    rendered: str | None = None
    used = "text"
    if kind == "text/markdown":
        variant = "GFM"
        for param in content_type.split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "variant" and value.strip() == "CommonMark":
                variant = "CommonMark"
        import readme_renderer.markdown

        rendered, used = readme_renderer.markdown.render(text, variant=variant), "markdown"
    elif kind in ("", "text/x-rst"):
        import readme_renderer.rst

        rendered, used = readme_renderer.rst.render(text), "rst"
    if rendered is None:
        import readme_renderer.txt

        rendered, used = readme_renderer.txt.render(text), "text"
    return Markup(rendered), used  # noqa: S704 - sanitized by readme_renderer (nh3)


# -- a project page --------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRow:
    filename: str
    url: str  # relative to the project page
    size: int | None
    sha256: str | None
    upload_time: str | None
    uploader: str | None
    where: tuple[str, ...]  # "dev", "stable (promoted from dev)", "pinned in stable", …
    yanked: str | None = None  # None: not yanked; "": yanked without a reason
    removed: str | None = None  # a removed file's reason (its name is never reused)


@dataclass(frozen=True)
class VersionRow:
    version: str
    files: tuple[FileRow, ...]

    @property
    def where(self) -> list[str]:
        seen: list[str] = []
        for f in self.files:
            seen += [w for w in f.where if w not in seen]
        return seen

    @property
    def yanked(self) -> bool:
        live = [f for f in self.files if f.removed is None]
        return bool(live) and all(f.yanked is not None for f in live)


@dataclass(frozen=True)
class TrailRow:
    time: str
    user: str
    action: str
    repo: str
    filename: str
    detail: str = ""


@dataclass(frozen=True)
class Install:
    repo: str
    index: str  # the repository's URL relative to the project page
    path: str  # the same from the server's root (shown until the page knows its origin)


@dataclass(frozen=True)
class ProjectView:
    name: str
    latest: str  # the version whose metadata is shown
    metadata: Metadata
    versions: tuple[VersionRow, ...]  # newest first
    install: tuple[Install, ...]
    trail: tuple[TrailRow, ...]  # newest first
    overlay: bool = False
    claimed: str | None = None  # why the name never falls back upstream, if it does not
    repos: tuple[str, ...] = field(default_factory=tuple)  # repos holding files here
    status: tuple[tuple[str, str, str | None], ...] = ()  # PEP 792: (repo, status, reason)


def render_project_page(view: ProjectView) -> bytes:
    description, kind = render_description(view.metadata.description,
                                           view.metadata.description_content_type)
    return _env.get_template("page_project.html").render(
        p=view, description=description, description_kind=kind, static="../+static/",
        home="../../", pages="../",
    ).encode("utf-8")


def search_entry(view: ProjectView) -> dict[str, Any]:
    """The project's line in the search index (a summary is one line, at most 200
    characters: the public index's own limit is 512)."""
    summary = " ".join(view.metadata.summary.split())
    if len(summary) > SUMMARY_MAX:
        summary = summary[:SUMMARY_MAX - 1] + "…"
    return {"name": view.name, "version": view.latest, "summary": summary,
            "repos": list(view.repos)}


# -- the landing page and the search index ---------------------------------------------------


@dataclass(frozen=True)
class RepoRow:
    name: str
    fallback: tuple[str, ...]
    projects: int
    writers: tuple[str, ...]


@dataclass(frozen=True)
class Recent:
    time: str
    user: str
    action: str
    repo: str
    project: str
    filename: str
    detail: str = ""


@dataclass(frozen=True)
class LandingView:
    repos: tuple[RepoRow, ...]
    recent: tuple[Recent, ...]  # newest first
    entries: Sequence[Mapping[str, Any]]  # search entries, sorted by name


def render_search_index(entries: Sequence[Mapping[str, Any]]) -> bytes:
    """The search index the landing page's script reads: one compact row per project."""
    rows = [[e["name"], e["version"], e["summary"], e["repos"]] for e in entries]
    return json.dumps({"fields": ["name", "version", "summary", "repos"], "projects": rows},
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def render_landing_page(view: LandingView) -> bytes:
    # 10,000 projects or more: one escaped line each, joined, instead of a template loop
    lines = []
    for e in view.entries:
        name = escape(e["name"])
        summary = f' <span class="summary">{escape(e["summary"])}</span>' if e["summary"] \
            else ""
        lines.append(f'<li><a href="{PAGES_URL}/{name}/">{name}</a> '
                     f'<span class="version">{escape(e["version"])}</span>{summary}</li>\n')
    head = _env.get_template("page_landing.html").render(
        v=view, count=len(view.entries), static=f"{PAGES_URL}/+static/",
        index=f"{PAGES_URL}/search.json", pages=f"{PAGES_URL}/")
    return head.replace("<!-- projects -->\n", "".join(lines)).encode("utf-8")


def static_files() -> dict[str, bytes]:
    """The stylesheet and the script every page links to (served from ``+pages/+static``)."""
    assert _env.loader is not None
    return {name: _env.loader.get_source(_env, name)[0].encode("utf-8")
            for name in ("pages.css", "pages.js")}
