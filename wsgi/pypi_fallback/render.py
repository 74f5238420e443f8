"""Render: listings from records and upstream entries, as bytes. Pure: no I/O, no
subprocess; whoever writes (``regen``, ``upstream_pages``) loads the records and the
upstream cache first, resolves the upstream URL once, and writes what comes out.

A ``Page`` is the PEP 691 data of a listing; its JSON and HTML bytes are made when asked
for (a writer that finds the JSON unchanged never renders the HTML).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import Settings
from .listing import (
    ProjectStatus,
    build_project_page,
    build_root_page,
    merge_files,
    render_json,
    render_project_html,
    render_root_html,
)
from .names import NormalizedName, RepoName
from .records import FileEntry, ProjectRecord


@dataclass(frozen=True)
class Page:
    """One listing: its PEP 691 data, and its bytes (``index.v1_json``, ``index.html``)."""

    data: dict[str, Any]
    kind: str = "project"  # or "root"

    @functools.cached_property
    def body(self) -> bytes:
        return render_json(self.data)

    @functools.cached_property
    def html(self) -> bytes:
        return render_root_html(self.data) if self.kind == "root" \
            else render_project_html(self.data)

    @functools.cached_property
    def fingerprint(self) -> str:
        """What a record keeps to know its listing is unchanged: the JSON's sha256."""
        return hashlib.sha256(self.body).hexdigest()

    @functools.cached_property
    def html_fingerprint(self) -> str:
        """The sha256 of the HTML (kept in the record too)."""
        return hashlib.sha256(self.html).hexdigest()

    @property
    def offers_files(self) -> bool:
        return bool(self.data["files"])


@dataclass
class Admitted:
    """The upstream files of a project that the release-age policy lets through now
    (``mirror.admitted_upstream``), and what the upstream says of the project."""

    entries: list[FileEntry] = field(default_factory=list)
    exceptions: list[tuple[str, str]] = field(default_factory=list)  # (filename, exception)
    withheld: int = 0  # files left out as too young
    status: ProjectStatus | None = None  # PEP 792, as the upstream says
    tracks: tuple[str, ...] = ()  # PEP 708, as the upstream says
    alternate_locations: tuple[str, ...] = ()


def file_url(viewer: RepoName, holder: RepoName, project: NormalizedName, filename: str) -> str:
    """A link relative to ``<prefix>/<viewer>/<project>/`` to a file held by ``holder``."""
    return filename if viewer == holder else f"../../{holder}/{project}/{filename}"


def local_status(chain: Iterable[ProjectRecord]) -> ProjectStatus | None:
    """PEP 792: the status set with ``status`` in the nearest record of a fallback chain
    that has one (None: none set, which means active)."""
    for record in chain:
        if record.status is not None:
            return ProjectStatus(record.status.status, record.status.reason)
    return None


def is_public(settings: Settings, project: NormalizedName,
              records: Iterable[ProjectRecord]) -> bool:
    """A public project published here: an overlay, or one with pinned upstream files.
    Its listings merge the upstream's files; it is never claimed."""
    return settings.is_overlay(project) or any(
        rec.pinned for record in records for rec in record.files.values())


def render_project_listing(project: NormalizedName, repo: RepoName,
                           chain: Sequence[tuple[RepoName, ProjectRecord]],
                           upstream: Admitted | None = None, tracks: Sequence[str] = ()
                           ) -> Page:
    """The listing of ``project`` in ``repo``: the published files of each repo of its
    fallback ``chain`` (nearest first), then the ``upstream`` files admitted (a public
    project where the repo reaches the upstream), with ``tracks`` (PEP 708)."""
    layers = [[FileEntry.from_record(n, r, file_url(repo, holder, project, n))
               for n, r in record.published().items()] for holder, record in chain]
    if upstream is not None:
        layers.append(upstream.entries)
    status = local_status(record for _, record in chain) or (
        upstream.status if upstream is not None else None)
    return Page(build_project_page(project, merge_files(layers), tracks, status))


def render_upstream_listing(project: NormalizedName, upstream: Admitted,
                            versions: Sequence[str] = ()) -> Page:
    """Cache mode: the listing of a project no local repo holds, from the upstream files
    admitted now; ``versions``, the upstream's own list (PEP 700), is kept when no file
    is held back."""
    page = build_project_page(project, merge_files([upstream.entries]), upstream.tracks,
                              upstream.status, upstream.alternate_locations)
    if versions and not upstream.withheld:
        page["versions"] = list(versions)
    return Page(page)


def render_root_listing(projects: Iterable[str]) -> Page:
    """A repo's root listing: the projects it shows."""
    return Page(build_root_page(projects), kind="root")
